"""The identity read from raw bytes equals the identity read through pydicom's conversion."""

from __future__ import annotations

import io
import struct
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from discmaker.format.identity import IDENTITY_KEYWORDS, identity_attributes, text_of
from discmaker.format.sealed import header_block
from discmaker.sample import ct_slice


def _converted(ds: Dataset) -> Dataset:
    for elem in ds:
        _ = elem.value
    return ds


def test_raw_and_converted_reading_agree_on_every_real_file() -> None:
    """Implicit and explicit VR, big endian, UN, non-ASCII names, odd padding: whichever way an
    element is read (from its bytes where that is exact, else converted by pydicom), the
    identity and the sealed header block are the same."""
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
            assert header_block(fresh) == header_block(converted), path
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
    """The fast path is taken: plain ASCII identity elements stay raw (pydicom converts an
    element once, in place, when its value is first used; person names always go through
    pydicom's conversion)."""
    read = dcmread(io.BytesIO(_file(ct_slice(0, rows=32, cols=32))))
    attrs = identity_attributes(read)
    assert list(attrs) == list(IDENTITY_KEYWORDS)
    assert attrs["PatientName"] == "DEMO^SAMPLE^PATIENT" and attrs["NumberOfFrames"] == "1"
    assert isinstance(read.get_item(0x00100020), RawDataElement)  # Patient ID (LO)
    assert isinstance(read.get_item(0x00280010), RawDataElement)  # Rows (US)


# -- crafted values: the raw path never disagrees with pydicom's conversion ------------------

_SYNTAXES = {
    "explicit-le": ("1.2.840.10008.1.2.1", False, True),
    "implicit-le": ("1.2.840.10008.1.2", True, True),
    "explicit-be": ("1.2.840.10008.1.2.2", False, False),
}
_LONG_VRS = {"OB", "OD", "OF", "OL", "OW", "OV", "SQ", "UC", "UR", "UT", "UN"}


def _element(tag: int, vr: str, value: bytes, *, implicit: bool, little: bool) -> bytes:
    order = "<" if little else ">"
    head = struct.pack(order + "HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack(order + "L", len(value)) + value
    if vr in _LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack(order + "L", len(value)) + value
    return head + vr.encode() + struct.pack(order + "H", len(value)) + value


def _crafted(syntax: str, elements: list[tuple[int, str, bytes]], charset: bytes | None) -> bytes:
    """A Part 10 file written byte by byte (pydicom would refuse to write some of these)."""
    uid, implicit, little = _SYNTAXES[syntax]
    ts = uid.encode() + b"\0" * (len(uid) % 2)
    body = _element(0x00020010, "UI", ts, implicit=False, little=True)
    meta = _element(0x00020000, "UL", struct.pack("<L", len(body)), implicit=False, little=True)
    items = list(elements) + ([(0x00080005, "CS", charset)] if charset is not None else [])
    data = b"".join(
        _element(
            tag,
            vr,
            value if little or vr not in _NUMBERS else _swap(vr, value),
            implicit=implicit,
            little=little,
        )
        for tag, vr, value in sorted(items)
    )
    return b"\0" * 128 + b"DICM" + meta + body + data


_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}


def _swap(vr: str, value: bytes) -> bytes:
    fmt = _NUMBERS[vr]
    n = len(value) // struct.calcsize("<" + fmt)
    return struct.pack(f">{n}{fmt}", *struct.unpack(f"<{n}{fmt}", value))


# (keyword, tag, declared VR, bytes, Specific Character Set): each once disagreed
_CRAFTED = [
    ("StudyInstanceUID", 0x0020000D, "UI", b"1.2.3\t", None),
    ("StudyInstanceUID", 0x0020000D, "UI", b"\x0c1.2.3\0", None),
    ("InstanceNumber", 0x00200013, "IS", b"\t5", None),
    ("InstanceNumber", 0x00200013, "IS", b"1.50", None),
    ("InstanceNumber", 0x00200013, "IS", b".5", None),
    ("SeriesNumber", 0x00200011, "IS", b"9007199254740993", None),
    ("PatientName", 0x00100010, "PN", b"DOE^JOHN==", None),
    ("PatientName", 0x00100010, "PN", b"= ", None),
    ("PatientID", 0x00100020, "UI", b"ID1\x0b", None),
    ("PatientID", 0x00100020, "AE", b"\tID1", None),
    ("PatientID", 0x00100020, "DS", b"12\r", None),
    ("Rows", 0x00280010, "UL", struct.pack("<2L", 512, 512), None),
    ("Rows", 0x00280010, "SL", struct.pack("<2l", 512, -512), None),
    ("RedPaletteColorLookupTableDescriptor", 0x00281101, "SS", struct.pack("<3h", -1, 0, 16), None),
    (
        "RedPaletteColorLookupTableDescriptor",
        0x00281101,
        "FL",
        struct.pack("<2f", -1.0, 16.0),
        None,
    ),
    ("RescaleSlope", 0x00281053, "DS", b"\t2 ", None),
    ("AccessionNumber", 0x00080050, "SH", b"A1\x7f", b"ISO_IR 100"),
]


@pytest.mark.parametrize("syntax", list(_SYNTAXES))
@pytest.mark.parametrize(("keyword", "tag", "vr", "value", "charset"), _CRAFTED)
def test_crafted_values_read_the_same_raw_and_converted(
    syntax: str, keyword: str, tag: int, vr: str, value: bytes, charset: bytes | None
) -> None:
    """Found by an attacker's review: control characters at value ends, IS values pydicom
    turns into floats, empty trailing name groups, UL / SL of 8 bytes (which crashed the raw
    path), LUT descriptors pydicom fixes. Raw and converted reading give the same identity
    and the same sealed header block (in implicit VR the dictionary's VR applies)."""
    data = _crafted(syntax, [(tag, vr, value)], charset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh, converted = dcmread(io.BytesIO(data)), _converted(dcmread(io.BytesIO(data)))
        if keyword in IDENTITY_KEYWORDS:
            assert text_of(fresh, keyword) == text_of(converted, keyword)
            assert identity_attributes(fresh) == identity_attributes(converted)
        assert header_block(fresh) == header_block(converted)


_BYTES = st.lists(
    st.sampled_from(
        [
            b" ",
            b"\0",
            b"\\",
            b"\t",
            b"\r",
            b"\n",
            b"\x7f",
            b"=",
            b"^",
            b".",
            b"+",
            b"-",
            b"e",
            b"0",
            b"1",
            b"9",
            b"A",
            b"z",
            b"\xc9",
            b"\x1b$B",
        ]
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    vr=st.sampled_from(
        [
            "AE",
            "AS",
            "CS",
            "DA",
            "DS",
            "DT",
            "IS",
            "LO",
            "PN",
            "SH",
            "TM",
            "UC",
            "UI",
            "ST",
            "LT",
            "UT",
            "US",
            "SS",
            "UL",
            "SL",
            "FL",
            "FD",
            "OB",
        ]
    ),
    value=_BYTES,
    syntax=st.sampled_from(["explicit-le", "explicit-be"]),
)
def test_any_value_reads_the_same_raw_and_converted(vr: str, value: bytes, syntax: str) -> None:
    """Patient ID declared with any VR and holding padding, separators, control characters,
    non-ASCII bytes or an escape: raw and converted reading agree (or both fail)."""
    if vr in _NUMBERS:
        value = value[: len(value) - len(value) % struct.calcsize("<" + _NUMBERS[vr])]
    data = _crafted(syntax, [(0x00100020, vr, value + b" " * (len(value) % 2))], None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = []
        for ds in (dcmread(io.BytesIO(data)), _converted(dcmread(io.BytesIO(data)))):
            try:
                results.append((text_of(ds, "PatientID"), header_block(ds)))
            except Exception as exc:  # pydicom's own failure: the same either way
                results.append((type(exc).__name__, b""))
    assert results[0] == results[1]
