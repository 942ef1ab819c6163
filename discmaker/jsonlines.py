"""Append-only JSON-lines files (the import log, the station's audit log).

One JSON object per line, each written with a single ``write`` under an exclusive lock, so
writers in several threads or processes never interleave; a line cut short by a crash is
never glued to the next one (a newline goes first), and readers skip it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

try:  # POSIX; elsewhere one write() per line is the only guard
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class AppendLog:
    """One open append-only file. Methods raise OSError; callers word it for their users."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> AppendLog:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Open for appending, creating the file (mode 0600) and its folder (0700)."""
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, mode=0o700)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.fsync(fd)
        os.close(fd)

    @contextlib.contextmanager
    def _locked(self, fd: int) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def append(self, record: Mapping[str, Any], *, durable: bool = False) -> None:
        """Append ``record`` as one line; ``durable`` flushes it to the disk first."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not open")
        line = json.dumps(record, sort_keys=True, ensure_ascii=True).encode() + b"\n"
        fd = self._fd
        with self._locked(fd):
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # the last line was cut short: never glue onto it
            os.write(fd, line)
            if durable:
                os.fsync(fd)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON objects of ``path`` in order; a missing file has none, and lines
    that are not complete objects (a crash mid-write) are skipped."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


__all__ = ["AppendLog", "read_records"]
