"""One disc job, from received instances to a verified disc.

``received`` -> author the disc (every core; the label PDF next to it) -> ``written`` ->
check the disc image as a receiving clinic would, against the station's own certificate ->
burn it and read it back (``burned``), or hand it to the robot's hot folder
(``handed-over``) -> ``verified``. Every outcome is one line in the audit log. A failure of
any step leaves the job ``failed`` with a reason an operator can act on, the received
instances kept for ``station retry``, and nothing half-written under a final name.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from discmaker.atomic import copy_file, replace_file
from discmaker.author.create import AuthorRequest, author
from discmaker.check.burned import verify_burn
from discmaker.check.verify import check_disc, check_set
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.disc.burn import burn, list_drives
from discmaker.disc.source import open_source
from discmaker.errors import DiscmakerError
from discmaker.format.manifest import MANIFEST_PATH, MAX_MANIFEST_BYTES
from discmaker.parallel import default_workers
from discmaker.station import robots, wording
from discmaker.station.config import StationConfig
from discmaker.station.queue import Job

if TYPE_CHECKING:
    from discmaker.station.service import Station

log = logging.getLogger(__name__)

LABEL_PREFIX = "DS"  # every disc the station makes is DS and its job number


class _Cancelled(Exception):
    """The operator cancelled the job while it ran."""


def disc_label(job: Job) -> str:
    """The disc's File-set ID: ``DS`` and the job number (``DS000042``)."""
    return f"{LABEL_PREFIX}{job.id:06d}"[:16]


def run_job(station: Station, job: Job) -> None:
    """Take ``job`` as far as it goes; its state and the audit log say how far."""
    queue, now = station.queue, station.clock
    try:
        if job.state == "received":
            job = _author(station, job)
        if job.state == "written":  # burned or handed over before a restart: not again
            _self_check(station, job)
            job = _deliver(station, job)
        if not queue.set_state(
            job.id, "verified", now=now(), expect=("written", "burned", "handed-over"), audit=True
        ):
            raise _Cancelled
        _finish(station, job, "verified", "")
    except _Cancelled:
        log.info("station: job %d cancelled while it ran; its disc was removed", job.id)
    except DiscmakerError as exc:
        _fail(station, job, _reason(station, job, exc))
    except OSError as exc:
        _fail(station, job, f"{exc.strerror or exc} ({exc.filename or 'output'})")
    except Exception as exc:  # one job's bug must not stop a station making other discs
        log.exception("station: job %d: internal error", job.id)
        _fail(station, job, f"internal error in discmaker ({type(exc).__name__}); see the log")
    finally:
        _forget_ahead(station, job)


def _forget_ahead(station: Station, job: Job) -> None:
    """Drop what was prepared ahead for ``job`` and not taken (its disc is made or failed)."""
    if station.ahead is None:
        return
    try:
        files = station.queue.job_files(job.id)
    except Exception:  # the queue is what failed (said already): they go at the close
        return
    station.ahead.forget(path for _, path in files)


def _reason(station: Station, job: Job, exc: DiscmakerError) -> str:
    """``exc`` worded for the station's operator (no CLI flags, instances by UID)."""
    try:
        files = station.queue.job_files(job.id)
    except Exception:  # the queue is what failed: the reason without the instances' UIDs
        files = []
    return wording.job_failure(
        exc,
        job=job.id,
        requested=job.trigger == "request",
        files=files,
        config=station.config,
        one_disc=not job.allow_splitting,
    )


def _may_span(station: Station, job: Job) -> bool:
    """Whether ``job`` may become a set of discs: the station's ``span`` setting, unless the
    Media Creation request said Allow Media Splitting NO."""
    return station.config.span and job.allow_splitting


def _author(station: Station, job: Job) -> Job:
    config, queue = station.config, station.queue
    queue.start_attempt(job.id, now=station.clock())
    files = queue.job_files(job.id)
    label = disc_label(job)
    out = config.out / (f"{label}.iso" if config.format == "iso" else label)
    label_pdf = config.out / f"{label}.pdf" if config.label_pdf else None
    started = time.monotonic()
    used_before = station.ahead.used if station.ahead is not None else 0
    result = author(
        AuthorRequest(
            inputs=tuple(Path(path) for _, path in files),
            out=out,
            key=station.key,
            cert=station.cert,
            format=config.format,
            label=label,
            medium=config.medium,
            institution=config.institution,
            workers=config.workers,
            span=_may_span(station, job),
            label_pdf=label_pdf,
            label_text=job.label_text,
            label_from_instances=job.label_from_instances,
            ahead=station.ahead,
            skip_unusable=config.skip_unusable,
            overwrite=True,  # only an earlier, interrupted attempt of this job can be there
            expected_instances=frozenset(uid for uid, _ in files),
        )
    )
    outputs = [str(p) for p in result.outputs]
    written = queue.set_state(
        job.id,
        "written",
        expect=("authoring",),
        now=station.clock(),
        label=label,
        outputs=outputs,
        label_pdf=str(label_pdf or ""),
        manifest_sha256=",".join(_manifest_hash(Path(p)) for p in outputs),
        images=result.images,
        omitted=len(result.omitted),
    )
    if not written:  # cancelled while it was authored
        _remove(outputs, label_pdf)
        raise _Cancelled
    log.info(
        "station: job %d: %d image(s) on %d disc(s) in %.1f s (%d sealed as they arrived)",
        job.id,
        result.images,
        len(outputs),
        time.monotonic() - started,
        (station.ahead.used if station.ahead is not None else 0) - used_before,
    )
    found = queue.job(job.id)
    assert found is not None
    return found


def _manifest_hash(disc: Path) -> str:
    with open_source(disc) as src:
        return hashlib.sha256(src.read_bytes(MANIFEST_PATH, limit=MAX_MANIFEST_BYTES)).hexdigest()


def self_check_trust(state: Path, cert: x509.Certificate) -> TrustStore:
    """A trust store holding only the station's own certificate (its self-checks trust it
    and nothing else), kept in ``state``."""
    folder = state / "self-check"
    folder.mkdir(exist_ok=True, mode=0o700)
    path = folder / "station.pem"
    replace_file(path, cert.public_bytes(serialization.Encoding.PEM))
    return TrustStore.from_paths([path])


def _self_check(station: Station, job: Job) -> None:
    """Check the disc images as the receiving clinic will; refuse to deliver one that fails."""
    trust = station.trust
    workers = station.config.workers or default_workers()
    reports = [check_disc(Path(p), trust=trust, workers=workers) for p in job.outputs]
    code = check_set(reports).exit_code if len(reports) > 1 else reports[0].exit_code
    if code != 0:
        verdicts = ", ".join(r.verdict.value for r in reports)
        raise _JobFailed(f"the new disc did not verify when checked ({verdicts})")


class _JobFailed(DiscmakerError):
    pass


def _deliver(station: Station, job: Job) -> Job:
    config, queue = station.config, station.queue
    if config.burn is not None:
        if len(job.outputs) > 1:
            raise _JobFailed(
                f"the study needs {len(job.outputs)} discs, and one drive cannot change discs "
                f"unattended: burn them from {config.out}, or give the station a robot's "
                "hot_folder"
            )
        drive = config.burn or _the_burner()
        burn(Path(job.outputs[0]), drive)
        report = verify_burn(drive, station.trust, workers=config.workers or default_workers())
        if report.exit_code != 0:
            raise _JobFailed(f"the burned disc did not verify when read back ({report.verdict})")
        if not queue.set_state(job.id, "burned", now=station.clock(), expect=("written",)):
            raise _Cancelled
    elif config.hot_folder is not None:
        _hand_over(job, config)
        if not queue.set_state(job.id, "handed-over", now=station.clock(), expect=("written",)):
            raise _Cancelled
    found = queue.job(job.id)
    assert found is not None
    return found


def _the_burner() -> str:
    drives = list_drives()
    if len(drives) != 1:
        raise _JobFailed(
            f'burn = "" needs exactly one disc burner, and this computer has {len(drives)}: '
            'name the drive (burn = "/dev/sr0") in the station\'s configuration'
        )
    return drives[0].address


def _hand_over(job: Job, config: StationConfig) -> None:
    """Copy the disc images and the label into the robot's folder, then its job files
    (:mod:`discmaker.station.robots`): the robot sees a job file last, when everything it
    names is complete.

    Idempotent: a file the folder holds already with the same content is not copied again,
    and a job file the folder holds (also under a name the robot gave it since) is never
    written again (a robot that watches for new job files would make the discs twice), as
    after a stop between the job file and the ``handed-over`` state."""
    hot_folder = config.hot_folder
    assert hot_folder is not None
    images = [Path(output) for output in job.outputs]
    files = images + ([Path(job.label_pdf)] if job.label_pdf else [])
    tickets = robots.job_files(
        config.robot,
        job=job.id,
        label=job.label,
        images=[image.name for image in images],
        label_pdf=Path(job.label_pdf).name if job.label_pdf else "",
        copies=job.copies,
        medium=config.medium,
        robot_folder=config.robot_folder or str(hot_folder),
    )
    missing = [f for f in files if not _same_content(f, hot_folder / f.name)]
    waiting = [t for t in tickets if not robots.taken(hot_folder, t)]
    if len(waiting) < len(tickets):
        log.info(
            "station: job %d: the robot's folder holds its job file already (%d of %d; "
            "handed over before a stop); not written again%s",
            job.id,
            len(tickets) - len(waiting),
            len(tickets),
            f", {len(missing)} missing file(s) copied" if missing else "",
        )
    for source in missing:
        copy_file(source, hot_folder / source.name)
    for ticket in waiting:
        replace_file(hot_folder / ticket.name, ticket.data)


def _same_content(source: Path, copy: Path) -> bool:
    """Whether ``copy`` is a file with the content of ``source`` (same size and SHA-256)."""
    try:
        if copy.stat().st_size != source.stat().st_size:
            return False
        return _sha256(copy) == _sha256(source)
    except OSError:
        return False


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _remove(outputs: Sequence[str], label_pdf: Path | None) -> None:
    for name in outputs:
        path = Path(name)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if label_pdf is not None:
        label_pdf.unlink(missing_ok=True)


def _fail(station: Station, job: Job, reason: str) -> None:
    log.error("station: job %d failed: %s", job.id, reason)
    running = ("authoring", "written", "burned", "handed-over")
    if station.queue.set_state(
        job.id, "failed", now=station.clock(), reason=reason, expect=running, audit=True
    ):
        _finish(station, job, "failed", reason)


def _finish(station: Station, job: Job, result: str, reason: str) -> None:
    """The audit line of a job that ended (the queue marked it as owing one in the same
    step as its state; :func:`write_missing_audits` writes it after a crash in between)."""
    current = station.queue.job(job.id) or job
    try:
        _audit(station, current, result, reason, when=current.updated)
    except DiscmakerError as exc:  # the disc is made or failed all the same; say so loudly
        log.error("station: job %d: %s (it is written once the log can be written)", job.id, exc)
        return
    station.queue.audited(job.id)


def write_missing_audits(station: Station) -> int:
    """Write the audit line of each ended job the queue says may lack one (the station
    stopped between the job's end and its line, or the log could not be written); a line
    already in the log is not written again. Returns how many were written. Raises
    :class:`~discmaker.errors.OutputError` when the log cannot be written."""
    written = 0
    for job in station.queue.audit_pending():
        if job.state in ("verified", "failed") and not station.audit.has(
            job=job.id, attempt=job.attempts, result=job.state
        ):
            _audit(station, job, job.state, job.reason, when=job.updated)
            log.warning(
                "station: job %d (%s): its audit line was missing after a stop; written now",
                job.id,
                job.state,
            )
            written += 1
        station.queue.audited(job.id)
    return written


def _audit(
    station: Station, current: Job, result: str, reason: str, *, when: float | None = None
) -> None:
    station.audit.record(
        when=when,
        job=current.id,
        attempt=current.attempts,
        result=result,
        reason=reason,
        study_uid=current.study_uid,
        label=current.label,
        outputs=current.outputs,
        manifest_sha256=[h for h in current.manifest_sha256.split(",") if h],
        signer_fingerprint=signing.fingerprint(station.cert),
        images=current.images,
        omitted=current.omitted,
        senders=station.queue.senders(current.id),
    )


__all__ = [
    "LABEL_PREFIX",
    "disc_label",
    "run_job",
    "self_check_trust",
    "write_missing_audits",
]
