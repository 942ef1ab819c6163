"""Run one discmaker job in a fresh process and print its time and peak memory as JSON.

A fresh process per measurement keeps peak-RSS figures honest (``ru_maxrss`` only grows).
Usage: python -m bench._measure author STUDY OUT CERT KEY [WORKERS] | check DISC CERT
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from discmaker.author.create import AuthorRequest, author
from discmaker.check.verify import check_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.disc.media import Medium
from discmaker.parallel import default_workers


def _own_peak_kib() -> int:
    """VmHWM: this process's peak RSS since exec (ru_maxrss would include the parent's)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: best effort


def _peak_mib() -> float:
    """The largest process of the job: this one or one of its worker processes."""
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(_own_peak_kib(), workers) / 1024


def main(argv: list[str]) -> None:
    job = argv[0]
    started = time.perf_counter()
    if job == "author":
        study, out, cert, key = map(Path, argv[1:5])
        workers = int(argv[5]) if len(argv) > 5 else default_workers()
        out.unlink(missing_ok=True)
        request = AuthorRequest(
            inputs=(study,),
            out=out,
            key=signing.load_private_key(key, passphrase=b"bench"),
            cert=signing.load_certificate(cert),
            label="BENCH",
            medium=Medium.DVD,
            workers=workers,
        )
        result = author(request)
        extra: dict[str, object] = {"images": result.images, "watermarked": result.watermarked}
    else:
        disc, cert = Path(argv[1]), Path(argv[2])
        report = check_disc(disc, trust=TrustStore.from_paths([cert]), workers=default_workers())
        extra = {"verdict": report.verdict.value, "images": len(report.images)}
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mib": _peak_mib(), **extra}))


if __name__ == "__main__":
    main(sys.argv[1:])
