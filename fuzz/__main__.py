"""``python -m fuzz --cases N --seed S --out DIR``: fuzz ``discmaker check`` in subprocesses.

Each case copies the genuine disc, mutates it (see ``fuzz.mutate``), runs
``python -m discmaker check TARGET --trust CERT --json`` with a 30 s timeout and records the
exit code, wall time and peak RSS (``wait4`` rusage: the child and its reaped workers).
Exit codes 0-3 are acceptable; anything else, a traceback, "Internal error", a timeout or a
peak above 1 GiB is a finding. Findings are written to ``DIR/findings.json`` (all cases to
``DIR/cases.json``); the exit status is 1 when there are findings.

Reproduce one case: ``python -m fuzz --seed S --only INDEX --keep --out DIR`` keeps the hostile
disc under ``DIR/work`` and prints the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from fuzz.fixture import Fixture, build_fixture, cli_env
from fuzz.mutate import Case, make_case

TIMEOUT_S = 30.0
RSS_LIMIT = 1 << 30  # a finding above this
RLIMIT_AS = 6 << 30  # hard safety net for the machine
OK_CODES = {0, 1, 2, 3}


@dataclass
class Result:
    cls: str
    seed: int
    index: int
    description: str
    exit_code: int | None
    seconds: float
    peak_rss: int
    problems: list[str]
    last_stderr: str
    signature: str  # deduplication key of a finding

    @property
    def is_finding(self) -> bool:
        return bool(self.problems)


def _limit_child() -> None:
    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (RLIMIT_AS, RLIMIT_AS))


# The check is started by this small launcher, not by the harness itself: Linux carries a
# process's peak RSS into the children it forks (the harness grows while it mutates discs,
# and 7 cases of a 3,000-case run once "peaked" at its 2.1 GiB). The launcher exits with the
# check's status and writes the check's own rusage peak to the file it is given.
_LAUNCH = """
import json, os, subprocess, sys
cmd, peak_file = json.loads(sys.argv[1]), sys.argv[2]
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
with open(peak_file, "w") as fp:
    fp.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def _run_check(
    target: Path, cert: Path, out: Path, *, report: bool = False
) -> tuple[int | None, float, int, str, str]:
    """(exit code or None on timeout, seconds, peak RSS bytes, stdout, stderr)."""
    cmd = [sys.executable, "-m", "discmaker", "check", str(target), "--trust", str(cert), "--json"]
    if report:  # the HTML report renders untrusted content (names, thumbnails) too
        cmd += ["--report", str(out / "report.html")]
    out.mkdir(parents=True, exist_ok=True)
    peak_file = out / "peak"
    with (out / "stdout").open("w+b") as so, (out / "stderr").open("w+b") as se:
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, json.dumps(cmd), str(peak_file)],
            stdout=so,
            stderr=se,
            stdin=subprocess.DEVNULL,
            env=cli_env(),
            preexec_fn=_limit_child,  # noqa: PLW1509 (only setsid and setrlimit)
        )
        code: int | None = None
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError, ValueError):
                    peak = int(peak_file.read_text())
                proc.returncode = code
                break
            if time.monotonic() - start > TIMEOUT_S:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                peak = usage.ru_maxrss * 1024
                proc.returncode = -9
                break
            time.sleep(0.01)
        seconds = time.monotonic() - start
        so.seek(0)
        se.seek(0)
        stdout = so.read().decode("utf-8", "replace")
        stderr = se.read().decode("utf-8", "replace")
    return code, seconds, peak, stdout, stderr


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _signature(stderr: str, stdout: str, problems: list[str]) -> str:
    """Deduplication key: exception type plus the last discmaker frame (or the message)."""
    if "Traceback (most recent call last)" in stderr:
        tb = stderr[stderr.rindex("Traceback (most recent call last)") :]
        lines = [ln for ln in tb.splitlines() if ln.strip()]
        exc = lines[-1].split(":")[0] if lines else "?"
        frames = _FRAME.findall(tb)
        ours = [f for f in frames if "/discmaker/" in f[0]] or frames
        if ours:
            path, line, func = ours[-1]
            short = path[path.rfind("discmaker/") :] if "discmaker/" in path else path
            return f"{exc} at {short}:{line} in {func}"
        return exc
    text = stdout + stderr
    m = re.search(r"Internal error\W*\((\w+)\)", text)
    if m:
        return f"Internal error ({m.group(1)})"
    return " + ".join(p.split(" ")[0] for p in problems)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_case(fx: Fixture, seed: int, index: int, work: Path, keep: bool = False) -> Result:
    try:
        case: Case = make_case(fx, seed, index, work)
    except Exception as exc:  # a fuzzer bug, not a checker bug: report, do not hide
        return Result(
            "fuzzer",
            seed,
            index,
            f"mutation failed: {exc!r}",
            None,
            0.0,
            0,
            [f"fuzzer-error {type(exc).__name__}"],
            repr(exc),
            f"fuzzer {exc!r}",
        )
    try:
        report = index % 2 == 1
        code, seconds, peak, stdout, stderr = _run_check(
            case.target, fx.cert, case.workdir / "out", report=report
        )
        description = case.description + (" [check --report]" if report else "")
        problems: list[str] = []
        if code is None:
            problems.append(f"timeout >{TIMEOUT_S:.0f} s")
        elif code not in OK_CODES:
            problems.append(f"exit {code}")
        if "Traceback (most recent call last)" in stderr:
            problems.append("traceback")
        if "Internal error" in stdout or "Internal error" in stderr:
            problems.append("internal-error")
        if peak > RSS_LIMIT:
            problems.append(f"peak RSS {peak / 2**20:.0f} MiB > 1 GiB")
        sig = _signature(stderr, stdout, problems) if problems else ""
        return Result(
            case.cls,
            seed,
            index,
            description,
            code,
            seconds,
            peak,
            problems,
            _last_line(stderr) or _last_line(stdout),
            sig,
        )
    finally:
        if not keep:
            shutil.rmtree(case.workdir, ignore_errors=True)


def _summary(results: list[Result]) -> str:
    codes = Counter(
        ("not run" if r.cls == "fuzzer" else "timeout") if r.exit_code is None else str(r.exit_code)
        for r in results
    )
    findings = [r for r in results if r.is_finding]
    slowest = max(results, key=lambda r: r.seconds)
    peak = max(results, key=lambda r: r.peak_rss)
    rows = [
        ("cases", str(len(results))),
        *((f"exit {k}", str(v)) for k, v in sorted(codes.items())),
        (
            "internal errors / tracebacks",
            str(sum(1 for r in results if {"internal-error", "traceback"} & set(r.problems))),
        ),
        ("timeouts", str(codes.get("timeout", 0))),
        ("over 1 GiB", str(sum(1 for r in results if r.peak_rss > RSS_LIMIT))),
        (
            "slowest",
            f"{slowest.seconds:.2f} s (case {slowest.index}, {slowest.cls}: "
            f"{slowest.description[:70]})",
        ),
        (
            "peak RSS",
            f"{peak.peak_rss / 2**20:.0f} MiB (case {peak.index}, {peak.cls}: "
            f"{peak.description[:70]})",
        ),
        ("findings", str(len(findings))),
        ("distinct findings", str(len({r.signature for r in findings}))),
    ]
    per_class = Counter(r.cls for r in results)
    per_class_f = Counter(r.cls for r in findings)
    rows += [
        (f"  class {c}", f"{n} cases, {per_class_f.get(c, 0)} findings")
        for c, n in sorted(per_class.items())
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows]
    accepted = [r for r in results if r.exit_code == 0]
    if accepted:
        out.append("")
        out.append(
            f"accepted as genuine (exit 0) - check these mutations are harmless ({len(accepted)}):"
        )
        out += [f"- case {r.index} ({r.cls}): {r.description[:150]}" for r in accepted[:40]]
    if findings:
        out.append("")
        out.append("distinct findings (first reproducer each):")
        seen: dict[str, list[Result]] = {}
        for r in findings:
            seen.setdefault(r.signature, []).append(r)
        for sig, group in sorted(seen.items(), key=lambda kv: -len(kv[1])):
            first = group[0]
            out.append(f"- [{len(group)}x] {sig}")
            out.append(
                f"    e.g. seed {first.seed} case {first.index} ({first.cls}): "
                f"{first.description[:200]}"
            )
            out.append(f"    {', '.join(first.problems)}; stderr: {first.last_stderr[:200]}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--only", type=int, nargs="*", help="run just these case indices")
    ap.add_argument("--out", type=Path, default=Path("fuzz-out"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep each hostile disc under OUT/work")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="fixture-", dir=args.out))
    print(f"authoring the genuine disc under {base} ...", flush=True)
    fx = build_fixture(base)
    indices = args.only if args.only else list(range(args.start, args.start + args.cases))
    results: list[Result] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_case, fx, args.seed, i, work, args.keep) for i in indices]
        for n, fut in enumerate(futures, 1):
            r = fut.result()
            results.append(r)
            flag = "FINDING " + ",".join(r.problems) if r.is_finding else ""
            print(
                f"[{n}/{len(indices)}] case {r.index} {r.cls:<11} exit={r.exit_code} "
                f"{r.seconds:5.2f}s {r.peak_rss / 2**20:5.0f}MiB {flag}",
                flush=True,
            )
            if args.keep:
                print(f"    {r.description[:160]}", flush=True)
    elapsed = time.monotonic() - started
    findings = [r for r in results if r.is_finding]
    (args.out / "cases.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    (args.out / "findings.json").write_text(json.dumps([asdict(r) for r in findings], indent=1))
    print()
    print(_summary(results))
    print(f"\n{elapsed:.0f} s wall; findings: {args.out / 'findings.json'}")
    if args.keep:
        print(
            f"hostile discs kept under {work}; check one with: "
            f"{sys.executable} -m discmaker check TARGET --trust {fx.cert} --json"
        )
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
