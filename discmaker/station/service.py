"""The disc station: receive studies over DICOM and make signed discs from them, unattended.

One long-lived process. pynetdicom's threads receive (:mod:`discmaker.pacs.receive`) and call
this :class:`Station` as their sink: each instance is written durably to the spool and
recorded in the queue before the sender hears "success". The station's own loop (the thread
that calls :meth:`Station.run`) turns quiet studies into jobs and works through the jobs one
at a time, each authored with every core (:mod:`discmaker.station.jobs`).

A study is complete when nothing arrived for it for ``quiet_seconds``, or when a Media
Creation Management request names its instances (and N-ACTION initiates it). A study whose
sender broke off (an aborted association) is held back until the sender finishes it on a new
association, or until ``incomplete_seconds`` have passed; the log says which.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from discmaker.atomic import PARTIAL
from discmaker.author.ahead import PreparedAhead
from discmaker.errors import DiscmakerError, OutputError, UsageError
from discmaker.pacs.receive import (
    MediaRequest,
    MediaStatus,
    ReceivedInstance,
    Receiver,
    ReceiverConfig,
    Refused,
)
from discmaker.parallel import default_workers
from discmaker.station import jobs
from discmaker.station.audit import AuditLog
from discmaker.station.config import StationConfig
from discmaker.station.queue import Job, Queue
from discmaker.station.spool import Spool

log = logging.getLogger(__name__)

# DIMSE statuses (PS3.7 annex C, PS3.4 annex S)
_OUT_OF_RESOURCES = 0xA700
_CANNOT_UNDERSTAND = 0xC000
_OTHER_STUDY = "this SOP Instance UID was already received in another study"
_DUPLICATE_INSTANCE = 0x0111
_NO_SUCH_INSTANCE = 0x0112
_PROCESSING_FAILURE = 0x0110

# Job state -> Media Creation Management Execution Status (PS3.4 S.3.2.2)
_EXECUTION_STATUS = {
    "requested": "IDLE",
    "received": "PENDING",
    "authoring": "CREATING",
    "written": "CREATING",
    "burned": "CREATING",
    "handed-over": "CREATING",
    "verified": "DONE",
    "failed": "FAILURE",
    "cancelled": "FAILURE",
}

Clock = Callable[[], float]
AUDIT_RETRY_SECONDS = 60.0


class Station:
    """Receiver sink, job maker and job runner. Use as a context manager (closes the queue)."""

    def __init__(
        self,
        config: StationConfig,
        *,
        key: Ed25519PrivateKey,
        cert: x509.Certificate,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.key = key
        self.cert = cert
        self.clock = clock
        for folder, what in ((config.out, "output"), (config.state, "state")):
            _check_folder(folder, what)
        self.queue = Queue(config.queue_path)
        self.spool = Spool(config.spool)
        name = config.name or f"{config.aet}@{socket.gethostname()}"
        self.audit = AuditLog(config.audit_path, name)
        self.receiver = Receiver(
            ReceiverConfig(
                aet=config.aet,
                host=config.host,
                port=config.port,
                allowed_callers=config.allowed_callers,
                max_associations=config.max_associations,
                max_associations_per_address=config.max_associations_per_address,
                max_instance_bytes=config.max_instance_mb * 1_000_000 or None,
            ),
            self,
        )
        self.idle = threading.Event()  # set whenever the loop finds nothing to do (tests wait)
        self._audit_retry = 0.0  # monotonic time before which missing audit lines wait
        self.trust = jobs.self_check_trust(config.state, cert)
        # Instances are sealed as they arrive, in worker processes of their own, so that a
        # study's disc is mostly made by the time the study is complete.
        self.ahead = (
            PreparedAhead(config.state / "ahead", key, workers=config.workers or default_workers())
            if config.prepare_ahead
            else None
        )

    def close(self) -> None:
        self.receiver.stop()
        if self.ahead is not None:
            self.ahead.close()
        self.audit.close()
        self.queue.close()

    def __enter__(self) -> Station:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        *,
        poll: float = 0.25,
        on_listening: Callable[[int], None] | None = None,
    ) -> None:
        """Receive and make discs until ``stop`` is set (a job under way is finished first;
        Ctrl-C interrupts it, and it is resumed at the next start).

        One station per state folder: a second one is refused before it touches anything
        (:class:`UsageError`), so it cannot reset or clean up the first one's work.
        """
        with _exclusive(self.config.state):
            self._clean_up()
            if self.ahead is not None:
                self.ahead.start()  # before the first instance, which must not wait for it
            self.receiver.start()
            log.info(
                "station: %s listening on %s:%d",
                self.config.aet,
                self.config.host,
                self.receiver.port,
            )
            if on_listening is not None:
                on_listening(self.receiver.port)
            try:
                self._loop(stop, poll)
            finally:
                self.receiver.stop()

    def _clean_up(self) -> None:
        """What a killed station left: jobs cut short, partial files."""
        for job_id in self.queue.recover(now=self.clock()):
            log.warning("station: job %d was interrupted while authoring; it starts again", job_id)
        self._write_missing_audits()
        removed = self.spool.clean_partials() + _clean_leftovers(self.config.out)
        if self.config.hot_folder is not None and self.config.hot_folder.is_dir():
            removed += _clean_leftovers(self.config.hot_folder)
        if removed:
            log.info("station: %d unfinished file(s) from before the restart removed", removed)

    def _loop(self, stop: threading.Event, poll: float) -> None:
        delay = poll
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception:  # a locked or full disk: say so, wait longer each time, go on
                log.exception("station: the queue could not be worked on; trying again")
                delay = min(60.0, max(delay * 2, 1.0))
                stop.wait(delay)
                continue
            delay = poll
            if not busy:
                self.idle.set()
                stop.wait(poll)

    def step(self) -> bool:
        """Make jobs of complete studies, then run one job; False when there was nothing."""
        now = self.clock()
        # No job runs while this loop is here: one left authoring was cut short by an error
        for job_id in self.queue.recover(now=now, reason="started again after an error"):
            log.warning("station: job %d stopped half-way; it starts again", job_id)
        self._write_missing_audits()
        self._expire(now)
        self._make_jobs(now)
        job = self._next_job(now)
        if job is None:
            return False
        self.idle.clear()
        jobs.run_job(self, job)
        return True

    def _write_missing_audits(self) -> None:
        """Audit lines a stop or an unwritable log left out; tried again a minute later when
        the log still cannot be written (the jobs go on meanwhile)."""
        if time.monotonic() < self._audit_retry:
            return
        try:
            jobs.write_missing_audits(self)
        except DiscmakerError as exc:
            log.error("station: %s; trying again in %.0f s", exc, AUDIT_RETRY_SECONDS)
            self._audit_retry = time.monotonic() + AUDIT_RETRY_SECONDS

    def _expire(self, now: float) -> None:
        """Delete the received instances of jobs verified, failed or cancelled more than
        keep_received_days ago (and not retried since)."""
        paths = self.queue.expire(before=now - self.config.keep_received_days * 86400)
        if paths:
            self.spool.remove(paths)
            log.info(
                "station: %d received instance(s) of jobs ended %.0f day(s) ago deleted",
                len(paths),
                self.config.keep_received_days,
            )

    def _make_jobs(self, now: float) -> None:
        quiet, patience = self.config.quiet_seconds, self.config.incomplete_seconds
        for study in self.queue.waiting_studies():
            if now < study.last_received + quiet:
                continue
            if study.interrupted is not None:
                if now < study.interrupted + patience:
                    continue
                log.warning(
                    "station: study %s: its sender broke off and did not finish it within "
                    "%.0f s; authoring the %d instance(s) received",
                    study.study_uid,
                    patience,
                    study.instances,
                )
            job_id = self.queue.create_study_job(study.study_uid, now=now)
            if job_id is not None:
                log.info(
                    "station: job %d: study %s complete (%d instance(s), quiet for %.0f s)",
                    job_id,
                    study.study_uid,
                    study.instances,
                    now - study.last_received,
                )

    def _next_job(self, now: float) -> Job | None:
        patience = self.config.incomplete_seconds
        for job in self.queue.jobs_in(("requested",)):
            if now >= job.updated + patience:
                self.queue.set_state(
                    job.id,
                    "failed",
                    now=now,
                    reason="the Media Creation request was never started (no N-ACTION)",
                )
                log.warning("station: job %d: its Media Creation request was never started", job.id)
        for job in self.queue.jobs_in(("received", "written", "burned", "handed-over")):
            if job.state != "received" or job.present >= job.instances > 0:
                return job
            if now >= job.updated + self.config.incomplete_seconds:
                missing = job.instances - job.present
                self.queue.set_state(
                    job.id,
                    "failed",
                    now=now,
                    reason=f"{missing} of the {job.instances} requested instance(s) never arrived",
                )
        return None

    # -- the receiver's sink ---------------------------------------------------------------

    def store(self, instance: ReceivedInstance) -> None:
        size = instance.size
        reserve = self.config.min_free_mb * 1_000_000
        try:
            free = shutil.disk_usage(self.spool.root).free
        except OSError:
            free = reserve + size  # cannot tell: let the write decide
        if free - size < reserve:
            log.error("station: the state folder's disk is nearly full; refusing instances")
            raise Refused(
                _OUT_OF_RESOURCES,
                "the disc station's disk is nearly full; try again later",
            )
        known = self.queue.study_of(instance.sop_instance_uid)
        if known is not None and known != instance.study_uid:
            raise Refused(_CANNOT_UNDERSTAND, _OTHER_STUDY)  # before it overwrites anything
        received = instance.path if instance.path is not None else instance.data
        if known is not None and self.spool.holds(
            instance.study_uid, instance.sop_instance_uid, received
        ):
            # The same bytes again (a PACS retrying after a lost answer, a rule firing
            # twice): stored already, and no reason for another disc.
            log.debug("station: study %s: an instance it holds was sent again", known)
            return
        try:
            if instance.path is not None:
                path = self.spool.take(instance.study_uid, instance.sop_instance_uid, instance.path)
            else:
                path = self.spool.write(
                    instance.study_uid, instance.sop_instance_uid, instance.data
                )
        except OSError as exc:
            log.error("station: cannot store an instance: %s", exc)
            raise Refused(
                _OUT_OF_RESOURCES,
                f"the disc station cannot store the instance ({exc.strerror or exc}); "
                "try again later",
            ) from exc
        try:
            fate = self.queue.add_instance(
                sop_uid=instance.sop_instance_uid,
                study_uid=instance.study_uid,
                series_uid=instance.series_uid,
                sop_class=instance.sop_class_uid,
                path=str(path),
                size=size,
                calling_aet=instance.calling_aet,
                now=self.clock(),
            )
        except UsageError as exc:  # the same UID sent for two studies at the same moment
            self.spool.remove([str(path)])
            raise Refused(_CANNOT_UNDERSTAND, _OTHER_STUDY) from exc
        if self.ahead is not None and fate != "late":
            self.ahead.submit(path)
        if fate == "late":
            log.warning(
                "station: study %s: an instance arrived while its disc is being made; it is "
                "kept ('discmaker station retry' makes the disc again with it)",
                instance.study_uid,
            )
        elif fate == "again":
            log.info(
                "station: study %s was sent again after its disc was made; a new disc follows "
                "once it is complete",
                instance.study_uid,
            )

    def association_started(self, calling_aet: str) -> None:
        log.debug("station: association from %s", calling_aet)

    def association_ended(
        self, calling_aet: str, studies: frozenset[str], *, instances: int, aborted: bool
    ) -> None:
        if aborted:
            self.queue.mark_interrupted(studies, now=self.clock())
            if studies:
                log.warning(
                    "station: the association from %s broke off after %d instance(s); %d "
                    "study(ies) wait for the rest (up to %.0f s) before a disc is made",
                    calling_aet,
                    instances,
                    len(studies),
                    self.config.incomplete_seconds,
                )
        else:
            self.queue.clear_interrupted(studies)
            log.debug("station: %s sent %d instance(s)", calling_aet, instances)

    def media_request(self, request: MediaRequest) -> None:
        try:
            job_id = self.queue.create_request_job(
                request.request_uid,
                request.calling_aet,
                [uid for _, uid in request.instances],
                now=self.clock(),
                copies=request.copies,
                label_text=_label_line(request.label_text),
                label_from_instances=request.label_from_instances,
                allow_splitting=request.allow_splitting,
            )
        except UsageError as exc:
            raise Refused(_DUPLICATE_INSTANCE, str(exc)) from exc
        log.info(
            "station: media creation request from %s for %d instance(s): job %d",
            request.calling_aet,
            len(request.instances),
            job_id,
        )

    def media_action(self, request_uid: str, action: int) -> None:
        job = self.queue.job_for_request(request_uid)
        if job is None:
            raise Refused(_NO_SUCH_INSTANCE, f"no media creation request {request_uid}")
        now = self.clock()
        if action == 1:  # initiate media creation
            if job.state == "requested":
                self.queue.set_state(job.id, "received", now=now)
            return
        try:
            self.queue.cancel(job.id, now=now)
        except UsageError as exc:
            raise Refused(_PROCESSING_FAILURE, str(exc)) from exc

    def media_status(self, request_uid: str) -> MediaStatus:
        job = self.queue.job_for_request(request_uid)
        if job is None:
            raise Refused(_NO_SUCH_INSTANCE, f"no media creation request {request_uid}")
        status = _EXECUTION_STATUS[job.state]
        return MediaStatus(
            execution_status=status,
            # a Code String: the reason itself is in `station jobs` and the audit log
            info=_failure_code(job.state) if status == "FAILURE" else "NORMAL",
            media_created=len(job.outputs) if status == "DONE" else 0,
        )


MAX_LABEL_TEXT = 200  # characters of a request's Label Text kept for the label


def _label_line(text: str) -> str:
    """A Media Creation request's Label Text (LT, lines and all) as the label's one line."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_LABEL_TEXT else line[: MAX_LABEL_TEXT - 3].rstrip() + "..."


def _failure_code(state: str) -> str:
    return "CANCELLED" if state == "cancelled" else "PROC_FAILURE"


# What the author and the ISO writer leave next to a disc when the process is killed: its
# work folder and the disc's temporary names (discmaker.author.create, discmaker.disc.iso).
_LEFTOVER_MARKS = (".work", PARTIAL, ".old-")


def _clean_leftovers(out: Path) -> int:
    """Remove the station's own unfinished discs from ``out`` (after a kill, never a whole
    disc: those have their final names)."""
    removed = 0
    for path in out.glob(f".{jobs.LABEL_PREFIX}*"):
        if not any(mark in path.name for mark in _LEFTOVER_MARKS):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


@contextmanager
def _exclusive(state: Path) -> Iterator[None]:
    """Hold ``state/station.lock`` for as long as this station runs."""
    lock_path = state / "station.lock"
    handle = lock_path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            other = handle.read().strip() or "?"
            raise UsageError(
                f"Another station is already running on {state} (process {other}). Stop it "
                "first, or give this one its own state folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def _check_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"The station's {what} folder {folder} cannot be made ({exc.strerror or exc})."
        ) from exc
    if not folder.is_dir():
        raise UsageError(f"The station's {what} folder {folder} is not a folder.")


__all__ = ["Station"]
