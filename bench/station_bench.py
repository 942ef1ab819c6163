"""Station benchmark: a 300-slice CT study sent to the disc station with dcmtk's storescu;
the time from the last instance acknowledged to a verified ISO, against `discmaker author`
of the same files in the same run (the ratio the issue targets is <= 1.2), with the station
sealing instances as they arrive (its default) and without (``prepare_ahead = false``).

The station's quiet period (the wait that decides a study is complete) is reported apart:
it is a setting, not work.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

from bench.disc_bench import OUT, SLICES, _measure, _study
from discmaker.crypto import signing
from discmaker.station.config import StationConfig
from discmaker.station.service import Station
from discmaker.ui.cli_station import preload_workers, receive_in_chunks

QUIET = 0.5


def main() -> None:
    if shutil.which("storescu") is None:
        print("\n== Station benchmark: skipped (install dcmtk for storescu) ==")
        return
    keys = OUT / "keys"
    if not keys.exists():
        signing.write_identity(
            signing.generate_identity("Benchmark Centre"), keys, passphrase=b"bench"
        )
    cert_path, key_path = keys / "cert.pem", keys / "key.pem"
    study = _study(SLICES)
    files = sorted(str(p) for p in study.rglob("*") if p.is_file())
    print(f"\n== Station benchmark: {len(files)} CT slices sent with storescu ==")

    iso = OUT / "station-reference.iso"
    iso.unlink(missing_ok=True)
    reference = _measure("author", str(study), str(iso), str(cert_path), str(key_path))
    print(f"discmaker author  : {reference['seconds']:7.2f} s on the same files")

    for ahead in (True, False):
        _station_run(files, reference["seconds"], cert_path, key_path, ahead=ahead)


def _station_run(
    files: list[str], reference: float, cert_path: Path, key_path: Path, *, ahead: bool
) -> None:
    root = OUT / "station"
    shutil.rmtree(root, ignore_errors=True)
    config = StationConfig(
        aet="BENCH",
        host="127.0.0.1",
        port=0,
        out=root / "discs",
        state=root / "state",
        key=key_path,
        cert=cert_path,
        quiet_seconds=QUIET,
        label_pdf=False,
        prepare_ahead=ahead,
    )
    preload_workers()  # as `discmaker station` does in its own process
    receive_in_chunks()
    key = signing.load_private_key(key_path, passphrase=b"bench")
    with Station(config, key=key, cert=signing.load_certificate(cert_path)) as station:
        stop, listening = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=station.run,
            args=(stop,),
            kwargs={"poll": 0.02, "on_listening": lambda _: listening.set()},
        )
        thread.start()
        listening.wait(30)
        started = time.perf_counter()
        subprocess.run(
            ["storescu", "-aec", "BENCH", "127.0.0.1", str(station.receiver.port), *files],
            check=True,
            capture_output=True,
        )
        received = time.perf_counter()
        while not any(j.state in ("verified", "failed") for j in station.queue.jobs()):
            time.sleep(0.01)
        done = time.perf_counter()
        stop.set()
        thread.join()
        (job,) = station.queue.jobs()
    work = done - received - QUIET
    mode = "sealing as instances arrive" if ahead else "prepare_ahead = false"
    print(f"-- {mode} --")
    print(f"receive (storescu): {received - started:7.2f} s for {len(files)} instances")
    print(
        f"to a verified ISO : {done - received:7.2f} s after the last instance "
        f"({QUIET:.1f} s of it the quiet period; job {job.state}, {job.images} images)"
    )
    print(f"first to verified : {done - started:7.2f} s")
    print(
        f"station ratio     : {work / reference:.2f} of author's time "
        "(after the last instance, quiet period excluded)"
    )


if __name__ == "__main__":
    main()
