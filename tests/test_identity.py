"""The identity read from raw bytes equals the identity read through pydicom's conversion."""

from __future__ import annotations

import io
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from discmaker.format.identity import IDENTITY_KEYWORDS, identity_attributes
from discmaker.sample import ct_slice


def _converted(ds: Dataset) -> Dataset:
    for elem in ds:
        _ = elem.value
    return ds


def test_raw_and_converted_identity_agree_on_every_real_file() -> None:
    """Implicit and explicit VR, big endian, UN, non-ASCII names, odd padding: whichever way an
    element is read, its identity text is the same."""
    compared = 0
    for path in get_testdata_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fresh = dcmread(path, force=True)
                converted = _converted(dcmread(path, force=True))
            except Exception:  # a file pydicom itself cannot read whole: not this test's
                continue
            assert identity_attributes(fresh) == identity_attributes(converted), path
        compared += 1
    assert compared > 150


def _file(ds: Dataset, syntax: str | None = None) -> bytes:
    out = io.BytesIO()
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(
        out,
        enforce_file_format=True,
        little_endian=syntax != ExplicitVRBigEndian,
        implicit_vr=syntax == ImplicitVRLittleEndian,
    )
    return out.getvalue()


_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\"),
    max_size=16,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.lists(_TEXT, min_size=1, max_size=3),
    pid=_TEXT,
    number=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 65535),
    syntax=st.sampled_from([None, ImplicitVRLittleEndian, ExplicitVRBigEndian]),
)
def test_identity_from_bytes_equals_identity_in_memory(
    name: list[str], pid: str, number: int, rows: int, syntax: str | None
) -> None:
    """What the author reads from its dataset is what a checker reads from the file, raw."""
    ds = ct_slice(0, rows=32, cols=32)
    ds.PatientName = name if len(name) > 1 else name[0]
    ds.PatientID = pid
    ds.InstanceNumber = number
    ds.Rows = rows
    expected = identity_attributes(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read = dcmread(io.BytesIO(_file(ds, syntax)))
        assert identity_attributes(read) == expected
        assert identity_attributes(_converted(read)) == expected


def test_padding_is_removed_the_same_way_from_bytes() -> None:
    """Leading and trailing spaces around each value, as a tag editor may leave them."""
    ds = ct_slice(0, rows=32, cols=32)
    ds.PatientID = "  0042 "
    ds.PatientName = [" DOE^JANE", "DOE^J  "]
    ds.AccessionNumber = " "
    expected = identity_attributes(ds)
    assert expected["PatientID"] == "0042" and expected["PatientName"] == "DOE^JANE\\DOE^J"
    for syntax in (None, ImplicitVRLittleEndian, ExplicitVRBigEndian):
        assert identity_attributes(dcmread(io.BytesIO(_file(ds, syntax)))) == expected


def test_an_identity_element_declared_binary_reads_the_same_both_ways() -> None:
    """A file may declare Patient Name OB (explicit VR): read raw, converted, or from the
    dataset in memory, the identity is the same (the raw path leaves binary to pydicom)."""
    ds = ct_slice(0, rows=32, cols=32)
    ds[0x00100010] = DataElement(0x00100010, "OB", b"DOE^JOHN")
    expected = identity_attributes(ds)
    assert expected["PatientName"] == "DOE^JOHN"
    data = _file(ds)
    assert identity_attributes(dcmread(io.BytesIO(data))) == expected
    assert identity_attributes(_converted(dcmread(io.BytesIO(data)))) == expected


def test_identity_leaves_plain_elements_unconverted() -> None:
    """The fast path is taken: ASCII identity elements stay raw (pydicom converts an element
    once, in place, when its value is first used)."""
    read = dcmread(io.BytesIO(_file(ct_slice(0, rows=32, cols=32))))
    attrs = identity_attributes(read)
    assert list(attrs) == list(IDENTITY_KEYWORDS)
    assert attrs["PatientName"] == "DEMO^SAMPLE^PATIENT" and attrs["NumberOfFrames"] == "1"
    assert isinstance(read.get_item(0x00100010), RawDataElement)
    assert isinstance(read.get_item(0x00280010), RawDataElement)  # Rows (US)
