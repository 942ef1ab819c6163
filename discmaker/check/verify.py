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
The warnings a parser raises about a file (a value that does not fit its VR, say) are captured
with :func:`discmaker.diagnostics.captured_warnings` and kept as notes: a warning is never a
verdict, and never escapes to the host.

Safe in threads and long-lived processes: this module keeps no state between calls. Each check
builds its own context (the opened disc, the public keys, the trusted key ids) and hands it to
every image through :func:`discmaker.parallel.run_jobs`, in this thread or in worker processes.

Logging (``discmaker.check.verify``, debug level) names steps, disc paths (File IDs), statuses,
counts and timings; never patient data, UIDs, header values or parser notes (which may quote
header values).
"""

from __future__ import annotations

import hashlib
import io
import logging
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydicom import dcmread
from pydicom.dataset import Dataset

from discmaker.crypto import signing
from discmaker.crypto.trust import TrustedSigner, TrustStore
from discmaker.diagnostics import captured_warnings
from discmaker.disc.compare import RebuildComparison, foreign_structures, signed_volume
from discmaker.disc.source import (
    DiscSource,
    ExtentSource,
    FolderSource,
    IsoExtents,
    IsoSource,
    open_source,
)
from discmaker.errors import DiscError, OutputError, VerificationError
from discmaker.format import manifest as manifest_mod
from discmaker.format.dicomdir import Dicomdir, DirRecord, file_id_problem, parse_dicomdir
from discmaker.format.identity import (
    IDENTITY_KEYWORDS,
    PATIENT_KEYWORDS,
    STUDY_KEYWORDS,
    differing_keywords,
    identity_attributes,
    text_of,
    watermark_digest,
)
from discmaker.format.layout import IMPLEMENTATION_CLASS_UID, PRIVATE_CREATOR, PRIVATE_GROUP
from discmaker.format.manifest import (
    MANIFEST_PATH,
    SIGNATURE_PATH,
    SIGNER_PATH,
    ImageEntry,
    Manifest,
)
from discmaker.format.reading import MAX_INFLATED_BYTES, check_structure, read_dicom
from discmaker.format.sealed import changed_groups, header_block
from discmaker.models import (
    SET_INCONSISTENT,
    SET_MISSING,
    SET_NONE,
    CheckReport,
    Finding,
    ImageStatus,
    ImageVerdict,
    InputKind,
    PatientsSource,
    PatientSummary,
    Region,
    SeriesSummary,
    SetReport,
    Signer,
    StudySummary,
)
from discmaker.parallel import run_jobs
from discmaker.sharing import Shared
from discmaker.watermark.engine import UnsupportedPixelsError
from discmaker.watermark.pixels import decoded_size
from discmaker.watermark.seal import UnsealResult, unseal_dataset

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 1 << 30
MAX_DICOMDIR_BYTES = 64 << 20
MAX_SMALL_FILE = 64 << 10
MAX_IMAGE_GROWTH = 64 << 10
"""Bytes past its signed size an altered image is still read for: enough for edited header
values to be named (a longer name, another UID), too few for appended junk to cost time."""

_SHA_MISMATCH = "file content differs from the signed manifest (SHA-256)"

Progress = Callable[[str, int, int], None]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


@dataclass(frozen=True, slots=True)
class _Job:
    path: str
    entry: ImageEntry | None  # None on an unsigned disc
    record: DirRecord | None
    restore_to: str | None  # where to write the original, when restoring
    sha256: str = ""  # as signed in the manifest's file list
    size: int | None = None  # as signed in the manifest's file list; None: unsigned
    restore_tampered: bool = False  # also write what failed (restore --include-tampered)
    loose: bool = False  # a loose file: its watermark alone is the whole proof


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """One image's verdict with what :func:`check_and_restore` did with it: ``written``, the
    original's path when it was restored; ``key_id``, the key its watermark verified with."""

    verdict: ImageVerdict
    key_id: bytes | None
    written: str | None
    made_by_discmaker: bool = False  # carries discmaker's private block
    notes: tuple[str, ...] = ()  # warnings raised while parsing the file: notes, not findings


# -- per image (steps 3 and 4), in this thread or in worker processes --------------------------


@dataclass(frozen=True)
class _Context:
    """What every image of one check is judged with. One per check, never shared."""

    source: DiscSource
    keys: Mapping[bytes, Ed25519PublicKey]
    trusted: frozenset[bytes]


Reading = str | IsoExtents
"""How a worker reads the disc's files: an ISO image's extents as listed once (its trees are
not parsed again in every worker), or the path of a folder or file."""


def _reading(src: DiscSource) -> Reading:
    return src.extents() if isinstance(src, IsoSource) else str(src.path)


@contextmanager
def _image_context(
    reading: Reading, raw_keys: Mapping[bytes, bytes], trusted: frozenset[bytes]
) -> Iterator[_Context]:
    """The ``setup`` of :func:`run_jobs`: picklable arguments in, the disc closed on exit."""
    keys = {k: Ed25519PublicKey.from_public_bytes(v) for k, v in raw_keys.items()}
    opened = (
        ExtentSource(reading) if isinstance(reading, IsoExtents) else open_source(Path(reading))
    )
    with opened as source:
        yield _Context(source=source, keys=keys, trusted=trusted)


@dataclass
class _Image:
    """One image being judged, and what steps 3 and 4 have found about it so far."""

    job: _Job
    label: str = ""
    altered: bool = False  # the file's bytes differ from the manifest, or it cannot be read
    reasons: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    groups: tuple[str, ...] = ()  # sealed header groups the watermark says changed
    regions: tuple[Region, ...] = ()

    def verdict(self, status: ImageStatus, *, restorable: bool = False) -> ImageVerdict:
        entry, record = self.job.entry, self.job.record
        if entry is not None:
            sop_uid = entry.sop_instance_uid
        else:
            sop_uid = record.sop_instance_uid if record is not None else ""
        return ImageVerdict(
            path=self.job.path,
            status=status,
            reasons=tuple(self.reasons),
            attributes=tuple(dict.fromkeys(self.attributes)),
            regions=self.regions,
            sop_instance_uid=sop_uid,
            series_uid=entry.identity.get("SeriesInstanceUID", "") if entry else "",
            series_label=self.label,
            restorable=restorable,
            altered=self.altered,
            groups=self.groups,
        )


@dataclass(frozen=True)
class _Pixels:
    """What step 4 learnt from the watermark."""

    key_id: bytes | None = None
    restored: bytes | None = None  # the original pixel data, when the watermark verified
    watermark_ok: bool = False
    signer_trusted: bool = True


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


_NAME_SHOWN = 120  # characters of a left-out file's name a note shows


def _omitted_note(omitted: Sequence[manifest_mod.OmittedFile]) -> str:
    """What the sender signed it left out: files of the study that could not go on a disc."""
    shown = ", ".join(o.file[:_NAME_SHOWN] for o in omitted[:5])
    shown += " ..." if len(omitted) > 5 else ""
    return (
        f"The sender left {len(omitted)} file(s) of the study off this disc, because they could "
        f"not go on a disc ({shown}; README.TXT says why). Ask the sender if you need them."
    )


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


def _write_original(ds: Dataset, pixel_data: bytes | None, out: str) -> str | None:
    """Write the original to ``out``; None (nothing written) when the dataset cannot be a DICOM
    file, e.g. its file meta information lacks the Transfer Syntax UID: such a file is held
    back by restore, never an internal error."""
    if pixel_data is not None:
        ds.PixelData = pixel_data
    _strip_bookkeeping(ds)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(out, enforce_file_format=True)
    except OSError as exc:
        raise OutputError(f"{out} cannot be written ({exc.strerror}). Check the disk.") from exc
    except (AttributeError, ValueError) as exc:  # pydicom: required file meta missing or bad
        Path(out).unlink(missing_ok=True)
        log.debug("restore: an image cannot be written as a DICOM file (%s)", type(exc).__name__)
        return None
    return out


def _write_tampered(ds: Dataset, pixel_data: bytes | None, out: str) -> str | None:
    """Best effort for --include-tampered: a file altered on the disc may not re-encode."""
    try:
        return _write_original(ds, pixel_data, out)
    except OutputError:
        raise
    except Warning:
        raise  # a warning is captured as a note by _verify_one; here it would be a bug
    except Exception:  # whatever the tampering broke, it is listed as refused instead
        Path(out).unlink(missing_ok=True)
        return None


def _has_bookkeeping(ds: Dataset) -> bool:
    try:
        ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return False
    # pydicom keeps the block in the dataset and the block refers back to the dataset: a
    # reference cycle that would keep the whole image until a full garbage collection.
    ds._private_blocks.clear()
    return True


def _verify_one(context: _Context, job: _Job) -> ImageOutcome:
    """Steps (3) and (4) for one image, and its verdict: the task of :func:`run_jobs`.

    Everything done with the received file happens inside one warning capture: pydicom
    converts header values when they are first used, so a warning can come from any step.
    """
    started = time.perf_counter()
    with captured_warnings() as notes:
        outcome = _judge_image(context, job)
    if notes:
        outcome = replace(
            outcome, notes=tuple(notes), verdict=replace(outcome.verdict, notes=tuple(notes))
        )
    log.debug(
        "image %s: %s in %.1f ms (%d parser notes)",
        job.path,
        outcome.verdict.status.value,
        _ms(started),
        len(notes),
    )
    return outcome


def _judge_image(context: _Context, job: _Job) -> ImageOutcome:
    image = _Image(job, label=_series_label(job.entry.identity) if job.entry else "")
    parsed = _read_image(context.source, image)
    if parsed is None:
        return ImageOutcome(image.verdict(ImageStatus.TAMPERED), None, None)
    ds, attrs = parsed
    if not image.label:
        image.label = _series_label(attrs)
    entry = job.entry
    if entry is None:  # unsigned disc: structure, and any watermark the image still carries
        return _verify_unsigned(context, image, ds, attrs)
    changed = _check_headers(image, entry, attrs)
    pixels = _check_pixels(context, image, entry, ds, attrs, changed)
    return _image_verdict(image, entry, ds, pixels)


def _image_bytes(source: DiscSource, image: _Image) -> bytes:
    """The bytes to judge. A file that grew past its signed size is read only so far (plus
    :data:`MAX_IMAGE_GROWTH`): what was appended cannot be the signed image, and its length,
    chosen by whoever altered the disc, must not decide how long the parser runs."""
    job = image.job
    if job.size is not None:
        found = source.entry(job.path).size
        allowed = job.size + MAX_IMAGE_GROWTH
        if found > allowed:
            image.altered = True
            image.reasons.append(
                f"the file is {found:,} bytes, {found - job.size:,} more than signed; "
                f"only its first {allowed:,} bytes were examined"
            )
            with source.open(job.path) as fp:
                return fp.read(allowed)
        if found != job.size:  # the hash decides too; the size alone already disagrees
            image.altered = True
            image.reasons.append(f"the file is {found:,} bytes; {job.size:,} were signed")
    return source.read_bytes(job.path, limit=MAX_IMAGE_BYTES)


def _read_image(source: DiscSource, image: _Image) -> tuple[Dataset, dict[str, str]] | None:
    """The image's dataset and identity; None (with the reason noted) if it cannot be read.

    The work is bounded before it is done: a deflated data set inflates to at most
    :data:`~discmaker.format.reading.MAX_INFLATED_BYTES` (past it the image is unreadable),
    and the size the pixel attributes imply is checked (the watermark reader checks it again
    before it interprets a pixel) against the caps of
    :func:`~discmaker.watermark.pixels.decoded_size` and the Pixel Data present: in an altered
    file an unusable attribute is a reason naming it.
    """
    job = image.job
    try:
        data = _image_bytes(source, image)
    except DiscError as exc:
        image.reasons.append(f"file cannot be read: {exc}")
        image.altered = True
        return None
    image.altered = image.altered or (
        job.entry is not None and hashlib.sha256(data).hexdigest() != job.sha256
    )
    structure = check_structure(data, max_inflated=MAX_INFLATED_BYTES, what="the file")
    if structure.problem is not None:
        # refused before pydicom reads it: its reading would not be the one
        image.reasons.append(f"not a readable DICOM file any more: {structure.problem}")
        return None
    try:
        ds = read_dicom(data, max_inflated=MAX_INFLATED_BYTES, deflated=structure.deflated)
        attrs = identity_attributes(ds)
    except DiscError as exc:  # refused before the work: a deflated body past its bound
        image.reasons.append(f"not a readable DICOM file any more: {exc}")
        return None
    except Warning:
        raise  # a warning is captured as a note by _verify_one; here it would be a bug
    except Exception as exc:  # hostile file: any parser failure means "not this image"
        image.reasons.append(f"not a readable DICOM file any more ({type(exc).__name__})")
        return None
    if image.altered:  # as signed, the pixel attributes are the sender's, not a finding
        try:
            decoded_size(ds)
        except UnsupportedPixelsError as exc:  # nothing will decode or interpret these pixels
            image.reasons.append(f"its pixel data cannot be used: {exc.reason}")
    return ds, attrs


def _check_headers(image: _Image, entry: ImageEntry, attrs: Mapping[str, str]) -> list[str]:
    """Step (3): the header's identity against the manifest and the DICOMDIR record.

    Returns the keywords that differ from the manifest.
    """
    changed = differing_keywords(entry.identity, attrs)
    if changed:
        image.attributes.extend(changed)
        if "SOPInstanceUID" in changed:
            image.reasons.append(
                "this file holds a different image than the one signed (file replaced)"
            )
        else:
            image.reasons.append("header attributes changed since signing: " + ", ".join(changed))
    rec_changed = _record_mismatches(image.job.record, attrs, entry.invented)
    if rec_changed:
        image.attributes.extend(rec_changed)
        image.reasons.append("header differs from its DICOMDIR record: " + ", ".join(rec_changed))
    return changed


def _unseal(
    context: _Context, image: _Image, ds: Dataset, attrs: Mapping[str, str]
) -> UnsealResult:
    """The watermark read against this header (as each watermark version seals it)."""
    headers = {3: watermark_digest(attrs), 4: header_block(ds)}
    restore = image.job.restore_to is not None  # else no original is written
    res = unseal_dataset(ds, headers=headers, public_keys=context.keys, restore=restore)
    image.regions = tuple(Region(r.frame, r.row0, r.col0, r.row1, r.col1) for r in res.regions)
    return res


def _header_changed(image: _Image, res: UnsealResult, ds: Dataset, changed: Sequence[str]) -> str:
    """The reason for a header that differs from the one sealed in the pixels; names the
    groups (format v4) and, when the manifest told them, the identity keywords."""
    named = ": " + ", ".join(changed) if changed else ""
    if res.foreign_frames:  # the header may be intact: some frames belong to another image
        frames = ", ".join(str(f + 1) for f in res.foreign_frames)
        image.regions += tuple(
            Region(f, 0, 0, int(ds.Rows), int(ds.Columns)) for f in res.foreign_frames
        )
        return (
            f"frame{'s' if len(res.foreign_frames) > 1 else ''} {frames} "
            f"{'were' if len(res.foreign_frames) > 1 else 'was'} sealed for another image: "
            "frames were spliced in from other images"
        )
    if res.version == 3 or res.sealed_header is None:
        if not changed:
            image.attributes.append("identity")
        return (
            "the header (patient, study, series or image identity) does not match the "
            "identity sealed in the pixels"
            + named
            + ("" if changed else ": it was edited, or another image's pixels were put under it")
        )
    groups = changed_groups(res.sealed_header, header_block(ds)) or ()
    image.groups = tuple(g.name for g in groups)
    if not groups:
        if not changed:
            image.attributes.append("header")
        return (
            "a header attribute sealed in the pixels was changed (which group could not be "
            "told)" + named
        )
    swapped = any(g.name == "series" for g in groups)  # holds the SOP Instance UID
    return (
        "the header was changed after the image was sealed: "
        + "; ".join(g.label for g in groups)
        + named
        + (": it was edited, or another image's pixels were put under it" if swapped else "")
    )


def _check_pixels(
    context: _Context,
    image: _Image,
    entry: ImageEntry,
    ds: Dataset,
    attrs: Mapping[str, str],
    changed: Sequence[str],
) -> _Pixels:
    """Step (4): the watermark, when the image carries one."""
    if entry.watermark != "embedded":
        if image.altered and not changed:
            image.reasons.append(_SHA_MISMATCH)
        return _Pixels()
    res = _unseal(context, image, ds, attrs)
    if res.status == "ok":
        return _Pixels(
            key_id=res.key_id,
            restored=res.restored_pixel_data,
            watermark_ok=True,
            signer_trusted=res.key_id in context.trusted,
        )
    if res.status == "no-watermark":
        image.reasons.append(
            "the watermark is missing: the image was re-saved, replaced or its pixels rewritten"
        )
    elif res.status == "unknown-signer":
        image.reasons.append(
            "the watermark was signed by a key that is not on this disc or trusted"
        )
    elif res.status == "bad-signature":
        image.reasons.append("the watermark's signature does not verify")
    elif res.status == "identity-mismatch":
        image.reasons.append(_header_changed(image, res, ds, changed))
    else:  # tampered pixels
        image.reasons.extend(res.reasons or ("pixel values changed since signing",))
    return _Pixels(key_id=res.key_id)


def _image_verdict(image: _Image, entry: ImageEntry, ds: Dataset, pixels: _Pixels) -> ImageOutcome:
    """Step (5) for one image of a signed disc, and its original written when restoring."""
    job = image.job
    if image.altered and not image.reasons:
        image.reasons.append(_SHA_MISMATCH)
    if image.reasons:
        written = None
        if job.restore_to is not None and job.restore_tampered:
            written = _write_tampered(ds, pixels.restored, job.restore_to)
        return ImageOutcome(image.verdict(ImageStatus.TAMPERED), pixels.key_id, written)
    if entry.watermark == "embedded" and pixels.watermark_ok:
        if not pixels.signer_trusted:
            image.reasons.append("watermark signed by a sender who is not in your trust store")
            return ImageOutcome(image.verdict(ImageStatus.NOT_VERIFIABLE), pixels.key_id, None)
        written = _write_original(ds, pixels.restored, job.restore_to) if job.restore_to else None
        return ImageOutcome(image.verdict(ImageStatus.OK, restorable=True), pixels.key_id, written)
    image.reasons.append(entry.watermark_reason or "no watermark")
    written = _write_original(ds, None, job.restore_to) if job.restore_to else None
    return ImageOutcome(
        image.verdict(ImageStatus.MANIFEST_ONLY, restorable=True), pixels.key_id, written
    )


def _extra_pixel_bytes(ds: Dataset) -> int:
    """Bytes of native Pixel Data past its frames (and the one pad byte); 0 if none or if the
    pixels are encapsulated or unusable (the watermark reader says why then)."""
    try:
        need = decoded_size(ds)
        data = ds.get("PixelData")
        if not need or not isinstance(data, bytes) or ds.file_meta.TransferSyntaxUID.is_compressed:
            return 0
    except Exception:  # hostile attributes: judged by the watermark reader instead
        return 0
    return max(0, len(data) - need - (need % 2))


def _written_by_discmaker(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("ImplementationClassUID") if meta is not None else None
    return str(uid or "") == IMPLEMENTATION_CLASS_UID


def _verify_unsigned(
    context: _Context, image: _Image, ds: Dataset, attrs: Mapping[str, str]
) -> ImageOutcome:
    """An image on a disc without a (valid) discmaker manifest, judged by its watermark.

    A discmaker image keeps its watermark when someone deletes DISCSIG/ and the private
    block to make the disc look like any vendor's: every image is searched for one, so
    removing the signature cannot hide an edited header or pixel.
    """
    mism = _record_mismatches(image.job.record, attrs, ())
    if mism:
        image.attributes.extend(mism)
        image.reasons.append("header differs from its DICOMDIR record: " + ", ".join(mism))
    extra = _extra_pixel_bytes(ds) if image.job.loose else 0
    if extra:  # on a signed disc the file's hash covers them; loose, nothing would
        image.reasons.append(
            f"its Pixel Data holds {extra:,} bytes more than its frames need: bytes that no "
            "watermark covers"
        )
        return ImageOutcome(image.verdict(ImageStatus.TAMPERED), None, None, True)
    res = _unseal(context, image, ds, attrs)
    bookkeeping = _has_bookkeeping(ds)
    if res.status == "no-watermark" and not bookkeeping:
        written_by_us = _written_by_discmaker(ds)
        if mism:
            return ImageOutcome(image.verdict(ImageStatus.TAMPERED), None, None, written_by_us)
        image.reasons.append(
            "written by discmaker, but neither a watermark nor discmaker's block is left to "
            "judge it by"
            if written_by_us
            else "not made with discmaker: nothing shows whether it was changed"
        )
        return ImageOutcome(image.verdict(ImageStatus.NOT_VERIFIABLE), None, None, written_by_us)
    trusted = res.key_id is not None and res.key_id in context.trusted
    if res.status == "ok" and trusted and image.job.loose and (res.version or 0) >= 4:
        image.reasons.append(
            "watermark intact: header and pixels exactly as a trusted sender sealed them"
        )
        return ImageOutcome(image.verdict(ImageStatus.OK, restorable=True), res.key_id, None, True)
    if res.status == "ok" and trusted and image.job.loose:
        image.reasons.append(
            "watermark intact, but in format v3, which seals the patient, study and series "
            "identity and the pixels only: geometry, value mapping and the rest of the header "
            "are not proven without the disc"
        )
        return ImageOutcome(image.verdict(ImageStatus.NOT_VERIFIABLE), res.key_id, None, True)
    if res.status == "ok" and not mism:
        image.reasons.append(
            "watermark intact"
            + (" (sealed by a trusted sender)" if trusted else "")
            + ", but the disc's signed list of files (DISCSIG) is missing or invalid"
        )
        return ImageOutcome(image.verdict(ImageStatus.NOT_VERIFIABLE), res.key_id, None, True)
    if res.status == "unknown-signer" and not mism:
        image.reasons.append("watermarked by a sender who is not in your trust store")
        return ImageOutcome(image.verdict(ImageStatus.NOT_VERIFIABLE), res.key_id, None, True)
    if res.status == "no-watermark":
        image.reasons.append(
            "made by discmaker, but its watermark is missing (re-saved or replaced)"
        )
    elif res.status == "identity-mismatch":
        image.reasons.append(_header_changed(image, res, ds, ()))
    elif res.status != "ok":
        image.reasons.extend(res.reasons or ("the watermark does not verify",))
    return ImageOutcome(image.verdict(ImageStatus.TAMPERED), res.key_id, None, True)


def _check_images(
    reading: Reading,
    jobs: Sequence[_Job],
    keys: Mapping[bytes, Ed25519PublicKey],
    trusted: frozenset[bytes],
    workers: int,
    progress: Progress | None,
) -> list[ImageOutcome]:
    """Steps (3) and (4) for every image, in order, in ``workers`` processes when worth it."""
    started = time.perf_counter()
    raw = {k: v.public_bytes(Encoding.Raw, PublicFormat.Raw) for k, v in keys.items()}
    results = run_jobs(
        _verify_one,
        jobs,
        setup=_image_context,
        setup_args=(reading, raw, trusted),
        workers=workers,
    )
    out: list[ImageOutcome] = []
    shared = Shared()
    try:
        for n, (job, outcome) in enumerate(zip(jobs, results, strict=True), 1):
            out.append(_compact(outcome, job, shared))
            if progress:
                progress("verify", n, len(jobs))
    finally:
        close = getattr(results, "close", None)
        if close is not None:  # close the disc (or the pool) now, not when collected
            close()
    log.debug(
        "steps 3-4 headers and pixels: %d images, workers=%d, in %.1f ms",
        len(jobs),
        workers,
        _ms(started),
    )
    return out


def _compact(outcome: ImageOutcome, job: _Job, one: Shared) -> ImageOutcome:
    """``outcome`` as kept until the report: what every image of a series repeats (its
    series, the sealing key, the usual reasons) once, and its path and SOP Instance UID as
    the job already holds them. An outcome comes unpickled from a worker, all its strings
    new: a 3,000-image disc would otherwise keep 3,000 copies of each."""
    v = outcome.verdict
    entry_uid = job.entry.sop_instance_uid if job.entry is not None else None
    verdict = replace(
        v,
        path=job.path if v.path == job.path else v.path,
        sop_instance_uid=entry_uid if v.sop_instance_uid == entry_uid else v.sop_instance_uid,
        series_uid=one(v.series_uid),
        series_label=one(v.series_label),
        reasons=one(v.reasons),
        attributes=one(v.attributes),
        groups=one(v.groups),
        notes=one(v.notes),
    )
    return replace(outcome, verdict=verdict, key_id=one(outcome.key_id), notes=one(outcome.notes))


# -- the disc (steps 1, 2 and 5) ---------------------------------------------------------------


@dataclass
class _Disc:
    """The disc's listing, and the findings and notes of the disc-level steps so far."""

    entries: dict[str, int]
    description: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Signature:
    """What step 1 learnt from DISCSIG/."""

    manifest_size: int  # the manifest's bytes are not kept: 1 KB per image on a large disc
    signer: Signer | None = None
    valid: bool = False
    key: Ed25519PublicKey | None = None
    manifest: Manifest | None = None  # parsed, whether or not the signature verifies
    manifest_problem: str = ""  # why it could not be parsed


@dataclass(frozen=True)
class _Files:
    """What step 2 learnt: each non-image file's status, and the DICOMDIR records by File ID."""

    status: dict[str, str]
    records: dict[str, DirRecord]


def _list_disc(src: DiscSource) -> _Disc:
    disc = _Disc(entries={e.path: e.size for e in src.files()}, description=src.description)
    for skipped in src.skipped():
        disc.findings.append(
            Finding(
                2,
                "structure",
                skipped.raw_path,
                f"not a regular file ({skipped.reason}); not read",
            )
        )
    return disc


def _medium_findings(
    src: DiscSource,
    medium: Path,
    disc: _Disc,
    manifest: Manifest | None = None,
    signature: _Signature | None = None,
) -> None:
    """Step (2) for an ISO image or a drive: the medium as any reader may see it.

    A disc discmaker wrote as an ISO image is rebuilt from its signed volume fields and the
    names and sizes of its files, and the medium must be that image byte for byte, its files'
    contents aside (steps 2-4 verify those): then no UDF bridge, second session, name tree,
    path table, boot record or appended data can show a reader anything else
    (:func:`_start_rebuild`). A disc that cannot be rebuilt (unsigned, or signed but written
    as a folder and put on a disc later) gets the checks between its views instead.
    """
    if not isinstance(src, IsoSource):
        return
    rebuild = _start_rebuild(src, medium, disc, manifest, signature)
    if rebuild is not None:
        with rebuild:
            disc.findings.extend(rebuild.findings())
        return
    if manifest is not None and _trusted(signature) and manifest.iso is None:
        disc.notes.append(
            "This disc was signed as a folder and put on a disc afterwards: its name trees "
            "were compared, but not the medium byte for byte."
        )
    for path, problem in src.view_problems():
        disc.findings.append(Finding(2, "structure", path, problem))
    try:
        structures = foreign_structures(medium)
    except OSError as exc:
        raise DiscError(f"cannot read {src.description}: {exc.strerror or exc}") from exc
    for difference in structures:
        disc.findings.append(Finding(2, "medium", "ISO image", difference.message))


def _trusted(signature: _Signature | None) -> bool:
    """Whether step 1 found a valid signature by a trusted signer."""
    return (
        signature is not None
        and signature.valid
        and signature.signer is not None
        and signature.signer.trusted
    )


@dataclass
class _Rebuild:
    """Step (2)'s comparison of an ISO image with the image its sender signed: started by
    :func:`_start_rebuild` before the images are judged, its findings taken after them (in
    the report's place for them, after the other findings of step 2). A context manager:
    leaving it stops a comparison still running."""

    comparison: RebuildComparison | None = None
    problem: str = ""  # why the image cannot be compared (then there is no comparison)

    def findings(self) -> list[Finding]:
        """Wait for the comparison: what differs, or why the image cannot be compared."""
        try:
            if self.comparison is None:
                raise DiscError(self.problem)
            differences = self.comparison.differences()
        except DiscError as exc:
            return [Finding(2, "medium", "ISO image", f"the image cannot be compared: {exc}")]
        return [Finding(2, "medium", d.path or "ISO image", d.message) for d in differences]

    def __enter__(self) -> _Rebuild:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.comparison is not None:
            self.comparison.close()


def _start_rebuild(
    src: DiscSource,
    medium: Path,
    disc: _Disc,
    manifest: Manifest | None,
    signature: _Signature | None,
) -> _Rebuild | None:
    """Start comparing an ISO image with the image discmaker writes for its signed files;
    None when the disc is not one to rebuild.

    The image rebuilt is the one the sender signed: the manifest's files with their signed
    sizes (so a file added to, removed from or grown on the medium shows as a difference of
    its directory), and the signature files as they are (step 1 verified them). It is built
    only for a manifest whose signature verifies with a trusted key, so its size is what
    the sender signed, never what a stranger's manifest or the medium's listing asks for.
    """
    if not isinstance(src, IsoSource) or manifest is None or signature is None:
        return None
    if manifest.iso is None or not _trusted(signature):
        return None
    try:
        volume = signed_volume(manifest.iso)
        files = [(f.path, f.size) for f in manifest.files]
        files.append((MANIFEST_PATH, signature.manifest_size))
        files.append((SIGNATURE_PATH, disc.entries.get(SIGNATURE_PATH, 0)))
        return _Rebuild(RebuildComparison(medium, files, volume))
    except DiscError as exc:
        return _Rebuild(problem=str(exc))


def _read_dicomdir(src: DiscSource, findings: list[Finding]) -> Dicomdir | None:
    try:
        data = src.read_bytes("DICOMDIR", limit=MAX_DICOMDIR_BYTES)
        with captured_warnings() as notes:
            dicomdir = parse_dicomdir(data)
    except DiscError as exc:
        findings.append(Finding(2, "structure", "DICOMDIR", f"DICOMDIR unusable: {exc}"))
        return None
    log.debug("DICOMDIR: %d records (%d parser notes)", len(dicomdir.records), len(notes))
    return dicomdir


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


def _signer(cert: x509.Certificate, *, trusted: bool, signed_at: datetime | None) -> Signer:
    """What a report says of a signing certificate (validity at ``signed_at`` when known)."""
    return Signer(
        subject=signing.subject_text(cert),
        fingerprint=signing.fingerprint(cert),
        trusted=trusted,
        key_fingerprint=signing.key_fingerprint(cert),
        not_before=signing.utc_text(cert.not_valid_before_utc),
        not_after=signing.utc_text(cert.not_valid_after_utc),
        valid_at_signing=None if signed_at is None else signing.valid_at(cert, signed_at),
        valid_now=signing.valid_at(cert, datetime.now(UTC)),
    )


def _check_signature(src: DiscSource, trust: TrustStore, disc: _Disc) -> _Signature:
    """Step (1): the manifest's signature, whether its signer's key is pinned, and whether the
    signer's certificate was valid when the disc was made (the manifest's ``created``)."""
    started = time.perf_counter()
    manifest_bytes = src.read_bytes(MANIFEST_PATH, limit=manifest_mod.MAX_MANIFEST_BYTES)
    signer: Signer | None = None
    valid = False
    key: Ed25519PublicKey | None = None
    parsed: Manifest | None = None
    unusable = ""
    try:
        # Parsed once, here: `created` says when the disc was made; an unusable manifest is
        # reported right after (_read_manifest).
        parsed = manifest_mod.parse(manifest_bytes)
    except DiscError as exc:
        unusable = str(exc)
    created = parsed.created if parsed is not None else None
    signed_at: datetime | None = None
    pinned: TrustedSigner | None = None
    try:
        with captured_warnings() as notes:
            cert = signing.load_certificate_bytes(src.read_bytes(SIGNER_PATH, limit=MAX_SMALL_FILE))
            pinned = trust.find(cert)
            if not signing.self_signed(cert):  # anyone can put a key in a certificate
                disc.findings.append(
                    Finding(
                        1,
                        "signature",
                        SIGNER_PATH,
                        "the signer's certificate is not signed by its own key: it was "
                        "forged or damaged, so it says nothing about who signed the disc",
                    )
                )
            if created is not None:
                try:
                    signed_at = datetime.fromisoformat(created)
                except ValueError:
                    signed_at = None
                if signed_at is not None and signed_at.tzinfo is None:
                    signed_at = None  # "created" is always UTC with its "Z"
            signer = _signer(cert, trusted=pinned is not None, signed_at=signed_at)
            public = cert.public_key()
        if notes:
            log.debug("step 1: %d parser notes on %s", len(notes), SIGNER_PATH)
        if isinstance(public, Ed25519PublicKey):
            key = public
        signature = src.read_bytes(SIGNATURE_PATH, limit=MAX_SMALL_FILE)
        signing.verify(cert, signature, manifest_bytes, what="DISCSIG/MANIFEST.JSN")
        valid = True
    except VerificationError:
        disc.findings.append(
            Finding(
                1,
                "signature",
                SIGNATURE_PATH,
                "the manifest's signature does not match: the manifest or its "
                "signature was changed after signing",
            )
        )
    except DiscError as exc:
        disc.findings.append(Finding(1, "signature", "DISCSIG", f"signature files unusable: {exc}"))
    if signer is not None:
        dates = f"valid from {signer.not_before[:10]} to {signer.not_after[:10]}"
        if created is not None and signer.valid_at_signing is None:
            disc.findings.append(
                Finding(
                    1,
                    "signature",
                    MANIFEST_PATH,
                    "the manifest's creation time cannot be read, so nobody can tell whether "
                    "the signer's certificate was valid when the disc was made",
                )
            )
        elif signer.valid_at_signing is False and signed_at is not None:
            disc.findings.append(
                Finding(
                    1,
                    "signature",
                    SIGNER_PATH,
                    f"the signer's certificate ({dates}) was not valid when the disc was made "
                    f"({signed_at:%Y-%m-%d %H:%M} UTC): this disc cannot be verified. Ask the "
                    "sender for a new disc made with a current certificate.",
                )
            )
        elif signer.valid_at_signing and not signer.valid_now:
            disc.notes.append(
                f"The signer's certificate ({dates}) has expired since the disc was made; "
                "the disc's signature stays valid."
            )
        if pinned is not None and pinned.subject != signer.subject:
            disc.notes.append(
                f"The certificate on this disc names {signer.subject}; you trusted its key "
                f"as {pinned.subject} (fingerprint {pinned.fingerprint})."
            )
    if signer is not None and not signer.trusted:
        disc.notes.append(
            f"Signed by {signer.subject}, fingerprint {signer.fingerprint}, which is not in "
            "your trust store. To trust them, run: discmaker trust add "
            f"{shlex.quote(str(src.path))} (it shows the fingerprint "
            "and asks you to confirm it with the sender by telephone first)."
        )
    if trust.is_empty():
        disc.notes.append("Your trust store is empty: no disc can verify until you add a sender.")
    log.debug(
        "step 1 signature: valid=%s, signer trusted=%s, valid at signing=%s, in %.1f ms",
        valid,
        signer is not None and signer.trusted,
        signer.valid_at_signing if signer is not None else None,
        _ms(started),
    )
    return _Signature(
        manifest_size=len(manifest_bytes),
        signer=signer,
        valid=valid,
        key=key,
        manifest=parsed,
        manifest_problem=unusable,
    )


def _read_manifest(signature: _Signature, disc: _Disc) -> Manifest | None:
    """The signed manifest (step 1 still: an unusable manifest is a signature finding)."""
    if signature.manifest is None:
        message = f"manifest unusable: {signature.manifest_problem}"
        disc.findings.append(Finding(1, "signature", MANIFEST_PATH, message))
        log.debug("step 1 signature: manifest unusable, no image is judged")
    return signature.manifest


def _check_files(src: DiscSource, disc: _Disc, manifest: Manifest) -> _Files:
    """Step (2): the manifest, the DICOMDIR and the files on the disc describe the same set."""
    started = time.perf_counter()
    entries, findings = disc.entries, disc.findings
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
                Finding(2, "structure", "DICOMDIR", "File-set ID differs from the signed manifest")
            )
    if not manifest.images:
        disc.notes.append("The manifest lists no images: an empty disc never verifies.")
    log.debug(
        "step 2 files agree: %d on the disc, %d listed, %d findings so far, in %.1f ms",
        len(entries),
        len(listed),
        len(findings),
        _ms(started),
    )
    return _Files(status=file_status, records=records)


def _image_jobs(
    manifest: Manifest,
    records: Mapping[str, DirRecord],
    restore_dir: Path | None,
    restore_tampered: bool,
) -> list[_Job]:
    sha_hints = {f.path: f.sha256 for f in manifest.files}
    size_hints = {f.path: f.size for f in manifest.files}
    return [
        _Job(
            path=img.file_id,
            entry=img,
            record=records.get(img.file_id),
            restore_to=str(restore_dir / img.file_id) if restore_dir is not None else None,
            sha256=sha_hints.get(img.file_id, ""),
            size=size_hints.get(img.file_id),
            restore_tampered=restore_tampered,
        )
        for img in manifest.images
    ]


def _image_keys(trust: TrustStore, signature: _Signature) -> dict[bytes, Ed25519PublicKey]:
    """The keys a watermark may verify with: the trusted ones, and the disc's own signer."""
    keys = dict(trust.public_keys())
    if signature.key is not None:
        keys.setdefault(signing.key_id(signature.key), signature.key)
    return keys


def _missing_image(job: _Job) -> ImageVerdict:
    entry = job.entry
    return ImageVerdict(
        path=job.path,
        status=ImageStatus.TAMPERED,
        reasons=("missing: listed in the signed manifest but not on the disc",),
        altered=True,
        sop_instance_uid=entry.sop_instance_uid if entry else "",
        series_uid=entry.identity.get("SeriesInstanceUID", "") if entry else "",
        series_label=_series_label(entry.identity) if entry else "",
    )


def _disc_verdict(
    source: Path,
    disc: _Disc,
    signature: _Signature,
    manifest: Manifest,
    files: _Files,
    missing: Sequence[_Job],
    outcomes: Sequence[ImageOutcome],
    trusted_ids: frozenset[bytes],
) -> CheckReport:
    """Step (5): every image's verdict and the disc's findings, as one report."""
    verdicts = [o.verdict for o in outcomes] + [_missing_image(job) for job in missing]
    signer = signature.signer
    # A manifest re-signed by an untrusted key over images sealed by a trusted one.
    resealed = any(o.key_id in trusted_ids for o in outcomes)
    if signer is not None and not signer.trusted and resealed:
        disc.findings.append(
            Finding(
                1,
                "signature",
                MANIFEST_PATH,
                "the images were sealed by a trusted sender but the manifest is signed "
                "by another key: the manifest was replaced",
            )
        )
    return CheckReport(
        source=str(source),
        signed=True,
        signature_valid=signature.valid,
        signer=signer,
        images=tuple(sorted(verdicts, key=lambda v: v.path)),
        findings=tuple(disc.findings),
        fileset_id=manifest.disc.fileset_id,
        disc_number=manifest.disc.number,
        disc_count=manifest.disc.count,
        notes=tuple(disc.notes),
        set_id=manifest.disc.set_id,
        set_members=tuple((m.number, m.fileset_id, m.images) for m in manifest.disc.members),
        files=tuple(sorted(files.status.items())),
        patients=_manifest_patients(manifest),
        patients_source=PatientsSource.MANIFEST,
    )


def _early_report(
    disc: _Disc,
    *,
    signed: bool,
    signature: _Signature | None,
    source: str | None = None,
    kind: InputKind = InputKind.DISC,
    top_folder: str = "",
) -> CheckReport:
    """The report of a disc whose check stops before any image is judged (``kind``
    :attr:`InputKind.NOT_A_DISC`: the path is not a disc, ``top_folder`` the one to check)."""
    return CheckReport(
        source=disc.description if source is None else source,
        signed=signed,
        signature_valid=signature.valid if signature else False,
        signer=signature.signer if signature else None,
        images=(),
        findings=tuple(disc.findings),
        notes=tuple(disc.notes),
        kind=kind,
        top_folder=top_folder,
    )


def check_disc(
    source: Path,
    *,
    trust: TrustStore,
    progress: Progress | None = None,
    workers: int = 1,
) -> CheckReport:
    """Check a disc, ISO image or folder (steps 1-5 above).

    ``workers`` > 1 checks the images of a large disc in that many processes. Safe to call
    from several threads at once.
    """
    report, _ = check_and_restore(source, trust=trust, progress=progress, workers=workers)
    return report


def check_and_restore(
    source: Path,
    *,
    trust: TrustStore,
    progress: Progress | None = None,
    workers: int = 1,
    restore_dir: Path | None = None,
    restore_tampered: bool = False,
) -> tuple[CheckReport, list[ImageOutcome]]:
    """The check, and when ``restore_dir`` is given each image's original written beneath it."""
    started = time.perf_counter()
    with open_source(source) as src:
        disc = _list_disc(src)
        if progress:
            progress("read", 0, 1)
        if MANIFEST_PATH not in disc.entries:
            return _check_unsigned(src, source, disc, workers, progress, trust)
        signature = _check_signature(src, trust, disc)
        manifest = _read_manifest(signature, disc)
        if manifest is None:  # nothing signed to compare with: the watermarks still speak
            return _check_unsigned(src, source, disc, workers, progress, trust, signature)
        with ExitStack() as running:
            # the rebuild of the medium (its own process) runs while the images are judged
            rebuild = _start_rebuild(src, Path(source), disc, manifest, signature)
            if rebuild is not None:
                running.enter_context(rebuild)
            files = _check_files(src, disc, manifest)
            if rebuild is None:
                _medium_findings(src, Path(source), disc, manifest, signature)
            if progress:
                progress("read", 1, 1)
            spec = _reading(src)
            src.close()  # the workers read the disc on their own
            jobs = _image_jobs(manifest, files.records, restore_dir, restore_tampered)
            present = [j for j in jobs if j.path in disc.entries]
            missing = [j for j in jobs if j.path not in disc.entries]
            trusted_ids = frozenset(trust.public_keys())
            keys = _image_keys(trust, signature)
            outcomes = _check_images(spec, present, keys, trusted_ids, workers, progress)
            if rebuild is not None:
                disc.findings.extend(rebuild.findings())
        if _trusted(signature) and manifest.omitted:  # a trusted signer's word, not the disc's
            disc.notes.append(_omitted_note(manifest.omitted))
    report = _disc_verdict(source, disc, signature, manifest, files, missing, outcomes, trusted_ids)
    log.debug(
        "step 5 verdict: %s, %d images, %d findings; check done in %.1f ms",
        report.verdict.value,
        len(report.images),
        len(report.findings),
        _ms(started),
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
    disc: _Disc,
    workers: int,
    progress: Progress | None,
    trust: TrustStore,
    signature: _Signature | None = None,
) -> tuple[CheckReport, list[ImageOutcome]]:
    """A disc without a usable discmaker manifest: structure and consistency checks, and
    each image judged by the watermark it may still carry.

    ``signature`` is step 1's result when DISCSIG/ is there but its manifest is unusable.
    Without one, what the path is decides the check: no DICOMDIR and a disc's top folder
    above or inside it, or no DICOM image at all, is not a disc (:func:`_not_a_disc`);
    DICOM files without a DICOMDIR are loose files (:func:`_check_loose_files`).
    """
    entries, findings = disc.entries, disc.findings
    signed = signature is not None
    if progress:
        progress("read", 1, 1)
    if signature is None:
        log.debug("step 1 signature: none on this disc")
        if "DICOMDIR" not in entries:
            sniffed = _sniff_files(src, disc)
            not_a_disc = _not_a_disc(src, source, disc, sniffed)
            if not_a_disc is not None:
                return not_a_disc, []
            _medium_findings(src, source, disc)
            return _check_loose_files(src, source, disc, sniffed, workers, progress, trust)
    _medium_findings(src, source, disc)
    if "DICOMDIR" not in entries:
        findings.append(Finding(2, "structure", "DICOMDIR", "no DICOMDIR at the root of the disc"))
        return _early_report(disc, signed=signed, signature=signature), []
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
    outcomes = _check_images(_reading(src), jobs, trusted, frozenset(trusted), workers, progress)
    removed = _removed_signature(outcomes, frozenset(trusted)) if not signed else None
    if removed is not None:
        findings.append(removed)
    # patient / study consistency across the whole disc
    rows = [(job.path, job.record.keys) for job in jobs if job.record is not None]
    findings.extend(_patient_findings(rows))
    if signature is None and removed is None:
        disc.notes.append(
            "This disc was not made with discmaker: only its structure (the DICOMDIR against "
            "the files, and the patient and study data) could be checked."
        )
    headers = _study_headers(src, rows)
    patient_rows = [
        _filled(keys, headers.get(keys.get("StudyInstanceUID", ""))) for _, keys in rows
    ]
    report = CheckReport(
        source=str(source),
        signed=signed,
        signature_valid=signature.valid if signature is not None else False,
        signer=signature.signer if signature is not None else None,
        images=tuple(_with_record_uids(o.verdict, o.verdict.path, records) for o in outcomes),
        findings=tuple(findings),
        fileset_id=dicomdir.fileset_id if dicomdir else "",
        notes=tuple(disc.notes),
        patients=_patient_block(patient_rows),
        patients_source=PatientsSource.DICOMDIR,
    )
    log.debug("step 5 verdict (unsigned disc): %s", report.verdict.value)
    return report, outcomes


def _with_record_uids(
    verdict: ImageVerdict, path: str, records: Mapping[str, DirRecord]
) -> ImageVerdict:
    """An unsigned image's verdict with its series UID from its DICOMDIR record (the JSON
    groups by it); nothing else about the verdict changes."""
    record = records.get(path)
    uid = record.keys.get("SeriesInstanceUID", "") if record is not None else ""
    return replace(verdict, series_uid=uid) if uid and not verdict.series_uid else verdict


def _removed_signature(
    outcomes: Sequence[ImageOutcome], trusted: frozenset[bytes]
) -> Finding | None:
    """Step (1) on a disc without DISCSIG/: images discmaker wrote (a watermark, its private
    block or its implementation UID) say a signature was there and was removed."""
    if not any(o.made_by_discmaker for o in outcomes):
        return None
    sealed_by_trusted = any(o.key_id in trusted for o in outcomes if o.key_id is not None)
    return Finding(
        1,
        "signature",
        "DISCSIG",
        (
            "these images carry watermarks sealed by a sender in your trust store, "
            if sealed_by_trusted
            else "these images were written by discmaker, "
        )
        + "but the disc's signature folder (DISCSIG) is missing: the sender's "
        "signature was removed (or the images were copied onto another disc)",
    )


# -- what the path is, when it has no DICOMDIR and no signature ------------------------------

MAX_HEADER_PREFIX = 1 << 20
"""Bytes read to find an image's header (patient block, loose files) before its Pixel Data;
a longer header is read with the whole file (at most :data:`MAX_IMAGE_BYTES`)."""

_DICM_AT = 128  # the "DICM" prefix of a DICOM file (PS3.10 7.1), after the 128-byte preamble
_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: a DICOMDIR
_TOP_MARKERS = ("DICOMDIR", "dicomdir", "DICOMDIR;1", "DICOMDIR.;1")
_SIGNATURE_DIRS = ("DISCSIG", "discsig")
Row = Mapping[str, str]  # identity keywords (and StudyDescription) of one image


@dataclass(frozen=True)
class _Sniffed:
    """The files of a path without a DICOMDIR: which are DICOM images, and their headers."""

    images: dict[str, dict[str, str] | None]  # disc path -> identity (None: header unreadable)
    others: int  # files that are not DICOM images


def _sniff_files(src: DiscSource, disc: _Disc) -> _Sniffed:
    images: dict[str, dict[str, str] | None] = {}
    others = 0
    for path, size in sorted(disc.entries.items()):
        if path.rsplit("/", 1)[-1] == "DICOMDIR":
            others += 1
            continue
        is_image, row = _read_header(src, path, size)
        if is_image:
            images[path] = row
        else:
            others += 1
    return _Sniffed(images=images, others=others)


def _read_header(src: DiscSource, path: str, size: int) -> tuple[bool, dict[str, str] | None]:
    """Whether ``path`` is a DICOM file (the "DICM" prefix) other than a DICOMDIR, and its
    identity attributes with its Study Description (None when the header cannot be read).

    Only the header is parsed, read from the first :data:`MAX_HEADER_PREFIX` bytes when the
    Pixel Data starts within them, else from the whole file; a hostile file simply has no
    header here (its image check says what is wrong with it).
    """
    try:
        with src.open(path) as fp:
            data = fp.read(_DICM_AT + 4)
            if len(data) < _DICM_AT + 4 or data[_DICM_AT:] != b"DICM":
                return False, None
            data += fp.read(MAX_HEADER_PREFIX - len(data))
        with captured_warnings():
            ds = _parse_header(data, whole=len(data) >= size)
            if ds is None:
                ds = _parse_header(src.read_bytes(path, limit=MAX_IMAGE_BYTES), whole=True)
            if ds is None:
                return True, None
            meta = getattr(ds, "file_meta", None)
            storage = meta.get("MediaStorageSOPClassUID") if meta is not None else None
            if str(storage or "") == _DIRECTORY_STORAGE:
                return False, None
            row = identity_attributes(ds)
            row["StudyDescription"] = text_of(ds, "StudyDescription")
            return True, row
    except DiscError:  # unreadable, or larger than any image is allowed to be
        return True, None
    except Warning:
        raise  # captured above; one raised here would be a bug
    except Exception:  # hostile header: the image check names the problem
        return True, None


def _parse_header(data: bytes, *, whole: bool) -> Dataset | None:
    """The header of a DICOM file from ``data`` (all of it when ``whole``, else a prefix that
    counts only if the header ends at a Pixel Data element within it)."""
    if _DEFLATED_UID in data[:_META_WINDOW]:
        if not whole:
            return None
        return read_dicom(data, max_inflated=MAX_INFLATED_BYTES, stop_before_pixels=True)
    stream = io.BytesIO(data)
    ds = dcmread(stream, stop_before_pixels=True)
    if whole or data[stream.tell() : stream.tell() + 4] == _PIXEL_DATA_TAG:
        return ds
    return None


def _disc_top_inside(src: DiscSource, source: Path) -> Path | None:
    """A folder that holds a disc further down (``USB/DISC/DICOMDIR``): the shallowest such
    disc's top folder."""
    tops: list[tuple[int, str]] = []
    for entry in src.files():
        parts = entry.raw_path.split("/")
        if entry.path.endswith("/" + MANIFEST_PATH):
            parts = parts[:-2]
        elif entry.path.rsplit("/", 1)[-1] == "DICOMDIR" and len(parts) > 1:
            parts = parts[:-1]
        else:
            continue
        if parts:
            tops.append((len(parts), "/".join(parts)))
    return source / min(tops)[1] if tops else None


def _disc_top_above(source: Path) -> Path | None:
    """The nearest folder above ``source`` that is a disc's top folder (holds a DICOMDIR or
    a DISCSIG folder); only names are looked at, nothing above ``source`` is read."""
    try:
        folder = source.resolve()
    except (OSError, RuntimeError):
        return None
    for parent in folder.parents:
        try:
            if any((parent / n).is_file() for n in _TOP_MARKERS) or any(
                (parent / n).is_dir() for n in _SIGNATURE_DIRS
            ):
                return parent
        except OSError:
            continue
    return None


def _not_a_disc(
    src: DiscSource, source: Path, disc: _Disc, sniffed: _Sniffed
) -> CheckReport | None:
    """The report for a path that is not a disc: a folder inside a disc (its top folder is
    above), a folder that holds a disc further down, or no DICOM image at all. None when
    the path is worth checking (loose DICOM files)."""
    top: Path | None = None
    if isinstance(src, FolderSource):  # one file given on its own is checked as that file
        top = _disc_top_inside(src, source) or _disc_top_above(source)
    if top is None and sniffed.images:
        return None
    what = "ISO image" if isinstance(src, IsoSource) else "folder"
    if top is not None:
        disc.notes.append(f"The disc's top folder is {top}.")
    elif disc.entries:
        disc.notes.append(
            f"The {what} holds {_count(len(disc.entries), 'file')}, none of them a DICOM image."
        )
    else:
        disc.notes.append(f"The {what} is empty.")
    log.debug("not a disc: %d files, top folder %s", len(disc.entries), "found" if top else "none")
    return _early_report(
        disc,
        signed=False,
        signature=None,
        source=str(source),
        kind=InputKind.NOT_A_DISC,
        top_folder=str(top) if top is not None else "",
    )


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _check_loose_files(
    src: DiscSource,
    source: Path,
    disc: _Disc,
    sniffed: _Sniffed,
    workers: int,
    progress: Progress | None,
    trust: TrustStore,
) -> tuple[CheckReport, list[ImageOutcome]]:
    """DICOM files without a DICOMDIR: each judged as an image with no DICOMDIR record, and
    the set checked for one patient and each study under one Patient ID.

    In a folder (or one file given on its own) discmaker's watermark is each image's whole
    proof: sealed and intact by a trusted sender is verified, image by image, and the report
    says that loose files cannot show a missing image. On a disc image or drive the same
    files say that the disc's signature and DICOMDIR were removed: tampered.
    """
    findings = disc.findings
    # A disc image or drive is a disc, stripped or not; so is a folder that still holds a
    # disc's IHE PDI files (README.TXT and INDEX.HTM at its top) without its DICOMDIR.
    loose = not isinstance(src, IsoSource) and not _PDI_FILES.issubset(disc.entries)
    jobs = [
        _Job(path=p, entry=None, record=None, restore_to=None, loose=loose)
        for p in sorted(sniffed.images)
    ]
    trusted = trust.public_keys()
    outcomes = _check_images(_reading(src), jobs, trusted, frozenset(trusted), workers, progress)
    rows = [(p, row) for p, row in sorted(sniffed.images.items()) if row is not None]
    findings.extend(_patient_findings(rows))
    if not loose:
        removed = _removed_signature(outcomes, frozenset(trusted))
        if removed is not None:
            findings.append(removed)
    watermarked = loose and any(o.made_by_discmaker for o in outcomes)
    sealers = {o.key_id for o in outcomes if o.key_id is not None}
    signer = _sealer(trust, sealers)
    files = _count(len(jobs), "loose DICOM file")
    if not watermarked and not any(f.kind == "signature" for f in findings):
        disc.notes.append(
            f"These are {files} without a DICOMDIR (the index every patient disc has): each "
            "file was read on its own, and the files were compared with each other."
        )
    elif watermarked:
        disc.notes.extend(_loose_notes(outcomes, files, signer))
    if signer is not None and signer.valid_now is False:
        disc.notes.append(
            f"The certificate of {signer.subject} is not valid now (valid {signer.not_before} "
            f"to {signer.not_after}). A watermark carries no time of sealing, so it cannot show "
            "that these images were sealed while it was valid: they are not verified."
        )
    if sniffed.others:
        disc.notes.append(
            f"{_count(sniffed.others, 'other file')} (not DICOM images with a DICOM file "
            "header) were not checked"
            + (
                ": nothing shows what they hold, so the files are not verified as a whole."
                if watermarked
                else "."
            )
        )
    headers = dict(rows)
    images = []
    for outcome in outcomes:
        verdict, row = outcome.verdict, headers.get(outcome.verdict.path)
        if row is not None and not verdict.sop_instance_uid:
            verdict = replace(
                verdict,
                sop_instance_uid=row.get("SOPInstanceUID", ""),
                series_uid=verdict.series_uid or row.get("SeriesInstanceUID", ""),
            )
        images.append(verdict)
    report = CheckReport(
        source=str(source),
        signed=False,
        signature_valid=False,
        signer=signer,
        images=tuple(images),
        findings=tuple(findings),
        notes=tuple(disc.notes),
        kind=InputKind.FILES,
        patients=_patient_block(row for _, row in rows),
        patients_source=PatientsSource.HEADERS,
        watermarked=watermarked,
        unchecked_files=sniffed.others,
    )
    log.debug("step 5 verdict (loose files): %s, %d images", report.verdict.value, len(images))
    return report, outcomes


_PDI_FILES = frozenset({"README.TXT", "INDEX.HTM"})


def _sealer(trust: TrustStore, key_ids: set[bytes]) -> Signer | None:
    """The trusted sender whose key sealed every watermark of loose files, if one did."""
    if len(key_ids) != 1:
        return None
    (kid,) = key_ids
    found = next((s for s in trust.list() if s.key_id == kid), None)
    if found is None:
        return None
    return _signer(found.certificate, trusted=True, signed_at=None)  # a watermark has no time


def _loose_notes(outcomes: Sequence[ImageOutcome], files: str, signer: Signer | None) -> list[str]:
    """What the watermarks of loose files prove, and what they cannot."""
    ok = sum(o.verdict.status is ImageStatus.OK for o in outcomes)
    who = f"{signer.subject} (in your trust store)" if signer else "a sender in your trust store"
    judged = (
        f"Checked {files} without a disc around "
        + ("it: the image was" if len(outcomes) == 1 else "them: each image was")
        + " judged by its watermark alone."
    )
    if not ok:
        sealed = " No image carries an intact watermark of a sender you trust."
    elif ok == len(outcomes):
        sealed = (
            f" {'It carries' if ok == 1 else 'All carry'} a watermark sealed by {who}: header "
            "and pixels are exactly as sealed."
        )
    else:
        sealed = (
            f" {ok} of {len(outcomes)} carry a watermark sealed by {who}: their header and "
            "pixels are exactly as sealed."
        )
    return [
        judged + sealed,
        "Loose files cannot show whether other images of the study are missing or were "
        "left out: for the whole study, ask the sender for the disc. Private (vendor) "
        "elements are not sealed (docs/SEALED-HEADER.md lists what is).",
    ]


# -- the patient block -----------------------------------------------------------------------


def _patient_findings(rows: Sequence[tuple[str, Row]]) -> list[Finding]:
    """Patient and study consistency of a disc nobody signed (``rows``: each image's path
    and identity): one study under one Patient ID, one patient per disc, one name, birth
    date and sex per Patient ID."""
    found: list[Finding] = []
    studies: dict[str, str] = {}
    for path, row in rows:
        study, patient = row.get("StudyInstanceUID", ""), row.get("PatientID", "")
        if study and studies.setdefault(study, patient) != patient:
            found.append(
                Finding(2, "structure", path, "one study is filed under two different Patient IDs")
            )
    people: dict[str, set[tuple[str, str, str]]] = {}
    for _, row in rows:
        people.setdefault(row.get("PatientID", ""), set()).add(
            (
                _name_key(row.get("PatientName", "")),
                row.get("PatientBirthDate", ""),
                row.get("PatientSex", ""),
            )
        )
    if len(people) > 1:
        found.append(
            Finding(
                3,
                "patients",
                "",
                f"the images belong to {len(people)} different patients (their Patient IDs "
                "differ), where a patient disc holds one patient's images: check whose each "
                "study is (the patient list) before importing any of it",
            )
        )
    if any(len(variants) > 1 for variants in people.values()):
        found.append(
            Finding(
                3,
                "patients",
                "",
                "one Patient ID is given with different names, birth dates or sexes",
            )
        )
    return found


def _name_key(name: str) -> str:
    """A Patient's Name for comparison: trailing empty components and case ignored."""
    return "=".join(group.rstrip("^ ") for group in name.split("=")).rstrip("=").casefold()


def _study_headers(src: DiscSource, rows: Sequence[tuple[str, Row]]) -> dict[str, Row]:
    """The header of one image of each study, by Study Instance UID: what the DICOMDIR does
    not carry (Study Description, often birth date and sex) for the patient block."""
    first: dict[str, str] = {}
    for path, row in rows:
        first.setdefault(row.get("StudyInstanceUID", ""), path)
    out: dict[str, Row] = {}
    for uid, path in first.items():
        try:
            size = src.entry(path).size
        except DiscError:
            continue
        _, header = _read_header(src, path, size)
        if header is not None:
            out[uid] = header
    return out


_FILLED_FROM_HEADER = (*PATIENT_KEYWORDS, *STUDY_KEYWORDS, "StudyDescription")


def _filled(keys: Row, header: Row | None) -> dict[str, str]:
    """A DICOMDIR record's keys, with the patient and study values it leaves empty taken
    from its study's header (for the patient block only; findings use the record)."""
    row = dict(keys)
    if header is not None:
        for keyword in _FILLED_FROM_HEADER:
            if not row.get(keyword):
                row[keyword] = header.get(keyword, "")
    return row


def _manifest_patients(manifest: Manifest) -> tuple[PatientSummary, ...]:
    """The patient block of a signed disc: its manifest's identities, image by image."""
    return _patient_block(img.identity for img in manifest.images)


def _patient_block(rows: Iterable[Row]) -> tuple[PatientSummary, ...]:
    """Patients, their studies and series, with image counts, from each image's identity.

    Grouped by the values themselves (two spellings of one patient are two patients here:
    that is a finding on a disc nobody signed), a study by its UID, a series by its UID.
    """
    patients: dict[tuple[str, str, str, str], dict[str, list[Row]]] = {}
    for row in rows:
        key = tuple(row.get(k, "") for k in PATIENT_KEYWORDS)
        person = (key[0], key[1], key[2], key[3])
        patients.setdefault(person, {}).setdefault(row.get("StudyInstanceUID", ""), []).append(row)
    out = []
    for (name, patient_id, birth, sex), studies in patients.items():
        summaries = [_study_summary(uid, study) for uid, study in studies.items()]
        summaries.sort(key=lambda s: (s.date, s.time, s.study_uid))
        out.append(PatientSummary(name, patient_id, birth, sex, tuple(summaries)))
    out.sort(key=lambda p: (p.name, p.patient_id, p.birth_date, p.sex))
    return tuple(out)


def _study_summary(uid: str, rows: Sequence[Row]) -> StudySummary:
    def first(keyword: str) -> str:
        return next((v for r in rows if (v := r.get(keyword, ""))), "")

    series: dict[tuple[str, str, str], int] = {}
    for row in rows:
        number, modality = row.get("SeriesNumber", ""), row.get("Modality", "")
        key = (row.get("SeriesInstanceUID", ""), number, modality)
        series[key] = series.get(key, 0) + 1
    ordered = sorted(
        series.items(),
        key=lambda kv: (kv[0][2], int(kv[0][1]) if kv[0][1].isdigit() else -1, kv[0]),
    )
    return StudySummary(
        study_uid=uid,
        date=first("StudyDate"),
        time=first("StudyTime"),
        description=first("StudyDescription"),
        accession=first("AccessionNumber"),
        study_id=first("StudyID"),
        series=tuple(
            SeriesSummary(series_uid=s, number=n, modality=m, images=count)
            for (s, n, m), count in ordered
        ),
    )


def check_set(reports: Sequence[CheckReport]) -> SetReport:
    """Whether the given discs form one complete set ("disc k of n" for every k, once).

    Each disc has already been verified on its own; what a set adds is that no disc is
    missing, none is given twice and all belong to the same authoring run. The set table is
    read from the signed manifests, so it cannot be edited without breaking step 1. Each
    report comes back knowing which discs of its set were given with it, so a disc k of n
    checked with all the others is verified, and one checked without them an incomplete set.
    """
    findings: list[Finding] = []
    signed = [r for r in reports if r.signed and r.set_id]
    for r in reports:
        if r.kind is InputKind.FILES:  # loose files are checked file by file, never a set
            continue
        if not (r.signed and r.set_id):
            findings.append(
                Finding(
                    5,
                    SET_NONE,
                    r.fileset_id or r.source,
                    f"{r.source} is not part of a discmaker set (it carries no set table), so "
                    "it was checked on its own",
                )
            )
    ids = {r.set_id for r in signed}
    if len(ids) > 1:
        findings.append(Finding(5, SET_INCONSISTENT, "", "the discs belong to different sets"))
    if signed:
        first = signed[0]
        count = first.disc_count
        numbers = [r.disc_number for r in signed]
        for n in sorted({x for x in numbers if numbers.count(x) > 1}):
            findings.append(
                Finding(5, SET_INCONSISTENT, "", f"disc {n} of {count} was given twice")
            )
        for n in range(1, count + 1):
            if n not in numbers:
                label = next((m[1] for m in first.set_members if m[0] == n), "")
                findings.append(
                    Finding(5, SET_MISSING, label, f"disc {n} of {count} is missing from the set")
                )
        for r in signed:
            listed = {m[0]: m[2] for m in r.set_members}
            if listed.get(r.disc_number) != len(r.images):
                findings.append(
                    Finding(
                        5,
                        SET_INCONSISTENT,
                        r.fileset_id,
                        f"disc {r.disc_number} holds {len(r.images)} images but the set "
                        f"table lists {listed.get(r.disc_number)}",
                    )
                )
    present: dict[str, tuple[int, ...]] = {}
    for r in signed:
        present[r.set_id] = tuple(sorted({*present.get(r.set_id, ()), r.disc_number}))
    discs = tuple(
        replace(r, set_present=present[r.set_id]) if r.signed and r.set_id else r for r in reports
    )
    return SetReport(discs=discs, findings=tuple(findings))


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"
_META_WINDOW = 64 * 1024  # the file meta group, where the transfer syntax is named
_UNDEFINED_LENGTH = 0xFFFFFFFF


def through_pixel_data(data: bytes) -> bytes:
    """``data`` cut after its Pixel Data element, for display only.

    What follows Pixel Data on an altered disc can be anything, and pydicom parses each 8
    bytes of appended zeros as one more empty element (64 MiB took 14 s). The header is read
    without pixels first, which leaves the stream at the Pixel Data tag; the element's own
    length then says where it ends. Encapsulated (undefined length) or unrecognisable pixel
    data is left as it is, and so is a deflated file (its positions are in the inflated
    body, and pydicom would inflate all of it to find them).
    """
    if _DEFLATED_UID in data[:_META_WINDOW]:
        return data
    stream = io.BytesIO(data)
    try:
        dcmread(stream, stop_before_pixels=True)
    except Warning:
        raise  # callers capture warnings; one raised here would be a bug
    except Exception:  # not DICOM enough to find its Pixel Data: leave it to the caller
        return data
    start = stream.tell()
    if data[start : start + 4] != _PIXEL_DATA_TAG:
        return data
    if data[start + 4 : start + 6] in (b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"):
        header, length = 12, int.from_bytes(data[start + 8 : start + 12], "little")
    else:  # implicit VR
        header, length = 8, int.from_bytes(data[start + 4 : start + 8], "little")
    end = start + header + length
    if length == _UNDEFINED_LENGTH or end > len(data):
        return data
    return data[:end]


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
                with captured_warnings():
                    data = src.read_bytes(verdict.path, limit=MAX_IMAGE_BYTES)
                    ds = read_dicom(through_pixel_data(data), max_inflated=MAX_INFLATED_BYTES)
                    decoded_size(ds)  # refuses what would not fit before it is decoded
                    pixels = np.asarray(ds.pixel_array, dtype=np.float32)
                    frames = int(ds.get("NumberOfFrames", 1) or 1)
            except Warning:
                raise  # captured above; a warning here would be a bug, not a damaged file
            except Exception:  # a damaged or hostile file simply gets no picture
                continue
            if frames > 1:
                pixels = pixels[min(frame, frames - 1)]
            if pixels.ndim == 3:
                pixels = pixels.mean(axis=-1)
            if pixels.ndim == 2:
                out[verdict.path] = pixels
    return out


__all__ = ["ImageOutcome", "check_and_restore", "check_disc", "check_set", "tamper_thumbnails"]
