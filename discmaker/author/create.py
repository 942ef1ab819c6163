"""Study -> signed patient disc. Orchestration only; each step lives in its own module.

1. intake        find, read and validate the inputs (study.scan); refuse what cannot go on a disc
2. fit           refuse, before any work, a disc that will not fit the chosen medium
3. prepare       per instance, in worker processes: normalise, identity digest, watermark, write
4. DICOMDIR      pydicom FileSet over header-only copies; the real files then take their place
5. PDI files     README.TXT and INDEX.HTM from templates/
6. manifest      every file's size and SHA-256, the hierarchy, the watermark status; signed
7. output        ISO 9660 image (atomic rename) or a folder for a USB stick

SOP Instance UIDs are kept. The watermark is reversible and ``discmaker restore`` gives back
the original pixels bit for bit under the original identity, so a receiving PACS reconciles the
images with the ones it may already hold instead of filing duplicates. The watermarked files
say what they carry in a private block (``DISCMAKER 1``), which restore removes.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from pydicom.dataset import Dataset

from discmaker import APP_NAME, __version__
from discmaker.author.dicomdir import FileSetWriter, header_for_record
from discmaker.author.intake import InputInstance, Intake, scan
from discmaker.author.normalise import normalise
from discmaker.crypto import signing
from discmaker.disc.iso import DiscFile, VolumeInfo, iso_a_characters, write_folder, write_iso
from discmaker.disc.media import Medium, check_fits, estimate_iso_size
from discmaker.errors import OutputError, StudyError, TooLargeError, UsageError
from discmaker.format import manifest
from discmaker.format.dicomdir import parse_dicomdir, validate_fileset_id
from discmaker.format.identity import identity_attributes, identity_digest, watermark_digest
from discmaker.templating import PatientSummary, SeriesSummary, StudySummary, as_context, render
from discmaker.watermark.engine import UnsupportedPixelsError, WatermarkCapacityError
from discmaker.watermark.seal import seal_dataset

PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "DISCMAKER 1"
WATERMARK_FORMAT = "DMWM2"

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
    workers: int | None = None
    overwrite: bool = False
    span: bool = False  # split over several discs when the study does not fit one
    # The instances staff confirmed (guided workflow): the study must not change between the
    # patient confirmation and the disc, e.g. a PACS export still landing in the folder.
    expected_instances: frozenset[str] | None = None
    capacity: int | None = None  # bytes; overrides the medium's (a USB stick's free space)


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


@dataclass(frozen=True)
class _Prepared:
    work_path: str
    header: Dataset | None  # handed to the DICOMDIR writer, then dropped to save memory
    invented: tuple[str, ...]
    identity: dict[str, str]
    identity_sha256: str
    watermark: str
    watermark_reason: str
    frames: int
    encoding: str
    source_syntax: str
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    size: int
    sha256: str
    study_description: str
    series_description: str
    shared: tuple[str, ...] = ()  # DICOMDIR keys that show another image's value (see below)


# -- step 3: per-instance work (runs in worker processes) ----------------------------------

_worker_key: Ed25519PrivateKey | None = None
_worker_key_id: bytes = b""


def _init_worker(raw_key: bytes) -> None:
    global _worker_key, _worker_key_id
    _worker_key = Ed25519PrivateKey.from_private_bytes(raw_key)
    _worker_key_id = signing.key_id(_worker_key.public_key())


def _mark_watermarked(ds: Dataset, key_id: bytes) -> None:
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "CS", WATERMARK_FORMAT)
    block.add_new(0x02, "LO", key_id.hex().upper())


def _prepare(job: tuple[str, str]) -> _Prepared:
    source, work_path = job
    assert _worker_key is not None, "worker not initialised"
    norm = normalise(Path(source))
    ds = norm.dataset
    attrs = identity_attributes(ds)
    status, reason = "none", ""
    if norm.encoding == "lossy-carried":
        reason = "lossy compressed image carried unchanged; watermarking would alter it"
    elif "PixelData" not in ds:
        reason = "no pixel data (not an image)"
    else:
        try:
            seal_dataset(
                ds,
                identity_digest=watermark_digest(attrs),
                signer=_worker_key,
                key_id=_worker_key_id,
            )
            _mark_watermarked(ds, _worker_key_id)
            status = "embedded"
        except (WatermarkCapacityError, UnsupportedPixelsError) as exc:
            reason = str(exc)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    with open(work_path, "wb") as fp:
        fp.write(data)
    header, invented = header_for_record(ds)
    return _Prepared(
        work_path=work_path,
        header=header,
        invented=invented,
        identity=attrs,
        identity_sha256=identity_digest(attrs).hex(),
        watermark=status,
        watermark_reason=reason,
        frames=int(attrs["NumberOfFrames"] or 1),
        encoding=norm.encoding,
        source_syntax=norm.source_syntax,
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        study_description=str(ds.get("StudyDescription", "") or ""),
        series_description=str(ds.get("SeriesDescription", "") or ""),
    )


def _prepare_each(
    instances: Sequence[InputInstance],
    work: Path,
    key: Ed25519PrivateKey,
    workers: int,
    progress: Progress | None,
) -> Iterator[_Prepared]:
    """Prepared instances in disc order, as they become ready."""
    jobs = [(str(inst.path), str(work / f"{n:06d}.dcm")) for n, inst in enumerate(instances)]
    raw = key.private_bytes_raw()
    if workers <= 1 or len(jobs) < 8:
        _init_worker(raw)
        results: Iterator[_Prepared] = map(_prepare, jobs)
        for n, result in enumerate(results, 1):
            if progress:
                progress("prepare", n, len(jobs))
            yield result
        return
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(raw,)
    ) as pool:
        try:
            for n, result in enumerate(pool.map(_prepare, jobs, chunksize=4), 1):
                if progress:
                    progress("prepare", n, len(jobs))
                yield result
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


# -- helpers ---------------------------------------------------------------------------------


def _check_output(req: AuthorRequest) -> None:
    out = req.out.resolve()
    for given in req.inputs:
        root = given.resolve()
        if root.is_dir() and (out == root or root in out.parents):
            raise UsageError(
                f"The output {req.out} is inside the input folder {given}. discmaker never "
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


def _summaries(prepared: Sequence[_Prepared]) -> dict[str, PatientSummary]:
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
    prepared: list[_Prepared], file_ids: dict[str, str], dicomdir: bytes
) -> list[_Prepared]:
    """Record, per image, the DICOMDIR keys that are not its own values.

    One PATIENT, STUDY and SERIES record serves many images; when the images of one study
    disagree (one slice with another Study Date, a name in other letter case) the record
    carries the first image's value. The manifest lists those keys for each image, so the
    checker knows the difference was there when the disc was signed.
    """
    records = {r.file_id: r for r in parse_dicomdir(dicomdir).records}
    out = []
    for p in prepared:
        record = records.get(file_ids[p.sop_instance_uid])
        differs = (
            ()
            if record is None
            else tuple(
                k
                for k, v in record.keys.items()
                if k in p.identity and k not in p.invented and v != p.identity[k]
            )
        )
        out.append(replace(p, shared=differs) if differs else p)
    return out


# -- planning: which images go on which disc -------------------------------------------------

# Per image on top of its own bytes: a DICOMDIR record (~0.5 kB) and a manifest entry (~1.5 kB).
_PER_IMAGE_OVERHEAD = 2048
# Per disc: README.TXT, INDEX.HTM, SIGNER.PEM, MANIFEST.SIG and the fixed parts of the rest.
_FIXED_FILES = [64 * 1024, 64 * 1024, 4096, 1024, 16 * 1024]


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
class _Disc:
    out: Path
    label: str
    number: int
    count: int
    instances: Sequence[InputInstance]


@dataclass(frozen=True)
class _DiscOutcome:
    prepared: list[_Prepared]
    file_ids: dict[str, str]
    bytes_written: int


def author(req: AuthorRequest, *, progress: Progress | None = None) -> AuthorResult:
    """Author a signed, conforming patient disc (or set of discs with ``span``)."""
    started = time.monotonic()
    timestamp = (req.timestamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    label = validate_fileset_id(req.label or default_label(timestamp))
    signing.check_pair(req.key, req.cert)
    _check_output(req)

    # 1. intake
    intake: Intake = scan(
        req.inputs,
        allow_mixed_patients=req.allow_mixed_patients,
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
    # 2. fit, before any work
    capacity = req.capacity if req.capacity is not None else req.medium.capacity
    if not req.span:
        check_fits(estimate_disc_size(intake.instances), req.medium, capacity=capacity)
    plan = plan_discs(intake.instances, capacity)
    discs = [
        _Disc(*numbered(req.out, label, k, len(plan)), k, len(plan), part)
        for k, part in enumerate(plan, 1)
    ]
    for disc in discs:  # every name this run will write, before any work
        if disc.out.exists() and not req.overwrite:
            raise OutputError(f"{disc.out} already exists. Choose another name or remove it.")
    set_id = hashlib.sha256(
        "\n".join(
            [label, timestamp.isoformat(), *(i.sop_instance_uid for i in intake.instances)]
        ).encode()
    ).hexdigest()[:32]
    members = tuple(
        manifest.SetMember(number=d.number, fileset_id=d.label, images=len(d.instances))
        for d in discs
    )

    outcomes: list[_DiscOutcome] = []
    written: list[Path] = []
    try:
        for disc in discs:
            outcomes.append(_author_disc(req, disc, timestamp, set_id, members, progress=progress))
            written.append(disc.out)
    except BaseException:
        # A set is only useful whole: remove the discs of this run already written.
        for path in written:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise

    prepared = [p for o in outcomes for p in o.prepared]
    file_ids = {uid: f for o in outcomes for uid, f in o.file_ids.items()}
    shared = sorted({k for p in prepared for k in p.shared})
    differing = sum(1 for p in prepared if p.shared)
    notes = []
    if differing:
        notes.append(
            f"{differing} image(s) differ from the rest of their study or series in "
            f"{', '.join(shared)}. The DICOMDIR index can show only one value; the signed "
            "manifest keeps each image's own, and the checker knows."
        )
    summaries = _summaries(prepared)
    return AuthorResult(
        out=req.out,
        format=req.format,
        label=label,
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
        fingerprint=signing.fingerprint(req.cert),
        seconds=time.monotonic() - started,
        summary=as_context(summaries),
        outputs=tuple(d.out for d in discs),
        notes=tuple(notes),
    )


def _author_disc(
    req: AuthorRequest,
    disc: _Disc,
    timestamp: datetime,
    set_id: str,
    members: tuple[manifest.SetMember, ...],
    *,
    progress: Progress | None,
) -> _DiscOutcome:
    """Steps 3-7 for one disc."""
    fingerprint = signing.fingerprint(req.cert)
    institution = req.institution or _organisation(req.cert)
    workers = req.workers or min(os.cpu_count() or 1, 8)
    parent = disc.out.parent
    stage = Path(tempfile.mkdtemp(prefix=f".{disc.out.name}.", suffix=".work", dir=parent))
    try:
        work = stage / "work"
        root = stage / "disc"
        work.mkdir()
        root.mkdir()
        # 3. prepare every instance, and 4. its DICOMDIR records as each one is ready;
        # then the DICOMDIR, and the real files over its stand-ins
        prepared: list[_Prepared] = []
        with FileSetWriter(fileset_id=disc.label, stage=stage) as dicomdir:
            for p in _prepare_each(disc.instances, work, req.key, workers, progress):
                assert p.header is not None
                dicomdir.add(p.header)
                prepared.append(replace(p, header=None))
            file_ids = dicomdir.write(root, salt=timestamp.isoformat())
        for p in prepared:
            os.replace(p.work_path, root / file_ids[p.sop_instance_uid])
        prepared = _note_shared_records(prepared, file_ids, (root / "DICOMDIR").read_bytes())
        dicomdir_entry = manifest.FileEntry(
            path="DICOMDIR",
            size=(root / "DICOMDIR").stat().st_size,
            sha256=_file_sha256(root / "DICOMDIR"),
        )
        # 5. PDI root files
        summaries = _summaries(prepared)
        context = {
            "institution": institution,
            "created": timestamp.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "software": APP_NAME,
            "version": __version__,
            "label": disc.label,
            "disc_number": disc.number,
            "disc_count": disc.count,
            "patients": as_context(summaries),
            "image_count": len(prepared),
            "watermarked": sum(1 for p in prepared if p.watermark == "embedded"),
            "fingerprint": fingerprint,
            "openssl_fingerprint": signing.OPENSSL_FINGERPRINT_COMMAND,
            "openssl_verify": signing.OPENSSL_VERIFY_COMMAND_ONE_STEP,
            "openssl_ok": signing.OPENSSL_VERIFY_OK,
        }
        pdi = {
            "README.TXT": render("README.TXT.j2", **context).replace("\n", "\r\n"),
            "INDEX.HTM": render("INDEX.HTM.j2", **context),
        }
        for name, text in pdi.items():
            (root / name).write_bytes(text.encode("utf-8"))
        (root / manifest.SECURITY_DIR).mkdir()
        signer_pem = req.cert.public_bytes(serialization.Encoding.PEM)
        (root / manifest.SIGNER_PATH).write_bytes(signer_pem)
        # 6. manifest over every file but itself and its signature, then the signature
        files = [dicomdir_entry]
        files += [
            manifest.FileEntry(path=file_ids[p.sop_instance_uid], size=p.size, sha256=p.sha256)
            for p in prepared
        ]
        for name in (*pdi, manifest.SIGNER_PATH):
            path = root / name
            files.append(
                manifest.FileEntry(path=name, size=path.stat().st_size, sha256=_file_sha256(path))
            )
        images = [
            manifest.ImageEntry(
                file_id=file_ids[p.sop_instance_uid],
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
            for p in prepared
        ]
        manifest_bytes = manifest.build(
            created=timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            institution=institution,
            signer_subject=signing.subject_text(req.cert),
            signer_fingerprint=fingerprint,
            disc=manifest.DiscInfo(
                fileset_id=disc.label,
                medium=req.medium.name.lower(),
                number=disc.number,
                count=disc.count,
                set_id=set_id,
                members=members,
            ),
            dicomdir=dicomdir_entry,
            files=files,
            images=images,
        )
        (root / manifest.MANIFEST_PATH).write_bytes(manifest_bytes)
        (root / manifest.SIGNATURE_PATH).write_bytes(signing.sign(req.key, manifest_bytes))

        # 7. output
        disc_paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        disc_files = [DiscFile(path=p, source=root / p) for p in disc_paths]

        def write_progress(done: int, total: int) -> None:
            if progress:
                progress("write", done, total)

        if req.format == "iso":
            write_iso(
                disc_files,
                disc.out,
                VolumeInfo(
                    volume_id=disc.label,
                    application_id=f"{APP_NAME} {__version__}",
                    publisher=iso_a_characters(institution)[:128],
                    timestamp=timestamp,
                    volume_set=(disc.number, disc.count),
                ),
                progress=write_progress,
                overwrite=req.overwrite,
            )
        else:
            write_folder(disc_files, disc.out, progress=write_progress, overwrite=req.overwrite)
        written = sum((root / p).stat().st_size for p in disc_paths)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return _DiscOutcome(prepared=prepared, file_ids=file_ids, bytes_written=written)


__all__ = [
    "AuthorRequest",
    "AuthorResult",
    "author",
    "default_label",
    "estimate_disc_size",
    "numbered",
    "plan_discs",
]
