"""Write the DICOMDIR with pydicom's FileSet, and read a received one defensively.

Writing: pydicom's FileSet builds the PATIENT/STUDY/SERIES/IMAGE records and picks the File
IDs. We hand it a *header-only* copy of each instance (with placeholders for the few type 1
record keys an image may legally leave empty, see :data:`discmaker.study.INVENTED_DEFAULTS`),
let it write the DICOMDIR and its small stand-in files, then move the real, watermarked files
over the stand-ins. The records only depend on header attributes and the transfer syntax, so
they describe the real files exactly, and no image is written twice.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet, RecordNode
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from discmaker.errors import DiscError, StudyError, UsageError
from discmaker.study import INVENTED_DEFAULTS

FILESET_ID_PATTERN = re.compile(r"^[A-Z0-9_]{1,16}$")
PIXEL_DATA = Tag(0x7FE0, 0x0010)


def validate_fileset_id(label: str) -> str:
    if not FILESET_ID_PATTERN.match(label):
        raise UsageError(
            f"The disc label {label!r} is not a valid File-set ID: use 1 to 16 characters "
            "from A-Z, 0-9 and _ (no lowercase, spaces or dots), e.g. DISC_20260102."
        )
    return label


def header_for_record(ds: Dataset) -> tuple[Dataset, tuple[str, ...]]:
    """A header-only copy of ``ds`` for record creation, and the keywords that were invented."""
    hdr = Dataset()
    for elem in ds:
        if elem.tag != PIXEL_DATA and elem.tag.group != 0x0002:
            hdr.add(elem)
    hdr.file_meta = ds.file_meta
    _sr_record_keys(hdr)
    invented: list[str] = []
    for keyword, value in INVENTED_DEFAULTS.items():
        current = hdr.get(keyword)
        if current is None or str(current).strip() == "":
            setattr(hdr, keyword, value)
            invented.append(keyword)
    return hdr, tuple(invented)


class FileSetWriter:
    """Build a DICOMDIR incrementally (records as instances become ready), then write it.

    Use as a context manager; pydicom's staging folder is removed on exit.
    """

    def __init__(self, *, fileset_id: str, stage: Path | None = None) -> None:
        self._fs = _UniqueFileSet()
        self._fs.ID = validate_fileset_id(fileset_id)
        if stage is not None:
            _move_stage(self._fs, stage)
        self._uids: list[str] = []
        self._fileset_id = fileset_id

    def __enter__(self) -> FileSetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        _release_stage(self._fs)

    def add(self, header: Dataset) -> None:
        uid = str(header.get("SOPInstanceUID", "?"))
        with self._fs.adding():
            try:
                self._fs.add(_StandIn(header))
            except ValueError as exc:
                raise StudyError(
                    f"The DICOMDIR record for SOP Instance {uid} cannot be made: {exc}"
                ) from exc
        self._uids.append(uid)

    def write(self, root: Path, *, salt: str = "") -> dict[str, str]:
        """Write DICOMDIR and stand-in files under ``root``; return SOP Instance UID -> File ID.

        File IDs are POSIX paths relative to ``root`` (``PT000000/ST000000/SE000000/IM000000``).
        The caller must replace every stand-in with the real instance. The DICOMDIR's own SOP
        Instance UID is derived from its contents and ``salt`` (e.g. the disc's timestamp), so
        the same inputs give the same bytes (pydicom would otherwise pick a random one).
        """
        self._fs.UID = generate_uid(entropy_srcs=[self._fileset_id, salt, *self._uids])
        self._fs.write(root)
        return {str(inst.SOPInstanceUID): Path(inst.FileID).as_posix() for inst in self._fs}


def _sr_record_keys(hdr: Dataset) -> None:
    """Shape an SR document's header the way its SR DOCUMENT record must be (PS3.3 F.5).

    pydicom copies the whole Content Sequence and only a top-level Verification Date Time
    into the record; the record wants the concept modifiers alone and, for a verified
    report, the latest verification time (which the document keeps per verifying observer).
    Only the copy used for the record changes, never the document.
    """
    if "ContentSequence" in hdr:
        modifiers = [
            item
            for item in hdr.ContentSequence
            if str(item.get("RelationshipType", "")).strip() == "HAS CONCEPT MOD"
        ]
        if modifiers:
            hdr.ContentSequence = modifiers
        else:
            del hdr.ContentSequence
    verified = str(hdr.get("VerificationFlag", "")).strip() == "VERIFIED"
    if verified and "VerificationDateTime" not in hdr:
        times = [
            str(item.VerificationDateTime)
            for item in hdr.get("VerifyingObserverSequence", [])
            if item.get("VerificationDateTime")
        ]
        if times:
            hdr.VerificationDateTime = max(times)


class _StandIn(Dataset):
    """A header whose file on the stage is an empty placeholder.

    ``FileSet.add`` saves every instance to its staging folder and ``write()`` copies it to
    its File ID, where the caller then puts the real, watermarked file. Encoding the header
    only to throw it away cost ~3 ms per image on the one serial path of authoring.
    """

    def __init__(self, header: Dataset) -> None:
        super().__init__(header)
        self.file_meta = header.file_meta

    def save_as(self, filename: Any, /, *args: Any, **kwargs: Any) -> None:
        Path(filename).touch()


class _UniqueFileSet(FileSet):
    """A FileSet for instances already known to be unique (intake refuses duplicates).

    pydicom's ``FileSet.add`` is quadratic in the number of images (pydicom 3.0): it first
    scans every instance added so far for the same SOP Instance UID (2.6 s of 4.4 s for 300 CT
    slices), and inserting a leaf into the record tree computes the key of every sibling
    image, although a leaf is never descended into. While adding, iteration yields nothing
    and a childless node is never "in" a parent, so both scans are free and the result is
    the same; everything else, including ``write()``, sees the File-set as usual.
    """

    _adding = False

    @contextmanager
    def adding(self) -> Iterator[None]:
        original = RecordNode.__contains__

        def contains(node: RecordNode, key: str | RecordNode) -> bool:
            # RootNode.add: `while node in current and node.children` - for a leaf the
            # answer does not matter, only its (linear) cost does.
            if isinstance(key, RecordNode) and not key.children:
                return False
            return bool(original(node, key))

        self._adding = True
        RecordNode.__contains__ = contains  # type: ignore[method-assign]
        try:
            yield
        finally:
            RecordNode.__contains__ = original  # type: ignore[method-assign]
            self._adding = False

    def __iter__(self) -> Iterator[Any]:
        if self._adding:
            return iter(())
        return super().__iter__()


def _move_stage(fs: FileSet, folder: Path) -> None:
    """Keep FileSet's staging folder in ``folder`` (our own work area) instead of the system
    temporary folder, which may be small or slow; there is no public setting for it."""
    _release_stage(fs)
    stage = TemporaryDirectory(dir=folder, prefix="fileset-")
    fs._stage["t"] = stage
    fs._stage["path"] = Path(stage.name)


def _release_stage(fs: FileSet) -> None:
    """Delete FileSet's private staging folder now rather than at garbage collection.

    pydicom keeps it in a TemporaryDirectory that is only removed (with a ResourceWarning)
    when the FileSet is collected; there is no public call for it (pydicom 3.0).
    """
    stage = getattr(fs, "_stage", {}).get("t")
    if stage is not None and hasattr(stage, "cleanup"):
        stage.cleanup()


# -- reading a received DICOMDIR -----------------------------------------------------------


@dataclass(frozen=True)
class DirRecord:
    """One leaf record of a received DICOMDIR, with the keys of its ancestors."""

    record_type: str
    file_id: str  # POSIX, uppercase as written; "" when the record references no file
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    keys: dict[str, str]  # identity-relevant keys from this record and its ancestors


@dataclass(frozen=True)
class Dicomdir:
    fileset_id: str
    records: tuple[DirRecord, ...]
    patient_count: int
    study_count: int
    offsets_consistent: bool = True  # False: the record links were broken; order was used


_KEY_KEYWORDS = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID"),
    "SERIES": ("SeriesInstanceUID", "SeriesNumber", "Modality"),
}

_MAX_RECORDS = 200_000


def _value(record: Dataset, keyword: str) -> str:
    value = record.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def parse_dicomdir(data: bytes) -> Dicomdir:
    """Parse DICOMDIR bytes from a received disc. Malformed input raises DiscError."""
    try:
        return _parse(data)
    except DiscError:
        raise
    except Exception as exc:  # a hostile DICOMDIR can make the parser raise anything
        raise DiscError(f"The DICOMDIR cannot be read ({type(exc).__name__}).") from exc


def _offset(record: Dataset, keyword: str) -> int:
    """A record link: one non-negative integer, else DiscError (hostile or damaged)."""
    value = record.get(keyword, 0)
    if value is None or value == "":
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DiscError(f"The DICOMDIR's {keyword} is not a single byte offset.")
    return value


def _parse(data: bytes) -> Dicomdir:
    ds = dcmread(io.BytesIO(data), force=True)
    records = list(ds.get("DirectoryRecordSequence", []))
    if "DirectoryRecordSequence" not in ds:
        raise DiscError("The DICOMDIR has no (0004,1220) Directory Record Sequence.")
    if len(records) > _MAX_RECORDS:
        raise DiscError(f"The DICOMDIR holds {len(records)} records, more than any disc can.")

    # Records are linked by byte offsets; the hierarchy of a conforming DICOMDIR is also
    # its order (a parent record precedes its children). We follow the offsets, which is
    # what viewers do, and fall back to order only where offsets are unusable.
    by_offset: dict[int, Dataset] = {}
    for rec in records:
        tell = getattr(rec, "seq_item_tell", None)
        if isinstance(tell, int):
            by_offset[tell] = rec

    leaves: list[DirRecord] = []
    patients = 0
    studies = 0
    # One visited set for the whole walk: each record is read at most once, so links that
    # loop back (a hostile DICOMDIR) cannot make the walk explode.
    seen: set[int] = set()

    def walk(offset: int, inherited: dict[str, str], depth: int) -> None:
        nonlocal patients, studies
        while offset and offset in by_offset and offset not in seen and depth < 16:
            seen.add(offset)
            rec = by_offset[offset]
            rtype = _value(rec, "DirectoryRecordType").upper()
            keys = dict(inherited)
            for kw in _KEY_KEYWORDS.get(rtype, ()):
                if kw in rec:  # a record may omit optional keys; absent is not "empty"
                    keys[kw] = _value(rec, kw)
            if rtype == "PATIENT":
                patients += 1
            elif rtype == "STUDY":
                studies += 1
            if "ReferencedFileID" in rec:
                if "InstanceNumber" in rec:
                    keys["InstanceNumber"] = _value(rec, "InstanceNumber")
                leaves.append(_leaf(rec, rtype, keys))
            lower = _offset(rec, "OffsetOfReferencedLowerLevelDirectoryEntity")
            if lower:
                walk(lower, keys, depth + 1)
            offset = _offset(rec, "OffsetOfTheNextDirectoryRecord")

    first = _offset(ds, "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity")
    if by_offset and first in by_offset:
        walk(first, {}, 0)
    referencing = sum(1 for rec in records if "ReferencedFileID" in rec)
    consistent = len(leaves) == referencing
    if not consistent:
        # Broken links (e.g. a record edited with a tool that did not recompute offsets):
        # fall back to document order, where each record follows its parent.
        leaves, patients, studies = _by_order(records)
    return Dicomdir(
        fileset_id=_value(ds, "FileSetID"),
        records=tuple(leaves),
        patient_count=patients,
        study_count=studies,
        offsets_consistent=consistent,
    )


def _by_order(records: list[Dataset]) -> tuple[list[DirRecord], int, int]:
    levels = ("PATIENT", "STUDY", "SERIES")
    current: dict[str, dict[str, str]] = {}
    leaves: list[DirRecord] = []
    counts = dict.fromkeys(levels, 0)
    for rec in records:
        rtype = _value(rec, "DirectoryRecordType").upper()
        if rtype in levels:
            counts[rtype] += 1
            depth = levels.index(rtype)
            for deeper in levels[depth:]:
                current.pop(deeper, None)
            current[rtype] = {kw: _value(rec, kw) for kw in _KEY_KEYWORDS[rtype] if kw in rec}
        if "ReferencedFileID" in rec:
            keys = {k: v for level in levels for k, v in current.get(level, {}).items()}
            if "InstanceNumber" in rec:
                keys["InstanceNumber"] = _value(rec, "InstanceNumber")
            leaves.append(_leaf(rec, rtype, keys))
    return leaves, counts["PATIENT"], counts["STUDY"]


def _leaf(rec: Dataset, rtype: str, keys: dict[str, str]) -> DirRecord:
    raw = rec.get("ReferencedFileID")
    if raw is None:
        parts: list[str] = []
    elif isinstance(raw, str):
        parts = [raw]
    else:
        parts = [str(p) for p in raw]
    file_id = "/".join(p.strip() for p in parts)
    return DirRecord(
        record_type=rtype,
        file_id=file_id,
        sop_class_uid=_value(rec, "ReferencedSOPClassUIDInFile"),
        sop_instance_uid=_value(rec, "ReferencedSOPInstanceUIDInFile"),
        transfer_syntax=_value(rec, "ReferencedTransferSyntaxUIDInFile"),
        keys=keys,
    )


def file_id_problem(file_id: str) -> str | None:
    """Why a received Referenced File ID breaks DISC-RULES 1, or None when it is fine."""
    parts = file_id.split("/")
    if not file_id or len(parts) > 8:
        return "a Referenced File ID must have 1 to 8 components"
    for part in parts:
        if part in ("", ".", "..") or not re.fullmatch(r"[A-Z0-9_]{1,8}", part):
            return f"component {part!r} is not 1-8 characters of A-Z 0-9 _"
    if os.path.isabs(file_id):
        return "absolute path"
    return None


__all__ = [
    "FILESET_ID_PATTERN",
    "Dicomdir",
    "DirRecord",
    "FileSetWriter",
    "file_id_problem",
    "header_for_record",
    "parse_dicomdir",
    "validate_fileset_id",
]
