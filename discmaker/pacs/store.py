"""Verified disc -> PACS: :func:`import_disc`, what ``discmaker import`` does.

1. **Check and restore.** The disc is checked exactly as ``discmaker check`` does it and each
   image's original is written to a private temporary folder, exactly as ``discmaker restore``
   writes it (the original pixels, discmaker's private block removed). Unless the disc's
   verdict is VERIFIED nothing is sent and nothing is contacted: the result carries the
   check's report and exit code (1 tampered, 2 not verifiable).
2. **Echo.** An association with the PACS and a C-ECHO; a PACS that cannot be reached, refuses
   the association or fails the echo raises :class:`DestinationError` (exit 69).
3. **Skip what is there.** Instances the import log records as stored by the same destination
   are not sent again; nor are those the PACS itself reports holding (C-FIND at IMAGE level,
   when it answers such queries).
4. **Store.** Each remaining original is sent with C-STORE; the PACS's status is recorded per
   instance in the append-only import log (:mod:`discmaker.pacs.log`) as soon as it arrives.
   Instances that failed are sent again after the others, up to ``retries`` more times; a
   PACS that drops the association is reconnected once per round.

``dry_run`` does steps 1-3 (the echo included) and sends and logs nothing. The temporary folder
(mode 0700, under ``work_dir`` or the system's temporary folder) is removed in every case.
Safe to call from several threads at once: every call has its own association, temporary
folder and log handle.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydicom import dcmread

from discmaker.check.verify import ImageOutcome, Progress, check_and_restore
from discmaker.crypto.trust import TrustStore
from discmaker.diagnostics import captured_warnings
from discmaker.errors import CHECK_NOT_VERIFIABLE, UsageError
from discmaker.models import CheckReport, ImageStatus, Verdict
from discmaker.pacs.destination import (
    DEFAULT_CALLING_AET,
    IMPORT_INCOMPLETE,
    Destination,
    DestinationError,
    check_aet,
)
from discmaker.pacs.log import ImportLog, RunContext, default_log_path, stored_instances
from discmaker.pacs.network import Association, StoreStatus, Tls, context_groups, syntax_key
from discmaker.pacs.reconcile import Reconciliation, coerce

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2
DEFAULT_TIMEOUT = 30.0
IMPORT_RESULT_FORMAT = "discmaker-import-result"  # docs/schemas/import-result.v1.json
IMPORT_RESULT_VERSION = 1


class InstanceStatus(StrEnum):
    STORED = "stored"  # the PACS answered success
    STORED_WITH_WARNING = "stored-with-warning"  # stored; the PACS coerced or dropped elements
    ALREADY_STORED = "already-stored"  # the import log says this destination stored it before
    IN_PACS = "in-pacs"  # the PACS says it already holds it (C-FIND)
    WOULD_SEND = "would-send"  # dry run
    FAILED = "failed"  # not stored (``message`` says why), after every attempt


SENT_STATUSES = frozenset({InstanceStatus.STORED, InstanceStatus.STORED_WITH_WARNING})
SKIPPED_STATUSES = frozenset({InstanceStatus.ALREADY_STORED, InstanceStatus.IN_PACS})


@dataclass(frozen=True)
class InstanceResult:
    """What happened to one verified original."""

    path: str  # on the disc (File ID as a POSIX path)
    sop_instance_uid: str
    status: InstanceStatus
    attempts: int = 0  # C-STORE requests sent for it in this run
    dimse_status: int | None = None  # the PACS's last status code; None: none received
    message: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "sop_instance_uid": self.sop_instance_uid,
            "status": self.status.value,
            "attempts": self.attempts,
            "dimse_status": self.dimse_status,
            "message": self.message,
        }


@dataclass(frozen=True)
class ImportResult:
    """The check that gated the import, and each verified original's fate."""

    report: CheckReport
    destination: Destination
    calling_aet: str
    instances: tuple[InstanceResult, ...]  # empty unless the disc verified
    dry_run: bool = False
    log_path: str = ""  # the import log read (and, unless a dry run, appended to)
    reconciled: tuple[str, ...] = ()  # keywords coerced in the sent copies

    @property
    def verified(self) -> bool:
        return self.report.verdict is Verdict.VERIFIED

    def _with(self, statuses: frozenset[InstanceStatus]) -> tuple[InstanceResult, ...]:
        return tuple(i for i in self.instances if i.status in statuses)

    @property
    def sent(self) -> tuple[InstanceResult, ...]:
        return self._with(SENT_STATUSES)

    @property
    def skipped(self) -> tuple[InstanceResult, ...]:
        return self._with(SKIPPED_STATUSES)

    @property
    def failed(self) -> tuple[InstanceResult, ...]:
        return self._with(frozenset({InstanceStatus.FAILED}))

    @property
    def would_send(self) -> tuple[InstanceResult, ...]:
        return self._with(frozenset({InstanceStatus.WOULD_SEND}))

    @property
    def exit_code(self) -> int:
        """0 all stored (or already there), the check's 1 or 2 when the disc did not verify
        (nothing sent), 75 when some instances were not stored."""
        if not self.verified:  # loose files verified image by image are not a disc: 2
            return self.report.exit_code or CHECK_NOT_VERIFIABLE
        return IMPORT_INCOMPLETE if self.failed else 0

    def to_json(self) -> dict[str, object]:
        """What ``discmaker import --json`` prints (docs/schemas/import-result.v1.json)."""
        counts = {status.value: 0 for status in InstanceStatus}
        for instance in self.instances:
            counts[instance.status.value] += 1
        return {
            "format": IMPORT_RESULT_FORMAT,
            "format_version": IMPORT_RESULT_VERSION,
            "verdict": self.report.verdict.value,
            "exit_code": self.exit_code,
            "destination": {
                "aet": self.destination.aet,
                "host": self.destination.host,
                "port": self.destination.port,
            },
            "calling_aet": self.calling_aet,
            "dry_run": self.dry_run,
            "log": self.log_path if not self.dry_run else "",
            "reconciled": list(self.reconciled),
            "counts": counts,
            "instances": [i.to_json() for i in sorted(self.instances, key=_by_path)],
            "report": self.report.to_json(),
        }


def _by_path(instance: InstanceResult) -> str:
    return instance.path


@dataclass
class _Instance:
    path: str  # on the disc
    file: Path  # the restored original
    sop_instance_uid: str
    sop_class_uid: str
    syntax: str  # network.syntax_key
    study_uid: str
    series_uid: str
    attempts: int = 0
    last: StoreStatus | None = None


def _read_originals(written: Sequence[tuple[str, Path]]) -> list[_Instance]:
    instances: list[_Instance] = []
    with captured_warnings():  # the originals verified; a parser's remark is not our business
        for path, file in written:
            ds = dcmread(file, stop_before_pixels=True)
            instances.append(
                _Instance(
                    path=path,
                    file=file,
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    syntax=syntax_key(str(ds.file_meta.TransferSyntaxUID)),
                    study_uid=str(ds.get("StudyInstanceUID", "")),
                    series_uid=str(ds.get("SeriesInstanceUID", "")),
                )
            )
    return instances


def _context(
    report: CheckReport, source: Path, destination: Destination, calling_aet: str
) -> RunContext:
    return RunContext(
        source=str(source),
        destination=str(destination),
        calling_aet=calling_aet,
        fileset_id=report.fileset_id,
        signer_fingerprint=report.signer.fingerprint if report.signer else "",
        verdict=report.verdict.value,
    )


class _Run:
    """One import's sending part: the association(s), the log, the per-instance results."""

    def __init__(
        self,
        destination: Destination,
        calling_aet: str,
        *,
        import_log: ImportLog | None,
        context: RunContext,
        reconciliation: Reconciliation | None,
        retries: int,
        retry_delay: float,
        timeout: float,
        progress: Progress | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.destination = destination
        self.tls = tls
        self.calling_aet = calling_aet
        self.log = import_log
        self.context = context
        self.reconciliation = reconciliation
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.progress = progress
        self.results: dict[str, InstanceResult] = {}
        self.total = 0

    def done(self, inst: _Instance, status: InstanceStatus, message: str = "") -> None:
        code = inst.last.code if inst.last else None
        self.results[inst.path] = InstanceResult(
            path=inst.path,
            sop_instance_uid=inst.sop_instance_uid,
            status=status,
            attempts=inst.attempts,
            dimse_status=code,
            message=message or (inst.last.message if inst.last else ""),
        )
        if self.progress and status is not InstanceStatus.ALREADY_STORED:
            # ``total`` counts what the log did not already settle; the PACS's own answer
            # (in-pacs) settles an instance too.
            settled = InstanceStatus.ALREADY_STORED
            done = sum(1 for r in self.results.values() if r.status is not settled)
            self.progress("send", done, self.total)

    def _log_instance(self, inst: _Instance, status: str, **values: object) -> None:
        if self.log is None:
            return
        self.log.write(
            self.context,
            "instance",
            sop_instance_uid=inst.sop_instance_uid,
            sop_class_uid=inst.sop_class_uid,
            path=inst.path,
            status=status,
            reconciled=list(self.reconciliation.keywords) if self.reconciliation else [],
            **values,
        )

    def send(self, pending: list[_Instance], *, dry_run: bool) -> None:
        """Echo, skip what the PACS holds, and store the rest (or, dry, only say so)."""
        self.total = len(pending)
        first = True
        for group in context_groups([(i.sop_class_uid, i.syntax) for i in pending]):
            keys = set(group)
            members = [i for i in pending if (i.sop_class_uid, i.syntax) in keys]
            with Association(
                self.destination,
                calling_aet=self.calling_aet,
                storage=group,
                timeout=self.timeout,
                tls=self.tls,
            ) as assoc:
                try:
                    assoc.open()
                    if first:
                        assoc.echo()
                except DestinationError as exc:
                    if first:
                        raise
                    for inst in members:  # a later group's association: these fail, others stand
                        self.done(inst, InstanceStatus.FAILED, str(exc))
                    continue
                first = False
                todo = self._not_in_pacs(assoc, members)
                if dry_run:
                    for inst in todo:
                        self.done(inst, InstanceStatus.WOULD_SEND)
                    continue
                self._store_all(assoc, todo)

    def _not_in_pacs(self, assoc: Association, members: list[_Instance]) -> list[_Instance]:
        series = sorted({(i.study_uid, i.series_uid) for i in members if i.series_uid})
        held: set[str] = set()
        for study_uid, series_uid in series:
            found = assoc.instances_in_series(study_uid, series_uid)
            if found is None:  # the PACS does not answer IMAGE-level queries: the log decides
                return members
            held |= found
        todo = []
        for inst in members:
            if inst.sop_instance_uid in held:
                self._log_instance(inst, "in-pacs")
                self.done(inst, InstanceStatus.IN_PACS, "the PACS already holds it")
            else:
                todo.append(inst)
        if held:
            log.debug("%d instance(s) already in the PACS (C-FIND)", len(members) - len(todo))
        return todo

    def _store_all(self, assoc: Association, todo: list[_Instance]) -> None:
        for attempt_round in range(self.retries + 1):
            if attempt_round:
                log.debug("retry round %d: %d instance(s)", attempt_round, len(todo))
                time.sleep(self.retry_delay * attempt_round)
            again: list[_Instance] = []
            lost: DestinationError | None = None
            for inst in todo:
                if lost is None:
                    try:
                        inst.last = self._store_one(assoc, inst)
                    except DestinationError as exc:  # dropped, and cannot be opened again
                        lost = exc
                if lost is not None:  # not tried (again) in this round: the PACS is gone
                    inst.last = StoreStatus(
                        stored=False, message=f"the PACS stopped answering. {lost}"
                    )
                elif inst.last is not None and inst.last.stored:
                    warned = inst.last.warning
                    self.done(
                        inst,
                        InstanceStatus.STORED_WITH_WARNING if warned else InstanceStatus.STORED,
                    )
                    continue
                if inst.last is not None and inst.last.retry and attempt_round < self.retries:
                    again.append(inst)
                else:
                    self.done(inst, InstanceStatus.FAILED)
            todo = again
            if not todo:
                return

    def _store_one(self, assoc: Association, inst: _Instance) -> StoreStatus:
        with captured_warnings():
            ds = dcmread(inst.file)
            if self.reconciliation is not None:
                coerce(ds, self.reconciliation)
            assoc.open()  # raises DestinationError when a dropped association cannot reopen
            inst.attempts += 1
            status = assoc.store(ds)
        state = "failed"
        if status.stored:
            state = "stored-with-warning" if status.warning else "stored"
        log.debug(
            "C-STORE %s attempt %d: %s (status %s)",
            inst.path,
            inst.attempts,
            state,
            "none" if status.code is None else f"0x{status.code:04X}",
        )
        self._log_instance(
            inst,
            state,
            attempt=inst.attempts,
            dimse_status=status.code,
            message=status.message,
        )
        return status

    def finish(self, outcome: str, instances: Sequence[InstanceResult]) -> None:
        if self.log is None:
            return
        counts: dict[str, int] = {s.value: 0 for s in InstanceStatus}
        for r in instances:
            counts[r.status.value] += 1
        failed = [r.sop_instance_uid for r in instances if r.status is InstanceStatus.FAILED]
        self.log.write(self.context, "run", outcome=outcome, counts=counts, failed_instances=failed)


def import_disc(
    source: Path,
    destination: Destination | str,
    *,
    trust: TrustStore,
    calling_aet: str = DEFAULT_CALLING_AET,
    dry_run: bool = False,
    log_path: Path | None = None,
    reconcile: Reconciliation | None = None,
    retries: int = DEFAULT_RETRIES,
    retry_delay: float = 2.0,
    timeout: float = DEFAULT_TIMEOUT,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    tls: Tls | None = None,
) -> ImportResult:
    """Check ``source`` and send its verified originals to ``destination`` (``AET@HOST:PORT``).

    Nothing is sent unless the disc's verdict is VERIFIED (then the result has no instances
    and the check's exit code). Raises :class:`DestinationError` when the PACS cannot be
    reached, refuses us (``calling_aet``) or fails the echo; :class:`UsageError` for a bad AE
    title or address; :class:`OutputError` when the import log (``log_path``, else
    ``$DISCMAKER_IMPORT_LOG``, else the user data folder) cannot be written; the check's
    :class:`DiscError` for a disc that cannot be read. ``reconcile`` coerces Patient ID, name
    and Accession Number in the sent copies (the received values kept in Original Attributes
    Sequence). ``tls`` sends over DICOM TLS (a file it names that cannot be used raises
    :class:`KeyFileError` before anything is read). ``timeout`` (seconds) bounds connecting
    and each answer of the PACS; failed instances are sent again up to ``retries`` times,
    ``retry_delay`` x round seconds apart.
    """
    dest = destination if isinstance(destination, Destination) else Destination.parse(destination)
    calling = check_aet(calling_aet, what="AE title of this computer (--aet)")
    if retries < 0 or timeout <= 0 or retry_delay < 0:
        raise UsageError("retries and retry_delay must be 0 or more, timeout more than 0.")
    tls_context = tls.context() if tls is not None else None
    log_file = Path(log_path) if log_path is not None else default_log_path()
    import_log = None if dry_run else ImportLog(log_file)
    if import_log is not None:
        import_log.open()  # an unwritable log stops the import before the disc is read
    try:
        work = Path(tempfile.mkdtemp(prefix="discmaker-import-", dir=work_dir))
        try:
            report, outcomes = check_and_restore(
                Path(source),
                trust=trust,
                progress=progress,
                workers=workers,
                restore_dir=work / "originals",
            )
            run = _Run(
                dest,
                calling,
                import_log=import_log,
                context=_context(report, Path(source), dest, calling),
                reconciliation=reconcile,
                retries=retries,
                retry_delay=retry_delay,
                timeout=timeout,
                progress=progress,
                tls=tls_context,
            )
            instances: tuple[InstanceResult, ...] = ()
            if report.verdict is Verdict.VERIFIED:
                instances = _send_verified(run, report, outcomes, log_file, dry_run=dry_run)
            else:
                log.debug("not sending: the disc's verdict is %s", report.verdict.value)
                run.finish("not-verified", ())
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if import_log is not None:
            import_log.close()
    return ImportResult(
        report=report,
        destination=dest,
        calling_aet=calling,
        instances=instances,
        dry_run=dry_run,
        log_path=str(log_file),
        reconciled=reconcile.keywords if reconcile else (),
    )


def _send_verified(
    run: _Run,
    report: CheckReport,
    outcomes: Sequence[ImageOutcome],
    log_file: Path,
    *,
    dry_run: bool,
) -> tuple[InstanceResult, ...]:
    """Steps 2-4 for a VERIFIED disc whose originals ``outcomes`` wrote."""
    good = (ImageStatus.OK, ImageStatus.MANIFEST_ONLY)
    written = sorted(
        (o.verdict.path, Path(o.written))
        for o in outcomes
        if o.written and o.verdict.status in good
    )
    instances = _read_originals(written)
    where = str(run.destination)
    before = run.log.stored(where) if run.log else stored_instances(log_file, where)
    pending = [i for i in instances if i.sop_instance_uid not in before]
    for inst in instances:
        if inst.sop_instance_uid in before:
            run.done(inst, InstanceStatus.ALREADY_STORED, "the import log says it was stored")
    log.debug(
        "%d original(s), %d already stored at %s per the import log",
        len(instances),
        len(instances) - len(pending),
        where,
    )
    if pending or dry_run:  # a dry run always asks the PACS (the echo), a real one if needed
        try:
            run.send(pending, dry_run=dry_run)
        except DestinationError:
            run.finish("unreachable", ())
            raise
    results = [run.results[i.path] for i in instances]
    uids = {v.path: v.sop_instance_uid for v in report.images}
    results += [
        InstanceResult(
            path=o.verdict.path,
            sop_instance_uid=uids.get(o.verdict.path, ""),
            status=InstanceStatus.FAILED,
            message="verified, but it cannot be written as a DICOM file (its file meta "
            "information is incomplete)",
        )
        for o in outcomes
        if not o.written
    ]
    results.sort(key=lambda r: r.path)
    failed = any(r.status is InstanceStatus.FAILED for r in results)
    if not dry_run:
        run.finish("incomplete" if failed else "complete", results)
    return tuple(results)


__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "IMPORT_RESULT_FORMAT",
    "IMPORT_RESULT_VERSION",
    "ImportResult",
    "InstanceResult",
    "InstanceStatus",
    "import_disc",
]
