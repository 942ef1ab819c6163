"""The header block the v4 watermark carries: what changes it, what does not."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from discmaker.format.sealed import BLOCK_BYTES, GROUP_NAMES, changed_groups, header_block
from discmaker.sample import ct_slice


def _file_bytes(ds: Dataset, syntax: str | None = None) -> bytes:
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
    return buf.getvalue()


def _read(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


@pytest.fixture
def ct() -> bytes:
    return _file_bytes(ct_slice(1, rows=64, cols=64))


def test_the_block_is_32_bytes_and_deterministic(ct: bytes) -> None:
    block = header_block(_read(ct))
    assert len(block) == BLOCK_BYTES == 32
    assert header_block(_read(ct)) == block


def test_the_block_does_not_depend_on_which_elements_were_read_before(ct: bytes) -> None:
    """Author and checker see datasets in different states of pydicom's lazy conversion."""
    fresh = header_block(_read(ct))
    ds = _read(ct)
    for elem in ds:  # converts every element
        _ = elem.value
    assert header_block(ds) == fresh


def test_a_re_save_in_another_transfer_syntax_keeps_the_block(ct: bytes) -> None:
    implicit = _file_bytes(_read(ct), ImplicitVRLittleEndian)
    assert header_block(_read(implicit)) == header_block(_read(ct))


EDITS: dict[str, tuple[str, Callable[[Dataset], None]]] = {
    "name": ("patient", lambda ds: setattr(ds, "PatientName", "OTHER^NAME")),
    "accession": ("study", lambda ds: setattr(ds, "AccessionNumber", "X1")),
    "modality": ("series", lambda ds: setattr(ds, "Modality", "MR")),
    "bits stored": ("pixels", lambda ds: setattr(ds, "BitsStored", 14)),
    "position": ("geometry", lambda ds: setattr(ds, "ImagePositionPatient", [1, 2, 3])),
    "slope": ("values", lambda ds: setattr(ds, "RescaleSlope", 2)),
    "image type": ("acquisition", lambda ds: setattr(ds, "ImageType", ["DERIVED", "SECONDARY"])),
    "overlay": ("overlays", lambda ds: ds.add_new(0x60000040, "CS", "G")),
    "voi lut": (
        "values",
        lambda ds: setattr(ds, "VOILUTSequence", Sequence([Dataset()])),
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_edit_changes_the_digest_and_only_its_group_tag(ct: bytes, edit: str) -> None:
    group, change = EDITS[edit]
    before = header_block(_read(ct))
    ds = _read(ct)
    change(ds)
    after = header_block(_read(_file_bytes(ds)))
    assert after[:16] != before[:16]
    found = changed_groups(before, after)
    assert found is not None and [g.name for g in found] == [group]


@pytest.mark.parametrize(
    "change",
    [
        lambda ds: ds.private_block(0x0009, "SOMEONE", create=True).add_new(0x01, "LO", "x"),
        lambda ds: setattr(ds.file_meta, "ImplementationVersionName", "OTHER"),
        lambda ds: setattr(ds, "OperatorsName", "SOMEONE"),
    ],
    ids=["private element", "file meta", "unsealed attribute"],
)
def test_what_is_not_sealed_does_not_change_the_block(
    ct: bytes, change: Callable[[Dataset], None]
) -> None:
    before = header_block(_read(ct))
    ds = _read(ct)
    change(ds)
    assert header_block(_read(_file_bytes(ds))) == before
    assert changed_groups(before, before) is None


def test_deeply_nested_sequences_are_bounded(ct: bytes) -> None:
    ds = _read(ct)
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(40):
        outer = Dataset()
        outer.DetectorInformationSequence = Sequence([inner])
        inner = outer
    ds.DetectorInformationSequence = Sequence([inner])
    block = header_block(_read(_file_bytes(ds)))
    assert len(block) == 32


def test_group_names_are_the_documented_eight() -> None:
    assert GROUP_NAMES == (
        "patient",
        "study",
        "series",
        "pixels",
        "geometry",
        "values",
        "acquisition",
        "overlays",
    )


# -- honest re-encodings never change the block (property) ---------------------------------------

_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\"),
    max_size=16,
)
_NAME = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ^ -.'", max_size=20)
_DS = st.decimals(
    min_value=-1e5, max_value=1e5, places=3, allow_nan=False, allow_infinity=False
).map(lambda d: str(d.normalize()) if d != 0 else "0")


@st.composite
def headers(draw: st.DrawFn) -> Dataset:
    ds = ct_slice(0, rows=32, cols=32)
    ds.PatientName = draw(_NAME).strip() or "A"
    ds.PatientID = draw(_TEXT).strip() or "1"
    ds.StudyDescription = draw(_TEXT)
    ds.ImageComments = draw(_TEXT)
    ds.RescaleIntercept = draw(_DS)
    ds.RescaleSlope = draw(_DS)
    ds.WindowCenter = [draw(_DS) for _ in range(draw(st.integers(1, 3)))]
    ds.PixelSpacing = [draw(_DS), draw(_DS)]
    ds.ImagePositionPatient = [draw(_DS) for _ in range(3)]
    ds.InstanceNumber = draw(st.integers(0, 99999))
    ds.AcquisitionNumber = str(draw(st.integers(0, 9999)))
    ds.ImageType = draw(
        st.lists(
            st.sampled_from(["ORIGINAL", "DERIVED", "PRIMARY", "AXIAL"]), min_size=1, max_size=4
        )
    )
    if draw(st.booleans()):
        item = Dataset()
        item.CodeValue = draw(_TEXT).strip() or "X"
        item.CodingSchemeDesignator = "DCM"
        ds.ViewCodeSequence = Sequence([item])
    return ds


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=headers(), implicit=st.booleans(), touch=st.booleans())
def test_the_block_survives_every_honest_re_encoding(
    ds: Dataset, implicit: bool, touch: bool
) -> None:
    """What the author seals (a dataset in memory) equals what a checker reads back: from the
    file, lazily or fully converted, after a re-save in another little-endian syntax."""
    sealed = header_block(ds)
    data = _file_bytes(ds)
    assert header_block(_read(data)) == sealed
    again = _read(data)
    if touch:
        for elem in again:
            _ = elem.value
    resaved = _file_bytes(again, ImplicitVRLittleEndian if implicit else None)
    assert header_block(_read(resaved)) == sealed
