"""The one-pass DICOMDIR writer against pydicom's FileSet: byte for byte the same DICOMDIR and
the same File IDs, for the same header copies, on every kind of record and tree shape."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from discmaker.author import dicomdir
from discmaker.author.dicomdir import DicomdirWriter, header_for_record, instance_records
from discmaker.diagnostics import captured_warnings
from discmaker.errors import StudyError
from discmaker.format.dicomdir import parse_dicomdir
from discmaker.sample import sample_study

FILESET_ID = "TEST_DISC"
SALT = "2026-01-02T03:04:05+00:00"
# pydicom's own test files (get_testdata_files would download pydicom-data's too)
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


@contextmanager
def _fileset() -> Iterator[FileSet]:
    """A FileSet whose staging folder is removed at the end (pydicom leaves it to the GC)."""
    fs = FileSet()
    try:
        yield fs
    finally:
        fs._stage["t"].cleanup()


def _reference(headers: list[Dataset], root: Path) -> tuple[bytes, dict[str, str]]:
    """What the FileSet path wrote: FileSet over header-only copies, UID from the same inputs."""
    with _fileset() as fs:
        fs.ID = FILESET_ID
        uids = []
        for ds in headers:
            hdr, _ = header_for_record(ds)
            fs.add(hdr)
            uids.append(str(hdr.SOPInstanceUID))
        fs.UID = generate_uid(entropy_srcs=[FILESET_ID, SALT, *uids])
        fs.write(root)
        ids = {str(i.SOPInstanceUID): Path(i.FileID).as_posix() for i in fs}
    return (root / "DICOMDIR").read_bytes(), ids


def _ours(headers: list[Dataset], root: Path) -> tuple[bytes, dict[str, str]]:
    writer = DicomdirWriter(fileset_id=FILESET_ID, salt=SALT)
    returned = {}
    for ds in headers:
        records, _ = instance_records(ds)
        records = pickle.loads(pickle.dumps(records))  # as it comes from a worker process
        uid = records.sop_instance_uid
        returned[uid] = writer.add(records)
    root.mkdir()
    ids = writer.write(root)
    assert ids == returned
    for file_id in ids.values():
        assert (root / file_id).parent.is_dir()
    data = (root / "DICOMDIR").read_bytes()
    # the writer's own read-back is what the checker reads from the file
    with captured_warnings() as ours_read:
        read_back = list(writer.read_back())
    parsed = parse_dicomdir(data)
    assert read_back == [(r.file_id, r.keys) for r in parsed.records]
    assert sorted(set(ours_read)) == sorted(set(parsed.notes))
    return data, ids


def _same(headers: list[Dataset], tmp_path: Path) -> bytes:
    ref = _reference(headers, tmp_path / "ref")
    ours = _ours(headers, tmp_path / "ours")
    assert ours[1] == ref[1]
    assert ours[0] == ref[0]
    return ours[0]


def _image(n: int, **values: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = f"1.2.3.4.{n}"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.1"
    ds.Modality = "OT"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20260102", "101500", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _code(value: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", value
    return item


def test_sample_study(tmp_path: Path) -> None:
    study = [ds for _, ds in sample_study(ct_slices=12, ct_size=16, mr_slices=5, mr_size=16)]
    data = _same(study, tmp_path)
    assert len(parse_dicomdir(data).records) == 17


def test_interleaved_patients_studies_and_series(tmp_path: Path) -> None:
    """Records arrive out of tree order: each lands under its first-seen parent, whose values
    (not the later images') the parent records keep."""
    headers = [
        _image(
            n,
            PatientID=f"P{n % 3}",
            StudyInstanceUID=f"1.2.3.{n % 2}",
            SeriesInstanceUID=f"1.2.3.{n % 2}.{n % 4}",
            StudyDescription=f"STUDY {n}",
            Modality=["CT", "MR"][n % 2],
        )
        for n in range(40)
    ]
    _same(headers, tmp_path)


def test_record_types_and_sequences(tmp_path: Path) -> None:
    modifier, contains = Dataset(), Dataset()
    modifier.RelationshipType = "HAS CONCEPT MOD"
    modifier.ConceptNameCodeSequence = [_code("121049")]
    contains.RelationshipType = "CONTAINS"
    sr = _image(
        1,
        SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11",
        Modality="SR",
        CompletionFlag="COMPLETE",
        VerificationFlag="VERIFIED",
        ContentDate="20260102",
        ContentTime="101500",
        ConceptNameCodeSequence=[_code("18748-4")],
        ContentSequence=[modifier, contains],
    )
    observer = Dataset()
    observer.VerificationDateTime = "20260103101500"
    sr.VerifyingObserverSequence = [observer]
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = "1.2.3.1"
    pr = _image(
        2,
        SOPClassUID="1.2.840.10008.5.1.4.1.1.11.1",
        Modality="PR",
        PresentationCreationDate="20260102",
        PresentationCreationTime="101500",
        ContentLabel="MY-LABEL",
        ContentDescription="grey",
        ReferencedSeriesSequence=[ref_series],
    )
    ko = _image(
        3,
        SOPClassUID="1.2.840.10008.5.1.4.1.1.88.59",
        Modality="KO",
        ContentDate="20260102",
        ContentTime="101500",
        ConceptNameCodeSequence=[_code("113000")],
    )
    dose = _image(
        4, SOPClassUID="1.2.840.10008.5.1.4.1.1.481.2", Modality="RTDOSE", DoseSummationType="PLAN"
    )
    pdf = _image(
        5,
        SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1",
        Modality="DOC",
        EncapsulatedDocument=b"%PDF-1.4\n%%EOF\n",
        MIMETypeOfEncapsulatedDocument="application/pdf",
        DocumentTitle="Report",
        ContentDate="20260102",
        ContentTime="101500",
        ConceptNameCodeSequence=[_code("18748-4")],
    )
    multiframe = _image(6, NumberOfFrames=10, Rows=64, Columns=64, ImageType=["ORIGINAL"])
    _same([multiframe, sr, pr, ko, dose, pdf, _image(7)], tmp_path)


def test_specific_character_set(tmp_path: Path) -> None:
    headers = [
        _image(1, SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jörg"),
        _image(2, SpecificCharacterSet="ISO_IR 192", PatientID="P2", PatientName="Ωmega^李"),
        _image(3, PatientID="P3", PatientName="Müller^Jörg", StudyDescription="x" * 70),
    ]
    _same(headers, tmp_path)


def test_pydicom_test_files(tmp_path: Path) -> None:
    """Every test file shipped with pydicom that FileSet can index, in one File-set."""
    headers, seen = [], set()
    with _fileset() as fs:
        for path in sorted(TEST_FILES.rglob("*.dcm")):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = dcmread(path, stop_before_pixels=True)
                    if str(ds.SOPInstanceUID) in seen:
                        continue
                    hdr, _ = header_for_record(ds)
                    fs.add(hdr)
            except Exception:
                continue
            seen.add(str(ds.SOPInstanceUID))
            headers.append(ds)
    assert len(headers) > 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _same(headers, tmp_path)


def test_a_record_pydicom_cannot_make_is_refused_with_its_words(tmp_path: Path) -> None:
    ds = _image(1)
    del ds.PatientID
    records, _ = instance_records(ds)
    assert records.records == ()
    assert "Unable to use the default 'PATIENT' record creator" in records.error
    with pytest.raises(StudyError, match="cannot be made"):
        DicomdirWriter(fileset_id=FILESET_ID).add(records)


def test_records_are_compact() -> None:
    """What crosses from a worker is the records' values, not the header."""
    _, ct = next(sample_study(ct_slices=1, ct_size=16, mr_slices=0))
    records, _ = instance_records(ct)
    assert len(pickle.dumps(records)) < 2500
    assert all(isinstance(r.item, bytes) for r in records.records)


def _fresh_items(ds: Dataset) -> list[bytes]:
    """Each record of ``ds`` made and encoded now, none taken from the kept ones."""
    dicomdir._UPPER_RECORDS.clear()
    records, _ = instance_records(ds)
    return [spec.item for spec in records.records]


@pytest.mark.parametrize(
    "values",
    [
        {"SeriesNumber": "01"},  # IS as read: written "01", equal to 1 as a number
        {"SeriesNumber": "1 "},
        {"PatientName": "DOE^JANE^^"},
        {"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Müller^Jörg"},
        {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Müller^Jörg"},
        {"StudyDescription": "x" * 70},  # conformed in the record only
        {"AccessionNumber": ["A1", "A2"]},
        {"StudyTime": "10:15:00"},
        {"Modality": "MR"},
    ],
)
def test_upper_records_are_made_by_content(values: dict[str, object]) -> None:
    """The PATIENT, STUDY and SERIES records are made and encoded once per content: an image
    whose records differ in any written byte (a number as it was read, a name's encoding)
    gets its own, and every image gets exactly the items making its records alone would."""
    plain, odd = _image(1), _image(2, **values)
    plain_items, odd_items = _fresh_items(plain), _fresh_items(odd)
    dicomdir._UPPER_RECORDS.clear()
    for ds, expected in ((plain, plain_items), (odd, odd_items), (plain, plain_items)):
        records, _ = instance_records(ds)
        assert [spec.item for spec in records.records] == expected
    # one entry per distinct content (equal bytes from unequal values may have two)
    differing = sum(a != b for a, b in zip(plain_items[:3], odd_items[:3], strict=True))
    assert 3 + differing <= len(dicomdir._UPPER_RECORDS) <= 6


def _four_level_headers() -> Iterator[Dataset]:
    """Header copies of every pydicom test file that gets PATIENT/STUDY/SERIES records."""
    for path in sorted(TEST_FILES.rglob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                hdr, _ = header_for_record(dcmread(path, stop_before_pixels=True))
                if "PatientID" in hdr and dicomdir._single_level_record_type(hdr) == "PATIENT":
                    yield hdr
            except Exception:
                continue


@pytest.mark.parametrize("record_type", ["PATIENT", "STUDY", "SERIES"])
def test_upper_records_are_made_from_their_inputs_alone(record_type: str) -> None:
    """pydicom makes the records above the leaf from the elements _UPPER_INPUTS names and no
    others (what keeping them by those elements relies on), on every pydicom test file."""
    made = 0
    for hdr in _four_level_headers():
        alone = Dataset()
        for tag in dicomdir._UPPER_INPUTS[record_type]:
            if tag in hdr:
                alone.add(hdr[tag])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                full, _ = dicomdir._record_here(record_type, hdr)
            except ValueError:
                with pytest.raises(ValueError):
                    dicomdir._record_here(record_type, alone)
                continue
            only, _ = dicomdir._record_here(record_type, alone)
            assert dicomdir._encode_item(record_type, full, None) == dicomdir._encode_item(
                record_type, only, None
            )
        made += 1
    assert made > 20


def test_an_upper_record_pydicom_cannot_make_is_refused_every_time() -> None:
    ds = _image(1)
    del ds.Modality  # no placeholder for it (INVENTED_DEFAULTS)
    dicomdir._UPPER_RECORDS.clear()
    for _ in range(2):
        records, _ = instance_records(ds)
        assert "Unable to use the default 'SERIES' record creator" in records.error


def test_upper_records_keep_their_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record above the leaf is made and encoded once; the warnings raised making it are
    the image's, for every image it is used for, and those raised encoding it go with it."""
    make, encode = dicomdir._pydicom_record, dicomdir._encode_item
    calls: list[str] = []

    def noisy_make(record_type: str, hdr: Dataset) -> Dataset:
        warnings.warn(f"odd {record_type} key", UserWarning, stacklevel=1)
        return make(record_type, hdr)

    def noisy_encode(
        record_type: str, record: Dataset, file_id: list[str] | None
    ) -> tuple[bytes, int]:
        calls.append(record_type)
        warnings.warn(f"odd {record_type} value", UserWarning, stacklevel=1)
        return encode(record_type, record, file_id)

    monkeypatch.setattr(dicomdir, "_pydicom_record", noisy_make)
    monkeypatch.setattr(dicomdir, "_encode_item", noisy_encode)
    dicomdir._UPPER_RECORDS.clear()
    image_notes = []
    drafts = []
    for n in (1, 2):
        with captured_warnings() as notes:
            draft, _ = dicomdir.draft_records(_image(n))
        image_notes.append(notes)
        drafts.append(dicomdir.encode_records(draft))
    assert calls == ["PATIENT", "STUDY", "SERIES", "IMAGE", "IMAGE"]
    made = [f"odd {t} key" for t in ("PATIENT", "STUDY", "SERIES", "IMAGE")]
    assert image_notes == [made, made]
    for records in drafts:
        assert [s.notes for s in records.records] == [(f"odd {t} value",) for t in calls[:4]]


def test_upper_records_stay_bounded() -> None:
    dicomdir._UPPER_RECORDS.clear()
    for n in range(dicomdir._UPPER_RECORDS_MAX + 10):
        instance_records(_image(n, PatientID=f"P{n}"))
    assert len(dicomdir._UPPER_RECORDS) <= dicomdir._UPPER_RECORDS_MAX
