"""Disc -> CheckReport. The verification protocol, written once.

The steps, numbered the same in the README, the terminal summary and the reports:

(1) Signature. ``DISCSIG/MANIFEST.SIG`` must be a valid Ed25519 signature of the exact bytes
    of ``DISCSIG/MANIFEST.JSN`` by the certificate ``DISCSIG/SIGNER.PEM``, and that certificate
    must be pinned in the trust store. Valid but untrusted is its own verdict (not verifiable).
(2) Files agree. The manifest, the DICOMDIR and the files on the disc describe the same set:
    nothing missing, nothing extra, every size and SHA-256 as signed, every DICOMDIR record's
    File ID, UIDs and transfer syntax equal to the file it points at.
(3) Headers. Each image's identity attributes (patient, study, series, instance, image
    geometry) equal its manifest entry and its DICOMDIR record. This alone catches the
    published attack, where header fields were edited with a tag editor.
(4) Pixels. Each watermarked frame: extract the watermark, verify its signature against the
    trust store, check it was sealed for this header's identity, restore the original pixels
    and compare every region's hash, so a change is located to a region of a frame.
(5) Verdict. Per image: ok, tampered (what and where), protected by the manifest only (why),
    or not verifiable; for the disc: verified (exit 0), tampered or inconsistent (1), not
    verifiable (2). Unreadable input is exit 3, raised as DiscError before a verdict exists.

A received disc is hostile input: every read goes through :mod:`discmaker.disc.source`, which
refuses path escapes, symlinks and absurd sizes; parse failures become findings, not crashes.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydicom import dcmread
from pydicom.dataset import Dataset

from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.disc.source import DiscSource, IsoSource, open_source
from discmaker.errors import DiscError, OutputError, VerificationError
from discmaker.format import manifest as manifest_mod
from discmaker.format.dicomdir import Dicomdir, DirRecord, file_id_problem, parse_dicomdir
from discmaker.format.identity import (
    IDENTITY_KEYWORDS,
    differing_keywords,
    identity_attributes,
    watermark_digest,
)
from discmaker.format.manifest import (
    MANIFEST_PATH,
    SIGNATURE_PATH,
    SIGNER_PATH,
    ImageEntry,
    Manifest,
)
from discmaker.models import (
    CheckReport,
    Finding,
    ImageStatus,
    ImageVerdict,
    Region,
    SetReport,
    Signer,
)
from discmaker.watermark.seal import unseal_dataset

MAX_IMAGE_BYTES = 1 << 30
MAX_DICOMDIR_BYTES = 64 << 20
MAX_SMALL_FILE = 64 << 10

PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "DISCMAKER 1"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Job:
    path: str
    entry: ImageEntry | None  # None on an unsigned disc
    record: DirRecord | None
    restore_to: str | None  # where to write the original, when restoring
    sha256: str = ""  # as signed in the manifest's file list
    restore_tampered: bool = False  # also write what failed (restore --include-tampered)


@dataclass(frozen=True)
class _Outcome:
    verdict: ImageVerdict
    key_id: bytes | None
    written: str | None
    made_by_discmaker: bool = False  # carries discmaker's private block


# -- per image (steps 3 and 4), run in worker processes ---------------------------------------

_source: DiscSource | None = None
_keys: dict[bytes, Ed25519PublicKey] = {}
_trusted: frozenset[bytes] = frozenset()


def _init_worker(
    source_path: str, raw_keys: Mapping[bytes, bytes], trusted: frozenset[bytes]
) -> None:
    global _source, _keys, _trusted
    _source = open_source(Path(source_path))
    _keys = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in raw_keys.items()}
    _trusted = trusted


def _series_label(attrs: Mapping[str, str]) -> str:
    return f"{attrs.get('Modality', '') or '?'} {attrs.get('SeriesNumber', '') or '?'}".strip()


def _record_mismatches(
    record: DirRecord | None, attrs: Mapping[str, str], invented: Sequence[str]
) -> list[str]:
    if record is None:
        return []
    return [
        k
        for k, v in record.keys.items()
        if k in IDENTITY_KEYWORDS and k not in invented and v != attrs.get(k, "")
    ]


def _strip_bookkeeping(ds: Dataset) -> None:
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return
    for offset in (0x01, 0x02):
        tag = block.get_tag(offset)
        if tag in ds:
            del ds[tag]
    creator_tag = (PRIVATE_GROUP << 16) | (block.block_start >> 8)
    if creator_tag in ds:
        del ds[creator_tag]


def _write_original(ds: Dataset, pixel_data: bytes | None, out: str) -> str:
    if pixel_data is not None:
        ds.PixelData = pixel_data
    _strip_bookkeeping(ds)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(out, enforce_file_format=True)
    except OSError as exc:
        raise OutputError(f"{out} cannot be written ({exc.strerror}). Check the disk.") from exc
    return out


def _write_tampered(ds: Dataset, pixel_data: bytes | None, out: str) -> str | None:
    """Best effort for --include-tampered: a file altered on the disc may not re-encode."""
    try:
        return _write_original(ds, pixel_data, out)
    except OutputError:
        raise
    except Exception:  # whatever the tampering broke, it is listed as refused instead
        Path(out).unlink(missing_ok=True)
        return None


def _has_bookkeeping(ds: Dataset) -> bool:
    try:
        ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return False
    return True


def _verify_one(job: _Job) -> _Outcome:
    assert _source is not None, "worker not initialised"
    entry = job.entry
    reasons: list[str] = []
    attributes: list[str] = []
    regions: tuple[Region, ...] = ()
    key_id: bytes | None = None
    sop_uid = (
        entry.sop_instance_uid if entry else (job.record.sop_instance_uid if job.record else "")
    )
    label = _series_label(entry.identity) if entry else ""
    altered = missing = False

    def verdict(status: ImageStatus, *, restorable: bool = False) -> ImageVerdict:
        return ImageVerdict(
            path=job.path,
            status=status,
            reasons=tuple(reasons),
            attributes=tuple(dict.fromkeys(attributes)),
            regions=regions,
            sop_instance_uid=sop_uid,
            series_uid=entry.identity.get("SeriesInstanceUID", "") if entry else "",
            series_label=label,
            restorable=restorable,
            altered=altered or missing,
        )

    try:
        data = _source.read_bytes(job.path, limit=MAX_IMAGE_BYTES)
    except DiscError as exc:
        reasons.append(f"file cannot be read: {exc}")
        missing = True
        return _Outcome(verdict(ImageStatus.TAMPERED), None, None)
    altered = entry is not None and hashlib.sha256(data).hexdigest() != job.sha256
    try:
        ds = dcmread(io.BytesIO(data))
        attrs = identity_attributes(ds)
    except Exception as exc:  # hostile file: any parser failure means "not this image"
        reasons.append(f"not a readable DICOM file any more ({type(exc).__name__})")
        return _Outcome(verdict(ImageStatus.TAMPERED), None, None)
    if not label:
        label = _series_label(attrs)

    if entry is None:  # unsigned disc: structure, and any watermark the image still carries
        return _verify_unsigned(job, ds, attrs, reasons, attributes, verdict)

    # (3) header identity against the manifest and the DICOMDIR record
    changed = differing_keywords(entry.identity, attrs)
    if changed:
        attributes.extend(changed)
        if "SOPInstanceUID" in changed:
            reasons.append("this file holds a different image than the one signed (file replaced)")
        else:
            reasons.append("header attributes changed since signing: " + ", ".join(changed))
    rec_changed = _record_mismatches(job.record, attrs, entry.invented)
    if rec_changed:
        attributes.extend(rec_changed)
        reasons.append("header differs from its DICOMDIR record: " + ", ".join(rec_changed))

    # (4) watermark
    restored: bytes | None = None
    watermark_ok = False
    signer_trusted = True
    if entry.watermark == "embedded":
        res = unseal_dataset(ds, identity_digest=watermark_digest(attrs), public_keys=_keys)
        key_id = res.key_id
        regions = tuple(Region(r.frame, r.row0, r.col0, r.row1, r.col1) for r in res.regions)
        if res.status == "ok":
            watermark_ok = True
            restored = res.restored_pixel_data
            signer_trusted = key_id in _trusted
        elif res.status == "no-watermark":
            reasons.append(
                "the watermark is missing: the image was re-saved, replaced or its pixels rewritten"
            )
        elif res.status == "unknown-signer":
            reasons.append("the watermark was signed by a key that is not on this disc or trusted")
        elif res.status == "bad-signature":
            reasons.append("the watermark's signature does not verify")
        elif res.status == "identity-mismatch":
            if not changed:
                attributes.extend(["identity"])
            reasons.append(
                "the header does not match the identity sealed in the pixels"
                + (": " + ", ".join(changed) if changed else "")
            )
        else:  # tampered pixels
            reasons.extend(res.reasons or ("pixel values changed since signing",))
    elif altered and not changed:
        reasons.append("file content differs from the signed manifest (SHA-256)")

    if altered and not reasons:
        reasons.append("file content differs from the signed manifest (SHA-256)")
    if reasons:
        written = None
        if job.restore_to is not None and job.restore_tampered:
            written = _write_tampered(ds, restored, job.restore_to)
        return _Outcome(verdict(ImageStatus.TAMPERED), key_id, written)
    if entry.watermark == "embedded" and watermark_ok:
        if not signer_trusted:
            reasons.append("watermark signed by a sender who is not in your trust store")
            return _Outcome(verdict(ImageStatus.NOT_VERIFIABLE), key_id, None)
        written = _write_original(ds, restored, job.restore_to) if job.restore_to else None
        return _Outcome(verdict(ImageStatus.OK, restorable=True), key_id, written)
    reasons.append(entry.watermark_reason or "no watermark")
    written = _write_original(ds, None, job.restore_to) if job.restore_to else None
    return _Outcome(verdict(ImageStatus.MANIFEST_ONLY, restorable=True), key_id, written)


def _verify_unsigned(
    job: _Job,
    ds: Dataset,
    attrs: Mapping[str, str],
    reasons: list[str],
    attributes: list[str],
    verdict: Callable[[ImageStatus], ImageVerdict],
) -> _Outcome:
    """An image on a disc without a discmaker manifest.

    A discmaker image keeps its watermark even when someone deletes DISCSIG/ to make the
    disc look like any vendor's: check that watermark, so removing the signature cannot hide
    an edited header or pixel.
    """
    mism = _record_mismatches(job.record, attrs, ())
    if mism:
        attributes.extend(mism)
        reasons.append("header differs from its DICOMDIR record: " + ", ".join(mism))
    marked = _has_bookkeeping(ds)
    if not marked:
        if mism:
            return _Outcome(verdict(ImageStatus.TAMPERED), None, None)
        reasons.append("no discmaker signature on this disc: integrity cannot be proven")
        return _Outcome(verdict(ImageStatus.NOT_VERIFIABLE), None, None)
    res = unseal_dataset(ds, identity_digest=watermark_digest(attrs), public_keys=_keys)
    if res.status == "ok" and not mism:
        reasons.append("watermark intact, but the disc's signed list of files (DISCSIG) is missing")
        return _Outcome(verdict(ImageStatus.NOT_VERIFIABLE), res.key_id, None, True)
    if res.status == "unknown-signer" and not mism:
        reasons.append("watermarked by a sender who is not in your trust store")
        return _Outcome(verdict(ImageStatus.NOT_VERIFIABLE), res.key_id, None, True)
    if res.status == "no-watermark":
        reasons.append("made by discmaker, but its watermark is missing (re-saved or replaced)")
    elif res.status == "identity-mismatch":
        attributes.append("identity")
        reasons.append("the header does not match the identity sealed in the pixels")
    elif res.status != "ok":
        reasons.extend(res.reasons or ("the watermark does not verify",))
    return _Outcome(verdict(ImageStatus.TAMPERED), res.key_id, None, True)


# -- the disc (steps 1, 2 and 5) ---------------------------------------------------------------


def _run_jobs(
    source: Path,
    jobs: Sequence[_Job],
    keys: Mapping[bytes, Ed25519PublicKey],
    trusted: frozenset[bytes],
    workers: int,
    progress: Progress | None,
) -> list[_Outcome]:
    raw = {k: v.public_bytes(Encoding.Raw, PublicFormat.Raw) for k, v in keys.items()}
    out: list[_Outcome] = []
    if workers <= 1 or len(jobs) < 8:
        _init_worker(str(source), raw, trusted)
        try:
            for n, job in enumerate(jobs, 1):
                out.append(_verify_one(job))
                if progress:
                    progress("verify", n, len(jobs))
        finally:
            _close_worker_source()
        return out
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(str(source), raw, trusted)
    ) as pool:
        for n, outcome in enumerate(pool.map(_verify_one, jobs, chunksize=4), 1):
            out.append(outcome)
            if progress:
                progress("verify", n, len(jobs))
    return out


def _close_worker_source() -> None:
    global _source
    if _source is not None:
        _source.close()
        _source = None


def _read_dicomdir(src: DiscSource, findings: list[Finding]) -> Dicomdir | None:
    try:
        return parse_dicomdir(src.read_bytes("DICOMDIR", limit=MAX_DICOMDIR_BYTES))
    except DiscError as exc:
        findings.append(Finding(2, "structure", "DICOMDIR", f"DICOMDIR unusable: {exc}"))
        return None


def _dicomdir_findings(
    dicomdir: Dicomdir, entries: Mapping[str, int], expected: Mapping[str, ImageEntry] | None
) -> list[Finding]:
    found: list[Finding] = []
    if not dicomdir.offsets_consistent:
        found.append(
            Finding(2, "structure", "DICOMDIR", "the DICOMDIR's record links (offsets) are broken")
        )
    seen: set[str] = set()
    for rec in dicomdir.records:
        problem = file_id_problem(rec.file_id)
        if problem:
            found.append(
                Finding(2, "naming", rec.file_id or "DICOMDIR", f"Referenced File ID: {problem}")
            )
            continue
        if rec.file_id in seen:
            found.append(Finding(2, "structure", rec.file_id, "referenced twice in the DICOMDIR"))
        seen.add(rec.file_id)
        if rec.file_id not in entries:
            found.append(
                Finding(
                    2,
                    "missing",
                    rec.file_id,
                    "the DICOMDIR references this file but it is not on the disc",
                )
            )
        if expected is not None:
            entry = expected.get(rec.file_id)
            if entry is None:
                found.append(
                    Finding(
                        2,
                        "structure",
                        rec.file_id,
                        "DICOMDIR record for a file the manifest does not list",
                    )
                )
            elif (rec.sop_instance_uid, rec.sop_class_uid, rec.transfer_syntax) != (
                entry.sop_instance_uid,
                entry.sop_class_uid,
                entry.transfer_syntax,
            ):
                found.append(
                    Finding(
                        2,
                        "structure",
                        rec.file_id,
                        "DICOMDIR record's referenced UIDs or transfer syntax differ from "
                        "the signed manifest",
                    )
                )
    if expected is not None:
        for file_id in sorted(set(expected) - seen):
            found.append(
                Finding(
                    2, "structure", file_id, "image listed in the manifest has no DICOMDIR record"
                )
            )
    return found


def check_disc(
    source: Path,
    *,
    trust: TrustStore,
    progress: Progress | None = None,
    workers: int | None = None,
) -> CheckReport:
    """Check a disc, ISO image or folder (steps 1-5 above)."""
    report, _ = check_and_restore(source, trust=trust, progress=progress, workers=workers)
    return report


def check_and_restore(
    source: Path,
    *,
    trust: TrustStore,
    progress: Progress | None = None,
    workers: int | None = None,
    restore_dir: Path | None = None,
    restore_tampered: bool = False,
) -> tuple[CheckReport, list[_Outcome]]:
    """The check, and when ``restore_dir`` is given each image's original written beneath it."""
    workers = workers or min(os.cpu_count() or 1, 8)
    findings: list[Finding] = []
    notes: list[str] = []
    with open_source(source) as src:
        entries = {e.path: e.size for e in src.files()}
        if isinstance(src, IsoSource):
            for path, problem in src.view_problems():
                findings.append(Finding(2, "structure", path, problem))
        for skipped in src.skipped():
            findings.append(
                Finding(
                    2,
                    "structure",
                    skipped.raw_path,
                    f"not a regular file ({skipped.reason}); not read",
                )
            )
        if progress:
            progress("read", 0, 1)
        if MANIFEST_PATH not in entries:
            return _check_unsigned(src, source, entries, findings, workers, progress, trust)

        # (1) signature
        manifest_bytes = src.read_bytes(MANIFEST_PATH, limit=manifest_mod.MAX_MANIFEST_BYTES)
        signer: Signer | None = None
        signature_valid = False
        signer_key: Ed25519PublicKey | None = None
        try:
            cert = signing.load_certificate_bytes(src.read_bytes(SIGNER_PATH, limit=MAX_SMALL_FILE))
            pinned = trust.find(cert)
            signer = Signer(
                subject=signing.subject_text(cert),
                fingerprint=signing.fingerprint(cert),
                trusted=pinned is not None,
            )
            public = cert.public_key()
            if isinstance(public, Ed25519PublicKey):
                signer_key = public
            signature = src.read_bytes(SIGNATURE_PATH, limit=MAX_SMALL_FILE)
            signing.verify(cert, signature, manifest_bytes, what="DISCSIG/MANIFEST.JSN")
            signature_valid = True
        except VerificationError:
            findings.append(
                Finding(
                    1,
                    "signature",
                    SIGNATURE_PATH,
                    "the manifest's signature does not match: the manifest or its "
                    "signature was changed after signing",
                )
            )
        except DiscError as exc:
            findings.append(Finding(1, "signature", "DISCSIG", f"signature files unusable: {exc}"))
        if signer is not None and not signer.trusted:
            notes.append(
                f"Signed by {signer.subject}, fingerprint {signer.fingerprint}, which is not in "
                "your trust store. Confirm the fingerprint with the sender by telephone, then "
                "run: discmaker trust add <their certificate>."
            )
        if trust.is_empty():
            notes.append("Your trust store is empty: no disc can verify until you add a sender.")
        try:
            manifest: Manifest = manifest_mod.parse(manifest_bytes)
        except DiscError as exc:
            findings.append(Finding(1, "signature", MANIFEST_PATH, f"manifest unusable: {exc}"))
            return (
                CheckReport(
                    source=src.description,
                    signed=True,
                    signature_valid=signature_valid,
                    signer=signer,
                    images=(),
                    findings=tuple(findings),
                    notes=tuple(notes),
                ),
                [],
            )

        # (2) files agree
        listed = {f.path: f for f in manifest.files}
        on_disc = set(entries) - {MANIFEST_PATH, SIGNATURE_PATH}
        images_by_path = {img.file_id: img for img in manifest.images}
        file_status: dict[str, str] = {}  # every file that is not an image (those: steps 3-4)
        for path in sorted(set(listed) - on_disc):
            if path not in images_by_path:
                file_status[path] = "missing"
                findings.append(
                    Finding(2, "missing", path, "listed in the signed manifest but not on the disc")
                )
        for path in sorted(on_disc - set(listed)):
            file_status[path] = "extra"
            findings.append(
                Finding(2, "extra", path, "on the disc but not in the signed manifest (added)")
            )
        for path in sorted(on_disc & set(listed)):
            if path in images_by_path:
                continue  # judged per image in steps 3-4
            want = listed[path]
            data_ok = entries[path] == want.size and _sha256_of(src, path) == want.sha256
            file_status[path] = "ok" if data_ok else "altered"
            if not data_ok:
                findings.append(
                    Finding(
                        2,
                        "altered",
                        path,
                        "content differs from the signed manifest (size or SHA-256)",
                    )
                )
        if manifest.dicomdir.path != "DICOMDIR" or (
            "DICOMDIR" in listed and listed["DICOMDIR"].sha256 != manifest.dicomdir.sha256
        ):
            findings.append(
                Finding(2, "structure", "DICOMDIR", "the manifest's DICOMDIR entries disagree")
            )
        dicomdir = _read_dicomdir(src, findings) if "DICOMDIR" in entries else None
        records: dict[str, DirRecord] = {}
        if dicomdir is not None:
            findings.extend(_dicomdir_findings(dicomdir, entries, images_by_path))
            records = {r.file_id: r for r in dicomdir.records}
            if dicomdir.fileset_id != manifest.disc.fileset_id:
                findings.append(
                    Finding(
                        2, "structure", "DICOMDIR", "File-set ID differs from the signed manifest"
                    )
                )
        if not manifest.images:
            notes.append("The manifest lists no images: an empty disc never verifies.")
        if progress:
            progress("read", 1, 1)

    # (3) + (4) per image
    keys = dict(trust.public_keys())
    if signer_key is not None:
        keys.setdefault(signing.key_id(signer_key), signer_key)
    trusted_ids = frozenset(trust.public_keys())
    sha_hints = {f.path: f.sha256 for f in manifest.files}
    jobs = []
    for img in manifest.images:
        restore_to = str(restore_dir / img.file_id) if restore_dir is not None else None
        jobs.append(
            _Job(
                path=img.file_id,
                entry=img,
                record=records.get(img.file_id),
                restore_to=restore_to,
                sha256=sha_hints.get(img.file_id, ""),
                restore_tampered=restore_tampered,
            )
        )
    missing_images = [j for j in jobs if j.path not in entries]
    present = [j for j in jobs if j.path in entries]
    outcomes = _run_jobs(source, present, keys, trusted_ids, workers, progress)
    verdicts = [o.verdict for o in outcomes]
    for job in missing_images:
        verdicts.append(
            ImageVerdict(
                path=job.path,
                status=ImageStatus.TAMPERED,
                reasons=("missing: listed in the signed manifest but not on the disc",),
                altered=True,
                sop_instance_uid=job.entry.sop_instance_uid if job.entry else "",
                series_uid=job.entry.identity.get("SeriesInstanceUID", "") if job.entry else "",
                series_label=_series_label(job.entry.identity) if job.entry else "",
            )
        )
    # A manifest re-signed by an untrusted key over images sealed by a trusted one.
    if signer is not None and not signer.trusted:
        sealed_by_trusted = {o.key_id for o in outcomes if o.key_id in trusted_ids}
        if sealed_by_trusted:
            findings.append(
                Finding(
                    1,
                    "signature",
                    MANIFEST_PATH,
                    "the images were sealed by a trusted sender but the manifest is signed "
                    "by another key: the manifest was replaced",
                )
            )
    report = CheckReport(
        source=str(source),
        signed=True,
        signature_valid=signature_valid,
        signer=signer,
        images=tuple(sorted(verdicts, key=lambda v: v.path)),
        findings=tuple(findings),
        fileset_id=manifest.disc.fileset_id,
        disc_number=manifest.disc.number,
        disc_count=manifest.disc.count,
        notes=tuple(notes),
        set_id=manifest.disc.set_id,
        set_members=tuple((m.number, m.fileset_id, m.images) for m in manifest.disc.members),
        files=tuple(sorted(file_status.items())),
    )
    return report, outcomes


def _sha256_of(src: DiscSource, path: str) -> str:
    h = hashlib.sha256()
    with src.open(path) as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_unsigned(
    src: DiscSource,
    source: Path,
    entries: Mapping[str, int],
    findings: list[Finding],
    workers: int,
    progress: Progress | None,
    trust: TrustStore,
) -> tuple[CheckReport, list[_Outcome]]:
    """A disc without a discmaker signature: structure and consistency checks only."""
    notes = ["This disc carries no discmaker signature: only its structure could be checked."]
    if "DICOMDIR" not in entries:
        findings.append(Finding(2, "structure", "DICOMDIR", "no DICOMDIR at the root of the disc"))
        return (
            CheckReport(
                source=src.description,
                signed=False,
                signature_valid=False,
                signer=None,
                images=(),
                findings=tuple(findings),
                notes=tuple(notes),
            ),
            [],
        )
    dicomdir = _read_dicomdir(src, findings)
    records = {r.file_id: r for r in dicomdir.records} if dicomdir else {}
    if dicomdir is not None:
        findings.extend(_dicomdir_findings(dicomdir, entries, None))
    jobs = [
        _Job(path=p, entry=None, record=r, restore_to=None)
        for p, r in sorted(records.items())
        if p in entries
    ]
    trusted = trust.public_keys()
    outcomes = _run_jobs(source, jobs, trusted, frozenset(trusted), workers, progress)
    if any(o.made_by_discmaker for o in outcomes):
        findings.append(
            Finding(
                1,
                "signature",
                "DISCSIG",
                "these images were made and watermarked by discmaker, but the disc's signature "
                "folder is missing: it was removed",
            )
        )
    # patient / study consistency across the whole disc
    studies: dict[str, str] = {}
    for rec in records.values():
        study, patient = rec.keys.get("StudyInstanceUID", ""), rec.keys.get("PatientID", "")
        if study and studies.setdefault(study, patient) != patient:
            findings.append(
                Finding(
                    2,
                    "structure",
                    rec.file_id,
                    "one study is filed under two different Patient IDs",
                )
            )
    return (
        CheckReport(
            source=str(source),
            signed=False,
            signature_valid=False,
            signer=None,
            images=tuple(o.verdict for o in outcomes),
            findings=tuple(findings),
            fileset_id=dicomdir.fileset_id if dicomdir else "",
            notes=tuple(notes),
        ),
        outcomes,
    )


def check_set(reports: Sequence[CheckReport]) -> SetReport:
    """Whether the given discs form one complete set ("disc k of n" for every k, once).

    Each disc has already been verified on its own; what a set adds is that no disc is
    missing, none is given twice and all belong to the same authoring run. The set table is
    read from the signed manifests, so it cannot be edited without breaking step 1.
    """
    findings: list[Finding] = []
    signed = [r for r in reports if r.signed and r.set_id]
    if len(signed) != len(reports):
        findings.append(Finding(5, "set", "", "some discs carry no discmaker set information"))
    ids = {r.set_id for r in signed}
    if len(ids) > 1:
        findings.append(Finding(5, "set", "", "the discs belong to different sets"))
    if signed:
        first = signed[0]
        count = first.disc_count
        numbers = [r.disc_number for r in signed]
        for n in sorted({x for x in numbers if numbers.count(x) > 1}):
            findings.append(Finding(5, "set", "", f"disc {n} of {count} was given twice"))
        for n in range(1, count + 1):
            if n not in numbers:
                label = next((m[1] for m in first.set_members if m[0] == n), "")
                findings.append(
                    Finding(5, "set", label, f"disc {n} of {count} is missing from the set")
                )
        for r in signed:
            listed = {m[0]: m[2] for m in r.set_members}
            if listed.get(r.disc_number) != len(r.images):
                findings.append(
                    Finding(
                        5,
                        "set",
                        r.fileset_id,
                        f"disc {r.disc_number} holds {len(r.images)} images but the set "
                        f"table lists {listed.get(r.disc_number)}",
                    )
                )
    return SetReport(discs=tuple(reports), findings=tuple(findings))


def tamper_thumbnails(
    source: Path, report: CheckReport, *, limit: int = 50
) -> dict[str, npt.NDArray[np.float32]]:
    """Display frames of tampered images for the HTML report, keyed by disc path.

    The frame shown is the lowest-numbered one with a tampered region (frame 0 otherwise);
    colour is shown as luminance. Images that cannot be decoded get no thumbnail.
    """
    wanted = [v for v in report.images if v.status is ImageStatus.TAMPERED][:limit]
    out: dict[str, npt.NDArray[np.float32]] = {}
    if not wanted:
        return out
    with open_source(source) as src:
        for verdict in wanted:
            frame = min((r.frame for r in verdict.regions), default=0)
            try:
                ds = dcmread(io.BytesIO(src.read_bytes(verdict.path, limit=MAX_IMAGE_BYTES)))
                pixels = np.asarray(ds.pixel_array, dtype=np.float32)
            except Exception:  # a damaged or hostile file simply gets no picture
                continue
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            if frames > 1:
                pixels = pixels[min(frame, frames - 1)]
            if pixels.ndim == 3:
                pixels = pixels.mean(axis=-1)
            if pixels.ndim == 2:
                out[verdict.path] = pixels
    return out


__all__ = ["check_and_restore", "check_disc", "check_set", "tamper_thumbnails"]
