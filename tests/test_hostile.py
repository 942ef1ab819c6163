"""A received disc is hostile input: every malformed part becomes a finding or exit 3.

Never a traceback, never a read outside the source.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker.check.verify import check_disc, tamper_thumbnails, through_pixel_data
from discmaker.crypto.trust import TrustStore
from discmaker.format import canonical
from discmaker.format.manifest import MANIFEST_PATH, SIGNER_PATH
from discmaker.models import ImageStatus
from discmaker.ui.cli import main
from tests.conftest import Centre


def _check(disc: Path, centre: Centre):  # type: ignore[no-untyped-def]
    return check_disc(disc, trust=TrustStore.from_paths([centre.cert_path]), workers=1)


def test_dicomdir_path_traversal_is_a_finding(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    secret = tmp_path / "SECRET"
    secret.write_text("outside the disc")
    disc = disc_copy()
    ds = dcmread(disc / "DICOMDIR")
    leaf = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    with pytest.warns(UserWarning, match="Invalid value for VR CS"):  # the attacker's own edit
        leaf.ReferencedFileID = ["..", "..", "SECRET"]
    ds.save_as(disc / "DICOMDIR")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.kind == "naming" for f in report.findings)


def test_manifest_path_traversal_is_never_read(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    doc = canonical.loads((disc / MANIFEST_PATH).read_bytes(), max_bytes=1 << 26)
    image = doc["patients"][0]["studies"][0]["series"][0]["images"][0]
    image["file"] = "../../../../etc/passwd"
    (disc / MANIFEST_PATH).write_bytes(canonical.dumps(doc))
    report = _check(disc, centre)
    assert report.exit_code == 1  # the signature no longer matches, and the path is refused
    verdict = next(v for v in report.images if v.path == "../../../../etc/passwd")
    assert verdict.status is ImageStatus.TAMPERED


def test_symlink_in_folder_disc_is_reported_not_followed(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    os.symlink("/etc/passwd", disc / "PASSWD")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.path.endswith("PASSWD") for f in report.findings)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b"[1, 2", b'{"format": 1.5}', b"\xff\xfe", b"{" * 10_000],
    ids=["empty", "open-brace", "truncated", "float", "not-utf8", "deep-nesting"],
)
def test_malformed_manifest(disc_copy: Callable[[], Path], centre: Centre, garbage: bytes) -> None:
    disc = disc_copy()
    (disc / MANIFEST_PATH).write_bytes(garbage)
    report = _check(disc, centre)
    assert report.exit_code in (1, 3)
    assert report.findings


def test_malformed_pem(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    (disc / SIGNER_PATH).write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.step == 1 for f in report.findings)


def test_malformed_dicom_file(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    target = next(p for p in disc.rglob("IM*"))
    target.write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(2000))
    report = _check(disc, centre)
    rel = target.relative_to(disc).as_posix()
    assert next(v for v in report.images if v.path == rel).status is ImageStatus.TAMPERED


def test_malformed_dicomdir(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    (disc / "DICOMDIR").write_bytes(os.urandom(5000))
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.path == "DICOMDIR" for f in report.findings)


@pytest.mark.parametrize("size", [0, 2048, 1 << 20])
def test_malformed_iso_is_exit_3(
    tmp_path: Path, size: int, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(os.urandom(size))
    assert main(["check", str(junk), "--trust", str(tmp_path)]) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_truncated_real_iso_is_exit_3(disc_iso: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.iso"
    cut.write_bytes(disc_iso.read_bytes()[: 40 * 2048])
    assert main(["check", str(cut), "--trust", str(tmp_path)]) in (1, 3)


# -- found in review: each was a way past the checker or into a crash -------------------------


def test_joliet_view_pointing_at_edited_bytes_is_caught(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    """Windows and 7-Zip read the Joliet tree; the ISO 9660 tree may still hold signed bytes."""
    import io

    import pycdlib

    forged = tmp_path / "forged.iso"
    iso = pycdlib.PyCdlib()
    iso.open(str(disc_iso))
    target = "/PT000000/ST000000/SE000000/IM000000"
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, joliet_path=target)
    ds = dcmread(io.BytesIO(buf.getvalue()))
    ds.PatientName = "FORGED^NAME"
    out = io.BytesIO()
    ds.save_as(out)
    iso.rm_hard_link(joliet_path=target)
    iso.add_fp(io.BytesIO(out.getvalue()), len(out.getvalue()), joliet_path=target)
    iso.write(str(forged))
    iso.close()
    report = _check(forged, centre)
    assert report.exit_code == 1
    assert any("Joliet" in f.message and f.path == target[1:] for f in report.findings)


def test_dicomdir_links_that_loop_do_not_hang(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    ds = dcmread(disc / "DICOMDIR")
    records = list(ds.DirectoryRecordSequence)
    offsets = [r.seq_item_tell for r in records]
    for n, record in enumerate(records):
        record.OffsetOfTheNextDirectoryRecord = offsets[n + 1] if n + 1 < len(records) else 0
        record.OffsetOfReferencedLowerLevelDirectoryEntity = offsets[0]
    ds.save_as(disc / "DICOMDIR")
    assert _check(disc, centre).exit_code == 1  # and it returns at all


def test_dicomdir_offset_with_two_values_is_a_finding(
    disc_copy: Callable[[], Path], centre: Centre, capsys: pytest.CaptureFixture[str]
) -> None:
    disc = disc_copy()
    ds = dcmread(disc / "DICOMDIR")
    ds.DirectoryRecordSequence[0].OffsetOfReferencedLowerLevelDirectoryEntity = [1, 2]
    ds.save_as(disc / "DICOMDIR")
    assert main(["check", str(disc), "--trust", str(centre.cert_path)]) == 1
    assert "Internal error" not in capsys.readouterr().err


def test_restore_survives_an_image_that_cannot_be_re_encoded(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    target = next(p for p in sorted(disc.rglob("IM*")))
    data = target.read_bytes()
    target.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00", 1))
    out = tmp_path / "restored"
    args = ["restore", str(disc), "--trust", str(centre.cert_path), "--out", str(out)]
    assert main([*args, "--tampered-to", str(tmp_path / "altered"), "--allow-partial"]) == 1
    rel = target.relative_to(disc).as_posix()
    assert not (out / rel).exists()
    assert len(list(out.rglob("IM*"))) == 9


def test_removing_the_signature_folder_does_not_hide_an_edit(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    import shutil

    disc = disc_copy()
    target = next(p for p in sorted(disc.rglob("IM*")))
    ds = dcmread(target)
    ds.PatientName = "FORGED^NAME"
    ds.save_as(target)
    shutil.rmtree(disc / "DISCSIG")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.path == "DISCSIG" and "removed" in f.message for f in report.findings)
    rel = target.relative_to(disc).as_posix()
    assert next(v for v in report.images if v.path == rel).status is ImageStatus.TAMPERED


@pytest.mark.parametrize("listing", ["files", "images"])
def test_a_repeated_manifest_entry_is_refused_even_when_signed_by_the_sender(
    disc_copy: Callable[[], Path], centre: Centre, listing: str
) -> None:
    """A trusted sender's key over a manifest listing one entry twice is still not a disc
    discmaker wrote, and the repeats must not decide how much the checker hashes."""
    import json

    from discmaker.crypto import signing

    disc = disc_copy()
    manifest_path = disc / "DISCSIG" / "MANIFEST.JSN"
    doc = json.loads(manifest_path.read_bytes())
    if listing == "files":
        doc["files"] = doc["files"] + [doc["files"][0]] * 500
    else:
        series = doc["patients"][0]["studies"][0]["series"][0]
        series["images"] = series["images"] + [series["images"][0]] * 500
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    manifest_path.write_bytes(data)
    (disc / "DISCSIG" / "MANIFEST.SIG").write_bytes(signing.sign(centre.identity.private_key, data))
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any("more than once" in f.message for f in report.findings)


def test_an_image_padded_past_its_signed_size_is_judged_on_its_signed_length(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    """Appended bytes (here 32 MiB of zeros, which pydicom would parse as millions of empty
    elements) make the image tampered without being parsed."""
    disc = disc_copy()
    image = next(p for p in sorted(disc.rglob("IM*")) if p.is_file())
    signed = image.stat().st_size
    with image.open("ab") as fp:
        fp.truncate(signed + (32 << 20))
    report = _check(disc, centre)
    assert report.exit_code == 1
    rel = image.relative_to(disc).as_posix()
    verdict = next(v for v in report.images if v.path == rel)
    assert verdict.status is ImageStatus.TAMPERED
    assert any("more than signed" in r for r in verdict.reasons)
    assert all(v.status is not ImageStatus.TAMPERED for v in report.images if v.path != rel)
    # The HTML report's picture of it is decoded from the image as signed, padding cut off.
    assert rel in tamper_thumbnails(disc, report)


def test_through_pixel_data_cuts_what_follows_pixel_data_only() -> None:
    from pydicom.data import get_testdata_file

    original = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]
    cut = through_pixel_data(original + bytes(1 << 20))
    assert cut == through_pixel_data(original)
    assert original.startswith(cut) and len(cut) < len(original)  # CT_small has trailing elements
    assert (dcmread(BytesIO(cut)).pixel_array == dcmread(BytesIO(original)).pixel_array).all()
    assert through_pixel_data(b"not dicom" * 3) == b"not dicom" * 3


def test_an_image_whose_signed_size_disagrees_is_tampered_even_when_signed_by_the_sender(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    """The manifest's size of an image is part of what was signed (fuzz finding: a size of
    10**30 re-signed by the trusted key verified, the hash alone being checked)."""
    import json

    from discmaker.crypto import signing

    disc = disc_copy()
    manifest_path = disc / "DISCSIG" / "MANIFEST.JSN"
    doc = json.loads(manifest_path.read_bytes())
    image = doc["patients"][0]["studies"][0]["series"][0]["images"][0]["file"]
    entry = next(f for f in doc["files"] if f["path"] == image)
    entry["size"] = 10**30
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    manifest_path.write_bytes(data)
    (disc / "DISCSIG" / "MANIFEST.SIG").write_bytes(signing.sign(centre.identity.private_key, data))
    report = _check(disc, centre)
    assert report.exit_code == 1
    verdict = next(v for v in report.images if v.path == image)
    assert verdict.status is ImageStatus.TAMPERED
    assert any("were signed" in r for r in verdict.reasons)


@pytest.mark.parametrize("count", [2_147_483_648, 0, -1])
def test_a_set_of_two_billion_discs_is_refused_before_any_work(
    disc_copy: Callable[[], Path], centre: Centre, count: int
) -> None:
    """Fuzz seed 33 case 481: "disc k of 2^31" made the checker list two billion missing discs
    (a hang past 30 s). A disc count or number outside 1..999 is a malformed manifest."""
    import json
    import time

    from discmaker.crypto import signing

    disc = disc_copy()
    manifest_path = disc / "DISCSIG" / "MANIFEST.JSN"
    doc = json.loads(manifest_path.read_bytes())
    doc["disc"]["count"] = count
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    manifest_path.write_bytes(data)
    (disc / "DISCSIG" / "MANIFEST.SIG").write_bytes(signing.sign(centre.identity.private_key, data))
    started = time.monotonic()
    report = _check(disc, centre)
    assert time.monotonic() - started < 30
    assert report.exit_code == 1
    assert any("disc.count" in f.message for f in report.findings), report.findings


def test_an_image_whose_file_meta_pydicom_cannot_read_is_tampered(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    """Fuzz seed 33 case 205: an unknown VR in the file meta raised pydicom's
    NotImplementedError out of the checker's structure walk."""
    disc = disc_copy()
    image = disc / "PT000000/ST000000/SE000000/IM000000"
    data = bytearray(image.read_bytes())
    at = data.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID, explicit VR
    data[at + 4 : at + 6] = b"\x55\xf6"
    image.write_bytes(bytes(data))
    report = _check(disc, centre)
    assert report.exit_code == 1
    bad = next(v for v in report.images if v.path.endswith("SE000000/IM000000"))
    assert "file meta cannot be read" in " ".join(bad.reasons)
