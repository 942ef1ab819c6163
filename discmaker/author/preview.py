"""What is in a study, from its headers only: for staff to see before anything is written.

:func:`preview` runs the same intake as authoring (:func:`discmaker.author.intake.scan`: it
finds the
DICOM files and refuses what cannot go on a disc, such as mixed patients) and then reads each
header once more, without pixel data, for the names and descriptions a person recognises:
patient name, ID and birth date, each study's date and description, each series' modality,
number, description and image count. Nothing here writes or prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from discmaker.author.intake import InputInstance, read_header, scan
from discmaker.diagnostics import captured_warnings
from discmaker.format.identity import text_of
from discmaker.format.manifest import OmittedFile
from discmaker.people import date_for_people

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class PatientPreview:
    name: str  # DICOM person name as stored, e.g. "DOE^JANE"
    id: str
    birth_date: str  # YYYYMMDD as stored ("" when absent)
    sex: str = ""

    @property
    def display_name(self) -> str:
        """``DOE^JANE^M`` -> ``DOE, JANE M``; what staff compare with the request form."""
        return format_person_name(self.name)

    @property
    def display_birth_date(self) -> str:
        return format_date(self.birth_date)


@dataclass(frozen=True)
class SeriesPreview:
    modality: str
    number: str
    description: str
    images: int


@dataclass(frozen=True)
class StudyEntry:
    date: str  # YYYYMMDD as stored
    description: str
    accession: str
    patient_id: str
    series: tuple[SeriesPreview, ...]

    @property
    def images(self) -> int:
        return sum(s.images for s in self.series)


@dataclass(frozen=True)
class StudyPreview:
    """One or more studies as found on the input, grouped patient -> study -> series."""

    patients: tuple[PatientPreview, ...]
    studies: tuple[StudyEntry, ...]
    images: int
    total_bytes: int  # size of the DICOM input files
    estimated_bytes: int  # their size once on the disc (lossless inputs are decompressed)
    non_dicom_skipped: int = 0
    duplicates_skipped: int = 0
    dicomdirs_skipped: int = 0
    sop_instance_uids: frozenset[str] = frozenset()  # what staff confirmed; author re-checks
    unusable: tuple[OmittedFile, ...] = ()  # left out (skip_unusable)

    @property
    def series_count(self) -> int:
        return sum(len(s.series) for s in self.studies)

    @property
    def patient(self) -> PatientPreview:
        """The patient (a patient disc holds one; see ``allow_mixed_patients``)."""
        return self.patients[0]


def format_person_name(value: str) -> str:
    """A DICOM PN value for reading aloud: family name, then the other components."""
    first_group = value.split("=", maxsplit=1)[0]
    parts = [p.strip() for p in first_group.split("^")]
    family = parts[0] if parts else ""
    rest = " ".join(p for p in parts[1:] if p)
    if family and rest:
        return f"{family}, {rest}"
    return family or rest


def format_date(value: str) -> str:
    """``19700312`` -> ``12 Mar 1970 (1970-03-12)``: unambiguous whatever the local habit."""
    return date_for_people(value)


def _add_instance(
    inst: InputInstance,
    ds: Dataset,
    patients: dict[str, PatientPreview],
    studies: dict[str, dict[str, object]],
    series: dict[str, dict[str, object]],
) -> None:
    """Note the patient, study and series of one instance the first time each is seen."""
    if inst.patient_key not in patients:
        patients[inst.patient_key] = PatientPreview(
            name=text_of(ds, "PatientName"),
            id=inst.patient_key,
            birth_date=text_of(ds, "PatientBirthDate"),
            sex=text_of(ds, "PatientSex"),
        )
    studies.setdefault(
        inst.study_uid,
        {
            "date": text_of(ds, "StudyDate"),
            "description": text_of(ds, "StudyDescription"),
            "accession": text_of(ds, "AccessionNumber"),
            "patient_id": inst.patient_key,
            "series": [],
        },
    )
    if inst.series_uid not in series:
        series[inst.series_uid] = {
            "study": inst.study_uid,
            "modality": inst.modality,
            "number": text_of(ds, "SeriesNumber"),
            "description": text_of(ds, "SeriesDescription"),
        }


def preview(
    paths: Sequence[Path],
    *,
    allow_mixed_patients: bool = False,
    skip_unusable: bool = False,
    progress: ProgressCallback | None = None,
) -> StudyPreview:
    """Describe the study under ``paths`` from its headers (pixel data is never read).

    Raises the same errors as :func:`discmaker.author.intake.scan` (no images, damaged files, mixed
    patients unless allowed), so a study that previews is one that can be authored.
    """
    intake = scan(
        paths,
        allow_mixed_patients=allow_mixed_patients,
        skip_unusable=skip_unusable,
        progress=progress,
    )
    patients: dict[str, PatientPreview] = {}
    studies: dict[str, dict[str, object]] = {}
    series: dict[str, dict[str, object]] = {}
    series_counts: dict[str, int] = {}
    inst: InputInstance
    for inst in intake.instances:
        # Any warnings were noted by the intake (InputInstance.notes); none reach the host.
        with captured_warnings():
            _add_instance(inst, read_header(inst.path), patients, studies, series)
        series_counts[inst.series_uid] = series_counts.get(inst.series_uid, 0) + 1

    by_study: dict[str, list[SeriesPreview]] = {uid: [] for uid in studies}
    for uid, info in series.items():
        by_study[str(info["study"])].append(
            SeriesPreview(
                modality=str(info["modality"]),
                number=str(info["number"]),
                description=str(info["description"]),
                images=series_counts[uid],
            )
        )
    study_entries = tuple(
        StudyEntry(
            date=str(info["date"]),
            description=str(info["description"]),
            accession=str(info["accession"]),
            patient_id=str(info["patient_id"]),
            series=tuple(by_study[uid]),
        )
        for uid, info in studies.items()
    )
    return StudyPreview(
        patients=tuple(patients.values()),
        studies=study_entries,
        images=len(intake.instances),
        total_bytes=intake.total_bytes,
        estimated_bytes=sum(i.estimated_output_size for i in intake.instances),
        non_dicom_skipped=len(intake.non_dicom),
        duplicates_skipped=intake.identical_duplicates,
        dicomdirs_skipped=len(intake.existing_dicomdirs),
        sop_instance_uids=frozenset(i.sop_instance_uid for i in intake.instances),
        unusable=intake.unusable,
    )


__all__ = [
    "PatientPreview",
    "SeriesPreview",
    "StudyEntry",
    "StudyPreview",
    "format_date",
    "format_person_name",
    "preview",
]
