"""Generated, PHI-free sample studies for the demo, the tests and the benchmarks.

Every image is synthesised here (a body phantom with tissue-like values and noise); the
patient is fictitious. UIDs are derived from a seed, so the same call gives the same files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"

CT_PADDING = -2000


@dataclass(frozen=True)
class SamplePatient:
    name: str = "DEMO^SAMPLE^PATIENT"
    patient_id: str = "DM-000001"
    birth_date: str = "19700101"
    sex: str = "O"


def _uid(seed: str, *parts: object) -> str:
    return str(generate_uid(entropy_srcs=[seed, *(str(p) for p in parts)]))


def _phantom(rows: int, cols: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """Hounsfield-like values of an elliptical body with organs, bone and noise (float32)."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    ny, nx = (y - cy) / (rows / 2), (x - cx) / (cols / 2)
    img = np.full((rows, cols), -1000.0, dtype=np.float32)  # air
    body = (nx / 0.85) ** 2 + (ny / 0.65) ** 2 <= 1
    img[body] = 40.0  # soft tissue
    lungs = (((nx - 0.35) / 0.25) ** 2 + (ny / 0.4) ** 2 <= 1) | (
        ((nx + 0.35) / 0.25) ** 2 + (ny / 0.4) ** 2 <= 1
    )
    img[lungs & body] = -850.0
    spine = ((nx / 0.08) ** 2 + ((ny - 0.45) / 0.08) ** 2) <= 1
    img[spine] = 700.0
    organ = (((nx + 0.1 * np.sin(z)) / 0.2) ** 2 + ((ny + 0.1) / 0.15) ** 2) <= 1
    img[organ] = 60.0 + 20.0 * np.cos(z)
    img += rng.normal(0.0, 12.0, size=img.shape).astype(np.float32)
    return img


def _base_dataset(
    *,
    seed: str,
    patient: SamplePatient,
    sop_class: str,
    modality: str,
    series_number: int,
    instance_number: int,
    rows: int,
    cols: int,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(seed, "instance", modality, series_number, instance_number)
    ds.StudyDate = "20260102"
    ds.StudyTime = "101500"
    ds.ContentDate = "20260102"
    ds.ContentTime = "101500"
    ds.AccessionNumber = "DEMO0001"
    ds.Modality = modality
    ds.Manufacturer = "discmaker sample generator"
    ds.InstitutionName = "Demo Imaging Centre"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "DEMO STUDY (generated, no patient data)"
    ds.SeriesDescription = f"{modality} demo series"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = _uid(seed, "study")
    ds.SeriesInstanceUID = _uid(seed, "series", modality, series_number)
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = _uid(seed, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Laterality = ""
    ds.PatientPosition = "HFS"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-rows * 0.35, -cols * 0.35, -2.5 * instance_number]
    ds.SliceLocation = -2.5 * instance_number

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def ct_slice(
    index: int,
    *,
    rows: int = 512,
    cols: int = 512,
    seed: str = "discmaker-demo",
    patient: SamplePatient | None = None,
    series_number: int = 2,
) -> Dataset:
    """One CT slice: 16 bits allocated, 12 stored, signed, padding outside the scan circle."""
    patient = patient or SamplePatient()
    rng = np.random.default_rng([index, rows, cols, len(seed)])
    ds = _base_dataset(
        seed=seed,
        patient=patient,
        sop_class=CT_IMAGE_STORAGE,
        modality="CT",
        series_number=series_number,
        instance_number=index + 1,
        rows=rows,
        cols=cols,
    )
    hu = _phantom(rows, cols, index * 0.15, rng)
    y, x = np.mgrid[0:rows, 0:cols]
    outside = ((y - (rows - 1) / 2) ** 2 + (x - (cols - 1) / 2) ** 2) > (min(rows, cols) / 2) ** 2
    stored = np.clip(np.rint(hu), -2048, 2047).astype(np.int16)
    stored[outside] = CT_PADDING
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.PixelPaddingValue = CT_PADDING
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.PixelData = stored.astype("<i2").tobytes()
    return ds


def mr_slice(
    index: int,
    *,
    rows: int = 256,
    cols: int = 256,
    seed: str = "discmaker-demo",
    patient: SamplePatient | None = None,
    series_number: int = 3,
) -> Dataset:
    """One MR slice: 16 bits allocated, 12 stored, unsigned, a black background of zeros."""
    patient = patient or SamplePatient()
    rng = np.random.default_rng([index, rows, cols, 7])
    ds = _base_dataset(
        seed=seed,
        patient=patient,
        sop_class=MR_IMAGE_STORAGE,
        modality="MR",
        series_number=series_number,
        instance_number=index + 1,
        rows=rows,
        cols=cols,
    )
    hu = _phantom(rows, cols, index * 0.3, rng)
    signal = np.clip((hu + 1000.0) * 1.2, 0, 4095)
    signal[hu < -900] = 0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = 20
    ds.RepetitionTime = 500
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 1.5
    ds.ImagedNucleus = "1H"
    ds.AcquisitionNumber = 1
    ds.PixelData = np.rint(signal).astype("<u2").tobytes()
    return ds


def sample_study(
    *,
    ct_slices: int = 24,
    ct_size: int = 256,
    mr_slices: int = 12,
    mr_size: int = 256,
    seed: str = "discmaker-demo",
    patient: SamplePatient | None = None,
) -> Iterator[tuple[str, Dataset]]:
    """(relative file name, dataset) pairs of one study: a CT series and an MR series."""
    for i in range(ct_slices):
        ds = ct_slice(i, rows=ct_size, cols=ct_size, seed=seed, patient=patient)
        yield f"ct/slice_{i + 1:04d}.dcm", ds
    for i in range(mr_slices):
        ds = mr_slice(i, rows=mr_size, cols=mr_size, seed=seed, patient=patient)
        yield f"mr/IMG{i + 1:05d}", ds


def write_sample_study(out_dir: Path, **kwargs: object) -> list[Path]:
    """Write :func:`sample_study` under ``out_dir``; returns the file paths."""
    paths: list[Path] = []
    for name, ds in sample_study(**kwargs):  # type: ignore[arg-type]
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


__all__ = [
    "CT_PADDING",
    "SamplePatient",
    "ct_slice",
    "mr_slice",
    "sample_study",
    "write_sample_study",
]
