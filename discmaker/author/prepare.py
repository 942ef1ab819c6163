"""Step 3 of authoring for one instance: normalise it, read its identity, seal its pixels
with the run's key, encode it, write it, and make its DICOMDIR records.

The same function runs in :func:`~discmaker.author.create.author`'s worker processes, in its
own thread, and ahead of time in a disc station (:mod:`discmaker.author.ahead`). What it
returns (:class:`Prepared`) is what the main process keeps per image until the disc is
written, so it is small: no pixel data, no pydicom dataset.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from discmaker.author.dicomdir import InstanceRecords, draft_records, encode_records
from discmaker.author.normalise import Normalised, normalise
from discmaker.crypto import signing
from discmaker.diagnostics import captured_warnings
from discmaker.errors import UnusableFileError
from discmaker.format.identity import (
    Identity,
    identity_attributes,
    identity_digest,
)
from discmaker.format.layout import PRIVATE_CREATOR, PRIVATE_GROUP, WATERMARK_FORMAT
from discmaker.format.manifest import OmittedFile
from discmaker.format.sealed import header_block
from discmaker.watermark.engine import UnsupportedPixelsError, WatermarkCapacityError
from discmaker.watermark.seal import seal_dataset


@dataclass(frozen=True, slots=True)
class Prepared:
    """One prepared instance, as the main process keeps it until the disc is written."""

    work_path: str
    records: InstanceRecords | None  # handed to the DICOMDIR writer, then dropped
    invented: tuple[str, ...]
    identity: Identity
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
    relative: str = ""  # the input's path in its input folder (logs and notes)
    notes: tuple[str, ...] = ()  # warnings raised while reading, converting and indexing it
    millis: float = 0.0  # time step 3 took for it


@dataclass(frozen=True, slots=True)
class PrepareJob:
    """One instance to prepare: its input file, where its encoded file goes, its path in the
    input folder (for logs and notes), and whether an unusable file is left out."""

    source: str
    work_path: str
    relative: str
    skip_unusable: bool = False


@dataclass(frozen=True)
class SealingKey:
    """The context of one run's step 3: the key that seals every image and the id it has."""

    key: Ed25519PrivateKey
    key_id: bytes


@contextmanager
def sealing_key(raw_key: bytes) -> Iterator[SealingKey]:
    """Setup of :func:`discmaker.parallel.run_jobs`: the run's key, from its 32 raw bytes."""
    key = Ed25519PrivateKey.from_private_bytes(raw_key)
    yield SealingKey(key=key, key_id=signing.key_id(key.public_key()))


def prepare(sealing: SealingKey, job: PrepareJob) -> Prepared | OmittedFile:
    """Step 3 for one instance; pydicom's warnings become the instance's notes. A file that
    cannot go on a disc is an :class:`OmittedFile` when the job may skip it."""
    try:
        return _prepare_one(sealing, job)
    except UnusableFileError as exc:
        if not job.skip_unusable:
            raise
        return OmittedFile(file=job.relative, reason=exc.problem)


def _prepare_one(sealing: SealingKey, job: PrepareJob) -> Prepared:
    started = time.monotonic()
    with captured_warnings() as notes:
        norm = normalise(Path(job.source))
        attrs = identity_attributes(norm.dataset)
        status, reason = _watermark(norm, sealing)
        data = _encode(norm.dataset)
        with open(job.work_path, "wb") as fp:
            fp.write(data)
        draft, invented = draft_records(norm.dataset)
        prepared = _prepared(job, norm, attrs, status, reason, data, invented)
    # Encoding the records: what pydicom says here is about the DICOMDIR, not the image.
    records = encode_records(draft)
    millis = (time.monotonic() - started) * 1000
    return replace(prepared, records=records, notes=tuple(notes), millis=millis)


def _watermark(norm: Normalised, sealing: SealingKey) -> tuple[str, str]:
    """Seal the pixels in place: ("embedded", "") or ("none", why not)."""
    ds = norm.dataset
    if norm.encoding == "lossy-carried":
        return "none", "lossy compressed image carried unchanged; watermarking would alter it"
    if "PixelData" not in ds:
        return "none", "no pixel data (not an image)"
    try:
        seal_dataset(
            ds,
            header=header_block(ds),
            signer=sealing.key,
            key_id=sealing.key_id,
        )
    except (WatermarkCapacityError, UnsupportedPixelsError) as exc:
        return "none", str(exc)
    _mark_watermarked(ds, sealing.key_id)
    return "embedded", ""


def _mark_watermarked(ds: Dataset, key_id: bytes) -> None:
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "CS", WATERMARK_FORMAT)
    block.add_new(0x02, "LO", key_id.hex().upper())
    # pydicom keeps the block in the dataset (``_private_blocks``) and the block refers back to
    # the dataset: a reference cycle, which kept every sealed dataset, its Pixel Data with it,
    # until a full garbage collection (in a worker: hundreds of images later; issue 13).
    ds._private_blocks.clear()


def _encode(ds: Dataset) -> bytes:
    """The file as ``ds.save_as(..., enforce_file_format=True)`` writes it.

    An image in the form :func:`~discmaker.author.normalise.normalise` gives it (Explicit VR
    Little Endian, its file meta made by discmaker) is written with the two pydicom writers
    ``save_as`` ends in, without ``save_as``'s copy of the file meta and its checks, which such
    an image always passes (tests/test_author_encode.py). Anything else goes through
    ``save_as``, which also raises what it raises.
    """
    if not _plain(ds):
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(getattr(ds, "preamble", None) or b"\x00" * 128)
    fp.write(b"DICM")
    # save_as writes a copy; the image's own file meta is not read again but for its syntax.
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    if "PixelData" in ds:
        ds["PixelData"].is_undefined_length = False  # native pixel data: its actual length
    write_dataset(fp, ds)
    return fp.getvalue()


# The file meta normalise makes: Media Storage SOP Class and Instance UIDs, Transfer Syntax UID,
# Implementation Class UID and Version Name.
_PLAIN_META = frozenset({0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


def _plain(ds: Dataset) -> bool:
    """Whether ``save_as`` would write ``ds`` with nothing to add or check: its file meta is
    the one normalise makes (Explicit VR Little Endian, class and instance UIDs those of the
    dataset), it was read or made little endian explicit VR, a 128-byte preamble or none, and
    no command or file meta element is in the dataset."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or set(meta.keys()) != _PLAIN_META:
        return False
    preamble = getattr(ds, "preamble", None)
    return (
        all(isinstance(elem, DataElement) and not elem.is_empty for elem in meta.values())
        and meta.TransferSyntaxUID == ExplicitVRLittleEndian
        and meta.MediaStorageSOPClassUID == ds.get("SOPClassUID")
        and meta.MediaStorageSOPInstanceUID == ds.get("SOPInstanceUID")
        and ds.original_encoding == (False, True)
        and (not preamble or len(preamble) == 128)
        and not any(tag >> 16 in (0, 2) for tag in ds.keys())  # noqa: SIM118
    )


def _prepared(
    job: PrepareJob,
    norm: Normalised,
    attrs: dict[str, str],
    status: str,
    reason: str,
    data: bytes,
    invented: tuple[str, ...],
) -> Prepared:
    ds = norm.dataset
    return Prepared(
        work_path=job.work_path,
        records=None,
        invented=invented,
        identity=Identity.of(attrs),
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
        relative=job.relative,
    )


__all__ = ["Identity", "PrepareJob", "Prepared", "SealingKey", "prepare", "sealing_key"]
