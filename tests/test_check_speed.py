"""The check's faster paths give what the paths they replace give (issue 13).

Each shortcut is compared with the reading it spares: the file meta read once instead of
twice, an ISO extent read with one ``pread``, the medium's rebuild started before the images
and waited for after them, and the allocator set in worker processes only.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from discmaker.check import verify
from discmaker.crypto.trust import TrustStore
from discmaker.disc.compare import RebuildComparison, compare_with_rebuild, signed_volume
from discmaker.disc.source import ExtentSource, IsoSource, open_source
from discmaker.errors import DiscError
from discmaker.format import manifest as manifest_mod
from discmaker.format.reading import check_structure, read_dicom, structure_problem
from tests.conftest import Centre

IMAGE = "PT000000/ST000000/SE000000/IM000001"


def _image_bytes(disc_iso: Path) -> bytes:
    with open_source(disc_iso) as src:
        return src.read_bytes(IMAGE, limit=1 << 30)


def test_read_dicom_without_a_second_meta_read_is_the_same_dataset(disc_iso: Path) -> None:
    data = _image_bytes(disc_iso)
    structure = check_structure(data, max_inflated=1 << 20, what="the file")
    assert structure.problem is None and structure.deflated is False
    assert structure_problem(data, max_inflated=1 << 20, what="the file") is None
    spared = read_dicom(data, deflated=structure.deflated)
    assert spared == read_dicom(data)
    assert spared.file_meta == read_dicom(data).file_meta
    assert spared.preamble == read_dicom(data).preamble


def test_a_deflated_file_is_told_and_read_inflated(disc_iso: Path) -> None:
    ds = dcmread(io.BytesIO(_image_bytes(disc_iso)))
    del ds.PixelData  # deflate is for small objects; the header is enough here
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    structure = check_structure(data, max_inflated=1 << 20, what="the file")
    assert structure.problem is None and structure.deflated is True
    read = read_dicom(data, max_inflated=1 << 20, deflated=True)
    assert read.PatientID == ds.PatientID
    assert read == read_dicom(data, max_inflated=1 << 20)


def test_a_file_without_the_dicm_prefix_fails_alike(disc_iso: Path) -> None:
    data = bytearray(_image_bytes(disc_iso))
    data[128:132] = b"XXXX"
    structure = check_structure(bytes(data), max_inflated=1 << 20, what="the file")
    with pytest.raises(Exception) as plain:
        read_dicom(bytes(data))
    if structure.problem is None:  # the walk may accept it; the reading must fail as before
        with pytest.raises(type(plain.value), match=str(plain.value)):
            read_dicom(bytes(data), deflated=structure.deflated)


def test_an_iso_file_read_whole_is_what_its_stream_reads(disc_iso: Path) -> None:
    with IsoSource(disc_iso, kind="ISO image") as src:
        extents = src.extents()
        for entry in src.files():
            with src.open(entry.path) as fp:
                streamed = fp.read()
            assert src.read_bytes(entry.path, limit=1 << 30) == streamed
    with ExtentSource(extents) as worker:
        for entry in worker.files():
            with worker.open(entry.path) as fp:
                assert worker.read_bytes(entry.path, limit=1 << 30) == fp.read()


def test_an_iso_cut_inside_a_file_is_refused_as_the_stream_refuses_it(
    disc_iso: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "cut.iso"
    shutil.copyfile(disc_iso, copy)
    with IsoSource(copy, kind="ISO image") as src:
        extents = src.extents()
    offset, size = next((o, s) for p, s, _, o in extents.files if p == IMAGE)
    with ExtentSource(extents) as worker:
        os.truncate(copy, offset + size // 2)  # the image shrinks after it was listed
        with pytest.raises(DiscError) as streamed, worker.open(IMAGE) as fp:
            fp.read()
        with pytest.raises(DiscError) as whole:
            worker.read_bytes(IMAGE, limit=1 << 30)
    assert str(whole.value) == str(streamed.value)
    assert "truncated: the image ends inside it" in str(whole.value)


def _signed_files(disc_iso: Path) -> tuple[list[tuple[str, int]], manifest_mod.IsoInfo]:
    with open_source(disc_iso) as src:
        signed = manifest_mod.parse(src.read_bytes(manifest_mod.MANIFEST_PATH, limit=1 << 24))
        files = [(e.path, e.size) for e in src.files()]
    assert signed.iso is not None
    return files, signed.iso


def test_a_comparison_started_early_finds_what_the_blocking_one_finds(
    disc_iso: Path, tmp_path: Path
) -> None:
    files, iso = _signed_files(disc_iso)
    altered = tmp_path / "altered.iso"
    shutil.copyfile(disc_iso, altered)
    with open(altered, "ab") as fp:
        fp.write(b"\x01" * 4096)  # data after the volume: a difference
    for medium in (disc_iso, altered):
        with RebuildComparison(medium, files, signed_volume(iso)) as started:
            early = started.differences()
        assert early == compare_with_rebuild(medium, files, signed_volume(iso))
    assert early  # the altered copy differs


def test_a_comparison_not_waited_for_is_stopped(disc_iso: Path) -> None:
    files, iso = _signed_files(disc_iso)
    comparison = RebuildComparison(disc_iso, files, signed_volume(iso))
    child = comparison._child
    comparison.close()
    comparison.close()  # idempotent
    assert not child.is_alive()


def test_a_name_discmaker_never_writes_is_refused_when_started(disc_iso: Path) -> None:
    files, iso = _signed_files(disc_iso)
    with pytest.raises(DiscError, match="not a name discmaker writes"):
        RebuildComparison(disc_iso, [*files, ("bad name.txt", 1)], signed_volume(iso))


def test_a_check_in_workers_gives_the_report_of_a_check_in_this_thread(
    disc_iso: Path, centre: Centre
) -> None:
    trust = TrustStore.from_paths([centre.cert_path])
    one = verify.check_disc(disc_iso, trust=trust, workers=1)
    two = verify.check_disc(disc_iso, trust=trust, workers=2)
    assert one.to_json() == two.to_json()
    assert one.ok


@pytest.mark.parametrize(
    "raw",
    [
        *(b"5", b"5 ", b" 5", b"0005", b"123456789", b"  12  ", b"0", b"1234567890"),
        *(b"+5", b"-3", b"000000000001", b"12345678901234", b"1.0", b"5\\6", b"", b" "),
        *(b"5\x00", b"12a"),
    ],
)
def test_a_dicomdir_number_reads_as_pydicom_reads_it(raw: bytes) -> None:
    from pydicom.dataelem import RawDataElement, convert_raw_data_element
    from pydicom.tag import BaseTag

    from discmaker.diagnostics import captured_warnings
    from discmaker.format.dicomdir import _Decoder
    from discmaker.format.identity import element_text
    from discmaker.format.reading import RawElement

    element = RawElement(0x00200013, "IS", 0, len(raw), len(raw), False)
    with captured_warnings() as ours:
        fast = _Decoder(raw, little_endian=True).text(element, "iso8859")
    pydicom_element = RawDataElement(BaseTag(0x00200013), "IS", len(raw), raw, 0, False, True)
    with captured_warnings() as theirs:
        try:
            expected = element_text(convert_raw_data_element(pydicom_element).value)
        except Exception as exc:  # pydicom refuses it: so must the decoder
            with pytest.raises(type(exc)):
                _Decoder(raw, little_endian=True).text(element, "iso8859")
            return
    assert fast == expected
    assert ours == theirs
