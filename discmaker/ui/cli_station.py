"""``discmaker station``: run the disc station, and ask it how it is doing.

``discmaker station [run]`` receives studies and makes discs until stopped (SIGTERM or
Ctrl-C; a job under way is resumed at the next start). ``status``, ``jobs``, ``retry JOB``
and ``cancel JOB`` read and change the station's queue, also while it runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from discmaker import errors
from discmaker.crypto import signing
from discmaker.ui.wording import plain

STATUS_FORMAT = "discmaker-station-status"
JOBS_FORMAT = "discmaker-station-jobs"


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> list[tuple[str, Any]]:
    """Add ``station`` and its actions to ``sub``; returns (name, parser) for each."""
    p = sub.add_parser(
        "station",
        help="run the disc station: receive studies from the PACS, make discs unattended",
        description="Without an action: run (receive and make discs until stopped).",
    )
    _run_options(p)
    actions = p.add_subparsers(dest="station_command", parser_class=parser_class)
    named: list[tuple[str, Any]] = [("station", p)]
    run = actions.add_parser("run", help="receive studies and make discs until stopped")
    _run_options(run)
    named.append(("station run", run))
    for name, text in (
        ("status", "how many jobs are in each state, and the studies still arriving"),
        ("jobs", "the most recent jobs, newest first"),
    ):
        a = actions.add_parser(name, help=text)
        _config_option(a)
        a.add_argument("--json", action="store_true", help="print JSON on stdout")
        named.append((f"station {name}", a))
    for name, text in (
        ("retry", "make the disc of a failed or cancelled job again"),
        ("cancel", "cancel a job that has not finished"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("job", type=int, metavar="JOB", help="the job's number (station jobs)")
        _config_option(a)
        a.add_argument("--json", action="store_true", help="print the job as JSON on stdout")
        named.append((f"station {name}", a))
    return named


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="the station's TOML configuration (default: none; then --out, --key and --cert "
        "are needed; see examples/station.toml)",
    )
    p.add_argument(
        "--state",
        type=Path,
        help="the station's state folder: received instances, queue, audit log (default: "
        "the configuration's, else ~/.local/share/discmaker/station)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("--aet", help="our AE title (default: the configuration's, else DISCMAKER)")
    p.add_argument(
        "--allowed-callers",
        metavar="AET,AET",
        help="calling AE titles that may send studies (default: the configuration's; one "
        "of them or allow_any_caller is required)",
    )
    p.add_argument(
        "--port",
        type=int,
        help="DICOM port to listen on (default: the configuration's, else 11112)",
    )
    p.add_argument(
        "--out", type=Path, help="folder for the discs and labels (default: the configuration's)"
    )
    p.add_argument("--key", type=Path, help="signing key (default: the configuration's)")
    p.add_argument("--cert", type=Path, help="certificate (default: the configuration's)")
    p.add_argument(
        "--quiet-seconds",
        type=float,
        help="a study is complete when nothing arrived for it this long (default: the "
        "configuration's, else 30)",
    )


def _load(args: argparse.Namespace) -> Any:
    from discmaker.station.config import load

    return load(
        args.config,
        state=args.state,
        aet=args.aet,
        allowed_callers=args.allowed_callers,
        port=args.port,
        out=args.out,
        key=args.key,
        cert=args.cert,
        quiet_seconds=args.quiet_seconds,
    )


def _state_folder(args: argparse.Namespace) -> Path:
    """Where the queue is, for the actions that only read or change it."""
    from discmaker.station.config import default_state, load

    if args.state is not None:
        return Path(args.state).resolve()
    if args.config is not None:
        return Path(load(args.config).state)
    return default_state()


def cmd_station(args: argparse.Namespace, console: Console) -> int:
    action = args.station_command or "run"
    if action == "run":
        return _run(_load(args), console)
    from discmaker.station.config import QUEUE_NAME
    from discmaker.station.queue import Queue

    state = _state_folder(args)
    if not (state / QUEUE_NAME).is_file():
        raise errors.UsageError(
            f"There is no station queue in {state}. Give the station's --config (or "
            "--state), or start the station first."
        )
    read_only = action in ("status", "jobs")
    with Queue(state / QUEUE_NAME, read_only=read_only) as queue:
        if action == "status":
            return _status(queue, state, console, as_json=args.json)
        if action == "jobs":
            return _jobs(queue, console, as_json=args.json)
        now = time.time()
        job = (
            queue.retry(args.job, now=now) if action == "retry" else queue.cancel(args.job, now=now)
        )
        if args.json:
            _json(job.to_json())
        else:
            console.print(f"Job {job.id} is now {job.state}.")
        return 0


def _run(config: Any, console: Console) -> int:
    from discmaker.station.config import read_passphrase
    from discmaker.station.service import Station

    passphrase = read_passphrase(config) or signing.passphrase_from_env()
    if passphrase is None:
        raise errors.UsageError(
            "The station needs the signing key's passphrase: set passphrase_file in [signing] "
            f"(a file only the station's user can read) or {signing.PASSPHRASE_ENV}."
        )
    preload_workers()
    receive_in_chunks()
    key = signing.load_private_key(config.key, passphrase=passphrase)
    cert = signing.load_certificate(config.cert)
    signing.check_pair(key, cert)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with Station(config, key=key, cert=cert) as station:

            def listening(port: int) -> None:
                print(
                    f"discmaker station {config.aet} listening on port {port}; discs go to "
                    f"{config.out}",
                    file=sys.stderr,
                    flush=True,
                )

            station.run(stop, on_listening=listening)
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print("Station stopped.", style="yellow")
    return 0


def preload_workers() -> None:
    """Worker processes of a multi-threaded process start from a forkserver: have it import
    what authoring and checking need once, not every disc's workers again. A setting of the
    process, so only ever made in the station's own process (this command), never by the
    library."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.set_forkserver_preload(
            ["discmaker.author.create", "discmaker.check.verify"]
        )


def receive_in_chunks() -> None:
    """Have pynetdicom write each arriving C-STORE data set to a file as it comes, instead of
    holding it in memory whole (a 200 MB instance cost the station 385 MB): its module-wide
    ``STORE_RECV_CHUNKED_DATASET``. Its files go to the temporary folder (``TMPDIR``, else
    /tmp); the station renames each into its spool, or copies it in chunks from another file
    system. A setting of the process, so only ever made in the station's own process (this
    command), never by the library. (Not ``tempfile.tempdir``: multiprocessing puts its
    sockets there, and a long state path exceeds the 107 characters a socket path may have.)
    """
    from pynetdicom import _config

    _config.STORE_RECV_CHUNKED_DATASET = True


def _status(queue: Any, state: Path, console: Console, *, as_json: bool) -> int:
    counts = queue.counts()
    waiting = queue.waiting_studies()
    if as_json:
        _json(
            {
                "format": STATUS_FORMAT,
                "format_version": 1,
                "state": str(state),
                "jobs": counts,
                "waiting_studies": [
                    {
                        "study_instance_uid": w.study_uid,
                        "instances": w.instances,
                        "interrupted": w.interrupted is not None,
                    }
                    for w in waiting
                ],
            }
        )
        return 0
    console.print(Text.assemble(("Station state ", "bold"), plain(state)))
    console.print(
        Text.assemble(
            ("Jobs          ", "bold"),
            ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none yet",
        )
    )
    late = [j for j in queue.jobs(limit=1000) if j.late]
    if late:
        console.print(
            Text.assemble(
                ("Late          ", "bold"),
                (
                    f"{sum(j.late for j in late)} instance(s) arrived after their disc was "
                    f"started (job {', '.join(str(j.id) for j in late)}): "
                    "'discmaker station retry JOB' makes that disc again with them",
                    "yellow",
                ),
            )
        )
    interrupted = sum(1 for w in waiting if w.interrupted is not None)
    console.print(
        Text.assemble(
            ("Arriving      ", "bold"),
            f"{len(waiting)} study(ies), {sum(w.instances for w in waiting)} instance(s)"
            + (f"; {interrupted} whose sender broke off" if interrupted else ""),
        )
    )
    return 0


def _jobs(queue: Any, console: Console, *, as_json: bool) -> int:
    jobs = queue.jobs(limit=50)
    if as_json:
        _json({"format": JOBS_FORMAT, "format_version": 1, "jobs": [j.to_json() for j in jobs]})
        return 0
    table = Table(header_style="bold", show_edge=False, pad_edge=False)
    for column in ("Job", "State", "Label", "Images", "Late", "Updated", "Reason"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            str(job.id),
            job.state,
            job.label,
            str(job.images or job.instances),
            str(job.late or ""),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(job.updated)),
            plain(job.reason),
        )
    console.print(table if jobs else "No jobs yet.")
    return 0


def _json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


__all__ = ["add_parsers", "cmd_station", "preload_workers", "receive_in_chunks"]
