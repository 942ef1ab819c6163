"""Loose image files checked by their watermarks alone.

One image sent on by e-mail, or a folder exported from a PACS that imported a disc without
restoring it: no DICOMDIR, no DISCSIG, only the images. Each is judged by the watermark it
carries (format v4 seals the header groups and every pixel word), and the report says what
that proves and what it cannot.
"""

from __future__ import annotations

import shutil
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker.author.create import AuthorRequest, author
from discmaker.check.verify import check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.errors import DiscError
from discmaker.models import ImageStatus, InputKind, Verdict
from tests.conftest import Centre, make_centre
from tests.test_schemas import run_json, validate

CT = "PT000000/ST000000/SE000000"
V3_DISC = Path(__file__).parent / "data" / "disc-v3"


@pytest.fixture
def export(tmp_path: Path, disc_folder: Path) -> Path:
    """What a PACS export of the disc's CT series looks like: flat, renamed, no index."""
    out = tmp_path / "export"
    out.mkdir()
    for n, image in enumerate(sorted((disc_folder / CT).iterdir())):
        shutil.copyfile(image, out / f"ct_{n:03d}.dcm")
    return out


def _trust(centre: Centre) -> TrustStore:
    return TrustStore.from_paths([centre.cert_path])


def test_a_folder_of_sealed_images_is_verified_image_by_image(export: Path, centre: Centre) -> None:
    report = check_disc(export, trust=_trust(centre))
    assert report.kind is InputKind.FILES
    assert report.verdict is Verdict.IMAGES_VERIFIED
    assert report.exit_code == 2, "each image verified, never the whole study: not exit 0"
    assert len(report.images) == 6
    assert all(i.status is ImageStatus.OK and i.restorable for i in report.images)
    assert report.signer is not None and "Test Imaging Centre" in report.signer.subject
    notes = " ".join(report.notes)
    assert "judged by its watermark alone" in notes
    assert "cannot show whether other images of the study are missing" in notes
    assert not report.findings


def test_one_file_on_its_own_is_checked_as_that_image(export: Path, centre: Centre) -> None:
    one = export / "ct_002.dcm"
    code, doc = run_json(["check", str(one), "--json", "--trust", str(centre.cert_path)])
    validate(doc)
    assert code == 2 and doc["verdict"] == "images-verified"
    assert doc["input"] == "files"
    assert [i["path"] for i in doc["images"]] == ["CT_002.DCM"]
    assert doc["images"][0]["status"] == "ok"


def test_a_file_inside_a_disc_is_judged_by_its_watermark(disc_folder: Path, centre: Centre) -> None:
    report = check_disc(disc_folder / CT / "IM000001", trust=_trust(centre))
    assert report.verdict is Verdict.IMAGES_VERIFIED


@pytest.mark.parametrize(
    ("edit", "group"),
    [
        (lambda ds: setattr(ds, "PatientID", "DM-999999"), "patient"),
        (lambda ds: setattr(ds, "RescaleIntercept", -1024), "values"),
        (lambda ds: setattr(ds, "SliceThickness", 1.0), "geometry"),
    ],
    ids=["patient id", "rescale intercept", "slice thickness"],
)
def test_an_edited_loose_image_is_tampered_and_the_group_named(
    export: Path, centre: Centre, edit: object, group: str
) -> None:
    victim = export / "ct_003.dcm"
    ds = dcmread(victim)
    edit(ds)  # type: ignore[operator]
    ds.save_as(victim, enforce_file_format=True)
    code, doc = run_json(["check", str(export), "--json", "--trust", str(centre.cert_path)])
    validate(doc)
    assert code == 1 and doc["verdict"] == "tampered"  # sealed files: never "inconsistent"
    bad = [i for i in doc["images"] if i["status"] == "tampered"]
    assert [i["path"] for i in bad] == ["CT_003.DCM"]
    assert bad[0]["groups"] == [group]


def test_painted_pixels_in_a_loose_image_are_located(export: Path, centre: Centre) -> None:
    victim = export / "ct_001.dcm"
    ds = dcmread(victim)
    arr = ds.pixel_array.copy()
    arr[300:310, 100:110] = 1500
    ds.PixelData = arr.tobytes()
    ds.save_as(victim, enforce_file_format=True)
    report = check_disc(export, trust=_trust(centre))
    assert report.verdict is Verdict.TAMPERED
    bad = next(i for i in report.images if i.path == "CT_001.DCM")
    assert bad.status is ImageStatus.TAMPERED
    assert any(r.row0 <= 300 < r.row1 and r.col0 <= 100 < r.col1 for r in bad.regions)


def test_unsealed_loose_files_are_not_verifiable(study_dir: Path, centre: Centre) -> None:
    code, doc = run_json(
        ["check", str(study_dir / "ct"), "--json", "--trust", str(centre.cert_path)]
    )
    validate(doc)
    assert code == 2 and doc["verdict"] == "not-verifiable"
    assert doc["input"] == "files"


def test_images_sealed_by_an_untrusted_sender_are_not_verifiable(
    export: Path, other_centre: Centre
) -> None:
    report = check_disc(export, trust=_trust(other_centre))
    assert report.verdict is Verdict.NOT_VERIFIABLE and report.exit_code == 2
    assert all(i.status is ImageStatus.NOT_VERIFIABLE for i in report.images)
    assert report.signer is None


def test_a_loose_folder_with_one_unsealed_image_is_not_verified(
    export: Path, study_dir: Path, centre: Centre
) -> None:
    shutil.copyfile(next((study_dir / "ct").iterdir()), export / "extra.dcm")
    report = check_disc(export, trust=_trust(centre))
    assert report.verdict is Verdict.NOT_VERIFIABLE
    extra = next(i for i in report.images if i.path == "EXTRA.DCM")
    assert extra.status is ImageStatus.NOT_VERIFIABLE


# -- what an attacker tried (review of the loose-file check) -------------------------------------


def _sealed(export: Path) -> Path:
    return export / "ct_002.dcm"


def test_a_v3_image_on_its_own_is_not_verified(tmp_path: Path) -> None:
    """Format v3 seals the identity only: loose, it cannot vouch for geometry or values."""
    image = tmp_path / "v3.dcm"
    image.write_bytes((V3_DISC / "PT000000/ST000000/SE000000/IM000001").read_bytes())
    report = check_disc(image, trust=TrustStore.from_paths([V3_DISC / "DISCSIG/SIGNER.PEM"]))
    assert report.verdict is Verdict.NOT_VERIFIABLE
    assert "format v3" in " ".join(report.images[0].reasons)


def test_a_repeated_element_before_the_genuine_one_is_refused(export: Path, centre: Centre) -> None:
    """pydicom keeps one copy, dcmtk the other: a file with two readings is never verified."""
    path = _sealed(export)
    data = path.read_bytes()
    genuine = data.index(struct.pack("<HH", 0x0010, 0x0010) + b"PN")
    forged_name = b"EVIL^FORGED "
    forged = struct.pack("<HH", 0x0010, 0x0010) + b"PN" + struct.pack("<H", len(forged_name))
    path.write_bytes(data[:genuine] + forged + forged_name + data[genuine:])
    report = check_disc(export, trust=_trust(centre))
    assert report.exit_code == 1
    bad = next(i for i in report.images if i.path == "CT_002.DCM")
    assert bad.status is ImageStatus.TAMPERED
    assert "repeated or out of order" in " ".join(bad.reasons)


def test_a_file_that_is_also_a_disc_image_is_refused(export: Path, centre: Centre) -> None:
    path = _sealed(export)
    data = bytearray(path.read_bytes())
    data[16 * 2048 + 1 : 16 * 2048 + 6] = b"CD001"
    path.write_bytes(bytes(data))
    with pytest.raises(DiscError, match="both a DICOM file and a disc image"):
        check_disc(path, trust=_trust(centre))


def test_a_file_beside_the_images_that_is_not_dicom_keeps_them_unverified(
    export: Path, centre: Centre
) -> None:
    (export / "b.raw").write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(64))
    report = check_disc(export, trust=_trust(centre))
    assert report.verdict is Verdict.NOT_VERIFIABLE
    assert all(i.status is ImageStatus.OK for i in report.images)
    assert "not verified as a whole" in " ".join(report.notes)


def test_float_pixel_data_added_beside_the_pixels_is_a_change(export: Path, centre: Centre) -> None:
    path = _sealed(export)
    ds = dcmread(path)
    ds.add_new(0x7FE00008, "OF", bytes(16))
    ds.save_as(path, enforce_file_format=True)
    report = check_disc(export, trust=_trust(centre))
    bad = next(i for i in report.images if i.path == "CT_002.DCM")
    assert bad.status is ImageStatus.TAMPERED and bad.groups == ("pixels",)


def test_a_link_to_an_image_given_by_name_is_checked(export: Path, centre: Centre) -> None:
    link = export.parent / "link.dcm"
    link.symlink_to(_sealed(export))
    report = check_disc(link, trust=_trust(centre))
    assert report.verdict is Verdict.IMAGES_VERIFIED


def test_images_sealed_under_a_certificate_not_valid_now_are_not_verified(
    tmp_path: Path, study_dir: Path
) -> None:
    """A watermark carries no time of sealing: an expired certificate vouches for nothing."""
    then = datetime(2012, 5, 1, tzinfo=UTC)
    old = make_centre(tmp_path / "old", "Old Imaging Centre", now=then)
    out = tmp_path / "DISC"
    author(
        AuthorRequest(
            inputs=(study_dir / "ct",),
            out=out,
            key=old.identity.private_key,
            cert=old.identity.certificate,
            timestamp=then,
            workers=1,
            format="folder",
        )
    )
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copyfile(out / "PT000000/ST000000/SE000000/IM000000", loose / "a.dcm")
    report = check_disc(loose, trust=TrustStore.from_paths([old.cert_path]))
    assert report.verdict is Verdict.NOT_VERIFIABLE
    assert "not valid now" in " ".join(report.notes)


def test_bytes_appended_to_a_loose_images_pixel_data_are_a_change(
    export: Path, centre: Centre
) -> None:
    """A fourth frame's worth of bytes after the frames: no watermark covers them."""
    path = _sealed(export)
    ds = dcmread(path)
    ds.PixelData = ds.PixelData + bytes(512)
    ds.save_as(path, enforce_file_format=True)
    report = check_disc(export, trust=_trust(centre))
    bad = next(i for i in report.images if i.path == "CT_002.DCM")
    assert bad.status is ImageStatus.TAMPERED
    assert "512 bytes more than its frames need" in " ".join(bad.reasons)


def test_free_text_comments_are_sealed(export: Path, centre: Centre) -> None:
    path = _sealed(export)
    ds = dcmread(path)
    ds.ImageComments = "no fracture"
    ds.save_as(path, enforce_file_format=True)
    report = check_disc(export, trust=_trust(centre))
    bad = next(i for i in report.images if i.path == "CT_002.DCM")
    assert bad.status is ImageStatus.TAMPERED and bad.groups == ("acquisition",)
