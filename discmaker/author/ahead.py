"""Step 3 ahead of time: instances prepared (normalised, sealed, encoded) before their disc is
authored, for a long-lived host that receives a study file by file (the disc station).

Sealing is most of an author's work, and a station that waits for a study to be complete
before it starts leaves its cores idle while the study arrives. :class:`PreparedAhead` takes
each file as it arrives (:meth:`~PreparedAhead.submit`) and prepares it in its own worker
processes, exactly as :func:`~discmaker.author.create.author` would (the same function, the
same key); given to an :class:`~discmaker.author.create.AuthorRequest` as ``ahead``, the
author takes each result instead of preparing the file again, waiting for one under way.

A result is used only when it is certain to be what the author would make now: the file is
unchanged since it was submitted (same size, modification time and inode; a file replaced
meanwhile is prepared again by the author) and the author seals with the same key. Anything
that fails ahead of time is dropped silently: the author then prepares that file itself and
reports the problem as it always does. Results live in memory and their files in ``folder``
(in the station's state folder). :meth:`~PreparedAhead.start`, called by the one host that
owns the folder (the station, holding its state folder's lock), removes what an earlier
process left there; a result nobody takes is removed by :meth:`~PreparedAhead.forget` or at
the close, which removes this object's files only (a second station refused at the lock
must not take the running one's).

Thread-safe: the station submits from its receiver's association threads and takes from its
job loop.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discmaker.author.prepare import Prepared, PrepareJob, prepare, sealing_key
from discmaker.crypto import signing
from discmaker.format.manifest import OmittedFile
from discmaker.parallel import ContextPool

log = logging.getLogger(__name__)

MAX_PENDING = 5_000
"""Files held prepared (or under way) at most (a 3,000-slice CT study fits; each result
holds about 10-20 KB in memory until its author takes it); past it a file waits for its
author."""
NICENESS = 10
"""The workers run below the host (``os.nice``): a sender waiting for its C-STORE answer
goes first, sealing takes the cores left over."""


@dataclass(frozen=True)
class _Stamp:
    """What says a file is unchanged: size, modification time, inode."""

    size: int
    mtime_ns: int
    inode: int


def _stamp(path: Path) -> _Stamp | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return _Stamp(info.st_size, info.st_mtime_ns, info.st_ino)


@dataclass(frozen=True)
class _Entry:
    stamp: _Stamp
    work: Path
    future: Future[Prepared | OmittedFile]


class PreparedAhead:
    """Instances prepared in ``workers`` processes of their own, sealed with ``key``."""

    def __init__(
        self, folder: Path, key: Ed25519PrivateKey, *, workers: int, max_pending: int = MAX_PENDING
    ) -> None:
        self.key_id = signing.key_id(key.public_key())
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._raw_key = key.private_bytes_raw()
        self._workers = workers
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._names = itertools.count()
        self._pool: ContextPool | None = None  # started at the first file
        self._closed = False
        self.used = 0  # results the author took (for the log and the tests)

    def start(self) -> None:
        """Remove what an earlier process left in the folder (nobody holds it any more) and
        start the worker processes now (else at the first file, which then waits for them:
        a second or so, too long for a sender waiting for its C-STORE answer). Only for the
        folder's owner: the files of another live object would go too."""
        _empty(self.folder)
        with self._lock:
            pool = self._started()
        pool.start()

    def _started(self) -> ContextPool:
        if self._pool is None:
            self._pool = ContextPool(
                sealing_key, (self._raw_key,), workers=self._workers, nice=NICENESS
            )
        return self._pool

    def submit(self, source: Path) -> None:
        """Prepare ``source`` (a file of the station's spool) in the background."""
        stamp = _stamp(source)
        if stamp is None:
            return
        with self._lock:
            if self._closed or len(self._entries) >= self._max_pending:
                return
            old = self._entries.pop(str(source), None)
            if old is not None:  # sent again: the newer file counts
                _drop(old)
            work = self.folder / f"{os.getpid()}-{next(self._names):08d}.dcm"
            job = PrepareJob(source=str(source), work_path=str(work), relative=source.name)
            try:
                future = self._started().submit(prepare, job)
            except Exception as exc:  # a worker died (killed, out of memory): never the
                # sender's problem; the author prepares this file, new workers take the next
                log.warning("ahead: workers lost (%s); starting new ones", type(exc).__name__)
                broken, self._pool = self._pool, None
                if broken is not None:
                    broken.close()
                return
            self._entries[str(source)] = _Entry(stamp, work, future)

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (none before the first file or :meth:`start`)."""
        with self._lock:
            return self._pool.pids() if self._pool is not None else []

    def holds(self, source: Path) -> bool:
        """Whether ``source`` was submitted and not taken or forgotten since."""
        with self._lock:
            return str(source) in self._entries

    def take(self, source: Path, key_id: bytes, work_path: Path) -> Prepared | None:
        """The prepared ``source``, its file moved to ``work_path``; waits for one under way.
        None (and nothing at ``work_path``) when it was not submitted, failed, was sealed with
        another key than ``key_id``'s or the file changed since it was submitted."""
        with self._lock:
            entry = self._entries.pop(str(source), None)
        if entry is None:
            return None
        try:
            result = entry.future.result()
        except BaseException:  # failed, cancelled, or its worker died: the author does it
            entry.work.unlink(missing_ok=True)
            return None
        if (
            not isinstance(result, Prepared)
            or key_id != self.key_id
            or _stamp(source) != entry.stamp
        ):
            entry.work.unlink(missing_ok=True)
            return None
        try:
            shutil.move(entry.work, work_path)
        except OSError as exc:  # gone (removed by hand?) or the disc is full: as if not taken
            log.warning("ahead: a prepared file cannot be used (%s); preparing it again", exc)
            return None
        with self._lock:
            self.used += 1
        return result

    def forget(self, sources: Iterable[str | Path]) -> None:
        """Drop the results of ``sources`` (their disc is made, or failed)."""
        with self._lock:
            entries = [self._entries.pop(str(s), None) for s in sources]
        for entry in entries:
            if entry is not None:
                _drop(entry)

    def close(self) -> None:
        """Stop the workers (work under way is finished first) and remove this object's
        results."""
        with self._lock:
            self._closed = True
            entries, self._entries = list(self._entries.values()), {}
            pool, self._pool = self._pool, None
        for entry in entries:
            entry.future.cancel()
        if pool is not None:
            pool.close()
        for entry in entries:
            entry.work.unlink(missing_ok=True)

    def __enter__(self) -> PreparedAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop(entry: _Entry) -> None:
    """Forget ``entry``: cancelled if not started, its file removed once it is written."""
    if not entry.future.cancel():
        entry.future.add_done_callback(lambda _: entry.work.unlink(missing_ok=True))


def _empty(folder: Path) -> None:
    for path in folder.glob("*.dcm"):
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("ahead: cannot remove %s: %s", path, exc)


__all__ = ["MAX_PENDING", "PreparedAhead"]
