"""Small files that appear whole or not at all: one way, used by every writer of them.

The bytes go to a temporary file in the destination's own folder (same file system), are
flushed to the disk, get their final mode, and are then renamed over the destination, so a
reader, a crash or Ctrl-C sees the previous file or the complete new one, never a part.
(ISO images and USB folders have their own no-clobber publishing in :mod:`discmaker.disc.iso`.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PARTIAL = ".partial-"  # in the name of a file or folder while it is written (then renamed)


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` as ``path`` atomically, replacing any previous file. Raises OSError."""
    _publish(path, lambda handle: handle.write(data), mode)


def copy_file(source: Path, path: Path, *, mode: int = 0o644) -> None:
    """Copy ``source`` to ``path`` atomically (a disc image into a robot's folder)."""
    with source.open("rb") as src:
        _publish(path, lambda handle: shutil.copyfileobj(src, handle, 1 << 20), mode)


def _publish(path: Path, fill: Callable[[BinaryIO], object], mode: int) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable, where the file system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (FAT on some kernels) refuse directory fsync
    finally:
        os.close(fd)


__all__ = ["PARTIAL", "copy_file", "fsync_dir", "replace_file"]
