"""The DICOMDIR as both sides see it: the File-set ID rule, and reading a received one defensively.

Writing lives in :mod:`discmaker.author.dicomdir`; what a record must say is the contract here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from discmaker.diagnostics import captured_warnings
from discmaker.errors import DiscError, UsageError
from discmaker.format.identity import (
    PATIENT_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    element_text,
)
from discmaker.format.reading import UNDEFINED, ElementWalker, RawElement, open_body

FILESET_ID_PATTERN = re.compile(r"^[A-Z0-9_]{1,16}$")


def validate_fileset_id(label: str) -> str:
    if not FILESET_ID_PATTERN.match(label):
        raise UsageError(
            f"The disc label {label!r} is not a valid File-set ID: use 1 to 16 characters "
            "from A-Z, 0-9 and _ (no lowercase, spaces or dots), e.g. DISC_20260102."
        )
    return label


# -- reading a received DICOMDIR -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
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

#: More directory records than this are refused, counted before any record is decoded. A full
#: 25 GB Blu-ray holds about 50,000 CT images (one record each, plus a record per series,
#: study and patient); twice that leaves room for discs of small MR images. A record costs
#: about 35 microseconds and 1.5 KiB to read, so at the limit a DICOMDIR is read in under 4 s
#: and 200 MiB (pydicom alone took 15 s and 880 MiB for 210,000 records).
MAX_DICOMDIR_RECORDS = 100_000
#: Elements and items visited by each pass over one DICOMDIR (finding the sequence, counting
#: its records, reading them), at most: a record has a dozen or two elements, so 100,000
#: records of any realistic shape stay below; what is refused is a DICOMDIR of millions of
#: empty elements, whose walk alone would take seconds.
MAX_DICOMDIR_ELEMENTS = 4_000_000
#: Most bytes a deflated DICOMDIR may inflate to: the checker's limit for a plain one
#: (``MAX_DICOMDIR_BYTES`` in :mod:`discmaker.check.verify`).
MAX_DICOMDIR_INFLATED = 64 << 20


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


_RECORD_SEQUENCE = _tag("DirectoryRecordSequence")
_CHARSET = _tag("SpecificCharacterSet")
_FILESET_ID = _tag("FileSetID")
_FIRST_RECORD = _tag("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity")
_RECORD_TYPE = _tag("DirectoryRecordType")
_NEXT = _tag("OffsetOfTheNextDirectoryRecord")
_LOWER = _tag("OffsetOfReferencedLowerLevelDirectoryEntity")
_FILE_ID = _tag("ReferencedFileID")
_SOP_CLASS = _tag("ReferencedSOPClassUIDInFile")
_SOP_INSTANCE = _tag("ReferencedSOPInstanceUIDInFile")
_SYNTAX = _tag("ReferencedTransferSyntaxUIDInFile")
_INSTANCE_NUMBER = _tag("InstanceNumber")
_KEY_TAGS = MappingProxyType(
    {level: tuple((kw, _tag(kw)) for kw in kws) for level, kws in _KEY_KEYWORDS.items()}
)
_TOP_TAGS = frozenset({_RECORD_SEQUENCE, _CHARSET, _FILESET_ID, _FIRST_RECORD})
_RECORD_TAGS = frozenset(
    {_CHARSET, _RECORD_TYPE, _NEXT, _LOWER, _FILE_ID, _SOP_CLASS, _SOP_INSTANCE, _SYNTAX}
    | {_INSTANCE_NUMBER}
    | {tag for keys in _KEY_TAGS.values() for _, tag in keys}
)
# Values pydicom would decode without a word (so without a warning) are decoded here directly:
# pydicom's own conversion costs more than the rest of reading a record.
_PLAIN_CS = re.compile(rb"[A-Z0-9 _]{0,16}(?:\\[A-Z0-9 _]{0,16})*")
_PLAIN_UI = re.compile(rb"[0-9.]{0,64}\x00?")
#: An Instance or Series Number of up to nine digits (so within IS's 12 characters and 32
#: bits): pydicom's IS keeps the digits as written, which is the text read here.
_PLAIN_IS = re.compile(rb" *[0-9]{1,9} *")


def parse_dicomdir(data: bytes) -> Dicomdir:
    """Parse DICOMDIR bytes from a received disc. Malformed input raises DiscError.

    The work is bounded before it is done: the records are counted (refused past
    :data:`MAX_DICOMDIR_RECORDS`) before any is decoded, then read one at a time into
    :class:`DirRecord` values without building pydicom datasets; a deflated DICOMDIR inflates
    to at most :data:`MAX_DICOMDIR_INFLATED` bytes, and every declared length is checked.
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


@dataclass(slots=True)
class _Record:
    """One directory record, decoded only as far as the checker needs it."""

    tell: int  # offset of its item, what the record links point at
    rtype: str  # Directory Record Type, upper case
    keys: dict[str, str]  # the identity keys of its level that it carries
    has_file: bool  # carries a Referenced File ID (even an empty one)
    file_value: object  # that File ID as pydicom decodes it
    sop_class: str
    sop_instance: str
    syntax: str
    instance: str | None  # Instance Number, when present
    lower: object  # the record links, checked only when followed
    next: object


class _Decoder:
    """Element values decoded as pydicom decodes them, one element at a time."""

    def __init__(self, data: bytes, *, little_endian: bool) -> None:
        self._data = data
        self._little = little_endian
        self._order: Literal["little", "big"] = "little" if little_endian else "big"

    def value(self, element: RawElement, encodings: str | list[str]) -> object:
        raw = b"" if element.length == UNDEFINED else element.raw(self._data)
        vr = element.vr
        if vr is None:
            try:
                vr = str(dictionary_VR(element.tag))
            except KeyError:
                vr = None
        if vr in ("UL", "US") and len(raw) == (4 if vr == "UL" else 2):
            return int.from_bytes(raw, self._order)
        if vr == "CS" and _PLAIN_CS.fullmatch(raw):
            return _split(raw.decode("latin-1"))
        if vr == "UI" and _PLAIN_UI.fullmatch(raw):
            return _split(raw.decode("latin-1").rstrip("\x00 "))
        if vr == "IS" and len(raw) <= 12 and _PLAIN_IS.fullmatch(raw):
            return raw.decode("latin-1").strip(" ")  # the text of pydicom's IS for it
        elem = RawDataElement(
            BaseTag(element.tag),
            None if element.implicit and element.vr is None else element.vr,
            len(raw),
            raw,
            element.value,
            element.implicit,
            self._little,
        )
        return convert_raw_data_element(elem, encoding=encodings).value

    def text(self, element: RawElement | None, encodings: str | list[str]) -> str:
        return element_text(self.value(element, encodings)) if element is not None else ""

    def encodings(self, element: RawElement | None, inherited: str | list[str]) -> str | list[str]:
        if element is None:
            return inherited
        value = self.value(element, default_encoding)
        names = (
            list(value) if isinstance(value, list | MultiValue) else [str(value)] if value else []
        )
        return list(convert_encodings(names or None))


def _split(text: str) -> str | list[str]:
    """pydicom's multi-value split of a string value (trailing padding removed)."""
    items = text.rstrip(" \x00").split("\\")
    return items[0] if len(items) == 1 else items


def _offset(value: object, keyword: str) -> int:
    """A record link: one non-negative integer, else DiscError (hostile or damaged)."""
    if value is None or value == "":
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DiscError(f"The DICOMDIR's {keyword} is not a single byte offset.")
    return value


def _parse(data: bytes) -> Dicomdir:
    body = open_body(data, max_inflated=MAX_DICOMDIR_INFLATED, what="the DICOMDIR")
    buf, end = body.data, len(body.data)

    def walker() -> ElementWalker:  # one per pass, each with the whole budget
        return ElementWalker(
            buf,
            little_endian=body.little_endian,
            max_elements=MAX_DICOMDIR_ELEMENTS,
            what="the DICOMDIR",
        )

    top: dict[int, RawElement] = {}
    for element in walker().elements(body.start, end, implicit=body.implicit_vr, depth=0):
        if element.tag in _TOP_TAGS:
            top[element.tag] = element  # a repeated tag: the last one counts, as in pydicom
    sequence = top.get(_RECORD_SEQUENCE)
    if sequence is None:
        raise DiscError("The DICOMDIR has no (0004,1220) Directory Record Sequence.")
    if sequence.vr not in (None, "SQ", "UN"):
        raise DiscError("The DICOMDIR's (0004,1220) Directory Record Sequence is not a sequence.")
    for count, _ in enumerate(walker().items(sequence, end, depth=1), 1):  # count, no decoding
        if count > MAX_DICOMDIR_RECORDS:
            raise DiscError(
                f"The DICOMDIR holds more than {MAX_DICOMDIR_RECORDS:,} records, more than "
                "any disc can (a full Blu-ray holds about 50,000 images)."
            )
    decoder = _Decoder(buf, little_endian=body.little_endian)
    encodings = decoder.encodings(top.get(_CHARSET), default_encoding)
    reader = walker()
    records = [
        _record(reader, decoder, span, encodings) for span in reader.items(sequence, end, depth=1)
    ]
    fileset_id = decoder.text(top.get(_FILESET_ID), encodings)
    first = top.get(_FIRST_RECORD)
    first_offset = _offset(
        decoder.value(first, encodings) if first is not None else 0,
        "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity",
    )
    return _hierarchy(records, fileset_id, first_offset)


def _record(
    walker: ElementWalker,
    decoder: _Decoder,
    span: tuple[int, int, int, bool],
    inherited: str | list[str],
) -> _Record:
    tell, start, stop, implicit = span
    found: dict[int, RawElement] = {}
    for element in walker.elements(start, stop, implicit=implicit, depth=2):
        if element.tag in _RECORD_TAGS:
            found[element.tag] = element
    encodings = decoder.encodings(found.get(_CHARSET), inherited)
    rtype = decoder.text(found.get(_RECORD_TYPE), encodings).upper()
    keys = {
        kw: decoder.text(found[tag], encodings)
        for kw, tag in _KEY_TAGS.get(rtype, ())
        if tag in found  # a record may omit optional keys; absent is not "empty"
    }
    file_id = found.get(_FILE_ID)
    number = found.get(_INSTANCE_NUMBER)
    lower, nxt = found.get(_LOWER), found.get(_NEXT)
    return _Record(
        tell=tell,
        rtype=rtype,
        keys=keys,
        has_file=file_id is not None,
        file_value=decoder.value(file_id, encodings) if file_id is not None else None,
        sop_class=decoder.text(found.get(_SOP_CLASS), encodings),
        sop_instance=decoder.text(found.get(_SOP_INSTANCE), encodings),
        syntax=decoder.text(found.get(_SYNTAX), encodings),
        instance=decoder.text(number, encodings) if number is not None else None,
        lower=decoder.value(lower, encodings) if lower is not None else 0,
        next=decoder.value(nxt, encodings) if nxt is not None else 0,
    )


def _hierarchy(records: list[_Record], fileset_id: str, first: int) -> Dicomdir:
    # Records are linked by byte offsets; the hierarchy of a conforming DICOMDIR is also
    # its order (a parent record precedes its children). We follow the offsets, which is
    # what viewers do, and fall back to order only where offsets are unusable.
    by_offset = {rec.tell: rec for rec in records}
    leaves: list[DirRecord] = []
    patients = 0
    studies = 0
    # One visited set for the whole walk: each record is read at most once, so links that
    # loop back (a hostile DICOMDIR) cannot make the walk explode. The walk keeps its own
    # stack (no recursive closure, whose reference cycle would keep every record alive until
    # the next garbage collection): each entry is where to go on once a subtree is done.
    seen: set[int] = set()
    stack: list[tuple[object, dict[str, str], int]] = []
    offset = first if first in by_offset else 0
    inherited: dict[str, str] = {}
    depth = 0
    while True:
        while offset and offset in by_offset and offset not in seen and depth < 16:
            seen.add(offset)
            rec = by_offset[offset]
            keys = {**inherited, **_own_keys(rec)}
            if rec.rtype == "PATIENT":
                patients += 1
            elif rec.rtype == "STUDY":
                studies += 1
            if rec.has_file:
                leaves.append(_leaf(rec, keys))
            lower = _offset(rec.lower, "OffsetOfReferencedLowerLevelDirectoryEntity")
            if lower:
                stack.append((rec.next, inherited, depth))
                offset, inherited, depth = lower, keys, depth + 1
            else:
                offset = _offset(rec.next, "OffsetOfTheNextDirectoryRecord")
        if not stack:
            break
        following, inherited, depth = stack.pop()
        offset = _offset(following, "OffsetOfTheNextDirectoryRecord")

    referencing = sum(1 for rec in records if rec.has_file)
    consistent = len(leaves) == referencing
    if not consistent:
        # Broken links (e.g. a record edited with a tool that did not recompute offsets):
        # fall back to document order, where each record follows its parent.
        leaves, patients, studies = _by_order(records)
    return Dicomdir(
        fileset_id=fileset_id,
        records=tuple(leaves),
        patient_count=patients,
        study_count=studies,
        offsets_consistent=consistent,
    )


def record_keys(item: bytes) -> tuple[str, dict[str, str]]:
    """The record type and keys of one encoded Directory Record Sequence item (explicit VR
    little endian, as the author writes it), read exactly as :func:`parse_dicomdir` reads
    them: the keys of the record's level and, for a record that references a file, its
    Instance Number. The author reads its own records back with this, one at a time, instead
    of parsing the whole DICOMDIR again."""
    walker = ElementWalker(
        item, little_endian=True, max_elements=MAX_DICOMDIR_ELEMENTS, what="a DICOMDIR record"
    )
    sequence = RawElement(_RECORD_SEQUENCE, "SQ", 0, len(item), len(item), False)
    spans = list(walker.items(sequence, len(item), depth=1))
    if len(spans) != 1:
        raise ValueError(f"expected one record item, found {len(spans)}")
    rec = _record(walker, _Decoder(item, little_endian=True), spans[0], default_encoding)
    return rec.rtype, _own_keys(rec)


def _own_keys(rec: _Record) -> dict[str, str]:
    """The keys a record adds to those of its ancestors: its level's, and the Instance Number
    of a record that references a file."""
    if rec.has_file and rec.instance is not None:
        return {**rec.keys, "InstanceNumber": rec.instance}
    return rec.keys


def _by_order(records: list[_Record]) -> tuple[list[DirRecord], int, int]:
    levels = ("PATIENT", "STUDY", "SERIES")
    current: dict[str, dict[str, str]] = {}
    leaves: list[DirRecord] = []
    counts = dict.fromkeys(levels, 0)
    for rec in records:
        if rec.rtype in levels:
            counts[rec.rtype] += 1
            depth = levels.index(rec.rtype)
            for deeper in levels[depth:]:
                current.pop(deeper, None)
            current[rec.rtype] = rec.keys
        if rec.has_file:
            keys = {k: v for level in levels for k, v in current.get(level, {}).items()}
            if rec.instance is not None:
                keys["InstanceNumber"] = rec.instance
            leaves.append(_leaf(rec, keys))
    return leaves, counts["PATIENT"], counts["STUDY"]


def _leaf(rec: _Record, keys: dict[str, str]) -> DirRecord:
    raw = rec.file_value
    if raw is None:
        parts: list[str] = []
    elif isinstance(raw, str):
        parts = [raw]
    elif isinstance(raw, list | tuple | MultiValue):
        parts = [str(p) for p in raw]
    else:
        parts = [element_text(raw)]
    file_id = "/".join(p.strip() for p in parts)
    return DirRecord(
        record_type=rec.rtype,
        file_id=file_id,
        sop_class_uid=rec.sop_class,
        sop_instance_uid=rec.sop_instance,
        transfer_syntax=rec.syntax,
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
    "MAX_DICOMDIR_ELEMENTS",
    "MAX_DICOMDIR_INFLATED",
    "MAX_DICOMDIR_RECORDS",
    "Dicomdir",
    "DirRecord",
    "file_id_problem",
    "parse_dicomdir",
    "record_keys",
    "validate_fileset_id",
]
