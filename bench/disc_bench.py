"""Disc benchmarks: authoring and checking a 300-slice 512x512 CT study, each against the
reference pipeline a centre could build from dcmtk today, in the same run.

Authoring reference: `dcmsign --sign` on every file, `dcmmkdir`, `xorriso -as mkisofs`.
Checking reference: `dcmsign --verify` on every file signed by dcmsign, and `sha256sum` over
the same files as the floor (reading and hashing, nothing more).

Figures are ratios measured in this run, never fixed thresholds. Memory: each discmaker job
runs in a fresh process; the peak RSS (largest process) is reported for 100 and 300 slices to
show that it does not grow with the number of images. The author's DICOMDIR step (placing and
encoding the records as images come, then writing the file) is timed from its debug log.

``DISCMAKER_BENCH_MEMORY_SLICES=300,3000`` measures only memory: the author and then the check
of its disc, once per slice count (each in a fresh process), and prints their peak memory, the
growth per slice between counts and the DICOMDIR step's time: the issue 13 budget (<= 120 MiB
at 3,000 slices, < 5 KB per slice).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import _measure as measure_job
from discmaker.crypto import signing
from discmaker.parallel import default_workers
from discmaker.sample import write_sample_study

OUT = Path(os.environ.get("DISCMAKER_BENCH_DIR", "bench-out")).resolve()
SLICES = int(os.environ.get("DISCMAKER_BENCH_SLICES", "300"))
MEMORY_SLICES = tuple(
    int(n) for n in os.environ.get("DISCMAKER_BENCH_MEMORY_SLICES", "").split(",") if n.strip()
)


def _measure(*args: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "bench._measure", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _author(*args: str) -> dict[str, float]:
    """Author in a fresh process (:func:`_author_job`): seconds, peak MiB, DICOMDIR step ms."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.disc_bench", "--author-job", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class _StepLog(logging.Handler):
    """Keeps the author's step 3/4 debug line: its arguments hold the DICOMDIR step's times."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.dicomdir_ms = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if "step 4" in str(record.msg) and isinstance(record.args, tuple):
            adding, writing = record.args[-2:]
            self.dicomdir_ms += float(adding) + float(writing)


def _author_job(argv: list[str]) -> None:
    """One ``bench._measure author`` run in this (fresh) process, its JSON line with the
    DICOMDIR step's time added."""
    log = logging.getLogger("discmaker.author.create")
    handler = _StepLog()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        measure_job.main(["author", *argv])
    figures = json.loads(out.getvalue().strip().splitlines()[-1])
    peaks = {
        # which process the peak is: the main process, or its largest worker
        "main_mib": measure_job._own_peak_kib() / 1024,
        "workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps({**figures, **peaks, "dicomdir_ms": handler.dicomdir_ms}))


CORES = default_workers()


def _timed(commands: list[list[str]], cwd: Path | None = None, *, jobs: int = 1) -> float:
    """Wall time of ``commands``, ``jobs`` at a time (``jobs=CORES`` is ``xargs -P $(nproc)``:
    the reference a centre would script runs on every core, as discmaker does)."""

    def run(cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, capture_output=True, cwd=cwd)

    started = time.perf_counter()
    if jobs <= 1:
        for cmd in commands:
            run(cmd)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(run, commands))
    return time.perf_counter() - started


def _chunks(files: list[str], parts: int) -> list[list[str]]:
    return [files[i::parts] for i in range(parts) if files[i::parts]]


def _have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def _study(n: int) -> Path:
    folder = OUT / f"study{n}"
    if not folder.exists():
        write_sample_study(folder, ct_slices=n, ct_size=512, mr_slices=0)
    return folder


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _keys() -> tuple[Path, Path]:
    keys = OUT / "keys"
    if not keys.exists():
        identity = signing.generate_identity("Benchmark Centre")
        signing.write_identity(identity, keys, passphrase=b"bench")
    return keys / "cert.pem", keys / "key.pem"


def memory_growth(counts: tuple[int, ...]) -> None:
    """Author and check peak memory (largest process) at each slice count, and the growth per
    slice between counts: the author's main process and its largest worker, and the checker."""
    cert, key = _keys()
    print(f"\n== Memory: {', '.join(map(str, counts))} CT slices 512x512, {CORES} cores ==")
    runs: list[tuple[int, dict[str, float]]] = []
    for n in counts:
        iso = OUT / f"memory{n}.iso"
        figures = _author(str(_study(n)), str(iso), str(cert), str(key))
        checked = _measure("check", str(iso), str(cert))
        iso.unlink(missing_ok=True)
        figures["check_mib"] = checked["peak_mib"]
        print(
            f"author {n:6d} slices: peak {figures['peak_mib']:6.1f} MiB "
            f"(main {figures['main_mib']:.1f}, workers {figures['workers_mib']:.1f})  "
            f"{figures['seconds']:7.2f} s  DICOMDIR step {figures['dicomdir_ms']:6.0f} ms "
            f"({figures['dicomdir_ms'] / n:.3f} ms per slice)"
        )
        print(
            f"check  {n:6d} slices: peak {checked['peak_mib']:6.1f} MiB  "
            f"{checked['seconds']:7.2f} s  ({checked['verdict']})"
        )
        runs.append((n, figures))
    for (n0, a), (n1, b) in itertools.pairwise(runs):
        peak, main, workers, check = (
            (b[key] - a[key]) * 1024 / (n1 - n0)
            for key in ("peak_mib", "main_mib", "workers_mib", "check_mib")
        )
        print(
            f"growth {n0} -> {n1} slices: author {peak:+.2f} KiB per slice "
            f"(main {main:+.2f}, workers {workers:+.2f}), check {check:+.2f} KiB per slice"
        )


def main() -> None:
    OUT.mkdir(exist_ok=True)
    if MEMORY_SLICES:
        memory_growth(MEMORY_SLICES)
        return
    cert, key = _keys()

    study = _study(SLICES)
    mb = _mb(study)
    files = sorted(p for p in study.rglob("*") if p.is_file())
    print(f"\n== Disc benchmarks: {len(files)} CT slices 512x512 16-bit, {mb:.0f} MB ==")

    iso = OUT / "discmaker.iso"
    iso.unlink(missing_ok=True)
    ours = _author(str(study), str(iso), str(cert), str(key))
    print(
        f"discmaker author : {ours['seconds']:7.2f} s  {mb / ours['seconds']:6.1f} MB/s  "
        f"peak {ours['peak_mib']:.0f} MiB  "
        f"({ours['watermarked']:.0f}/{ours['images']:.0f} watermarked, "
        f"DICOMDIR step {ours['dicomdir_ms']:.0f} ms)"
    )

    ref_sign: Path | None = None
    rsa_cert = Path()
    if _have("dcmsign", "dcmmkdir", "xorriso", "openssl"):
        ref = OUT / "reference"
        shutil.rmtree(ref, ignore_errors=True)
        (ref / "tree" / "DICOM").mkdir(parents=True)
        rsa_key, rsa_cert = ref / "rsa.pem", ref / "rsa_cert.pem"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(rsa_key), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-new",
                "-key",
                str(rsa_key),
                "-subj",
                "/CN=bench",
                "-days",
                "2",
                "-out",
                str(rsa_cert),
            ],
            check=True,
            capture_output=True,
        )
        time.sleep(1.1)  # dcmsign refuses signatures made in the certificate's first second
        sign = [
            [
                "dcmsign",
                "--sign",
                str(rsa_key),
                str(rsa_cert),
                str(f),
                str(ref / "tree" / "DICOM" / f"IM{n:06d}"),
            ]
            for n, f in enumerate(files)
        ]
        mkdir = ["dcmmkdir", "+D", "DICOMDIR", "+r", "DICOM"]
        mkiso = [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-J",
            "-R",
            "-V",
            "BENCH",
            "-o",
            str(ref / "ref.iso"),
            "tree",
        ]
        t_sign = _timed(sign, jobs=CORES)
        t_dir = _timed([mkdir], cwd=ref / "tree")
        t_iso = _timed([mkiso], cwd=ref)
        total = t_sign + t_dir + t_iso
        print(
            f"dcmtk reference  : {total:7.2f} s  {mb / total:6.1f} MB/s  "
            f"(dcmsign on {CORES} cores {t_sign:.2f} s, dcmmkdir {t_dir:.2f} s, "
            f"xorriso {t_iso:.2f} s)"
        )
        print(
            f"author ratio     : discmaker takes {ours['seconds'] / total:.2f} "
            "of the reference time"
        )
        ref_sign = ref / "tree" / "DICOM"
    else:
        print("dcmtk reference  : skipped (install dcmtk, xorriso, openssl)")

    theirs = _measure("check", str(iso), str(cert))
    print(
        f"discmaker check  : {theirs['seconds']:7.2f} s  {mb / theirs['seconds']:6.1f} MB/s  "
        f"peak {theirs['peak_mib']:.0f} MiB  verdict {theirs['verdict']}"
    )
    if ref_sign is not None:
        signed = sorted(ref_sign.iterdir())
        t_verify = _timed(
            [["dcmsign", "--verify", "+cf", str(rsa_cert), str(f)] for f in signed], jobs=CORES
        )
        names = [str(f) for f in signed]
        t_sha = _timed([["sha256sum", *part] for part in _chunks(names, CORES)], jobs=CORES)
        print(f"dcmsign --verify : {t_verify:7.2f} s  {mb / t_verify:6.1f} MB/s  ({CORES} cores)")
        print(f"sha256sum floor  : {t_sha:7.2f} s  {mb / t_sha:6.1f} MB/s  ({CORES} cores)")
        print(
            f"check ratios     : {t_verify / theirs['seconds']:.1f}x faster than dcmsign --verify; "
            f"{theirs['seconds'] / t_sha:.1f}x the sha256sum floor"
        )

    small = _study(SLICES // 3)
    small_iso = OUT / "small.iso"
    small_iso.unlink(missing_ok=True)
    a_small = _author(str(small), str(small_iso), str(cert), str(key))
    c_small = _measure("check", str(small_iso), str(cert))
    grown = SLICES - SLICES // 3

    def per_slice(a: dict[str, float], b: dict[str, float]) -> float:
        return (b["peak_mib"] - a["peak_mib"]) * 1024 / grown

    print(
        f"peak memory      : author {a_small['peak_mib']:.0f} -> {ours['peak_mib']:.0f} MiB "
        f"({per_slice(a_small, ours):+.1f} KiB per slice), "
        f"check {c_small['peak_mib']:.0f} -> {theirs['peak_mib']:.0f} MiB "
        f"({per_slice(c_small, theirs):+.1f} KiB per slice) for {SLICES // 3} -> {SLICES} slices"
    )
    if CORES > 1:  # Amdahl from one and all cores: the serial share decides what more cores buy
        one = _measure("author", str(study), str(iso), str(cert), str(key), "1")
        serial = max(0.0, min(1.0, (CORES * ours["seconds"] / one["seconds"] - 1) / (CORES - 1)))
        est = one["seconds"] * (serial + (1 - serial) / 16)
        print(
            f"author scaling   : 1 core {one['seconds']:.2f} s, {CORES} cores "
            f"{ours['seconds']:.2f} s: serial share {serial:.2f}, 16 cores estimated {est:.2f} s"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--author-job"]:
        _author_job(sys.argv[2:])
    else:
        main()
