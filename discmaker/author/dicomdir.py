"""Write the DICOMDIR with pydicom's FileSet.

pydicom's FileSet builds the PATIENT/STUDY/SERIES/IMAGE records and picks the File
IDs. We hand it a *header-only* copy of each instance, with its record keys made to conform
(:mod:`discmaker.author.record_keys`) and placeholders for the few type 1 record keys an image
may legally leave empty (:data:`discmaker.author.intake.INVENTED_DEFAULTS`), let it write the
DICOMDIR and its small stand-in files, then move the real, watermarked files over the
stand-ins. The records only depend on header attributes and the transfer syntax, so
they describe the real files exactly, and no image is written twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet, RecordNode, RootNode
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from discmaker.author.intake import INVENTED_DEFAULTS
from discmaker.author.record_keys import conform_record_keys
from discmaker.errors import StudyError
from discmaker.format.dicomdir import validate_fileset_id

PIXEL_DATA = Tag(0x7FE0, 0x0010)


def header_for_record(ds: Dataset) -> tuple[Dataset, tuple[str, ...]]:
    """A header-only copy of ``ds`` for record creation, and the keywords whose record value
    is not the image's: keys made to conform (:mod:`discmaker.author.record_keys`), then
    placeholders for type 1 keys left empty.

    The copy shares the elements of ``ds``; each one it changes is replaced, never edited,
    so the image (already encoded, or still to be) keeps every value as it came.
    """
    hdr = Dataset()
    for elem in ds:
        if elem.tag != PIXEL_DATA and elem.tag.group != 0x0002:
            hdr.add(elem)
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


class FileSetWriter:
    """Build a DICOMDIR incrementally (records as instances become ready), then write it.

    Use as a context manager; pydicom's staging folder is removed on exit.
    """

    def __init__(self, *, fileset_id: str, stage: Path | None = None) -> None:
        fileset_id = validate_fileset_id(fileset_id)  # before a staging folder exists
        self._fs = _UniqueFileSet()
        self._fs.ID = fileset_id
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


class _LeafFirstRoot(RootNode):
    """The record tree's root, inserting a new branch without scanning sibling leaves.

    pydicom's ``RootNode.add`` descends with ``while node in current and node.children``:
    the membership test computes the key of every child of ``current``, even when ``node`` is
    a leaf and the answer cannot matter. Asking ``node.children`` first gives the same tree
    and makes inserting an image O(depth) instead of O(images in the series). The override
    lives on this one tree only; pydicom's classes are left as they are.
    """

    def add(self, leaf: RecordNode) -> None:
        node = leaf.root
        if node is self:
            node = node.children[0]
        current = self.root
        while node.children and node in current:
            current = current[node]
            node = node.children[0]
        node.parent = current


# The override above restates RootNode.add of pydicom 3.0; another major version may differ.
_TREE_OVERRIDE_OK = pydicom.__version__.split(".")[0] == "3"


class _UniqueFileSet(FileSet):
    """A FileSet for instances already known to be unique (intake refuses duplicates).

    pydicom's ``FileSet.add`` is quadratic in the number of images (pydicom 3.0): it first
    scans every instance added so far for the same SOP Instance UID (2.6 s of 4.4 s for 300 CT
    slices), and inserting a leaf into the record tree computes the key of every sibling
    image (see :class:`_LeafFirstRoot`). While adding, iteration of this File-set yields
    nothing, so the first scan is free and the result is the same; everything else, including
    ``write()``, sees the File-set as usual. Both changes are confined to this instance.
    """

    def __init__(self) -> None:
        super().__init__()
        self._adding = False
        if _TREE_OVERRIDE_OK:
            self._tree = _LeafFirstRoot(self)

    @contextmanager
    def adding(self) -> Iterator[None]:
        self._adding = True
        try:
            yield
        finally:
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


__all__ = ["FileSetWriter", "header_for_record"]
