"""Study -> signed patient disc. Orchestration only; each step lives in its own module.

1. intake        find, read and validate the inputs (study.scan); refuse what cannot go on a disc
2. fit           refuse, before any work, a disc that will not fit the chosen medium
3. prepare       per instance, here or in worker processes: normalise, identity digest,
                 watermark, write
4. DICOMDIR      the records pydicom's FileSet would make, built in step 3, written in one pass;
                 the real files then go to their File IDs
5. PDI files     README.TXT and INDEX.HTM from templates/
6. manifest      every file's size and SHA-256, the hierarchy, the watermark status; signed
7. output        ISO 9660 image (atomic rename) or a folder for a USB stick

SOP Instance UIDs are kept. The watermark is reversible and ``discmaker restore`` gives back
the original pixels bit for bit under the original identity, so a receiving PACS reconciles the
images with the ones it may already hold instead of filing duplicates. The watermarked files
say what they carry in a private block (``DISCMAKER 1``), which restore removes.

Safe in threads and long-lived processes: a run keeps everything it needs (the signing key
above all) in its own objects, never in this module, so two runs in two threads of one host
seal their discs each with its own key. Warnings pydicom raises while reading the inputs do
not reach the host; they are notes about the file (:attr:`AuthorResult.input_notes`). The log
(``discmaker.author.create``, debug level) names files by their path in the input folder or
their File ID, never by patient data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from discmaker import APP_NAME, __version__
from discmaker.author.dicomdir import (
    DicomdirWriter,
)
from discmaker.author.intake import InputInstance, Intake, scan
from discmaker.author.prepare import Prepared, PrepareJob, prepare, sealing_key
from discmaker.crypto import signing
from discmaker.diagnostics import captured_warnings
from discmaker.disc.iso import (
    ISO_LAYOUT,
    DiscFile,
    VolumeInfo,
    iso_a_characters,
    write_folder,
    write_iso,
)
from discmaker.disc.label import label_info, write_label_pdf
from discmaker.disc.media import Medium, check_fits, estimate_iso_size
from discmaker.errors import (
    NoImagesError,
    OutputError,
    StudyError,
    TooLargeError,
    UsageError,
)
from discmaker.format import manifest
from discmaker.format.dicomdir import validate_fileset_id
from discmaker.format.manifest import OmittedFile
from discmaker.parallel import default_workers, run_jobs
from discmaker.sharing import Shared
from discmaker.templating import PatientSummary, SeriesSummary, StudySummary, as_context, render

if TYPE_CHECKING:
    from discmaker.author.ahead import PreparedAhead

log = logging.getLogger(__name__)

Stage = Literal["scan", "prepare", "write"]
Progress = Callable[[Stage, int, int], None]


@dataclass(frozen=True, kw_only=True)
class AuthorRequest:
    inputs: tuple[Path, ...]
    out: Path
    key: Ed25519PrivateKey
    cert: x509.Certificate
    format: Literal["iso", "folder"] = "iso"
    label: str | None = None
    medium: Medium = Medium.CD
    institution: str | None = None
    timestamp: datetime | None = None
    allow_mixed_patients: bool = False
    # Worker processes for step 3. 1 (the default) works in the calling thread; None uses
    # every core this process may use (discmaker.parallel.default_workers, the CLI's choice).
    workers: int | None = 1
    overwrite: bool = False
    span: bool = False  # split over several discs when the study does not fit one
    # The instances staff confirmed (guided workflow): the study must not change between the
    # patient confirmation and the disc, e.g. a PACS export still landing in the folder.
    expected_instances: frozenset[str] | None = None
    capacity: int | None = None  # bytes; overrides the medium's (a USB stick's free space)
    # A PDF with the label of every disc written (patient, studies, institution, "disc k of
    # n", "DICOM ONLY" as IHE PDI asks), for a label printer or the disc case.
    label_pdf: Path | None = None
    # One more line on every label, as a requester wrote it (a DICOM Media Creation request's
    # Label Text); "" for none. Only on the label PDF, never on the disc.
    label_text: str = ""
    # False: the label names no patient and no study, only label_text and the disc's own
    # facts (a Media Creation request's Label Using Information Extracted From Instances NO)
    label_from_instances: bool = True
    # Instances prepared before this run (a disc station prepares them as they arrive):
    # taken instead of preparing them again, where they are still what this run would make.
    ahead: PreparedAhead | None = None
    # Leave out a file that cannot go on a disc (damaged, or without a key the DICOMDIR
    # needs) instead of stopping; it is named in the result, README.TXT and the manifest.
    skip_unusable: bool = False


@dataclass(frozen=True)
class AuthorResult:
    out: Path
    format: str
    label: str
    medium: Medium
    images: int
    watermarked: int
    manifest_only: tuple[tuple[str, str], ...]  # (file ID, reason)
    bytes_written: int
    patients: int
    studies: int
    series: int
    non_dicom_skipped: int
    duplicates_skipped: int
    dicomdirs_skipped: int
    fingerprint: str
    seconds: float
    summary: list[dict[str, object]] = field(default_factory=list)
    outputs: tuple[Path, ...] = ()  # every disc written: one, or k of n with span
    notes: tuple[str, ...] = ()  # things the operator should know; none stopped the disc
    # "FILE: note" per warning pydicom raised while reading an input (FILE: its path in the
    # input folder) or writing a DICOMDIR ("DICOMDIR" or "DISC_2OF3/DICOMDIR" with span).
    input_notes: tuple[str, ...] = ()
    label_pdf: Path | None = None  # the disc labels, when asked for
    omitted: tuple[OmittedFile, ...] = ()  # input files left out (skip_unusable)


def _prepare_each(
    instances: Sequence[InputInstance],
    work: Path,
    key: Ed25519PrivateKey,
    workers: int,
    progress: Progress | None,
    *,
    skip_unusable: bool = False,
    ahead: PreparedAhead | None = None,
) -> Generator[Prepared | OmittedFile, None, None]:
    """Prepared instances in disc order, as they become ready: taken from ``ahead`` where
    it holds them, the others prepared here or in worker processes.

    Closing this generator early (a failure downstream) drops ``run_jobs``' generator with
    it, which shuts its worker processes down.
    """
    jobs = [
        PrepareJob(
            source=inst.file,
            work_path=str(work / f"{n:06d}.dcm"),
            relative=inst.relative,
            skip_unusable=skip_unusable,
        )
        for n, inst in enumerate(instances)
    ]
    held = [ahead is not None and ahead.holds(Path(job.source)) for job in jobs]
    results = run_jobs(
        prepare,
        [job for job, h in zip(jobs, held, strict=True) if not h],
        setup=sealing_key,
        setup_args=(key.private_bytes_raw(),),
        workers=workers,
    )
    key_id = signing.key_id(key.public_key())
    for n, (job, h) in enumerate(zip(jobs, held, strict=True), 1):
        if ahead is not None and h:
            taken = ahead.take(Path(job.source), key_id, Path(job.work_path))
            result = (
                replace(taken, work_path=job.work_path, relative=job.relative)
                if taken is not None
                else _prepare_here(key, job)  # changed, or failed ahead: as usual
            )
        else:
            result = next(results)
        if progress:
            progress("prepare", n, len(jobs))
        yield result


def _prepare_here(key: Ed25519PrivateKey, job: PrepareJob) -> Prepared | OmittedFile:
    """Step 3 for one instance in this process."""
    with sealing_key(key.private_bytes_raw()) as sealing:
        return prepare(sealing, job)


# -- helpers ---------------------------------------------------------------------------------


def _check_output(req: AuthorRequest) -> None:
    if not req.overwrite and not req.span and (req.out.exists() or req.out.is_symlink()):
        # Refused before the study is read (a spanned set's numbered names are checked as
        # soon as the plan knows them, still before any image is prepared).
        raise OutputError(f"{req.out} already exists. Choose another name or remove it.")
    _check_writable(req, req.out, "output")
    if req.label_pdf is not None:
        label = req.label_pdf
        if label.resolve() == req.out.resolve():
            raise UsageError("The label PDF and the disc need different names.")
        if label.is_dir():
            raise OutputError(f"The label PDF {label} is a folder. Give a file name (label.pdf).")
        if not req.overwrite and (label.exists() or label.is_symlink()):
            raise OutputError(f"{label} already exists. Choose another name or remove it.")
        _check_writable(req, label, "label PDF")


def _check_writable(req: AuthorRequest, path: Path, what: str) -> None:
    """Refuse, before any work, an output inside an input folder or in a folder we cannot
    write."""
    out = path.resolve()
    for given in req.inputs:
        root = given.resolve()
        if root.is_dir() and (out == root or root in out.parents):
            raise UsageError(
                f"The {what} {path} is inside the input folder {given}. discmaker never "
                "writes into an input folder: choose an output outside it."
            )
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(
            f"The folder {parent} does not exist. Create it or choose another output."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"The folder {parent} cannot be written by this user. Choose an output folder you "
            "can write to, or ask IT for write access."
        )


def _file_sha256(path: Path) -> str:
    with path.open("rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()


def _organisation(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else signing.subject_text(cert)


def _summaries(prepared: Sequence[Prepared]) -> dict[str, PatientSummary]:
    patients: dict[str, PatientSummary] = {}
    for p in prepared:
        ident = p.identity
        patient = patients.setdefault(
            ident["PatientID"],
            PatientSummary(
                name=ident["PatientName"],
                id=ident["PatientID"],
                birth_date=ident["PatientBirthDate"],
                sex=ident["PatientSex"],
            ),
        )
        study = patient.studies.setdefault(
            ident["StudyInstanceUID"],
            StudySummary(
                date=ident["StudyDate"],
                description=p.study_description,
                accession=ident["AccessionNumber"],
            ),
        )
        series = study.series.setdefault(
            ident["SeriesInstanceUID"],
            SeriesSummary(
                number=ident["SeriesNumber"],
                modality=ident["Modality"],
                description=p.series_description,
            ),
        )
        series.images += 1
    return patients


def _note_shared_records(
    prepared: list[Prepared], file_ids: dict[str, str], writer: DicomdirWriter
) -> list[Prepared]:
    """Record, per image, the DICOMDIR keys that are not its own values.

    One PATIENT, STUDY and SERIES record serves many images; when the images of one study
    disagree (one slice with another Study Date, a name in other letter case) the record
    carries the first image's value. The manifest lists those keys for each image, so the
    checker knows the difference was there when the disc was signed. The keys are read back
    from the written records as the checker reads them (:meth:`DicomdirWriter.read_back`).
    """
    at = {file_ids[p.sop_instance_uid]: n for n, p in enumerate(prepared)}
    out = list(prepared)
    for file_id, keys in writer.read_back():
        n = at.get(file_id)
        if n is None:
            continue
        p = out[n]
        differs = tuple(
            k
            for k, v in keys.items()
            if k in p.identity and k not in p.invented and v != p.identity[k]
        )
        if differs:
            out[n] = replace(p, shared=differs)
    return out


# -- planning: which images go on which disc -------------------------------------------------

# Per image on top of its own bytes: a DICOMDIR record (~0.5 kB) and a manifest entry (~1.5 kB).
_PER_IMAGE_OVERHEAD = 2048
# Per disc: README.TXT, INDEX.HTM, SIGNER.PEM, MANIFEST.SIG and the fixed parts of the rest.
_FIXED_FILES = (64 * 1024, 64 * 1024, 4096, 1024, 16 * 1024)


def estimate_disc_size(instances: Sequence[InputInstance]) -> int:
    """Upper bound of the ISO image for these instances (see media.estimate_iso_size)."""
    studies = {i.study_uid for i in instances}
    series = {i.series_uid for i in instances}
    patients = {i.patient_key for i in instances}
    return estimate_iso_size(
        [i.estimated_output_size for i in instances]
        + [_PER_IMAGE_OVERHEAD * len(instances), *_FIXED_FILES],
        n_dirs=len(patients) + len(studies) + len(series) + 1,
    )


def plan_discs(
    instances: Sequence[InputInstance], capacity: int | None
) -> list[list[InputInstance]]:
    """Split a study over as few discs as needed, in disc order.

    Whole series stay together; a series is split only when it alone exceeds the medium.
    """
    if capacity is None or estimate_disc_size(instances) <= capacity:
        return [list(instances)]
    by_series: dict[str, list[InputInstance]] = {}
    for inst in instances:
        by_series.setdefault(inst.series_uid, []).append(inst)
    discs: list[list[InputInstance]] = []
    current: list[InputInstance] = []
    for series in by_series.values():
        if estimate_disc_size(current + series) <= capacity:
            current += series
            continue
        if current:
            discs.append(current)
            current = []
        if estimate_disc_size(series) <= capacity:
            current = list(series)
            continue
        for inst in series:  # a series larger than the medium: split it, in instance order
            if current and estimate_disc_size([*current, inst]) > capacity:
                discs.append(current)
                current = []
            if not current and estimate_disc_size([inst]) > capacity:
                raise TooLargeError(
                    f"{inst.path} alone does not fit on a {capacity:,}-byte medium. "
                    "Choose a larger medium (--medium dvd, bd or usb)."
                )
            current.append(inst)
    if current:
        discs.append(current)
    return discs


def default_label(timestamp: datetime) -> str:
    return f"DM{timestamp:%Y%m%d%H%M}"


def numbered(out: Path, label: str, number: int, count: int) -> tuple[Path, str]:
    """Output path and File-set ID of disc ``number`` of ``count``."""
    if count == 1:
        return out, label
    suffix = f"_{number}OF{count}"
    name = f"{out.stem}_{number}of{count}{out.suffix}"
    return out.with_name(name), label[: 16 - len(suffix)] + suffix


# -- the whole job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """What every disc of one run shares, settled before any work."""

    timestamp: datetime
    label: str
    fingerprint: str
    institution: str
    workers: int


@dataclass(frozen=True)
class _Disc:
    out: Path
    label: str
    number: int
    count: int
    instances: Sequence[InputInstance]


@dataclass(frozen=True)
class _DiscSet:
    """The discs of one run, as each disc's manifest lists them."""

    discs: tuple[_Disc, ...]
    set_id: str
    members: tuple[manifest.SetMember, ...]
    omitted: tuple[OmittedFile, ...] = ()  # found unusable by intake: named on every disc


@dataclass(frozen=True)
class _DiscOutcome:
    prepared: list[Prepared]
    file_ids: dict[str, str]
    bytes_written: int
    notes: tuple[str, ...] = ()  # "FILE: note" for the DICOMDIR of this disc
    omitted: tuple[OmittedFile, ...] = ()  # input files left out, as this disc names them


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000


def author(req: AuthorRequest, *, progress: Progress | None = None) -> AuthorResult:
    """Author a signed, conforming patient disc (or set of discs with ``span``)."""
    started = time.monotonic()
    run = _start(req)
    intake = _intake(req, progress)  # 1. intake
    discs = _plan(req, run, intake)  # 2. fit, before any work
    outcomes = _author_set(req, run, discs, progress)  # 3-7, disc by disc
    result = _result(req, run, intake, discs, outcomes, seconds=time.monotonic() - started)
    log.debug(
        "author: %d disc(s), %d image(s) in %.0f ms", len(discs.discs), result.images, _ms(started)
    )
    return result


def _start(req: AuthorRequest) -> _Run:
    """Everything about the run that needs no input: refuse a bad request before reading."""
    timestamp = (req.timestamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    label = validate_fileset_id(req.label or default_label(timestamp))
    signing.check_pair(req.key, req.cert)
    signing.check_valid_at(req.cert, timestamp)  # a disc signed outside it never verifies
    _check_output(req)
    if req.workers is not None and req.workers < 1:
        raise UsageError(f"workers must be at least 1, not {req.workers}")
    return _Run(
        timestamp=timestamp,
        label=label,
        fingerprint=signing.fingerprint(req.cert),
        institution=req.institution or _organisation(req.cert),
        workers=default_workers() if req.workers is None else req.workers,
    )


def _intake(req: AuthorRequest, progress: Progress | None) -> Intake:
    """Step 1: the inputs, and the proof that they are still what staff confirmed."""
    started = time.monotonic()
    intake = scan(
        req.inputs,
        allow_mixed_patients=req.allow_mixed_patients,
        skip_unusable=req.skip_unusable,
        progress=(lambda d, t: progress("scan", d, t)) if progress else None,
    )
    if req.expected_instances is not None:
        found = {i.sop_instance_uid for i in intake.instances}
        if found != req.expected_instances:
            added = len(found - req.expected_instances)
            gone = len(req.expected_instances - found)
            raise StudyError(
                "The study folder changed after the patient was confirmed "
                f"({added} image(s) appeared, {gone} disappeared). Nothing was written: "
                "wait until the export has finished, then start again and confirm again."
            )
    log.debug("author: step 1 intake: %d image(s) in %.0f ms", len(intake.instances), _ms(started))
    return intake


def _plan(req: AuthorRequest, run: _Run, intake: Intake) -> _DiscSet:
    """Step 2: which images go on which disc, refused now when they do not fit."""
    if len(intake.unusable) > manifest.MAX_OMITTED:
        raise StudyError(
            f"{len(intake.unusable)} files in the input cannot go on a disc (the manifest names "
            f"at most {manifest.MAX_OMITTED}). Nothing was written: choose the folder that "
            "holds the exported study."
        )
    capacity = req.capacity if req.capacity is not None else req.medium.capacity
    if not req.span:
        check_fits(estimate_disc_size(intake.instances), req.medium, capacity=capacity)
    plan = plan_discs(intake.instances, capacity)
    if len(plan) > manifest.MAX_SET_DISCS:
        raise TooLargeError(
            f"The study needs {len(plan):,} discs of this medium, more than the "
            f"{manifest.MAX_SET_DISCS} a set may have. Choose a larger medium (--medium dvd, bd "
            "or usb)."
        )
    discs = tuple(
        _Disc(*numbered(req.out, run.label, k, len(plan)), k, len(plan), part)
        for k, part in enumerate(plan, 1)
    )
    for disc in discs:  # every name this run will write, before any work
        if disc.out.exists() and not req.overwrite:
            raise OutputError(f"{disc.out} already exists. Choose another name or remove it.")
    set_id = hashlib.sha256(
        "\n".join(
            [run.label, run.timestamp.isoformat(), *(i.sop_instance_uid for i in intake.instances)]
        ).encode()
    ).hexdigest()[:32]
    members = tuple(
        manifest.SetMember(number=d.number, fileset_id=d.label, images=len(d.instances))
        for d in discs
    )
    log.debug("author: step 2 fit: %d disc(s)", len(discs))
    return _DiscSet(discs=discs, set_id=set_id, members=members, omitted=intake.unusable)


def _author_set(
    req: AuthorRequest, run: _Run, discs: _DiscSet, progress: Progress | None
) -> list[_DiscOutcome]:
    """Steps 3-7 for every disc; a set is only useful whole, so a failure removes them all."""
    outcomes: list[_DiscOutcome] = []
    written: list[Path] = []
    try:
        for disc in discs.discs:
            outcomes.append(_author_disc(req, run, disc, discs, progress=progress))
            written.append(disc.out)
        if req.label_pdf is not None:
            _write_labels(req.label_pdf, run, discs, outcomes, req)
    except BaseException:
        for path in written:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise
    return outcomes


def _write_labels(
    dest: Path, run: _Run, discs: _DiscSet, outcomes: Sequence[_DiscOutcome], req: AuthorRequest
) -> None:
    """The label PDF: a page for each disc, naming what is on that disc."""
    labels = [
        label_info(
            _summaries(outcome.prepared).values(),
            institution=run.institution,
            disc_number=disc.number,
            disc_count=disc.count,
            created=run.timestamp,
            text=req.label_text,
            from_instances=req.label_from_instances,
        )
        for disc, outcome in zip(discs.discs, outcomes, strict=True)
    ]
    write_label_pdf(labels, dest)


def _result(
    req: AuthorRequest,
    run: _Run,
    intake: Intake,
    discs: _DiscSet,
    outcomes: Sequence[_DiscOutcome],
    *,
    seconds: float,
) -> AuthorResult:
    prepared = [p for o in outcomes for p in o.prepared]
    file_ids = {uid: f for o in outcomes for uid, f in o.file_ids.items()}
    input_notes = tuple(f"{p.relative}: {n}" for p in prepared for n in p.notes) + tuple(
        n for o in outcomes for n in o.notes
    )
    return AuthorResult(
        out=req.out,
        format=req.format,
        label=run.label,
        medium=req.medium,
        images=len(prepared),
        watermarked=sum(1 for p in prepared if p.watermark == "embedded"),
        manifest_only=tuple(
            (file_ids[p.sop_instance_uid], p.watermark_reason)
            for p in prepared
            if p.watermark != "embedded"
        ),
        bytes_written=sum(o.bytes_written for o in outcomes),
        patients=intake.patient_count,
        studies=len(intake.study_uids),
        series=len(intake.series_uids),
        non_dicom_skipped=len(intake.non_dicom),
        duplicates_skipped=intake.identical_duplicates,
        dicomdirs_skipped=len(intake.existing_dicomdirs),
        fingerprint=run.fingerprint,
        seconds=seconds,
        summary=as_context(_summaries(prepared)),
        outputs=tuple(d.out for d in discs.discs),
        notes=_operator_notes(prepared, outcomes),
        input_notes=input_notes,
        label_pdf=req.label_pdf,
        omitted=tuple(dict.fromkeys(o for outcome in outcomes for o in outcome.omitted)),
    )


def _operator_notes(
    prepared: Sequence[Prepared], outcomes: Sequence[_DiscOutcome]
) -> tuple[str, ...]:
    notes = []
    shared = sorted({k for p in prepared for k in p.shared})
    differing = sum(1 for p in prepared if p.shared)
    if differing:
        notes.append(
            f"{differing} image(s) differ from the rest of their study or series in "
            f"{', '.join(shared)}. The DICOMDIR index can show only one value; the signed "
            "manifest keeps each image's own, and the checker knows."
        )
    odd = sum(1 for p in prepared if p.notes) + sum(1 for o in outcomes if o.notes)
    if odd:
        notes.append(
            f"{odd} file(s) hold values that do not follow the DICOM rules exactly (e.g. too "
            "long for their type). They were carried as they are and did not stop the disc."
        )
    return tuple(notes)


def _author_disc(
    req: AuthorRequest,
    run: _Run,
    disc: _Disc,
    discs: _DiscSet,
    *,
    progress: Progress | None,
) -> _DiscOutcome:
    """Steps 3-7 for one disc, in a work folder next to the output that is always removed."""
    stage = Path(tempfile.mkdtemp(prefix=f".{disc.out.name}.", suffix=".work", dir=disc.out.parent))
    try:
        root = stage / "disc"
        root.mkdir()
        prepared, file_ids, notes, left_out = _prepare_and_index(
            req, run, disc, stage, root, progress
        )
        outcome = _DiscOutcome(
            prepared=prepared,
            file_ids=file_ids,
            bytes_written=0,
            notes=notes,
            omitted=discs.omitted + left_out,
        )
        dicomdir = _file_entry(root, "DICOMDIR")
        pdi = _write_root_files(root, req, run, disc, outcome)
        _write_manifest(root, req, run, disc, discs, dicomdir, pdi, outcome)
        written = _write_output(root, req, run, disc, progress)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return replace(outcome, bytes_written=written)


def _prepare_and_index(
    req: AuthorRequest,
    run: _Run,
    disc: _Disc,
    stage: Path,
    root: Path,
    progress: Progress | None,
) -> tuple[list[Prepared], dict[str, str], tuple[str, ...], tuple[OmittedFile, ...]]:
    """Steps 3 and 4: prepare every instance and add its DICOMDIR records as each is ready;
    then write the DICOMDIR, and put the real files at their File IDs.

    Returns the prepared instances, SOP Instance UID -> File ID, the DICOMDIR's notes and the
    instances left out as unusable (``skip_unusable``).
    """
    started = time.monotonic()
    work = stage / "work"
    work.mkdir()
    prepared: list[Prepared] = []
    omitted: list[OmittedFile] = []
    # A spanned set's manifests count each disc's images before the later discs are made,
    # so with span a file found unusable only now still stops the set (intake's skips are
    # known before the plan).
    skip = req.skip_unusable and not req.span
    writer = DicomdirWriter(fileset_id=disc.label, salt=run.timestamp.isoformat())
    indexing_seconds = 0.0  # step 4's share of the loop: placing and encoding the records
    strings = Shared()  # one copy of each value many images share (names, UIDs)
    ready = _prepare_each(
        disc.instances,
        work,
        req.key,
        run.workers,
        progress,
        skip_unusable=skip,
        ahead=req.ahead,
    )
    with closing(ready):
        for inst, p in zip(disc.instances, ready, strict=True):
            if isinstance(p, OmittedFile):
                log.debug("author: %s: unusable, left out", p.file)
                omitted.append(p)
                continue
            assert p.records is not None
            adding = time.monotonic()
            with captured_warnings() as indexing:
                writer.add(p.records)
            indexing_seconds += time.monotonic() - adding
            notes = _unique(inst.notes, p.notes, indexing)
            prepared.append(_kept(p, inst, notes, strings))
    if not prepared:
        raise NoImagesError(
            f"None of the {len(omitted)} DICOM files can go on a disc; nothing was "
            "written. Export the study again from the PACS."
        )
    writing_started = time.monotonic()
    with captured_warnings() as writing:
        file_ids = writer.write(root)
    with captured_warnings() as reading:
        prepared = _note_shared_records(prepared, file_ids, writer)
    records_notes = writer.notes
    del writer  # its encoded records, as long as the DICOMDIR itself
    for p in prepared:
        os.replace(p.work_path, root / file_ids[p.sop_instance_uid])
    log.debug(
        "author: disc %d of %d: step 3 prepare and step 4 DICOMDIR: %d image(s) in %.0f ms "
        "(step 4: %.0f ms adding records as images came, %.0f ms writing)",
        disc.number,
        disc.count,
        len(prepared),
        _ms(started),
        indexing_seconds * 1000,
        _ms(writing_started),
    )
    _log_images(prepared, file_ids)
    where = "DICOMDIR" if disc.count == 1 else f"{disc.label}/DICOMDIR"
    notes = tuple(f"{where}: {n}" for n in _unique(records_notes, writing, reading))
    return prepared, file_ids, notes, tuple(omitted)


def _kept(p: Prepared, inst: InputInstance, notes: tuple[str, ...], one: Shared) -> Prepared:
    """``p`` as the main process keeps it: without its DICOMDIR records (on the writer's tree
    now), and with one copy of each value it shares with other images (each worker result
    arrives with its own copies)."""
    identity = p.identity.shared(one)
    uid = identity["SOPInstanceUID"]
    return replace(
        p,
        records=None,
        notes=notes,
        identity=identity,
        sop_instance_uid=uid if uid == p.sop_instance_uid else p.sop_instance_uid,
        relative=inst.relative if inst.relative == p.relative else p.relative,
        watermark=one(p.watermark),
        watermark_reason=one(p.watermark_reason),
        encoding=one(p.encoding),
        source_syntax=one(p.source_syntax),
        transfer_syntax=one(p.transfer_syntax),
        sop_class_uid=one(p.sop_class_uid),
        study_description=one(p.study_description),
        series_description=one(p.series_description),
    )


def _log_images(prepared: Sequence[Prepared], file_ids: dict[str, str]) -> None:
    """One debug line per image: File ID, input path, watermark, timing; no patient data."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    for p in prepared:
        log.debug(
            "author: image %s (input %s): watermark %s%s, %s, %d frame(s), %d note(s), %.0f ms",
            file_ids[p.sop_instance_uid],
            p.relative,
            p.watermark,
            f" ({p.watermark_reason})" if p.watermark_reason else "",
            p.encoding,
            p.frames,
            len(p.notes),
            p.millis,
        )


def _unique(*groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for group in groups for n in group))


def _file_entry(root: Path, name: str) -> manifest.FileEntry:
    path = root / name
    return manifest.FileEntry(path=name, size=path.stat().st_size, sha256=_file_sha256(path))


def _write_root_files(
    root: Path, req: AuthorRequest, run: _Run, disc: _Disc, outcome: _DiscOutcome
) -> tuple[str, ...]:
    """Step 5: README.TXT and INDEX.HTM, and the signer's certificate. Returns the names."""
    prepared = outcome.prepared
    context = {
        "institution": run.institution,
        "created": run.timestamp.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "software": APP_NAME,
        "version": __version__,
        "label": disc.label,
        "disc_number": disc.number,
        "disc_count": disc.count,
        "patients": as_context(_summaries(prepared)),
        "image_count": len(prepared),
        "watermarked": sum(1 for p in prepared if p.watermark == "embedded"),
        "fingerprint": run.fingerprint,
        "openssl_fingerprint": signing.OPENSSL_FINGERPRINT_COMMAND,
        "openssl_verify": signing.OPENSSL_VERIFY_COMMAND_ONE_STEP,
        "openssl_ok": signing.OPENSSL_VERIFY_OK,
        "omitted": outcome.omitted,
        "checksums": manifest.CHECKSUMS_PATH,
    }
    pdi = {
        "README.TXT": render("README.TXT.j2", **context).replace("\n", "\r\n"),
        "INDEX.HTM": render("INDEX.HTM.j2", **context),
    }
    for name, text in pdi.items():
        (root / name).write_bytes(text.encode("utf-8"))
    (root / manifest.SECURITY_DIR).mkdir()
    (root / manifest.SIGNER_PATH).write_bytes(req.cert.public_bytes(serialization.Encoding.PEM))
    log.debug("author: disc %d of %d: step 5 PDI files written", disc.number, disc.count)
    return (*pdi, manifest.SIGNER_PATH)


def _write_manifest(
    root: Path,
    req: AuthorRequest,
    run: _Run,
    disc: _Disc,
    discs: _DiscSet,
    dicomdir: manifest.FileEntry,
    root_files: Sequence[str],
    outcome: _DiscOutcome,
) -> None:
    """Step 6: the manifest over every file but itself and its signature, then the signature.

    First the ``sha256sum -c`` list of the same files, which the manifest covers too.
    """
    prepared, file_ids = outcome.prepared, outcome.file_ids
    files = [dicomdir]
    files += [
        manifest.FileEntry(path=file_ids[p.sop_instance_uid], size=p.size, sha256=p.sha256)
        for p in prepared
    ]
    files += [_file_entry(root, name) for name in root_files]
    (root / manifest.CHECKSUMS_PATH).write_bytes(_checksums(files))
    files.append(_file_entry(root, manifest.CHECKSUMS_PATH))
    images = _ImageEntries(prepared, file_ids)
    pieces = manifest.chunks(
        created=run.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        institution=run.institution,
        signer_subject=signing.subject_text(req.cert),
        signer_fingerprint=run.fingerprint,
        disc=manifest.DiscInfo(
            fileset_id=disc.label,
            medium=req.medium.name.lower(),
            number=disc.number,
            count=disc.count,
            set_id=discs.set_id,
            members=discs.members,
        ),
        dicomdir=dicomdir,
        files=files,
        images=images,
        iso=_iso_info(_volume_info(run, disc)) if req.format == "iso" else None,
        omitted=outcome.omitted,
    )
    manifest_path = root / manifest.MANIFEST_PATH
    with manifest_path.open("wb") as out:  # entry by entry: the document is never in memory
        for piece in pieces:
            out.write(piece)
    signature = signing.sign(req.key, manifest_path.read_bytes())
    (root / manifest.SIGNATURE_PATH).write_bytes(signature)
    log.debug(
        "author: disc %d of %d: step 6 manifest of %d file(s) signed",
        disc.number,
        disc.count,
        len(files),
    )


class _ImageEntries(Sequence[manifest.ImageEntry]):
    """The manifest's image entries, each made when the manifest writer reads it (all of
    them at once would be one more object per image at the author's peak)."""

    def __init__(self, prepared: Sequence[Prepared], file_ids: Mapping[str, str]) -> None:
        self._prepared = prepared
        self._file_ids = file_ids

    def __len__(self) -> int:
        return len(self._prepared)

    @overload
    def __getitem__(self, index: int) -> manifest.ImageEntry: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[manifest.ImageEntry]: ...

    def __getitem__(
        self, index: int | slice
    ) -> manifest.ImageEntry | Sequence[manifest.ImageEntry]:
        if isinstance(index, slice):
            return [self._entry(p) for p in self._prepared[index]]
        return self._entry(self._prepared[index])

    def _entry(self, p: Prepared) -> manifest.ImageEntry:
        return manifest.ImageEntry(
            file_id=self._file_ids[p.sop_instance_uid],
            sop_class_uid=p.sop_class_uid,
            sop_instance_uid=p.sop_instance_uid,
            transfer_syntax=p.transfer_syntax,
            identity=p.identity,
            identity_sha256=p.identity_sha256,
            watermark=p.watermark,
            watermark_reason=p.watermark_reason,
            frames=p.frames,
            encoding=p.encoding,
            source_syntax=p.source_syntax,
            invented=p.invented + p.shared,
        )


def _checksums(files: Sequence[manifest.FileEntry]) -> bytes:
    """``HASH  PATH`` per line, sorted, LF endings: what ``sha256sum -c`` (and macOS's
    ``shasum -a 256 -c``) read from the disc's top folder."""
    lines = sorted(f"{f.sha256}  {f.path}\n" for f in files)
    return "".join(lines).encode("ascii")


def _volume_info(run: _Run, disc: _Disc) -> VolumeInfo:
    return VolumeInfo(
        volume_id=disc.label,
        application_id=f"{APP_NAME} {__version__}",
        publisher=iso_a_characters(run.institution)[:64],  # the Joliet field's limit
        timestamp=run.timestamp,
        volume_set=(disc.number, disc.count),
    )


def _iso_info(volume: VolumeInfo) -> manifest.IsoInfo:
    """The signed description of the ISO image (what a checker rebuilds it from)."""
    return manifest.IsoInfo(
        layout=ISO_LAYOUT,
        volume_id=volume.volume_id,
        application_id=volume.application_id,
        publisher=volume.publisher,
        timestamp=volume.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        volume_set=volume.volume_set,
    )


def _write_output(
    root: Path, req: AuthorRequest, run: _Run, disc: _Disc, progress: Progress | None
) -> int:
    """Step 7: the ISO image or the folder, put in place whole. Returns the bytes of the files."""
    started = time.monotonic()
    disc_paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    disc_files = [DiscFile(path=p, source=root / p) for p in disc_paths]

    def write_progress(done: int, total: int) -> None:
        if progress:
            progress("write", done, total)

    if req.format == "iso":
        write_iso(
            disc_files,
            disc.out,
            _volume_info(run, disc),
            progress=write_progress,
            overwrite=req.overwrite,
        )
    else:
        write_folder(disc_files, disc.out, progress=write_progress, overwrite=req.overwrite)
    written = sum((root / p).stat().st_size for p in disc_paths)
    log.debug(
        "author: disc %d of %d: step 7 %s of %d file(s), %d bytes in %.0f ms",
        disc.number,
        disc.count,
        req.format,
        len(disc_paths),
        written,
        _ms(started),
    )
    return written


__all__ = [
    "AuthorRequest",
    "AuthorResult",
    "author",
    "default_label",
    "estimate_disc_size",
    "numbered",
    "plan_discs",
]
