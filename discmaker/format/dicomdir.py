"""The DICOMDIR as both sides see it: the File-set ID rule, and reading a received one defensively.

Writing lives in :mod:`discmaker.author.dicomdir`; what a record must say is the contract here.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, replace
from types import MappingProxyType

from pydicom import dcmread
from pydicom.dataset import Dataset

from discmaker.diagnostics import captured_warnings
from discmaker.errors import DiscError, UsageError
from discmaker.format.identity import PATIENT_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS, text_of

FILESET_ID_PATTERN = re.compile(r"^[A-Z0-9_]{1,16}$")


def validate_fileset_id(label: str) -> str:
    if not FILESET_ID_PATTERN.match(label):
        raise UsageError(
            f"The disc label {label!r} is not a valid File-set ID: use 1 to 16 characters "
            "from A-Z, 0-9 and _ (no lowercase, spaces or dots), e.g. DISC_20260102."
        )
    return label


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
    notes: tuple[str, ...] = ()  # warnings pydicom raised while reading it


_KEY_KEYWORDS = MappingProxyType(
    {"PATIENT": PATIENT_KEYWORDS, "STUDY": STUDY_KEYWORDS, "SERIES": SERIES_KEYWORDS}
)

_MAX_RECORDS = 200_000


def _value(record: Dataset, keyword: str) -> str:
    return text_of(record, keyword)


def parse_dicomdir(data: bytes) -> Dicomdir:
    """Parse DICOMDIR bytes from a received disc. Malformed input raises DiscError.

    Warnings pydicom raises on odd values do not reach the host: they are kept, as text, in
    :attr:`Dicomdir.notes`.
    """
    with captured_warnings() as notes:
        try:
            parsed = _parse(data)
        except DiscError:
            raise
        except Exception as exc:  # a hostile DICOMDIR can make the parser raise anything
            raise DiscError(f"The DICOMDIR cannot be read ({type(exc).__name__}).") from exc
    return replace(parsed, notes=tuple(notes)) if notes else parsed


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
    "file_id_problem",
    "parse_dicomdir",
    "validate_fileset_id",
]
