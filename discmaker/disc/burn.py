"""Burning an authored ISO image to a CD/DVD/BD with xorriso, and reading it back.

* :func:`list_drives` asks ``xorriso -devices`` which writable drives this user may use.
* :func:`burn` runs the standard cdrecord-style burn,
  ``xorriso -as cdrecord -v dev=DRIVE blank=as_needed disc.iso``
  (``blank=as_needed`` blanks a rewritable disc first when it is not empty, and does nothing
  to a blank CD-R).
* :func:`verify_burn` reads the disc back and runs the full check on it: a burn is only done
  once the disc in the drive verifies.

xorriso's ``stdio:/path/file.iso`` pseudo-drive writes to a file instead of a disc; the tests
burn through it. Nothing here prints: progress goes to the callback, failures are raised as
discmaker errors with xorriso's last lines in the message.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from discmaker.errors import InputError, OutputError

Progress = Callable[[str, int, int], None]

STDIO_PREFIX = "stdio:"
INSTALL_HINT = (
    "Burning needs the program xorriso, which is not installed on this computer. Ask IT to "
    "install it (Debian/Ubuntu: 'sudo apt install xorriso'; Fedora: 'sudo dnf install "
    "xorriso'; macOS: 'brew install xorriso'), or save the disc as an ISO file and burn it "
    "with the computer's usual burning program."
)
_TAIL_LINES = 8

# e.g.  0  -dev '/dev/sr0' rwrw-- :  'HL-DT-ST' 'DVDRAM GH24NSD1'
_DEVICE_LINE = re.compile(r"^\s*(\d+)\s+-dev\s+'([^']+)'\s+(\S+)\s*:\s*(.*?)\s*$")
_QUOTED = re.compile(r"'([^']*)'?")
_WRITTEN = re.compile(r"(\d+)\s+of\s+(\d+)\s+MB\s+written")


@dataclass(frozen=True)
class Drive:
    """A drive xorriso can use: ``address`` is what goes after ``dev=``."""

    address: str
    vendor: str = ""
    model: str = ""
    permissions: str = ""
    index: int = 0

    @property
    def description(self) -> str:
        name = " ".join(p for p in (self.vendor, self.model) if p)
        return f"{name} ({self.address})" if name else self.address


def find_xorriso() -> str | None:
    """The path of the xorriso program, or None when it is not installed."""
    return shutil.which("xorriso")


def parse_devices(text: str) -> list[Drive]:
    """The drives listed in the output of ``xorriso -devices`` (or ``-device_links``).

    Only lines of the form ``N  -dev 'ADDRESS' PERMS :  'VENDOR' 'MODEL'`` count; banners,
    ``SORRY : No drives found`` and other messages are ignored, so no drives gives ``[]``.
    """
    drives: list[Drive] = []
    for line in text.splitlines():
        match = _DEVICE_LINE.match(line)
        if not match:
            continue
        index, address, perms, rest = match.groups()
        names = [n.strip() for n in _QUOTED.findall(rest)]
        drives.append(
            Drive(
                address=address,
                vendor=names[0] if names else "",
                model=names[1] if len(names) > 1 else "",
                permissions=perms,
                index=int(index),
            )
        )
    return drives


def list_drives(*, timeout: float = 120.0) -> list[Drive]:
    """The writable drives this user may use; ``[]`` when there are none or no xorriso."""
    exe = find_xorriso()
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, "-devices"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    # xorriso writes the list to stdout and its messages to stderr; exit 32 means "SORRY:
    # no drives found", which is an answer, not a failure.
    return parse_devices(proc.stdout + "\n" + proc.stderr)


def burn_command(iso: Path, drive: str, *, xorriso: str = "xorriso") -> list[str]:
    """The xorriso command line :func:`burn` runs (shown to staff for scripting)."""
    return [xorriso, "-as", "cdrecord", "-v", f"dev={drive}", "blank=as_needed", str(iso)]


def burn(iso: Path, drive: str, *, progress: Progress | None = None) -> None:
    """Write the ISO image ``iso`` to the disc in ``drive`` (e.g. ``/dev/sr0``).

    ``progress("burn", megabytes_done, megabytes_total)`` is called as xorriso reports.
    Raises :class:`InputError` when xorriso or the image is missing, and
    :class:`OutputError` with xorriso's last lines when the burn fails. On KeyboardInterrupt
    xorriso is stopped and the interrupt re-raised: the disc is then incomplete.
    """
    exe = find_xorriso()
    if exe is None:
        raise InputError(INSTALL_HINT)
    if not iso.is_file():
        raise InputError(f"The disc image {iso} does not exist. Create the disc again.")
    total = max(1, math.ceil(iso.stat().st_size / (1 << 20)))
    if progress:
        progress("burn", 0, total)
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        proc = subprocess.Popen(
            burn_command(iso, drive, xorriso=exe),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        raise InputError(f"xorriso could not be started ({exc.strerror}). {INSTALL_HINT}") from exc
    with proc:
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                for line in raw.replace("\r", "\n").splitlines():
                    if not line.strip():
                        continue
                    tail.append(line.rstrip())
                    match = _WRITTEN.search(line)
                    if match and progress:
                        done, of = int(match.group(1)), int(match.group(2))
                        progress("burn", min(done, of or total), of or total)
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if rc != 0:
        said = "\n".join(f"  {line}" for line in tail)
        raise OutputError(
            f"Burning to {drive} failed (xorriso exit status {rc}). Check that a blank, "
            "writable disc is in the drive and that the disc is big enough, then try again "
            f"with a new disc. xorriso said:\n{said}"
        )
    if progress:
        progress("burn", total, total)


def readable_path(drive: str) -> Path:
    """Where the checker reads a burned disc: the device itself, or the ``stdio:`` file."""
    if drive.startswith(STDIO_PREFIX):
        return Path(drive[len(STDIO_PREFIX) :])
    return Path(drive)


__all__ = [
    "INSTALL_HINT",
    "STDIO_PREFIX",
    "Drive",
    "burn",
    "burn_command",
    "find_xorriso",
    "list_drives",
    "parse_devices",
    "readable_path",
]
