"""Received instances on disk, durable before the sender hears "success".

Each instance is written to a temporary file in its study's folder, flushed to the disk,
renamed to its final name and the folder flushed too: after a crash or a power cut an
instance the sender was told is stored is there whole, and a half-received one is only a
temporary file (removed at the next start). Names are hashes of the UIDs, never the UIDs or
anything else a sender chose, so no sender decides where a file goes.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import os
from pathlib import Path

from discmaker.atomic import PARTIAL, copy_file, fsync_dir, replace_file


def _name(uid: str) -> str:
    return hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Spool:
    """The folder of received instances, one subfolder per study."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        return self.root / _name(study_uid) / f"{_name(sop_uid)}.dcm"

    def write(self, study_uid: str, sop_uid: str, data: bytes) -> Path:
        """Store ``data`` durably; returns its path. Raises OSError (e.g. the disk is full),
        leaving nothing under the final name."""
        path = self.path_for(study_uid, sop_uid)
        folder = path.parent
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(self.root)
        replace_file(path, data, mode=0o600)
        return path

    def take(self, study_uid: str, sop_uid: str, source: Path) -> Path:
        """Move the file ``source`` (where the receiver wrote an instance as it arrived) in
        durably, without reading it into memory: flushed to the disk, then renamed to its
        final name (copied there when it is on another file system). Returns its path;
        raises OSError, leaving nothing under the final name."""
        path = self.path_for(study_uid, sop_uid)
        folder = path.parent
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(self.root)
        try:
            with source.open("rb") as handle:
                os.fsync(handle.fileno())  # the receiver flushed it to the system, not the disk
            source.chmod(0o600)
            source.replace(path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            copy_file(source, path, mode=0o600)  # another file system: copied, in chunks
            return path
        fsync_dir(folder)
        return path

    def holds(self, study_uid: str, sop_uid: str, data: bytes | Path) -> bool:
        """Whether exactly ``data`` (bytes, or a file's content) is stored for this instance
        already."""
        path = self.path_for(study_uid, sop_uid)
        try:
            size = len(data) if isinstance(data, bytes) else data.stat().st_size
            if path.stat().st_size != size:
                return False
            if isinstance(data, bytes):
                return path.read_bytes() == data
            return filecmp.cmp(path, data, shallow=False)  # in chunks
        except OSError:
            return False

    def remove(self, paths: list[str]) -> None:
        """Delete received files (their disc verified); empty study folders go too."""
        folders = set()
        for name in paths:
            path = Path(name)
            if self.root not in path.parents:
                continue  # never outside the spool, whatever the database says
            with contextlib.suppress(OSError):
                path.unlink()
            folders.add(path.parent)
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def clean_partials(self) -> int:
        """Remove temporary files a crash left behind; returns how many."""
        removed = 0
        for path in self.root.glob(f"*/*{PARTIAL}*"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        return removed


__all__ = ["Spool"]
