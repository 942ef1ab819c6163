"""The tamper suite: every published and obvious attack on a disc, each with its verdict."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet

from discmaker.check.restore import restore_disc
from discmaker.check.verify import check_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.format import canonical
from discmaker.format.manifest import MANIFEST_PATH, SIGNATURE_PATH, SIGNER_PATH, parse
from discmaker.models import CheckReport, ImageStatus, Verdict
from discmaker.ui.cli import main
from tests.conftest import Centre, author_disc


def _both(captured: pytest.CaptureResult[str]) -> str:
    """Results (stdout) and messages (stderr) together, as a terminal shows them."""
    return captured.out + captured.err


def _trust(centre: Centre) -> TrustStore:
    return TrustStore.from_paths([centre.cert_path])


def _check(disc: Path, centre: Centre) -> CheckReport:
    return check_disc(disc, trust=_trust(centre), workers=1)


def _manifest(disc: Path):  # type: ignore[no-untyped-def]
    return parse((disc / MANIFEST_PATH).read_bytes())


def _watermarked(disc: Path) -> str:
    return next(i.file_id for i in _manifest(disc).images if i.watermark == "embedded")


def _verdict(report: CheckReport, path: str):  # type: ignore[no-untyped-def]
    return next(v for v in report.images if v.path == path)


def _edit(path: Path, **changes: str) -> None:
    """What a tag editor does: change header elements and save."""
    ds = dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


# -- clean discs ----------------------------------------------------------------------------


def test_clean_disc_verifies(disc_folder: Path, centre: Centre) -> None:
    report = _check(disc_folder, centre)
    assert report.findings == ()
    assert report.verdict is Verdict.VERIFIED
    assert report.exit_code == 0
    statuses = {v.status for v in report.images}
    assert statuses <= {ImageStatus.OK, ImageStatus.MANIFEST_ONLY}
    assert any(v.status is ImageStatus.OK for v in report.images)
    assert len(report.images) == len(_manifest(disc_folder).images) == 10


def test_clean_iso_verifies(disc_iso: Path, centre: Centre) -> None:
    report = _check(disc_iso, centre)
    assert report.findings == ()
    assert report.exit_code == 0


def test_untrusted_signer_is_not_verifiable(disc_folder: Path, other_centre: Centre) -> None:
    report = check_disc(disc_folder, trust=_trust(other_centre), workers=1)
    assert report.verdict is Verdict.NOT_VERIFIABLE
    assert report.exit_code == 2
    assert report.signer is not None and not report.signer.trusted
    assert any("not in your trust store" in n for n in report.notes)


def test_empty_trust_store_never_verifies(disc_folder: Path, tmp_path: Path) -> None:
    report = check_disc(disc_folder, trust=TrustStore(tmp_path / "empty"), workers=1)
    assert report.exit_code == 2


# -- header attacks (the published one) ------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("PatientName", "FORGED^NAME"), ("PatientID", "X999"), ("StudyDate", "19991231")],
)
def test_header_edit_in_one_file(
    disc_copy: Callable[[], Path], centre: Centre, keyword: str, value: str
) -> None:
    disc = disc_copy()
    target = _watermarked(disc)
    _edit(disc / target, **{keyword: value})
    report = _check(disc, centre)
    assert report.exit_code == 1
    v = _verdict(report, target)
    assert v.status is ImageStatus.TAMPERED
    assert keyword in v.attributes
    others = [x for x in report.images if x.path != target]
    assert all(x.status is not ImageStatus.TAMPERED for x in others)


def test_header_edit_in_unwatermarked_file_is_caught_by_manifest(
    centre: Centre, tmp_path: Path
) -> None:
    from discmaker.sample import mr_slice

    study = tmp_path / "study"
    study.mkdir()
    mr_slice(0, rows=8, cols=8).save_as(study / "tiny.dcm", enforce_file_format=True)
    mr_slice(1).save_as(study / "normal.dcm", enforce_file_format=True)
    disc = tmp_path / "disc"
    author_disc(centre, [study], disc, format="folder", label="TINY")
    target = next(i.file_id for i in _manifest(disc).images if i.watermark != "embedded")
    assert _verdict(_check(disc, centre), target).status is ImageStatus.MANIFEST_ONLY
    _edit(disc / target, PatientName="FORGED^NAME")
    v = _verdict(_check(disc, centre), target)
    assert v.status is ImageStatus.TAMPERED
    assert "PatientName" in v.attributes


def test_only_dicomdir_record_edited(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    ds = dcmread(disc / "DICOMDIR")
    patient = next(r for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT")
    patient.PatientName = "FORGED^NAME"
    ds.save_as(disc / "DICOMDIR")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.path == "DICOMDIR" and f.kind == "altered" for f in report.findings)
    assert any("PatientName" in v.attributes for v in report.images)


# -- pixel attacks ---------------------------------------------------------------------------


def _flip_pixel(path: Path, row: int, col: int) -> None:
    ds = dcmread(path)
    data = bytearray(ds.PixelData)
    offset = (row * int(ds.Columns) + col) * (int(ds.BitsAllocated) // 8)
    data[offset] ^= 1
    ds.PixelData = bytes(data)
    ds.save_as(path)


def test_one_pixel_changed_by_one_is_located(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    target = _watermarked(disc)
    _flip_pixel(disc / target, 100, 120)
    report = _check(disc, centre)
    assert report.exit_code == 1
    v = _verdict(report, target)
    assert v.status is ImageStatus.TAMPERED
    assert v.regions, v.reasons
    assert any(r.row0 <= 100 < r.row1 and r.col0 <= 120 < r.col1 for r in v.regions)
    assert all(r.frame == 0 for r in v.regions)


def test_two_images_swapped(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    a, b = (i.file_id for i in _manifest(disc).images[:2])
    tmp = disc / "swap.tmp"
    (disc / a).rename(tmp)
    (disc / b).rename(disc / a)
    tmp.rename(disc / b)
    report = _check(disc, centre)
    assert report.exit_code == 1
    for path in (a, b):
        v = _verdict(report, path)
        assert v.status is ImageStatus.TAMPERED
        assert "SOPInstanceUID" in v.attributes


def test_image_replaced_from_another_disc_of_same_centre(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path, patient_b: object
) -> None:
    from discmaker.sample import write_sample_study

    other_study = tmp_path / "other-study"
    write_sample_study(other_study, ct_slices=0, mr_slices=2, seed="another", patient=patient_b)
    other = tmp_path / "other-disc"
    author_disc(centre, [other_study], other, format="folder", label="OTHER")
    disc = disc_copy()
    target = _watermarked(disc)
    donor = _watermarked(other)
    shutil.copyfile(other / donor, disc / target)
    v = _verdict(_check(disc, centre), target)
    assert v.status is ImageStatus.TAMPERED
    assert {"PatientID", "SOPInstanceUID"} <= set(v.attributes)


# -- file-level attacks ----------------------------------------------------------------------


def test_file_deleted(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    target = _manifest(disc).images[3].file_id
    (disc / target).unlink()
    report = _check(disc, centre)
    assert report.exit_code == 1
    v = _verdict(report, target)
    assert v.status is ImageStatus.TAMPERED
    assert "missing" in v.reasons[0]


def test_file_added(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    (disc / "EXTRA.TXT").write_text("not signed")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.kind == "extra" and f.path == "EXTRA.TXT" for f in report.findings)


def test_file_truncated(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    target = _manifest(disc).images[0].file_id
    data = (disc / target).read_bytes()
    (disc / target).write_bytes(data[: len(data) // 2])
    v = _verdict(_check(disc, centre), target)
    assert v.status is ImageStatus.TAMPERED


def test_readme_edited(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    (disc / "README.TXT").write_text("Trust me.\r\n")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.path == "README.TXT" and f.kind == "altered" for f in report.findings)
    assert dict(report.files)["README.TXT"] == "altered"


def test_manifest_replaced_and_resigned_with_another_key(
    disc_copy: Callable[[], Path], centre: Centre, other_centre: Centre
) -> None:
    disc = disc_copy()
    target = _watermarked(disc)
    _edit(disc / target, PatientName="FORGED^NAME")
    # The forger rebuilds the manifest to match the edited file and signs it with their key.
    doc = canonical.loads((disc / MANIFEST_PATH).read_bytes(), max_bytes=1 << 26)
    import hashlib

    for f in doc["files"]:
        if f["path"] == target:
            data = (disc / target).read_bytes()
            f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
    doc["patients"][0]["identity"]["PatientName"] = "FORGED^NAME"
    body = canonical.dumps(doc)
    (disc / MANIFEST_PATH).write_bytes(body)
    (disc / SIGNATURE_PATH).write_bytes(signing.sign(other_centre.identity.private_key, body))
    (disc / SIGNER_PATH).write_bytes(other_centre.cert_path.read_bytes())
    report = _check(disc, centre)
    assert report.signature_valid
    assert report.signer is not None and not report.signer.trusted
    assert report.exit_code == 1
    assert any("manifest was replaced" in f.message for f in report.findings)


def test_manifest_signature_broken(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    body = bytearray((disc / MANIFEST_PATH).read_bytes())
    body[-3] ^= 1
    (disc / MANIFEST_PATH).write_bytes(bytes(body))
    report = _check(disc, centre)
    assert not report.signature_valid
    assert report.exit_code in (1, 3)


def test_watermark_stripped_by_restore_and_resave(
    disc_copy: Callable[[], Path], disc_folder: Path, centre: Centre, tmp_path: Path
) -> None:
    restored = restore_disc(disc_folder, trust=_trust(centre), out=tmp_path / "restored")
    disc = disc_copy()
    target = _watermarked(disc)
    shutil.copyfile(tmp_path / "restored" / target, disc / target)
    assert restored.exit_code == 0
    v = _verdict(_check(disc, centre), target)
    assert v.status is ImageStatus.TAMPERED
    assert any("watermark is missing" in r for r in v.reasons)


# -- restore ---------------------------------------------------------------------------------


def test_restore_gives_original_pixels_bit_for_bit(
    disc_folder: Path, study_dir: Path, centre: Centre, tmp_path: Path
) -> None:
    out = tmp_path / "restored"
    result = restore_disc(disc_folder, trust=_trust(centre), out=out)
    assert result.exit_code == 0
    assert len(result.restored) == 10 and not result.refused
    originals = {dcmread(p).SOPInstanceUID: dcmread(p) for p in study_dir.rglob("*.dcm")}
    originals |= {dcmread(p).SOPInstanceUID: dcmread(p) for p in study_dir.rglob("IMG*")}
    for path in result.restored:
        ds = dcmread(path)
        assert ds.PixelData == originals[ds.SOPInstanceUID].PixelData
        assert (0x0009, 0x0010) not in ds


def test_restore_refuses_tampered_unless_asked(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    disc = disc_copy()
    target = _watermarked(disc)
    _flip_pixel(disc / target, 60, 60)
    result = restore_disc(disc, trust=_trust(centre), out=tmp_path / "a")
    assert target in result.refused and result.exit_code == 1
    assert not (tmp_path / "a" / target).exists()
    result = restore_disc(
        disc, trust=_trust(centre), out=tmp_path / "b", tampered_to=tmp_path / "altered"
    )
    assert (tmp_path / "altered" / target).exists()
    assert not (tmp_path / "b" / target).exists()


# -- discs from other vendors -----------------------------------------------------------------


def test_unsigned_disc_gets_structure_checks(
    study_dir: Path, tmp_path: Path, centre: Centre
) -> None:
    fs = FileSet()
    for p in sorted(study_dir.rglob("*")):
        if p.is_file():
            fs.add(p)
    fs.write(tmp_path / "vendor")
    fs._stage["t"].cleanup()  # pydicom only removes its staging folder at collection
    report = _check(tmp_path / "vendor", centre)
    assert not report.signed
    assert report.exit_code == 2
    assert report.findings == ()
    assert all(v.status is ImageStatus.NOT_VERIFIABLE for v in report.images)
    # Now the published attack on the vendor disc: only the header is edited.
    first = next(p for p in (tmp_path / "vendor").rglob("IM*"))
    _edit(first, PatientName="FORGED^NAME")
    report = _check(tmp_path / "vendor", centre)
    assert report.exit_code == 1


# -- the CLI contract ---------------------------------------------------------------------------


def test_cli_check_json(
    disc_folder: Path, centre: Centre, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", str(disc_folder), "--trust", str(centre.cert_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["format_version"] == 1 and doc["verdict"] == "verified"
    assert doc["signer"]["fingerprint"] == signing.fingerprint(centre.identity.certificate)
    assert len(doc["images"]) == 10
    files = {f["path"]: f["status"] for f in doc["files"]}
    assert files["DICOMDIR"] == files["README.TXT"] == files["DISCSIG/SIGNER.PEM"] == "ok"


def test_cli_check_unreadable_input_is_3(tmp_path: Path) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\x00" * 100_000)
    assert main(["check", str(junk), "--trust", str(tmp_path)]) == 3
    assert main(["check", str(tmp_path / "missing")]) == 3


def test_cli_trust_add_list_remove_then_check(
    disc_folder: Path,
    centre: Centre,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DISCMAKER_TRUST_DIR", str(tmp_path / "trust"))
    fingerprint = signing.fingerprint(centre.identity.certificate)
    assert main(["check", str(disc_folder)]) == 2  # nobody trusted yet
    assert main(["trust", "add", str(centre.cert_path), "--yes"]) == 0
    assert fingerprint in _both(capsys.readouterr())
    assert main(["trust", "list"]) == 0
    assert fingerprint in _both(capsys.readouterr())
    assert main(["check", str(disc_folder)]) == 0
    assert main(["trust", "remove", fingerprint.replace(":", "").lower()]) == 0
    assert main(["check", str(disc_folder)]) == 2
    assert main(["trust", "remove", fingerprint]) == 64  # no longer there: usage error


def test_cli_html_report(disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path) -> None:
    disc = disc_copy()
    target = _watermarked(disc)
    _flip_pixel(disc / target, 100, 120)
    report = tmp_path / "report.html"
    code = main(["check", str(disc), "--trust", str(centre.cert_path), "--report", str(report)])
    assert code == 1
    html = report.read_text()
    assert "TAMPERED" in html and target in html
    assert "data:image/jpeg;base64," in html  # the tampered image's thumbnail


def test_cli_shows_fingerprints_and_subjects_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fingerprints contain ':AB:'-like runs (rich emoji codes) and subjects may hold '[x]'."""
    from tests.conftest import make_centre

    monkeypatch.setenv("DISCMAKER_TRUST_DIR", str(tmp_path / "trust"))
    for n in range(8):  # several random keys: some fingerprint will hold an emoji-like code
        centre = make_centre(tmp_path / f"c{n}", f"Clinic [bold]{n}[/bold] :AB:")
        assert main(["trust", "add", str(centre.cert_path), "--yes"]) == 0
        err = _both(capsys.readouterr())
        assert signing.fingerprint(centre.identity.certificate) in err
        assert f"[bold]{n}[/bold] :AB:" in err


def test_check_reads_a_block_device(disc_iso: Path, centre: Centre) -> None:
    """A disc in a drive is a block device: read the ISO 9660 file system directly, no mount."""
    import shutil
    import subprocess

    if shutil.which("losetup") is None or os.geteuid() != 0:
        pytest.skip("needs root and losetup to attach the ISO as a block device")
    attach = subprocess.run(
        ["losetup", "-f", "--show", "-r", str(disc_iso)],
        check=False,
        capture_output=True,
        text=True,
    )
    if attach.returncode != 0:
        pytest.skip(f"no loop device available here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        assert Path(device).is_block_device()
        report = _check(Path(device), centre)
        assert report.exit_code == 0 and len(report.images) == 10
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
