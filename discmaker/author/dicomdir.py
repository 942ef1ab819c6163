"""Write the DICOMDIR: the records pydicom's FileSet would make, in one pass.

Each instance's records are made where the instance is prepared (a worker process): a
*header-only* copy of it, with its record keys made to conform
(:mod:`discmaker.author.record_keys`) and placeholders for the few type 1 record keys an image
may legally leave empty (:data:`discmaker.author.record_keys.INVENTED_DEFAULTS`), goes through
pydicom's own record makers (``pydicom.fileset.DIRECTORY_RECORDERS``) exactly as
``FileSet.add`` would use them, and pydicom encodes each as its sequence item there. What
crosses to the main process is only those bytes: :class:`InstanceRecords`. The PATIENT, STUDY
and SERIES records, the same for every image of a series, are made and encoded once per
process (:func:`_upper_record`).

The main process (:class:`DicomdirWriter`) places the records in the PATIENT/STUDY/SERIES tree
the way pydicom's FileSet does (same keys, same order, same File IDs), puts the File ID into
each new leaf's item and keeps only those bytes. At the end the offsets of the
record links, fixed-length UL values, are filled in and pydicom writes the DICOMDIR around the
encoded items. The result is byte for byte what ``FileSet.write`` writes for the same instances
(tests/test_dicomdir_writer.py), without FileSet's staging folder, stand-in files or its
re-reading of the DICOMDIR; the real, watermarked files then go to their File IDs.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO

# pydicom's own choices, so the records and File IDs are the ones FileSet makes (pydicom 3.0;
# tests/test_dicomdir_writer.py compares the bytes with FileSet's on every kind of record).
from pydicom.fileset import _PREFIXES as _FILE_ID_PREFIXES
from pydicom.fileset import DIRECTORY_RECORDERS, _four_level_record_type, _single_level_record_type
from pydicom.filewriter import (
    write_data_element,
    write_dataset,
    write_file_meta_info,
    write_sequence_item,
)
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid
from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

from discmaker.author.record_keys import INVENTED_DEFAULTS, conform_record_keys
from discmaker.diagnostics import captured_warnings
from discmaker.errors import StudyError
from discmaker.format.dicomdir import record_keys, validate_fileset_id

PIXEL_DATA = Tag(0x7FE0, 0x0010)
_NEXT_OFFSET = 0x00041400  # Offset of the Next Directory Record
_LOWER_OFFSET = 0x00041420  # Offset of Referenced Lower-Level Directory Entity
_FILE_ID = 0x00041500  # Referenced File ID
_RECORD_SEQUENCE = 0x00041220  # Directory Record Sequence
_FOUR_LEVELS = ("PATIENT", "STUDY", "SERIES")
# FileSet names File ID components from 0 to 9 only up to this many instances (then A-Z too).
MAX_INSTANCES = 10**6

# Where pydicom puts the two offsets in an encoded record item (explicit VR little endian): the
# item's tag and length, then (0004,1400) UL, (0004,1410) US, (0004,1420) UL, always first.
_ITEM_HEAD = 8
_NEXT_AT = _ITEM_HEAD + 8
_LOWER_AT = _ITEM_HEAD + 12 + 10 + 8
_OFFSET_TAGS = (
    (_NEXT_AT - 8, b"\x04\x00\x00\x14UL\x04\x00"),
    (_LOWER_AT - 8, b"\x04\x00\x20\x14UL\x04\x00"),
)


@dataclass(frozen=True, slots=True)
class RecordSpec:
    """One directory record of an instance, encoded by pydicom as its sequence item in the
    Directory Record Sequence, the offsets still 0. A leaf record holds a placeholder File ID
    of the right length at ``file_id_at`` (the element's first byte in ``item``)."""

    record_type: str
    key: str  # what tells this record from its siblings (pydicom's ``RecordNode.key``)
    item: bytes
    file_id_at: int = 0  # leaf records only
    notes: tuple[str, ...] = ()  # warnings pydicom raised while encoding it


@dataclass(frozen=True, slots=True)
class InstanceRecords:
    """The directory records of one instance, highest level first: what a worker sends back.

    ``error`` says why pydicom could not make them (a type 1 key missing); the writer
    refuses the instance with it.
    """

    sop_instance_uid: str
    records: tuple[RecordSpec, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class DraftRecords:
    """An instance's records before the leaf is encoded: the records above it as encoded
    already (:func:`_upper_record`), the leaf as pydicom's record maker returns it (it shares
    values with the instance, so it stays in the process that made it)."""

    sop_instance_uid: str
    upper: tuple[RecordSpec, ...] = ()  # highest level first
    leaf: tuple[str, Dataset] | None = None  # (record type, record)
    error: str = ""


def draft_records(ds: Dataset) -> tuple[DraftRecords, tuple[str, ...]]:
    """The DICOMDIR records of ``ds`` and the keywords whose record value is not the
    image's (see :func:`header_for_record`). ``ds`` is not changed. pydicom's warnings while
    making them are about the image's values: the caller keeps them with the image."""
    hdr, invented = header_for_record(ds)
    uid = str(hdr.get("SOPInstanceUID", "?"))
    try:
        upper, leaf = _pydicom_records(hdr)
    except ValueError as exc:
        error = f"The DICOMDIR record for SOP Instance {uid} cannot be made: {exc}"
        return DraftRecords(sop_instance_uid=uid, error=error), invented
    return DraftRecords(sop_instance_uid=uid, upper=upper, leaf=leaf), invented


def encode_records(draft: DraftRecords) -> InstanceRecords:
    """Have pydicom encode the leaf record; each record's warnings go with it (notes of the
    DICOMDIR, once the record is on it). Call it outside the image's ``captured_warnings``."""
    specs = list(draft.upper)
    if draft.leaf is not None:
        record_type, record = draft.leaf
        names = [_name(spec.record_type, 0) for spec in specs] + [_name(record_type, 0)]
        with captured_warnings() as caught:
            item, file_id_at = _encode_item(record_type, record, names)
        specs.append(
            RecordSpec(
                record_type=record_type,
                key=_key(record_type, record),
                item=item,
                file_id_at=file_id_at,
                notes=tuple(caught),
            )
        )
    return InstanceRecords(
        sop_instance_uid=draft.sop_instance_uid, records=tuple(specs), error=draft.error
    )


# What pydicom's record makers read from an instance for the records above the leaf
# (pydicom 3.0, fileset._define_patient, _define_study, _define_series), and the Specific
# Character Set :func:`_pydicom_records` copies into them. tests/test_dicomdir_writer.py
# checks that these records are the same made from these elements alone.
_UPPER_INPUTS: dict[str, tuple[int, ...]] = {
    record_type: tuple(int(Tag(k)) for k in (*keywords, "SpecificCharacterSet"))
    for record_type, keywords in (
        ("PATIENT", ("PatientName", "PatientID")),
        (
            "STUDY",
            (
                "StudyDate",
                "StudyTime",
                "StudyDescription",
                "StudyInstanceUID",
                "StudyID",
                "AccessionNumber",
            ),
        ),
        ("SERIES", ("Modality", "SeriesInstanceUID", "SeriesNumber")),
    )
}

# The PATIENT, STUDY and SERIES records of every image of a series are the same: each distinct
# one is made and encoded once per process, keyed by what it is made from
# (:func:`_inputs_key`), with the warnings pydicom raised making it (said again for each image,
# as making it again would) and encoding it. Bounded, so a disc station that prepares image
# after image for days keeps only recent studies.
_UPPER_RECORDS: dict[tuple[object, ...], tuple[RecordSpec, tuple[str, ...]]] = {}
_UPPER_RECORDS_MAX = 256


def _upper_record(record_type: str, hdr: Dataset) -> RecordSpec:
    """The PATIENT, STUDY or SERIES record of ``hdr``, encoded; made once per content."""
    key = _inputs_key(record_type, hdr)
    found = _UPPER_RECORDS.get(key) if key is not None else None
    if found is not None:
        spec, made_notes = found
        _say_again(made_notes)
        return spec
    record, made_notes = _record_here(record_type, hdr)
    with captured_warnings() as caught:  # about the DICOMDIR, not the image: kept apart
        item, _ = _encode_item(record_type, record, None)
        notes = tuple(caught)
        caught.clear()
    spec = RecordSpec(
        record_type=record_type, key=_key(record_type, record), item=item, notes=notes
    )
    if key is not None:
        if len(_UPPER_RECORDS) >= _UPPER_RECORDS_MAX:
            _UPPER_RECORDS.clear()
        _UPPER_RECORDS[key] = (spec, made_notes)
    return spec


def _record_here(record_type: str, hdr: Dataset) -> tuple[Dataset, tuple[str, ...]]:
    """pydicom's record above the leaf with the instance's character set, and the warnings
    raised making it; they reach the caller's capture as they would have, once each."""
    notes: tuple[str, ...] = ()
    try:
        with captured_warnings() as caught:
            try:
                record = _pydicom_record(record_type, hdr)
                if "SpecificCharacterSet" in hdr:
                    record.SpecificCharacterSet = hdr.SpecificCharacterSet
            finally:
                notes = tuple(caught)
                caught.clear()  # said below, in the caller's capture, with its limit
    finally:
        _say_again(notes)
    return record, notes


def _say_again(notes: tuple[str, ...]) -> None:
    """Raise ``notes`` again as warnings, so the capture around the caller keeps them (or the
    host sees them) exactly as it would have when they were first raised."""
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)


def _inputs_key(record_type: str, hdr: Dataset) -> tuple[object, ...] | None:
    """Everything pydicom's record of ``record_type`` for ``hdr`` and its encoding depend on:
    the VR and value (:func:`_value_key`) of each element it is made from, or that one is
    absent. None when a value is of another kind: the record is always made."""
    parts: list[object] = [record_type]
    for tag in _UPPER_INPUTS[record_type]:
        elem = hdr.get_item(tag)
        if elem is None:
            parts.append(None)
            continue
        if not isinstance(elem, DataElement):
            return None
        value = _value_key(elem.value)
        if value is None:
            return None
        parts.append((elem.VR, value))
    return tuple(parts)


def _value_key(value: object) -> tuple[object, ...] | None:
    """What pydicom writes ``value`` from (filewriter.write_string, write_number_string,
    write_PN, write_numbers): type and text, the original text of IS/DS, the original bytes and
    encodings of a person name. None for anything else."""
    kind = type(value)
    if value is None or kind in (str, int, bytes, UID):
        return (kind, value)
    if isinstance(value, IS | DSfloat | DSdecimal):
        return (kind, getattr(value, "original_string", None), str(value))
    if isinstance(value, PersonName):
        encodings = tuple(value.encodings) if value.encodings is not None else None
        return (kind, value.original_string, encodings, str(value))
    if isinstance(value, MultiValue):
        values = tuple(_value_key(v) for v in value)
        return None if None in values else (kind, values)
    return None


def instance_records(ds: Dataset) -> tuple[InstanceRecords, tuple[str, ...]]:
    """:func:`draft_records`, then :func:`encode_records`, in one call."""
    draft, invented = draft_records(ds)
    return encode_records(draft), invented


def header_for_record(ds: Dataset) -> tuple[Dataset, tuple[str, ...]]:
    """A header-only copy of ``ds`` for record creation, and the keywords whose record value
    is not the image's: keys made to conform (:mod:`discmaker.author.record_keys`), then
    placeholders for type 1 keys left empty.

    The copy shares the elements of ``ds``; each one it changes is replaced, never edited,
    so the image (already encoded, or still to be) keeps every value as it came. What
    ``ds`` holds unconverted is converted only in the copy, and only what the records use.
    """
    hdr = Dataset()
    for tag in ds.keys():  # noqa: SIM118 (iterating ``ds`` converts every element)
        if tag != PIXEL_DATA and tag >> 16 != 0x0002:
            hdr[tag] = ds.get_item(tag)  # an element not converted yet is converted in hdr
    hdr.file_meta = ds.file_meta
    _sr_record_keys(hdr)
    invented = list(conform_record_keys(hdr))
    for keyword, value in INVENTED_DEFAULTS.items():
        current = hdr.get(keyword)
        if current is None or str(current).strip() == "":
            _replace(hdr, keyword, value)
            if keyword not in invented:
                invented.append(keyword)
    return hdr, tuple(invented)


def _replace(hdr: Dataset, keyword: str, value: object) -> None:
    """Give ``hdr`` a new element: ``setattr`` would change the shared one in the image too."""
    tag = Tag(keyword)
    hdr.add(DataElement(tag, dictionary_VR(tag), value))


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
            _replace(hdr, "ContentSequence", modifiers)
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
            _replace(hdr, "VerificationDateTime", max(times))


def _pydicom_records(hdr: Dataset) -> tuple[tuple[RecordSpec, ...], tuple[str, Dataset]]:
    """The records ``FileSet.add`` makes for ``hdr`` (its ``_recordify``, pydicom 3.0), but
    for the elements every record gets from the writer (offsets, flag, type, File ID): those
    above the leaf encoded already, and the leaf."""
    single = _single_level_record_type(hdr)
    if single != "PATIENT":
        return (), (single, _leaf_record(single, hdr, four_levels=False))
    leaf_type = _four_level_record_type(hdr)
    upper = tuple(_upper_record(record_type, hdr) for record_type in _FOUR_LEVELS)
    return upper, (leaf_type, _leaf_record(leaf_type, hdr, four_levels=True))


def _leaf_record(record_type: str, hdr: Dataset, *, four_levels: bool) -> Dataset:
    """pydicom's leaf record of ``hdr`` with what FileSet adds to it: the character set (in a
    four-level tree) and the references to the file."""
    record = _pydicom_record(record_type, hdr)
    if four_levels and "SpecificCharacterSet" in hdr:
        record.SpecificCharacterSet = hdr.SpecificCharacterSet
    record.ReferencedSOPClassUIDInFile = hdr.SOPClassUID
    record.ReferencedSOPInstanceUIDInFile = hdr.SOPInstanceUID
    record.ReferencedTransferSyntaxUIDInFile = hdr.file_meta.TransferSyntaxUID
    return record


def _pydicom_record(record_type: str, hdr: Dataset) -> Dataset:
    """pydicom's record of ``record_type`` for ``hdr``; its error, in its words, if a key
    the record needs is missing or empty."""
    try:
        return DIRECTORY_RECORDERS[record_type](hdr)
    except ValueError as exc:
        raise ValueError(
            f"Unable to use the default '{record_type}' "
            f"record creator: {exc}. See DICOM PS3.3 Section F.5. "
            "Either update the instance, "
            "define your own record creation function or use "
            "'FileSet.add_custom()' instead"
        ) from exc


def _key(record_type: str, record: Dataset) -> str:
    """The key FileSet tells sibling records apart by (``RecordNode.key``)."""
    if record_type == "PATIENT":
        return str(record.PatientID)
    if record_type == "STUDY" and "StudyInstanceUID" in record:
        return str(record.StudyInstanceUID)
    if record_type == "SERIES":
        return str(record.SeriesInstanceUID)
    return str(record.ReferencedSOPInstanceUIDInFile)


@dataclass(slots=True, eq=False)
class _Node:
    """A record in the tree: its encoded sequence item, and the records below it."""

    item: bytearray
    children: list[_Node] | None = None  # None: a leaf (it references an instance)
    by_key: dict[str, _Node] | None = None  # the first child of each key (not on leaves)
    offset: int = 0  # of the item in the DICOMDIR, once known


class DicomdirWriter:
    """Build a DICOMDIR record by record as instances become ready, then write it.

    ``salt`` (e.g. the disc's timestamp) goes into the DICOMDIR's own SOP Instance UID with
    the File-set ID and every instance's UID, so the same inputs give the same bytes.
    """

    def __init__(self, *, fileset_id: str, salt: str = "") -> None:
        self._fileset_id = validate_fileset_id(fileset_id)
        self._salt = salt
        self._root = _Node(bytearray(), children=[], by_key={})
        self._file_ids: dict[str, str] = {}  # SOP Instance UID -> File ID
        self._notes: list[str] = []

    def add(self, records: InstanceRecords) -> str:
        """Add an instance's records; return its File ID (a POSIX path, ``PT000000/...``)."""
        if records.error:
            raise StudyError(records.error)
        if len(self._file_ids) >= MAX_INSTANCES:
            raise StudyError(f"A DICOMDIR here holds at most {MAX_INSTANCES:,} instances.")
        current, parts = self._root, list[str]()
        specs = records.records
        for level, spec in enumerate(specs):
            leaf = level == len(specs) - 1
            siblings, by_key = current.children, current.by_key
            assert siblings is not None and by_key is not None  # specs end with the leaf
            found = None if leaf else by_key.get(spec.key)
            if found is None:
                parts.append(_name(spec.record_type, len(siblings)))
                found = _Node(bytearray(spec.item))
                if leaf:
                    _put_file_id(found.item, spec.file_id_at, parts)
                else:  # looked up by key; a leaf's (its SOP Instance UID) never matches these
                    found.children, found.by_key = [], {}
                    by_key.setdefault(spec.key, found)
                siblings.append(found)
                self._notes.extend(spec.notes)
            else:
                parts.append(_name(spec.record_type, siblings.index(found)))
            current = found
        file_id = self._file_ids[records.sop_instance_uid] = "/".join(parts)
        return file_id

    def write(self, root: Path) -> dict[str, str]:
        """Write ``root/DICOMDIR`` and the folders of every File ID; return SOP Instance UID ->
        File ID. The caller puts each instance at its File ID."""
        uid = generate_uid(entropy_srcs=[self._fileset_id, self._salt, *self._file_ids])
        nodes = list(_preorder(self._root))
        with captured_warnings() as notes:
            start = len(_encode_dicomdir(self._fileset_id, uid, (0, 0), b""))
            offset = start
            for node in nodes:
                node.offset = offset
                offset += len(node.item)
            for node in (self._root, *nodes):
                _link(node)
            roots = self._root.children or []
            first_last = (roots[0].offset, roots[-1].offset) if roots else (0, 0)
            data = _encode_dicomdir(
                self._fileset_id, uid, first_last, b"".join(n.item for n in nodes)
            )
        self._notes.extend(notes)
        if len(data) != offset:  # the offsets would point elsewhere: never write that
            raise RuntimeError("DICOMDIR encoding changed length between passes")
        (root / "DICOMDIR").write_bytes(data)
        for folder in sorted({f.rpartition("/")[0] for f in self._file_ids.values()} - {""}):
            (root / folder).mkdir(parents=True, exist_ok=True)
        return dict(self._file_ids)

    def read_back(self) -> Iterator[tuple[str, dict[str, str]]]:
        """(File ID, keys) of each record that references an instance, in the DICOMDIR's
        order, with the keys of the PATIENT, STUDY and SERIES records above it: what
        :func:`~discmaker.format.dicomdir.parse_dicomdir` reads from the written DICOMDIR,
        read from the encoded records one at a time (each upper record once), so that no
        parse of the whole file is held in memory."""

        def walk(
            node: _Node, inherited: dict[str, str], parts: list[str]
        ) -> Iterator[tuple[str, dict[str, str]]]:
            for index, child in enumerate(node.children or ()):
                record_type, own = record_keys(bytes(child.item))
                keys = {**inherited, **own}
                path = [*parts, _name(record_type, index)]
                if child.children is None:
                    yield "/".join(path), keys
                else:
                    yield from walk(child, keys, path)

        return walk(self._root, {}, [])

    @property
    def notes(self) -> tuple[str, ...]:
        """The warnings pydicom raised while encoding the records and the DICOMDIR."""
        return tuple(dict.fromkeys(self._notes))


def _name(record_type: str, index: int) -> str:
    """A File ID component as FileSet names it: the record type's prefix and the record's
    index among its siblings, in decimal, 8 characters in all."""
    prefix = _FILE_ID_PREFIXES[record_type]
    return f"{prefix}{index:0{8 - len(prefix)}d}"


def _encode_item(record_type: str, record: Dataset, file_id: list[str] | None) -> tuple[bytes, int]:
    """The record as pydicom encodes it in the Directory Record Sequence, offsets still 0,
    and where its Referenced File ID element starts (0 for a record without one)."""
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = record_type
    if file_id is not None:
        record.ReferencedFileID = file_id
    fp = _buffer()
    write_sequence_item(fp, record, convert_encodings(default_encoding))
    item = fp.getvalue()
    for at, head in _OFFSET_TAGS:
        if item[at : at + len(head)] != head:
            raise RuntimeError(f"unexpected layout of a {record_type} record")
    if file_id is None:
        return item, 0
    placeholder = _file_id_element(file_id)
    if item.count(placeholder) != 1:
        raise RuntimeError(f"unexpected layout of a {record_type} record")
    return item, item.index(placeholder)


def _file_id_element(parts: list[str]) -> bytes:
    """(0004,1500) Referenced File ID as pydicom encodes it, components as values."""
    fp = _buffer()
    write_data_element(fp, DataElement(_FILE_ID, "CS", parts))
    return fp.getvalue()


def _put_file_id(item: bytearray, at: int, parts: list[str]) -> None:
    """Put the File ID over the placeholder: the same length, as every component has 8
    characters and the number of components is the record's depth."""
    element = _file_id_element(parts)
    if item[at : at + 8] != element[:8]:  # tag, VR and length
        raise RuntimeError("the File ID placeholder does not match")
    item[at : at + len(element)] = element


def _buffer() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    return fp


def _preorder(node: _Node) -> Iterator[_Node]:
    """The records in the order FileSet writes them: each before the records below it."""
    for child in node.children or ():
        yield child
        yield from _preorder(child)


def _link(node: _Node) -> None:
    """Fill in the offsets of the records below ``node`` (next sibling, first child)."""
    children = node.children or []
    for k, child in enumerate(children):
        following = children[k + 1].offset if k + 1 < len(children) else 0
        lower = child.children[0].offset if child.children else 0
        struct.pack_into("<I", child.item, _NEXT_AT, following)
        struct.pack_into("<I", child.item, _LOWER_AT, lower)


def _encode_dicomdir(fileset_id: str, uid: str, first_last: tuple[int, int], items: bytes) -> bytes:
    """The DICOMDIR file FileSet writes, around the encoded record items (``items``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.FileSetID = fileset_id
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first_last[0]
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = first_last[1]
    ds.FileSetConsistencyFlag = 0
    # The items are encoded already: a raw element, written as it is (the encoding is set as
    # the items were written, so pydicom does not decode them again).
    ds[_RECORD_SEQUENCE] = RawDataElement(
        Tag(_RECORD_SEQUENCE), "SQ", len(items), items, 0, False, True
    )
    ds.set_original_encoding(False, True, default_encoding)
    fp = _buffer()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    write_dataset(fp, ds)
    return fp.getvalue()


__all__ = [
    "DicomdirWriter",
    "InstanceRecords",
    "RecordSpec",
    "header_for_record",
    "instance_records",
]
