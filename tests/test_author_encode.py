"""Step 3's encoding of an image: byte for byte what pydicom's ``save_as`` writes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom.data
import pytest
from pydicom.dataset import Dataset

from discmaker.author.normalise import normalise
from discmaker.author.prepare import _encode, _plain
from discmaker.errors import UnusableFileError
from discmaker.sample import sample_study

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _save_as(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _normalised(path: Path) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return normalise(path).dataset
        except UnusableFileError:
            return None


def test_pydicom_test_files_encode_as_save_as_does() -> None:
    """Every pydicom test file normalise takes: the same bytes as ``save_as`` (the plain
    ones by the short way, the others through ``save_as`` itself)."""
    plain = 0
    for path in sorted(TEST_FILES.rglob("*.dcm")):
        ours, theirs = _normalised(path), _normalised(path)
        if ours is None or theirs is None:
            continue
        try:
            expected = _save_as(theirs)
        except Exception as exc:  # save_as refuses it: so must we, with the same error
            with pytest.raises(type(exc)):
                _encode(ours)
            continue
        plain += _plain(ours)
        assert _encode(ours) == expected, path.name
    assert plain > 20


@pytest.mark.parametrize("preamble", [None, b"", b"\x01" * 128])
def test_preamble_as_save_as_writes_it(tmp_path: Path, preamble: bytes | None) -> None:
    _, ct = next(sample_study(ct_slices=1, ct_size=16, mr_slices=0))
    ct.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    ours, theirs = normalise(tmp_path / "ct.dcm").dataset, normalise(tmp_path / "ct.dcm").dataset
    for ds in (ours, theirs):
        ds.preamble = preamble
    assert _plain(ours)
    assert _encode(ours) == _save_as(theirs)


def test_not_plain_goes_through_save_as(tmp_path: Path) -> None:
    """A file meta normalise did not make, or a command element in the dataset: save_as."""
    _, ct = next(sample_study(ct_slices=1, ct_size=16, mr_slices=0))
    ct.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    ds = normalise(tmp_path / "ct.dcm").dataset
    ds.file_meta.SourceApplicationEntityTitle = "PACS"
    assert not _plain(ds)
    copy = normalise(tmp_path / "ct.dcm").dataset
    copy.file_meta.SourceApplicationEntityTitle = "PACS"
    assert _encode(ds) == _save_as(copy)
    ds = normalise(tmp_path / "ct.dcm").dataset
    ds.add_new(0x00000100, "US", 1)
    assert not _plain(ds)
    with pytest.raises(ValueError, match="Command Set"):
        _encode(ds)
