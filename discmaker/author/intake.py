"""Intake: find the DICOM files of a study, read their headers, group and validate them.

Nothing here writes anywhere: input folders are only ever read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pydicom import dcmread
from pydicom.datadict import dictionary_description
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from discmaker.author.normalise import LOSSLESS_SYNTAXES, expected_pixel_bytes
from discmaker.author.record_keys import INVENTED_DEFAULTS, RECORD_KEYWORDS
from discmaker.diagnostics import captured_warnings
from discmaker.errors import NoImagesError, StudyError, UnusableFileError
from discmaker.format.identity import IDENTITY_KEYWORDS, text_of
from discmaker.format.manifest import OmittedFile
from discmaker.sharing import Shared

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

# Elements every DICOMDIR record needs and that we will not invent: without them the disc
# cannot be indexed. (tag, keyword)
REQUIRED = (
    ("(0008,0016)", "SOPClassUID"),
    ("(0008,0018)", "SOPInstanceUID"),
    ("(0010,0020)", "PatientID"),
    ("(0020,000D)", "StudyInstanceUID"),
    ("(0020,000E)", "SeriesInstanceUID"),
    ("(0008,0060)", "Modality"),
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class InputInstance:
    """One DICOM instance found in the input (header facts only, no pixel data).

    The author keeps one per image for the whole run (its worker processes start with a copy),
    so it is compact: slots, the file's path as one string (:attr:`path` makes the
    :class:`~pathlib.Path`), and the values many images share as one string per scan.
    """

    file: str  # its path, as found
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    patient_key: str  # PatientID, used for grouping only; never printed
    study_uid: str
    series_uid: str
    modality: str
    transfer_syntax: str
    series_number: int = 0
    instance_number: int = 0
    estimated_output_size: int = 0  # bytes once normalised (decompressed when lossless)
    # Where it was found, relative to its input folder (the file name for a file given
    # itself): for logs and notes, which must not carry the absolute path.
    relative: str = ""
    notes: tuple[str, ...] = ()  # warnings pydicom raised while reading the header

    @property
    def path(self) -> Path:
        """The file, as found."""
        return Path(self.file)

    def shared(self, one: Shared) -> InputInstance:
        """The same instance, with each value many instances share (UIDs of class, study and
        series, Patient ID, modality, transfer syntax) as ``one`` holds it."""
        return replace(
            self,
            sop_class_uid=one(self.sop_class_uid),
            patient_key=one(self.patient_key),
            study_uid=one(self.study_uid),
            series_uid=one(self.series_uid),
            modality=one(self.modality),
            transfer_syntax=one(self.transfer_syntax),
        )

    @property
    def sort_key(self) -> tuple[str, str, int, str, int, str]:
        """Disc order: patient, study, series number, series, instance number, instance."""
        return (
            self.patient_key,
            self.study_uid,
            self.series_number,
            self.series_uid,
            self.instance_number,
            self.sop_instance_uid,
        )


@dataclass(frozen=True)
class Intake:
    """What was found: DICOM instances to put on the disc and everything that was left out."""

    instances: tuple[InputInstance, ...]
    non_dicom: tuple[Path, ...]
    existing_dicomdirs: tuple[Path, ...]
    identical_duplicates: int
    patient_count: int
    study_uids: tuple[str, ...]
    series_uids: tuple[str, ...]
    total_bytes: int = field(default=0)
    # Left out (skip_unusable), in input order; the file as its path in its input folder.
    unusable: tuple[OmittedFile, ...] = ()


def _unreadable(exc: OSError) -> None:
    """os.walk error hook: a folder we cannot list would silently drop its images."""
    raise StudyError(
        f"The folder {exc.filename} cannot be read ({exc.strerror}), so its images would be "
        "missing from the disc. Fix its permissions or leave it out."
    ) from exc


def _walk(roots: Sequence[Path]) -> list[tuple[Path, str]]:
    """Every file under ``roots``, in a fixed order, with its path relative to its root."""
    files: list[tuple[Path, str]] = []
    for root in roots:
        if root.is_file():
            files.append((root, root.name))
            continue
        if not root.is_dir():
            raise NoImagesError(f"{root} does not exist or is not a folder. Check the path.")
        # Directory symlinks are not followed: a study folder that links to "/" must not make
        # us read the whole machine, and loops are impossible this way.
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_unreadable):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.is_file():
                    files.append((p, p.relative_to(root).as_posix()))
    return files


def _looks_like_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as fp:
            head = fp.read(132)
    except OSError as exc:
        raise StudyError(f"{path} cannot be read ({exc.strerror}). Check its permissions.") from exc
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # Files without the Part 10 preamble (older exports): a group 0008 tag at offset 0 in
    # either byte order is a strong enough sign to try parsing.
    return len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x00\x08")


def _sha256(path: Path) -> str:
    with path.open("rb") as fp:
        return hashlib.file_digest(fp, "sha256").hexdigest()


def read_header(path: Path) -> Dataset:
    """The header of one file (no pixel data), or StudyError naming the file.

    pydicom may warn here and when a value is first used; callers read it inside
    :func:`discmaker.diagnostics.captured_warnings`.
    """
    try:
        return dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as exc:
        raise _damaged(path, exc) from exc


def _damaged(path: Path, exc: Exception) -> UnusableFileError:
    return UnusableFileError(
        str(path),
        f"looks like DICOM but cannot be read: it is truncated or damaged ({type(exc).__name__})",
        "Remove it or export it again from the PACS.",
    )


def _int(ds: Dataset, keyword: str) -> int:
    try:
        return int(str(ds.get(keyword, "") or "0").strip() or 0)
    except ValueError:
        return 0


def _estimated_size(ds: Dataset, file_size: int, syntax: str) -> int:
    """Bytes on the disc: lossless inputs are stored decompressed, so count their raw size."""
    if syntax in LOSSLESS_SYNTAXES and "Rows" in ds and "BitsAllocated" in ds:
        try:
            return file_size + expected_pixel_bytes(ds)
        except (TypeError, ValueError):
            return file_size
    # Meta header rewrite and the watermark bookkeeping elements add a little.
    return file_size + 512


def _describe(path: Path, relative: str) -> InputInstance | Literal["dicomdir", "other"]:
    """One file's header facts, or what else it is. A damaged file raises StudyError.

    pydicom decodes elements lazily, so every value is read inside the guard: a corrupt
    value must not surface later as an internal error. Its warnings are kept with the
    instance (:attr:`InputInstance.notes`) instead of reaching the host.
    """
    with captured_warnings() as notes:
        try:
            found = _describe_unguarded(path)
        except StudyError:
            raise
        except Exception as exc:
            raise _damaged(path, exc) from exc
    if isinstance(found, InputInstance):
        return replace(found, relative=relative, notes=tuple(notes))
    return found


# Every header text a later step reads (identity, DICOMDIR records, the preview): decoded here,
# so a value pydicom cannot decode is this file's problem, named, before any work is done.
_DECODED = tuple(
    dict.fromkeys(IDENTITY_KEYWORDS + RECORD_KEYWORDS + ("StudyDescription", "SeriesDescription"))
)


def _check_decodable(ds: Dataset, path: Path) -> None:
    for keyword in _DECODED:
        try:
            text_of(ds, keyword)  # (plain ASCII is read from its bytes: no conversion to fail)
        except Exception as exc:  # pydicom on text its character set cannot decode
            try:
                charset = text_of(ds, "SpecificCharacterSet")
            except Exception:  # (as undecodable as the value)
                charset = ""
            named = f" ({charset})" if charset else ""
            tag = Tag(keyword)
            raise UnusableFileError(
                str(path),
                f"its {dictionary_description(tag)} ({tag.group:04X},{tag.element:04X}) cannot "
                f"be decoded with its Specific Character Set{named} ({type(exc).__name__})",
                "Correct the value in the source system and export the study again, or leave "
                "the file out.",
            ) from exc


def _describe_unguarded(path: Path) -> InputInstance | Literal["dicomdir", "other"]:
    ds = read_header(path)
    meta = getattr(ds, "file_meta", None)
    sop_class = text_of(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return "dicomdir"
    if "SOPInstanceUID" not in ds and "SOPClassUID" not in ds:
        return "other"
    for tag, keyword in REQUIRED:
        if not text_of(ds, keyword):
            raise UnusableFileError(
                str(path),
                f"{tag} {keyword} is missing or empty, and the DICOMDIR needs it",
                "Fix the file in the source system, or leave it out.",
            )
    _check_decodable(ds, path)
    ts = text_of(meta, "TransferSyntaxUID") if meta is not None else ""
    size = path.stat().st_size
    return InputInstance(
        file=str(path),
        size=size,
        sop_class_uid=text_of(ds, "SOPClassUID"),
        sop_instance_uid=text_of(ds, "SOPInstanceUID"),
        patient_key=text_of(ds, "PatientID"),
        study_uid=text_of(ds, "StudyInstanceUID"),
        series_uid=text_of(ds, "SeriesInstanceUID"),
        modality=text_of(ds, "Modality"),
        transfer_syntax=ts,
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        estimated_output_size=_estimated_size(ds, size, ts),
    )


def scan(
    roots: Sequence[Path],
    *,
    allow_mixed_patients: bool = False,
    skip_unusable: bool = False,
    progress: ProgressCallback | None = None,
) -> Intake:
    """Find and validate the DICOM instances under ``roots`` (folders or files).

    A file that cannot go on a disc (:class:`UnusableFileError`) stops the scan, or with
    ``skip_unusable`` is left out and listed in :attr:`Intake.unusable`.
    """
    started = time.monotonic()
    candidates = _walk(roots)
    if not candidates:
        where = ", ".join(str(r) for r in roots)
        raise NoImagesError(f"No files found in {where}. Choose the folder that holds the study.")
    log.debug("intake: %d file(s) found", len(candidates))

    instances: dict[str, InputInstance] = {}
    non_dicom: list[Path] = []
    dicomdirs: list[Path] = []
    unusable: list[OmittedFile] = []
    duplicates = 0
    for done, (path, relative) in enumerate(candidates, 1):
        if progress:
            progress(done, len(candidates))
        try:
            duplicates += _take(path, relative, instances, non_dicom, dicomdirs) == "duplicate"
        except UnusableFileError as exc:
            if not skip_unusable:
                raise
            log.debug("intake: %s: unusable, left out", relative)
            unusable.append(OmittedFile(file=relative, reason=exc.problem))

    if not instances:
        left_out = f", {len(unusable)} unusable" if unusable else ""
        raise NoImagesError(
            f"None of the {len(candidates)} files found is a DICOM image that can go on a "
            f"disc ({len(dicomdirs)} DICOMDIR, {len(non_dicom)} other{left_out}). "
            "Choose the folder that holds the exported study."
        )

    strings = Shared()  # one copy of each value the instances share
    ordered = tuple(i.shared(strings) for i in sorted(instances.values(), key=lambda i: i.sort_key))
    patients = {i.patient_key for i in ordered}
    if len(patients) > 1 and not allow_mixed_patients:
        raise StudyError(
            f"The input holds images of {len(patients)} different patients "
            "((0010,0020) Patient ID differs). A patient disc should hold one patient: "
            "author one disc per patient, or pass --allow-mixed-patients if this is intended."
        )
    _check_hierarchy(ordered)
    log.debug(
        "intake: %d image(s), %d other, %d DICOMDIR, %d duplicate(s) in %.0f ms",
        len(ordered),
        len(non_dicom),
        len(dicomdirs),
        duplicates,
        (time.monotonic() - started) * 1000,
    )
    return Intake(
        instances=ordered,
        non_dicom=tuple(non_dicom),
        existing_dicomdirs=tuple(dicomdirs),
        identical_duplicates=duplicates,
        patient_count=len(patients),
        study_uids=tuple(dict.fromkeys(i.study_uid for i in ordered)),
        series_uids=tuple(dict.fromkeys(i.series_uid for i in ordered)),
        total_bytes=sum(i.size for i in ordered),
        unusable=tuple(unusable),
    )


def _take(
    path: Path,
    relative: str,
    instances: dict[str, InputInstance],
    non_dicom: list[Path],
    dicomdirs: list[Path],
) -> Literal["image", "duplicate", "dicomdir", "not DICOM"]:
    """Sort one file into what :func:`scan` collects, and say what it was."""
    found = _describe(path, relative) if _looks_like_dicom(path) else "other"
    if found == "dicomdir":
        dicomdirs.append(path)
        log.debug("intake: %s: DICOMDIR, left out", relative)
        return "dicomdir"
    if found == "other":
        non_dicom.append(path)
        log.debug("intake: %s: not DICOM, left out", relative)
        return "not DICOM"
    seen = instances.get(found.sop_instance_uid)
    if seen is not None:
        # Hash only on a collision: reading every file twice would cost a second pass.
        if _sha256(seen.path) == _sha256(path):
            log.debug("intake: %s: duplicate of %s, left out", relative, seen.relative)
            return "duplicate"
        raise StudyError(
            f"{seen.path} and {path} have the same (0008,0018) SOP Instance UID but "
            "different content. Only one of them can go on the disc: remove the wrong one."
        )
    instances[found.sop_instance_uid] = found
    log.debug("intake: %s: image, %d note(s)", relative, len(found.notes))
    return "image"


def _check_hierarchy(instances: Iterable[InputInstance]) -> None:
    """One study belongs to one patient, one series to one study (else the DICOMDIR lies)."""
    study_patient: dict[str, InputInstance] = {}
    series_study: dict[str, InputInstance] = {}
    for inst in instances:
        first = study_patient.setdefault(inst.study_uid, inst)
        if first.patient_key != inst.patient_key:
            raise StudyError(
                f"{first.path} and {inst.path} share a (0020,000D) Study Instance UID but have "
                "different (0010,0020) Patient IDs. Correct the study in the source system."
            )
        first = series_study.setdefault(inst.series_uid, inst)
        if first.study_uid != inst.study_uid:
            raise StudyError(
                f"{first.path} and {inst.path} share a (0020,000E) Series Instance UID but "
                "belong to different studies. Correct the series in the source system."
            )


__all__ = [
    "INVENTED_DEFAULTS",
    "REQUIRED",
    "InputInstance",
    "Intake",
    "read_header",
    "scan",
]
