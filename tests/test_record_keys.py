"""DICOMDIR record keys conform even when the images do not (issue 14).

Real images carry values their IOD forbids (a two-valued Accession Number on an ultrasound
multi-frame, a 70-character Patient ID, Modality ``us``). The image goes on the disc as it
came; its DICOMDIR records still follow PS3.5, and the manifest lists the keys whose record
value is not the image's, so the checker still verifies the disc.
"""

from __future__ import annotations

import copy
import inspect
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import DIRECTORY_RECORDERS
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian

from discmaker.author.dicomdir import header_for_record
from discmaker.author.record_keys import RECORD_KEYWORDS
from discmaker.check.verify import check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.format.manifest import MANIFEST_PATH, parse
from discmaker.models import Verdict
from discmaker.sample import ct_slice, mr_slice
from tests.conftest import Centre, author_disc

US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"

# What the sloppy study holds, and what its DICOMDIR records must hold instead.
SLOPPY = {
    "PatientName": "Müller^Jörg",  # and no Specific Character Set: the default repertoire
    "PatientID": "ID-" + "9" * 67,  # 70 characters, LO allows 64
    "StudyDate": "2026-01-02",
    "StudyTime": "10:15:00",
    "StudyDescription": "Abdomen\tpelvis " + "x" * 70,
    "StudyID": "STUDY-0123456789-X",  # 18 characters, SH allows 16
    "AccessionNumber": ["ACC-1", "ACC-2"],  # VM 1 by the dictionary
}
IN_RECORDS = {
    "PatientName": "Muller^Jorg",
    "PatientID": SLOPPY["PatientID"][:64],
    "StudyDate": "20260102",
    "StudyTime": "101500",
    "StudyDescription": ("Abdomen pelvis " + "x" * 70)[:64],
    "StudyID": "STUDY-0123456789",
    "AccessionNumber": "ACC-1",
}
# Per image: (series values as they are, the keys its records must not take as they are).
SERIES = {
    "us": ({"Modality": "us", "SeriesNumber": ["3", "4"]}, {"Modality", "SeriesNumber"}),
    "ct": (
        {"Modality": "ct", "SeriesNumber": "2.0", "InstanceNumber": ["1", "2"]},
        {"Modality", "SeriesNumber", "InstanceNumber"},
    ),
}


def _quietly_set(ds: Dataset, values: dict[str, object]) -> None:
    """Set values pydicom warns about (they are the point); the warnings are not under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in values.items():
            setattr(ds, keyword, value)


def _quietly_read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
        for elem in ds:  # pydicom converts (and warns about) values when first used
            _ = elem.value
    return ds


def _ultrasound() -> Dataset:
    """A two-frame ultrasound image (the kind the issue was reported for)."""
    ds = mr_slice(0, rows=96, cols=96, series_number=3)
    ds.SOPClassUID = US_MULTIFRAME_STORAGE
    ds.file_meta.MediaStorageSOPClassUID = UID(US_MULTIFRAME_STORAGE)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    return ds


@pytest.fixture(scope="module")
def sloppy_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sloppy")
    images = {"us": _ultrasound(), "ct": ct_slice(0, rows=64, cols=64)}
    for name, ds in images.items():
        del ds.SpecificCharacterSet
        _quietly_set(ds, {**SLOPPY, **SERIES[name][0]})
        ds.save_as(root / f"{name}.dcm", enforce_file_format=True)
    return root


@pytest.fixture(scope="module")
def sloppy_disc(
    tmp_path_factory: pytest.TempPathFactory, centre: Centre, sloppy_study: Path
) -> Path:
    out = tmp_path_factory.mktemp("sloppy-disc") / "DISC"
    author_disc(centre, [sloppy_study], out, format="folder", label="SLOPPY")
    return out


def _dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    result = subprocess.run(
        ["dciodvfy", str(path)],
        capture_output=True,
        text=True,
        errors="replace",  # it echoes the values it rejects, whatever their bytes
        timeout=120,
        check=False,
    )
    return [ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")]


# -- a disc made from sloppy images -----------------------------------------------------------


@pytest.mark.external
def test_dicomdir_of_sloppy_images_passes_dciodvfy(sloppy_disc: Path) -> None:
    assert _dciodvfy_errors(sloppy_disc / "DICOMDIR") == []


@pytest.mark.external
def test_the_sloppy_images_themselves_fail_dciodvfy(sloppy_study: Path) -> None:
    """The inputs really are what the DICOMDIR test claims (else it would prove nothing)."""
    errors = "\n".join(_dciodvfy_errors(sloppy_study / "us.dcm"))
    assert "Value Multiplicity" in errors and "AccessionNumber" in errors
    assert "Patient ID" in errors and "Character invalid" in errors


def test_records_hold_conforming_values(sloppy_disc: Path) -> None:
    dicomdir = dcmread(sloppy_disc / "DICOMDIR")
    records = {str(r.DirectoryRecordType): r for r in dicomdir.DirectoryRecordSequence}
    both = [*records["PATIENT"], *records["STUDY"]]
    found = {elem.keyword: str(elem.value) for elem in both if elem.keyword in IN_RECORDS}
    assert found == IN_RECORDS
    series = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "SERIES"]
    assert sorted(str(r.Modality) for r in series) == ["CT", "US"]
    assert sorted(int(r.SeriesNumber) for r in series) == [2, 3]


def test_manifest_lists_every_adjusted_key(sloppy_disc: Path) -> None:
    images = parse((sloppy_disc / MANIFEST_PATH).read_bytes()).images
    by_modality = {_quietly_read(sloppy_disc / i.file_id).Modality: i for i in images}
    for name, (_, series_keys) in SERIES.items():
        assert set(IN_RECORDS) | series_keys <= set(by_modality[name].invented), name
        assert len(set(by_modality[name].invented)) == len(by_modality[name].invented)


def test_images_on_the_disc_keep_their_values(sloppy_disc: Path, sloppy_study: Path) -> None:
    images = parse((sloppy_disc / MANIFEST_PATH).read_bytes()).images
    assert {i.frames for i in images} == {1, 2}
    for image in images:
        ds = _quietly_read(sloppy_disc / image.file_id)
        name = str(ds.Modality)
        expected = {**SLOPPY, **SERIES[name][0]}
        assert {k: _plain(ds.get(k)) for k in expected} == {
            k: _plain(v) for k, v in expected.items()
        }
        source = _quietly_read(sloppy_study / f"{name}.dcm")
        assert ds.AccessionNumber == source.AccessionNumber
        assert "SpecificCharacterSet" not in ds


def _plain(value: object) -> object:
    """A value as written (a list of texts for several values): ``2.0`` is not ``2``."""
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    written = getattr(value, "original_string", None)  # IS, DS; a PersonName's is bytes
    return written if isinstance(written, str) and written else str(value)


def test_sloppy_disc_verifies(sloppy_disc: Path, centre: Centre) -> None:
    report = check_disc(sloppy_disc, trust=TrustStore.from_paths([centre.cert_path]), workers=1)
    assert report.verdict is Verdict.VERIFIED, (report.findings, report.images)
    assert report.exit_code == 0


# -- header_for_record itself ----------------------------------------------------------------


def _image(**values: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.1"
    ds.Modality = "OT"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20260102", "101500", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    _quietly_set(ds, values)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.mark.parametrize(
    ("keyword", "value", "recorded"),
    [
        ("AccessionNumber", ["A1", "A2"], "A1"),
        ("AccessionNumber", "ACC-" + "7" * 16, "ACC-777777777777"),
        ("StudyDescription", "x" * 70, "x" * 64),
        ("StudyDescription", "Chest\r\nAbdomen", "Chest  Abdomen"),
        ("StudyID", "S" * 20, "S" * 16),
        ("PatientID", "ID\x01" + "9" * 70, ("ID " + "9" * 70)[:64]),
        ("Modality", "ct", "CT"),
        ("Modality", ["CT", "PT"], "CT"),
        ("ImageType", ["original", "primary"], ["ORIGINAL", "PRIMARY"]),
        ("ContentLabel", "my-label.v2", "MY_LABEL_V2"),
        ("DoseSummationType", "plan (total)", "PLAN _TOTAL_"),
        ("StudyDate", "2026-01-02", "20260102"),
        ("StudyDate", "2.1.2026", "19000101"),
        ("StudyDate", "20260231", "19000101"),
        ("StudyTime", "10:15:00", "101500"),
        ("StudyTime", "101500.1234567", "101500.123456"),
        ("StudyTime", "25", "000000"),
        ("VerificationDateTime", "2026-01-02T10:15:00+01:00", "20260102101500+0100"),
        ("VerificationDateTime", "20260102101500.1234567", "20260102101500.123456"),
        ("SeriesNumber", ["3", "4"], "3"),
        ("SeriesNumber", "2.0", "2"),
        ("InstanceNumber", "1.5", "1"),
        ("InstanceNumber", "+0001", "1"),  # the image's identity reads +0001, the record 1
        ("InstanceNumber", "12345678901234", "0"),
        ("PatientName", "Müller^Jörg", "Muller^Jorg"),
        ("PatientName", "Ωmega^李", "?mega^?"),
        ("PatientName", "A^B^C^D^E^F", "A^B^C^D^E"),
        ("PatientName", ["ONE^A", "TWO^B"], "ONE^A"),
        ("Rows", [64, 64], "64"),
    ],
)
def test_a_record_key_is_made_to_conform(keyword: str, value: object, recorded: object) -> None:
    ds = _image(**{keyword: value})
    before = copy.deepcopy(ds)
    hdr, invented = header_for_record(ds)  # conforming values make pydicom warn about none
    assert _plain(hdr.get(keyword)) == recorded
    assert keyword in invented
    assert ds == before and _plain(ds.get(keyword)) == _plain(before.get(keyword))


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("PatientName", "DOE^JOHN^^^"),
        ("StudyTime", "101500.123"),
        ("StudyDescription", "CT THORAX"),
        ("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"]),
        ("VerificationDateTime", "20260102101500+0100"),
        ("DocumentTitle", "Report\r\nof the day"),  # ST keeps its line breaks
        ("StudyInstanceUID", "1.2.3." + "4" * 70),  # a UID is never changed: files link by it
    ],
)
def test_a_conforming_key_is_left_alone(keyword: str, value: object) -> None:
    hdr, invented = header_for_record(_image(**{keyword: value}))
    assert _plain(hdr.get(keyword)) == _plain(value)
    assert invented == ()


def test_non_ascii_is_kept_where_a_character_set_allows_it() -> None:
    hdr, invented = header_for_record(
        _image(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jörg")
    )
    assert (str(hdr.PatientName), invented) == ("Müller^Jörg", ())


def test_padding_is_rewritten_but_not_listed() -> None:
    """NUL padding is not part of the value: image and record read the same."""
    hdr, invented = header_for_record(_image(StudyDescription="CT THORAX\x00"))
    assert (hdr.StudyDescription, invented) == ("CT THORAX", ())


def test_placeholders_and_adjustments_are_listed_once_and_the_image_is_not_changed() -> None:
    ds = _image(StudyID="", StudyDate="garbage", AccessionNumber=["A1", "A2"])
    before = copy.deepcopy(ds)
    hdr, invented = header_for_record(ds)
    assert (hdr.StudyID, hdr.StudyDate, hdr.AccessionNumber) == ("0", "19000101", "A1")
    assert sorted(invented) == ["AccessionNumber", "StudyDate", "StudyID"]
    assert ds == before and ds.StudyID == "" and ds.StudyDate == "garbage"


def test_a_read_image_keeps_its_elements_unconverted() -> None:
    """The copy for the records takes the image's elements as read: an element the records
    use is converted in the copy only (the image then writes its own bytes as they came),
    and the adjusted values are the same as from a converted image."""
    import io

    from pydicom.dataelem import RawDataElement

    buf = io.BytesIO()
    _image(StudyDate="garbage", StudyDescription="CT THORAX\x00").save_as(
        buf, enforce_file_format=True
    )
    raw = dcmread(io.BytesIO(buf.getvalue()))
    hdr, invented = header_for_record(raw)
    assert all(isinstance(raw.get_item(t), RawDataElement) for t in raw.keys())  # noqa: SIM118
    converted = dcmread(io.BytesIO(buf.getvalue()))
    for elem in converted:
        _ = elem.value
    want, want_invented = header_for_record(converted)
    assert invented == want_invented == ("StudyDate",)
    assert (hdr.StudyDate, hdr.StudyDescription) == (want.StudyDate, want.StudyDescription)


def test_sr_record_keys_do_not_change_the_document() -> None:
    item = Dataset()
    item.RelationshipType = "HAS CONCEPT MOD"
    other = Dataset()
    other.RelationshipType = "CONTAINS"
    ds = _image(ContentSequence=[item, other])
    hdr, _ = header_for_record(ds)
    assert len(hdr.ContentSequence) == 1
    assert len(ds.ContentSequence) == 2


# -- the list of record keys follows pydicom ---------------------------------------------------


def test_record_keywords_are_what_pydicom_copies_into_records() -> None:
    copied: set[str] = set()
    for recorder in set(DIRECTORY_RECORDERS.values()):
        copied |= set(re.findall(r"record\.(\w+) = ", inspect.getsource(recorder)))
    not_sequences = {k for k in copied if dictionary_VR(k) != "SQ"}
    assert not_sequences == set(RECORD_KEYWORDS)


def test_every_record_key_has_a_rule() -> None:
    """A key of another VR (pydicom may add keys) would pass unchecked: give it a rule."""
    vrs = {dictionary_VR(k) for k in RECORD_KEYWORDS}
    handled = {"CS", "DA", "DT", "IS", "LO", "PN", "SH", "ST", "TM", "US", "UL"}
    assert vrs - handled == {"UI"}  # UIDs are left as they are, by design
