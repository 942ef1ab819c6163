"""Authoring from sloppy inputs: ``--skip-unusable`` and its exit code, the ``sha256sum -c``
list a clinic without discmaker can use, and the label PDF from the command line."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from discmaker import errors
from discmaker.check.verify import check_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.format.manifest import CHECKSUMS_PATH, MANIFEST_PATH, parse
from discmaker.sample import write_sample_study
from discmaker.ui.cli import main
from tests.conftest import PASSPHRASE, Centre


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (CI installs it with apt-get; see .ci/run)")
    return path


@pytest.fixture
def run_author(centre: Centre, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())

    def run(*inputs: Path, out: Path, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
        args = ["author", *map(str, inputs), "--key", str(centre.key_path)]
        args += ["--cert", str(centre.cert_path), "--out", str(out), *extra]
        code = main(args)
        captured = capsys.readouterr()
        return code, captured.out, " ".join(captured.err.split())

    return run


@pytest.fixture
def sloppy_study(tmp_path: Path) -> Path:
    """Three CT slices, an SR without Patient ID and a CT slice whose pixel data is cut."""
    study = tmp_path / "export"
    write_sample_study(study, ct_slices=3, ct_size=64, mr_slices=0)
    slices = sorted(p for p in study.rglob("*") if p.is_file())
    sr = dcmread(get_testdata_file("test-SR.dcm"))
    del sr.PatientID
    sr.save_as(study / "report.dcm")
    cut = dcmread(slices[0])
    cut.SOPInstanceUID = generate_uid()
    cut.file_meta.MediaStorageSOPInstanceUID = cut.SOPInstanceUID
    cut.PixelData = cut.PixelData[: len(cut.PixelData) // 2]
    cut.save_as(study / "cut.dcm")
    return study


def _listing(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_without_the_flag_an_unusable_file_stops_the_disc(
    run_author, sloppy_study: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "disc"
    code, _, err = run_author(sloppy_study, out=out, extra=("--format", "folder"))
    assert code == errors.EX_DATAERR
    assert "report.dcm" in "".join(err.split()) and "PatientID" in err and "--skip-unusable" in err
    assert not out.exists()


def test_skip_unusable_leaves_them_out_names_them_and_exits_2(
    run_author, sloppy_study: Path, tmp_path: Path, centre: Centre
) -> None:  # type: ignore[no-untyped-def]
    before = _listing(sloppy_study)
    out = tmp_path / "disc"
    code, stdout, _ = run_author(
        sloppy_study, out=out, extra=("--format", "folder", "--skip-unusable")
    )
    assert code == errors.AUTHOR_OMISSIONS == 2
    summary = " ".join(stdout.split())
    assert "Left out" in summary and "2 files could not go on the disc" in summary
    assert "report.dcm: (0010,0020) PatientID is missing or empty" in summary
    assert "cut.dcm: (7FE0,0010) Pixel Data holds" in summary
    assert _listing(sloppy_study) == before  # the input folder is never changed

    manifest = parse((out / MANIFEST_PATH).read_bytes())
    assert len(manifest.images) == 3
    assert sorted(o.file for o in manifest.omitted) == ["cut.dcm", "report.dcm"]
    assert all(o.reason for o in manifest.omitted)
    readme = (out / "README.TXT").read_text(encoding="utf-8")
    assert "LEFT OUT" in readme and "report.dcm: (0010,0020)" in readme and "cut.dcm:" in readme
    index = (out / "INDEX.HTM").read_text(encoding="utf-8")
    assert "Left out" in index and "report.dcm" in index

    report = check_disc(out, trust=TrustStore.from_paths([centre.cert_path]), workers=1)
    assert report.exit_code == 0, report.findings
    # the receiving clinic is told, on the signer's word
    (note,) = [n for n in report.notes if "left 2 file(s)" in n]
    assert "cut.dcm" in note and "report.dcm" in note


def test_skip_unusable_json_names_the_omissions(
    run_author, sloppy_study: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    code, stdout, _ = run_author(
        sloppy_study,
        out=tmp_path / "disc.iso",
        extra=("--skip-unusable", "--json"),
    )
    doc = json.loads(stdout)
    assert code == 2
    assert doc["images"] == 3
    assert {o["file"] for o in doc["omitted"]} == {"cut.dcm", "report.dcm"}
    assert doc["label_pdf"] is None


def _undecodable_name(study: Path) -> Path:
    """A slice whose Patient Name pydicom cannot decode under its character set (ISO 2022
    IR 87 with an empty first component group: pydicom raises IndexError on it)."""
    ds = dcmread(sorted(p for p in study.rglob("*") if p.is_file())[0])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO 2022 IR 87"
    ds.PatientName = "XXXX"
    buf = io.BytesIO()
    with warnings.catch_warnings():  # pydicom: some values do not encode under ISO 2022 IR 87
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert data.count(b"PN\x04\x00XXXX") == 1
    path = study / "name.dcm"
    path.write_bytes(data.replace(b"PN\x04\x00XXXX", b"PN\x02\x00=A"))
    return path


def test_an_undecodable_name_is_named_not_an_internal_error(run_author, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The file is refused at intake, naming the attribute and the character set (it used to
    end in "Internal error (IndexError)" while the images were prepared)."""
    study = tmp_path / "export"
    write_sample_study(study, ct_slices=2, ct_size=64, mr_slices=0)
    _undecodable_name(study)
    code, _, err = run_author(study, out=tmp_path / "disc", extra=("--format", "folder"))
    assert code == errors.EX_DATAERR
    assert "name.dcm" in "".join(err.split()) and "Patient's Name (0010,0010)" in err, err
    assert "(ISO 2022 IR 87)" in err and "Internal error" not in err
    code, stdout, _ = run_author(
        study, out=tmp_path / "disc2", extra=("--format", "folder", "--skip-unusable")
    )
    assert code == errors.AUTHOR_OMISSIONS
    assert "name.dcm: its Patient's Name" in " ".join(stdout.split())
    assert len(parse((tmp_path / "disc2" / MANIFEST_PATH).read_bytes()).images) == 2


def test_nothing_usable_is_still_an_error(run_author, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    study = tmp_path / "export"
    study.mkdir()
    sr = dcmread(get_testdata_file("test-SR.dcm"))
    del sr.PatientID
    sr.save_as(study / "report.dcm")
    out = tmp_path / "disc.iso"
    code, _, err = run_author(study, out=out, extra=("--skip-unusable",))
    assert code == errors.EX_NOINPUT and "1 unusable" in err
    assert not out.exists()


# -- the sha256sum list ---------------------------------------------------------------------------


def test_checksum_list_covers_every_file_and_is_signed(disc_folder: Path) -> None:
    manifest = parse((disc_folder / MANIFEST_PATH).read_bytes())
    listed = (disc_folder / CHECKSUMS_PATH).read_bytes()
    assert b"\r" not in listed
    lines = listed.decode("ascii").splitlines()
    entries = {path: digest for digest, path in (ln.split("  ", 1) for ln in lines)}
    signed = {f.path: f.sha256 for f in manifest.files}
    assert signed.pop(CHECKSUMS_PATH)  # the list itself is signed through the manifest
    assert entries == signed
    assert lines == sorted(lines)


@pytest.mark.external
@pytest.mark.parametrize("extract", ["7z", "bsdtar"])
def test_sha256sum_checks_an_extracted_iso(disc_iso: Path, tmp_path: Path, extract: str) -> None:
    _tool("sha256sum")
    tool = _tool(extract)
    root = tmp_path / "x"
    root.mkdir()
    cmd = (
        [tool, "x", f"-o{root}", str(disc_iso)] if extract == "7z" else [tool, "-xf", str(disc_iso)]
    )
    subprocess.run(cmd, cwd=root, capture_output=True, check=True, timeout=120)
    ok = subprocess.run(
        ["sha256sum", "-c", CHECKSUMS_PATH], cwd=root, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(": OK") == len(ok.stdout.splitlines()) > 3
    image = next(p for p in sorted(root.rglob("IM*")) if p.is_file())
    image.chmod(0o644)
    data = bytearray(image.read_bytes())
    data[-1] ^= 1
    image.write_bytes(bytes(data))
    bad = subprocess.run(
        ["sha256sum", "-c", CHECKSUMS_PATH], cwd=root, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1 and "FAILED" in bad.stdout


# -- the label PDF from the command line ----------------------------------------------------------


@pytest.mark.external
def test_author_writes_the_label_pdf(run_author, study_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _tool("pdftotext")
    label = tmp_path / "label.pdf"
    code, stdout, _ = run_author(
        study_dir, out=tmp_path / "disc.iso", extra=("--label-pdf", str(label))
    )
    assert code == 0
    assert "Label PDF" in stdout
    text = subprocess.run(
        ["pdftotext", str(label), "-"], capture_output=True, text=True, check=True
    ).stdout
    words = " ".join(text.split())
    assert "DICOM ONLY" in words and "Disc 1 of 1" in words
    assert "DM-000001" in words and "born 1 January 1970" in words


@pytest.mark.parametrize("case", ["exists", "folder", "same-as-out"])
def test_a_bad_label_path_is_refused_before_any_work(run_author, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "disc.iso"
    label = tmp_path / "label.pdf"
    if case == "exists":
        label.write_bytes(b"yesterday's label")
    elif case == "folder":
        label.mkdir()
    else:
        label = out
    missing = tmp_path / "no-such-study"  # reading the study at all would fail otherwise
    code, _, err = run_author(missing, out=out, extra=("--label-pdf", str(label)))
    expected = errors.EX_USAGE if case == "same-as-out" else errors.EX_CANTCREAT
    assert code == expected, err
    assert not out.exists()
    if case == "exists":
        assert label.read_bytes() == b"yesterday's label"


def test_only_a_trusted_signer_is_believed_about_what_it_left_out(
    sloppy_study: Path, tmp_path: Path, centre: Centre, other_centre: Centre
) -> None:
    from tests.conftest import author_disc

    out = tmp_path / "disc"
    author_disc(other_centre, [sloppy_study], out, format="folder", skip_unusable=True)
    untrusted = check_disc(out, trust=TrustStore.from_paths([centre.cert_path]), workers=1)
    assert not [n for n in untrusted.notes if "left 2 file(s)" in n]
    trusted = check_disc(out, trust=TrustStore.from_paths([other_centre.cert_path]), workers=1)
    assert [n for n in trusted.notes if "left 2 file(s)" in n]
