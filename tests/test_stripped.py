"""The watermark speaks when everything else is stripped.

An attacker deletes DISCSIG/ and discmaker's private block from every image, so that the disc
looks like any vendor's, then edits. Each image still carries a watermark sealed by the
trusted centre: the disc is tampered (exit 1, never 2) and each edited image says why.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from discmaker.check.verify import check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.format.layout import PRIVATE_CREATOR, PRIVATE_GROUP
from discmaker.models import CheckReport, ImageStatus
from tests.conftest import Centre

CT = "PT000000/ST000000/SE000000"


def _strip(disc: Path) -> list[Path]:
    """Remove DISCSIG/ and the private block of every image; return the image files."""
    shutil.rmtree(disc / "DISCSIG")
    images = sorted(p for p in disc.rglob("IM*") if p.is_file())
    for path in images:
        ds = dcmread(path)
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        for elem in [e for e in ds.group_dataset(PRIVATE_GROUP)]:
            del ds[elem.tag]
        assert block is not None
        ds.save_as(path, enforce_file_format=True)
        assert PRIVATE_CREATOR not in path.read_bytes().decode("latin-1")
    return images


def _check(disc: Path, centre: Centre) -> CheckReport:
    return check_disc(disc, trust=TrustStore.from_paths([centre.cert_path]), workers=1)


def _edit(path: Path, change: Callable[[Dataset], None]) -> None:
    ds = dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def test_stripped_but_unedited_disc_says_the_signature_was_removed(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    _strip(disc)
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(
        f.kind == "signature" and "signature was removed" in f.message and "trust" in f.message
        for f in report.findings
    )
    assert all(v.status is ImageStatus.NOT_VERIFIABLE for v in report.images)
    assert all("watermark intact" in " ".join(v.reasons) for v in report.images)


def _paint_lesion(ds: Dataset) -> None:
    arr = ds.pixel_array.copy()
    arr[200:230, 200:230] = arr.max()
    ds.PixelData = arr.astype(arr.dtype).tobytes()


def _other_patient(ds: Dataset) -> None:
    ds.PatientName = "SOMEONE^ELSE"
    ds.PatientID = "DM-999999"


EDITS: dict[str, Callable[[Dataset], None]] = {
    "painted lesion": _paint_lesion,
    "another patient": _other_patient,
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_edit_on_a_stripped_disc_names_the_image(
    disc_copy: Callable[[], Path], centre: Centre, edit: str
) -> None:
    disc = disc_copy()
    _strip(disc)
    victim = disc / CT / "IM000002"
    _edit(victim, EDITS[edit])
    report = _check(disc, centre)
    assert report.exit_code == 1
    verdict = next(v for v in report.images if v.path == f"{CT}/IM000002")
    assert verdict.status is ImageStatus.TAMPERED, verdict
    others = [v for v in report.images if v.path != f"{CT}/IM000002"]
    assert all(v.status is ImageStatus.NOT_VERIFIABLE for v in others)
    if edit == "painted lesion":
        assert verdict.regions, "the tampered region is located"
        assert any("differ from the sealed hash" in r for r in verdict.reasons)
    else:
        assert verdict.groups == ("patient",)
        assert any("patient (name, ID" in r for r in verdict.reasons)


def test_another_slices_pixels_under_a_header_is_tampered(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    _strip(disc)
    donor = dcmread(disc / CT / "IM000001")
    _edit(disc / CT / "IM000003", lambda ds: setattr(ds, "PixelData", donor.PixelData))
    report = _check(disc, centre)
    verdict = next(v for v in report.images if v.path == f"{CT}/IM000003")
    assert verdict.status is ImageStatus.TAMPERED
    assert any("another image's pixels" in r for r in verdict.reasons)


def _add_overlay(ds: Dataset) -> None:
    ds.add_new(0x60000010, "US", ds.Rows)
    ds.add_new(0x60000011, "US", ds.Columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(ds.Rows * ds.Columns // 8))


GROUP_EDITS: dict[str, tuple[str, Callable[[Dataset], None]]] = {
    "birth date": ("patient", lambda ds: setattr(ds, "PatientBirthDate", "19690101")),
    "study description": ("study", lambda ds: setattr(ds, "StudyDescription", "OTHER STUDY")),
    "series description": ("series", lambda ds: setattr(ds, "SeriesDescription", "CT other")),
    "pixel aspect ratio": ("pixels", lambda ds: setattr(ds, "PixelAspectRatio", [1, 2])),
    "position": ("geometry", lambda ds: setattr(ds, "ImagePositionPatient", [0, 0, 99])),
    "orientation": (
        "geometry",
        lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 1, 0, 0]),
    ),
    "spacing": ("geometry", lambda ds: setattr(ds, "PixelSpacing", [0.9, 0.9])),
    "thickness": ("geometry", lambda ds: setattr(ds, "SliceThickness", 5)),
    "laterality": ("geometry", lambda ds: setattr(ds, "ImageLaterality", "L")),
    "frame of reference": ("geometry", lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.4")),
    "rescale intercept": ("values", lambda ds: setattr(ds, "RescaleIntercept", -300)),
    "window": ("values", lambda ds: setattr(ds, "WindowWidth", 2000)),
    "kVp": ("acquisition", lambda ds: setattr(ds, "KVP", 80)),
    "overlay": ("overlays", _add_overlay),
}


@pytest.mark.parametrize("edit", sorted(GROUP_EDITS))
def test_each_sealed_group_edited_on_a_stripped_disc_is_named(
    disc_copy: Callable[[], Path], centre: Centre, edit: str
) -> None:
    """With the manifest gone only the watermark speaks: it seals geometry, value mapping,
    acquisition and overlays too, and names the group that changed (format v4)."""
    group, change = GROUP_EDITS[edit]
    disc = disc_copy()
    _strip(disc)
    _edit(disc / CT / "IM000002", change)
    report = _check(disc, centre)
    assert report.exit_code == 1
    verdict = next(v for v in report.images if v.path == f"{CT}/IM000002")
    assert verdict.status is ImageStatus.TAMPERED, verdict
    assert verdict.groups == (group,), verdict
    assert not verdict.regions, "the pixels are as sealed"
    assert any("changed after the image was sealed" in r for r in verdict.reasons)
    others = [v for v in report.images if v.path != f"{CT}/IM000002"]
    assert all(v.status is ImageStatus.NOT_VERIFIABLE and not v.groups for v in others)


def test_a_signed_disc_names_the_changed_group_too(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    """With the manifest present the file's hash already fails; the watermark adds which
    group of the header changed."""
    disc = disc_copy()
    _edit(disc / CT / "IM000002", lambda ds: setattr(ds, "RescaleIntercept", -300))
    report = _check(disc, centre)
    verdict = next(v for v in report.images if v.path == f"{CT}/IM000002")
    assert verdict.status is ImageStatus.TAMPERED
    assert verdict.groups == ("values",)
    assert report.exit_code == 1


@pytest.mark.parametrize("meta", ["kept", "rewritten"])
def test_watermarks_destroyed_too(disc_copy: Callable[[], Path], centre: Centre, meta: str) -> None:
    """Every watermark destroyed (lowest bit cleared) as well. While the file meta still says
    discmaker wrote the images, the removed signature is still found (exit 1); images really
    re-written by another system are another vendor's disc (exit 2, not 1)."""
    disc = disc_copy()
    images = _strip(disc)
    for path in images:
        ds = dcmread(path)
        ds.PixelData = np.ascontiguousarray((ds.pixel_array >> 1) << 1).tobytes()
        if meta == "rewritten":
            ds.file_meta.ImplementationClassUID = "1.2.3.4.5"
        ds.save_as(path, enforce_file_format=True)
    report = _check(disc, centre)
    if meta == "kept":
        assert report.exit_code == 1, report.findings
        assert any("signature was removed" in f.message for f in report.findings)
    else:
        assert report.exit_code == 2, report.findings
