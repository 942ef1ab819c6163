"""Authoring: conforming discs that real tools accept, and clear refusals of bad input."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

from discmaker import errors
from discmaker.crypto import signing
from discmaker.disc.media import Medium
from discmaker.format.manifest import MANIFEST_PATH, SIGNATURE_PATH, parse
from discmaker.sample import write_sample_study
from discmaker.ui.cli import main
from tests.conftest import FIXED_TIME, PASSPHRASE, Centre, author_disc, tree_digest


def _both(captured: pytest.CaptureResult[str]) -> str:
    """Results (stdout) and messages (stderr) together, as a terminal shows them."""
    return captured.out + captured.err


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed "
            "(apt-get install dcmtk dicom3tools xorriso genisoimage p7zip-full)"
        )
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def _dicom_files(disc: Path) -> list[Path]:
    return sorted(p for p in disc.rglob("*") if p.is_file() and p.parent.name.startswith("SE"))


# -- what is on the disc ----------------------------------------------------------------------


def test_layout_and_manifest(disc_folder: Path) -> None:
    names = {p.relative_to(disc_folder).as_posix() for p in disc_folder.rglob("*") if p.is_file()}
    assert {"DICOMDIR", "README.TXT", "INDEX.HTM", MANIFEST_PATH, SIGNATURE_PATH} <= names
    for name in names:
        parts = name.split("/")
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?", p) for p in parts), name
    manifest = parse((disc_folder / MANIFEST_PATH).read_bytes())
    listed = {f.path for f in manifest.files}
    assert listed == names - {MANIFEST_PATH, SIGNATURE_PATH}
    assert len(manifest.images) == 10
    assert {i.file_id for i in manifest.images} == {
        p.relative_to(disc_folder).as_posix() for p in _dicom_files(disc_folder)
    }


def test_pydicom_reads_everything_back(disc_folder: Path) -> None:
    fs = FileSet(dcmread(disc_folder / "DICOMDIR"))
    assert fs.ID == "TESTDISC"
    assert len(fs) == 10
    for instance in fs:
        ds = instance.load()
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.pixel_array.shape == (int(ds.Rows), int(ds.Columns))
    fs._stage["t"].cleanup()  # pydicom only removes its staging folder at collection


def test_sop_instance_uids_are_kept(disc_folder: Path, study_dir: Path) -> None:
    original = {str(dcmread(p).SOPInstanceUID) for p in study_dir.rglob("*") if p.is_file()}
    on_disc = {str(dcmread(p).SOPInstanceUID) for p in _dicom_files(disc_folder)}
    assert on_disc == original


def test_manifest_verifies_with_stock_openssl(disc_folder: Path) -> None:
    _tool("openssl")
    result = _run(*signing.OPENSSL_VERIFY_COMMAND_ONE_STEP.split(), cwd=disc_folder / "DISCSIG")
    assert result.returncode == 0, result.stderr
    assert signing.OPENSSL_VERIFY_OK in result.stdout


def test_input_folder_is_untouched(centre: Centre, tmp_path: Path) -> None:
    study = tmp_path / "study"
    write_sample_study(study, ct_slices=2, ct_size=128, mr_slices=2, mr_size=64)
    before = tree_digest(study)
    author_disc(centre, [study], tmp_path / "disc.iso")
    assert tree_digest(study) == before


def test_reproducible_iso(centre: Centre, study_dir: Path, tmp_path: Path, disc_iso: Path) -> None:
    again = tmp_path / "again.iso"
    author_disc(centre, [study_dir], again, label="TESTDISC")
    assert again.read_bytes() == disc_iso.read_bytes()


# -- external tools (DISC-RULES.md) -------------------------------------------------------------


@pytest.mark.external
def test_isoinfo_names_and_volume(disc_iso: Path) -> None:
    _tool("isoinfo")
    info = _run("isoinfo", "-d", "-i", str(disc_iso)).stdout
    assert "Volume id: TESTDISC" in info
    assert re.search(r"Application id: discmaker", info)
    assert "Joliet" in info and "Rock Ridge" in info
    names = _run("isoinfo", "-f", "-i", str(disc_iso)).stdout.split()
    files = [n for n in names if ";" in n]
    assert files and all(n.endswith(";1") for n in files)
    assert "/DICOMDIR.;1" in files


@pytest.mark.external
def test_isovfy_and_xorriso(disc_iso: Path) -> None:
    _tool("isovfy")
    _tool("xorriso")
    assert "No errors found" in _run("isovfy", str(disc_iso)).stdout
    media = _run("xorriso", "-indev", str(disc_iso), "-check_media", "--")
    out = media.stdout + media.stderr
    assert "Media region" in out and "bad" not in out.split("Media region", 1)[1]


@pytest.mark.external
@pytest.mark.parametrize("extractor", ["7z", "bsdtar"])
def test_real_readers_extract_the_iso(
    disc_iso: Path, disc_folder: Path, tmp_path: Path, extractor: str
) -> None:
    _tool(extractor)
    if extractor == "7z":
        result = _run("7z", "x", "-y", f"-o{tmp_path}", str(disc_iso))
    else:
        result = _run("bsdtar", "-xf", str(disc_iso), "-C", str(tmp_path))
    assert result.returncode == 0, result.stderr
    extracted = {k.upper(): v for k, v in tree_digest(tmp_path).items()}
    folder = tree_digest(disc_folder)
    # the ISO's manifest also signs how the image was laid out ("iso"), so it and its
    # signature differ from the folder disc's; every other file is the same
    signed = {"DISCSIG/MANIFEST.JSN", "DISCSIG/MANIFEST.SIG"}
    assert set(extracted) == set(folder)
    assert {k: v for k, v in extracted.items() if k not in signed} == {
        k: v for k, v in folder.items() if k not in signed
    }


@pytest.mark.external
def test_dcmdump_and_dciodvfy_add_no_errors(disc_folder: Path, study_dir: Path) -> None:
    _tool("dcmdump")
    _tool("dciodvfy")
    by_uid = {str(dcmread(p).SOPInstanceUID): p for p in study_dir.rglob("*") if p.is_file()}

    def errors_of(path: Path) -> set[str]:
        out = _run("dciodvfy", str(path))
        return {line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}

    for path in _dicom_files(disc_folder):
        dump = _run("dcmdump", "-q", str(path))
        assert dump.returncode == 0 and "E:" not in dump.stdout + dump.stderr, path
        source = by_uid[str(dcmread(path).SOPInstanceUID)]
        assert errors_of(path) <= errors_of(source), path
    assert errors_of(disc_folder / "DICOMDIR") == set()


@pytest.mark.external
def test_dcdirdmp_bijection(disc_folder: Path) -> None:
    _tool("dcdirdmp")
    result = _run("dcdirdmp", "-p", str(disc_folder / "DICOMDIR"))
    lines = (result.stdout + result.stderr).splitlines()
    referenced = {line.strip().replace("\\", "/") for line in lines if line.strip()}
    present = {p.relative_to(disc_folder).as_posix() for p in _dicom_files(disc_folder)}
    assert referenced == present


@pytest.mark.external
def test_dcentvfy_finds_entities_consistent(disc_folder: Path) -> None:
    _tool("dcentvfy")
    result = _run("dcentvfy", *map(str, _dicom_files(disc_folder)))
    assert result.returncode == 0
    assert (result.stdout + result.stderr).strip() == ""


@pytest.mark.external
def test_dcmmkdir_accepts_a_copy(disc_folder: Path, tmp_path: Path) -> None:
    _tool("dcmmkdir")
    copy = tmp_path / "copy"
    shutil.copytree(disc_folder, copy)
    for p in copy.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dirs = sorted({p.parts[0] for p in (q.relative_to(copy) for q in _dicom_files(copy))})
    result = _run("dcmmkdir", "-Pgp", "-nb", "+D", str(copy / "DICOMDIR"), "+r", *dirs, cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "E:" not in result.stdout + result.stderr


# -- bundled pydicom test files -------------------------------------------------------------------


def _bundled_images() -> list[str]:
    """Every file pydicom bundles that holds pixel data (read from its own folder, offline)."""
    folder = Path(get_testdata_file("CT_small.dcm")).parent
    names = []
    for path in sorted(folder.glob("*.dcm")):
        try:
            ds = dcmread(path, force=True)
        except Exception:  # pydicom's deliberately broken samples
            continue
        if "PixelData" in ds:
            names.append(path.name)
    return names


# Refused on purpose, with the reason the operator sees.
BUNDLED_REFUSED = {
    "MR_truncated.dcm": "truncated",
    "badVR.dcm": "cannot be converted",
}

# What a PACS export would have filled in; some pydicom samples lack the DICOMDIR's keys.
_FILL = {
    "PatientID": "TEST-ID",
    "PatientName": "TEST^PATIENT",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.2",
    "Modality": "OT",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.3",
}


@pytest.mark.parametrize("name", _bundled_images())
def test_bundled_file_round_trip(name: str, centre: Centre, tmp_path: Path) -> None:
    from discmaker.check.verify import check_disc
    from discmaker.crypto.trust import TrustStore

    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(get_testdata_file(name), src / "file.dcm")
    ds = dcmread(src / "file.dcm", force=True)
    missing = {k: v for k, v in _FILL.items() if not str(ds.get(k, "") or "").strip()}
    if missing:
        for keyword, value in missing.items():
            setattr(ds, keyword, value)
        ds.save_as(src / "file.dcm")
    out = tmp_path / "disc"
    if name in BUNDLED_REFUSED:
        with pytest.raises(errors.StudyError, match=BUNDLED_REFUSED[name]):
            author_disc(centre, [src], out, format="folder", label="BUNDLED")
        assert not out.exists()
        return
    result = author_disc(centre, [src], out, format="folder", label="BUNDLED")
    assert result.images == 1
    manifest = parse((out / MANIFEST_PATH).read_bytes())
    image = manifest.images[0]
    if image.encoding == "lossy-carried":
        assert image.watermark == "none" and "lossy" in image.watermark_reason
    else:
        assert image.transfer_syntax == "1.2.840.10008.1.2.1"
    if image.watermark == "none":
        assert image.watermark_reason  # never silently skipped
    ds = dcmread(out / image.file_id)
    assert ds.file_meta.TransferSyntaxUID == image.transfer_syntax
    assert ds.SOPInstanceUID == dcmread(src / "file.dcm", force=True).SOPInstanceUID
    report = check_disc(out, trust=TrustStore.from_paths([centre.cert_path]), workers=1)
    assert report.exit_code == 0, (report.findings, report.images)


# -- refusals: each a clear message and its own exit code ------------------------------------------


@pytest.fixture
def run_author(centre: Centre, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())

    def run(
        *inputs: Path, out: Path, extra: tuple[str, ...] = (), key: Path | None = None
    ) -> tuple[int, str]:
        args = ["author", *map(str, inputs), "--key", str(key or centre.key_path)]
        args += ["--cert", str(centre.cert_path), "--out", str(out), *extra]
        code = main(args)
        return code, " ".join(_both(capsys.readouterr()).split())  # undo the console's wrapping

    return run


def test_refuses_empty_folder(run_author, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    code, err = run_author(tmp_path / "empty", out=tmp_path / "d.iso")
    assert code == errors.EX_NOINPUT and "No files found" in err
    assert not (tmp_path / "d.iso").exists()


def test_refuses_only_non_dicom(run_author, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("hello")
    code, err = run_author(tmp_path / "in", out=tmp_path / "d.iso")
    assert code == errors.EX_NOINPUT and "None of the 1 files" in err


def test_refuses_truncated_dicom(run_author, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in").mkdir()
    shutil.copyfile(get_testdata_file("MR_truncated.dcm"), tmp_path / "in" / "a.dcm")
    code, err = run_author(tmp_path / "in", out=tmp_path / "d.iso")
    assert code == errors.EX_DATAERR and "truncated" in err and "a.dcm" in "".join(err.split())
    assert not (tmp_path / "d.iso").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.iso")]


def test_refuses_mixed_patients(run_author, tmp_path: Path, patient_b) -> None:  # type: ignore[no-untyped-def]
    write_sample_study(tmp_path / "in" / "a", ct_slices=1, ct_size=64, mr_slices=0)
    write_sample_study(
        tmp_path / "in" / "b", ct_slices=1, ct_size=64, mr_slices=0, seed="b", patient=patient_b
    )
    code, err = run_author(tmp_path / "in", out=tmp_path / "d.iso")
    assert code == errors.EX_DATAERR and "2 different patients" in err
    assert "OTHER" not in err  # never echo patient data


def test_refuses_invalid_label(run_author, study_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, err = run_author(study_dir, out=tmp_path / "d.iso", extra=("--label", "my disc"))
    assert code == errors.EX_USAGE and "File-set ID" in err


def test_refuses_wrong_passphrase(
    run_author, study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "wrong")
    code, err = run_author(study_dir, out=tmp_path / "d.iso")
    assert code == errors.EX_NOPERM and "passphrase" in err


def test_refuses_unreadable_key(run_author, study_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    bad.chmod(0o600)
    code, _ = run_author(study_dir, out=tmp_path / "d.iso", key=bad)
    assert code == errors.EX_NOPERM
    code, _ = run_author(study_dir, out=tmp_path / "d.iso", key=tmp_path / "missing.pem")
    assert code == errors.EX_NOPERM


def test_refuses_output_inside_input(run_author, centre: Centre, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_sample_study(tmp_path / "in", ct_slices=1, ct_size=64, mr_slices=0)
    before = tree_digest(tmp_path / "in")
    code, err = run_author(tmp_path / "in", out=tmp_path / "in" / "d.iso")
    assert code == errors.EX_USAGE and "inside the input folder" in err
    assert tree_digest(tmp_path / "in") == before


def test_refuses_unwritable_output(run_author, study_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, err = run_author(study_dir, out=tmp_path / "no" / "such" / "d.iso")
    assert code == errors.EX_CANTCREAT and "does not exist" in err
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, err = run_author(study_dir, out=locked / "d.iso")
        assert code == errors.EX_CANTCREAT and "cannot be written" in err


def test_refuses_too_large_for_medium(
    centre: Centre, study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.author import create as author_mod

    def tiny_fit(estimated: int, medium: Medium, **_: object) -> None:
        raise errors.TooLargeError(f"{estimated} bytes do not fit")

    monkeypatch.setattr(author_mod, "check_fits", tiny_fit)
    with pytest.raises(errors.TooLargeError):
        author_disc(centre, [study_dir], tmp_path / "d.iso")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_leaves_no_disc(
    centre: Centre, study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.author.dicomdir import DicomdirWriter

    real = DicomdirWriter.write

    def crash(self: DicomdirWriter, *args: object, **kwargs: object) -> object:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(DicomdirWriter, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        author_disc(centre, [study_dir], tmp_path / "d.iso")
    assert list(tmp_path.iterdir()) == []


def test_cli_author_json(run_author, study_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]

    code, _ = run_author(
        study_dir, out=tmp_path / "d.iso", extra=("--json", "--timestamp", FIXED_TIME.isoformat())
    )
    assert code == 0
    assert (tmp_path / "d.iso").is_file()


def test_keygen_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "pw")
    assert main(["keygen", "--org", "Clinic", "--out", str(tmp_path / "k")]) == 0
    err = " ".join(_both(capsys.readouterr()).split())
    cert = signing.load_certificate(tmp_path / "k" / "cert.pem")
    assert signing.fingerprint(cert) in err
    assert (tmp_path / "k" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert main(["keygen", "--org", "Clinic", "--out", str(tmp_path / "k")]) == errors.EX_CANTCREAT


# -- found in review ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("StudyDate", "20200101"), ("StudyDate", ""), ("SeriesNumber", 99), ("PatientSex", "")],
)
def test_images_that_disagree_within_a_study_still_verify(
    centre: Centre, tmp_path: Path, keyword: str, value: object
) -> None:
    from discmaker.check.verify import check_disc
    from discmaker.crypto.trust import TrustStore

    study = tmp_path / "study"
    paths = sorted(write_sample_study(study, ct_slices=2, ct_size=128, mr_slices=0))
    ds = dcmread(paths[-1])
    setattr(ds, keyword, value)
    ds.save_as(paths[-1])
    result = author_disc(centre, [study], tmp_path / "disc", format="folder", label="MIXED")
    report = check_disc(tmp_path / "disc", trust=TrustStore.from_paths([centre.cert_path]))
    assert report.exit_code == 0, [v.reasons for v in report.images]
    if keyword != "PatientSex" and value != "":  # (not a DICOMDIR key / a placeholder)
        assert any(keyword in note for note in result.notes)


def test_header_damaged_in_a_way_pydicom_raises_oddly_is_bad_input(
    run_author,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "in").mkdir()
    good = next(iter(write_sample_study(tmp_path / "src", ct_slices=1, ct_size=64, mr_slices=0)))
    data = good.read_bytes()
    cut = data.index(b"\xe0\x7f\x10\x00") + 10  # inside the Pixel Data element header
    (tmp_path / "in" / "cut.dcm").write_bytes(data[:cut])
    code, err = run_author(tmp_path / "in", out=tmp_path / "d.iso")
    # (a long path may be folded across lines by the console)
    assert code == errors.EX_DATAERR and "cut.dcm" in "".join(err.split())
    assert "Internal error" not in err


def test_unreadable_subfolder_is_refused_not_skipped(
    centre: Centre, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = tmp_path / "study"
    write_sample_study(study, ct_slices=1, ct_size=64, mr_slices=1, mr_size=64)
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if str(path).endswith("mr"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(errors.StudyError, match="cannot be read"):
        author_disc(centre, [study], tmp_path / "d.iso")


def test_non_ascii_institution_authors_an_iso(
    centre: Centre, study_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "d.iso"
    author_disc(centre, [study_dir], out, institution="Clinique Saint-Étienne")
    assert out.is_file()
    if shutil.which("isoinfo"):
        info = _run("isoinfo", "-d", "-i", str(out)).stdout
        assert "Publisher id: Clinique Saint-Etienne" in info


@pytest.mark.external
def test_structured_report_record_passes_dciodvfy(centre: Centre, tmp_path: Path) -> None:
    _tool("dciodvfy")
    (tmp_path / "in").mkdir()
    ds = dcmread(get_testdata_file("test-SR.dcm"))
    for keyword, value in _FILL.items():
        if not str(ds.get(keyword, "") or "").strip():
            setattr(ds, keyword, value)
    ds.save_as(tmp_path / "in" / "sr.dcm")
    author_disc(centre, [tmp_path / "in"], tmp_path / "disc", format="folder", label="SR")
    result = _run("dciodvfy", str(tmp_path / "disc" / "DICOMDIR"))
    assert not [ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")]


@pytest.mark.parametrize("kind", ["iso", "folder"])
def test_an_existing_output_is_refused_before_the_study_is_read(
    tmp_path: Path, centre: Centre, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / ("disc.iso" if kind == "iso" else "DISC")
    if kind == "iso":
        out.write_bytes(b"yesterday's disc")
    else:
        out.mkdir()
    missing = tmp_path / "no-such-study"  # reading the study at all would fail otherwise
    with pytest.raises(errors.OutputError, match="already exists"):
        author_disc(centre, [missing], out, format=kind)
    if kind == "iso":
        assert out.read_bytes() == b"yesterday's disc"
    monkeypatch.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())
    args = ["author", str(missing), "--key", str(centre.key_path), "--cert"]
    args += [str(centre.cert_path), "--out", str(out), "--format", kind]
    assert main(args) == errors.EX_CANTCREAT


def test_readme_and_index_write_dates_for_people(disc_folder: Path) -> None:
    readme = (disc_folder / "README.TXT").read_text(encoding="utf-8")
    index = (disc_folder / "INDEX.HTM").read_text(encoding="utf-8")
    births = {
        str(dcmread(p, stop_before_pixels=True).get("PatientBirthDate", ""))
        for p in sorted(disc_folder.rglob("IM*"))[:1]
    }
    (birth,) = births
    assert len(birth) == 8  # the conftest study has a birth date
    for text in (readme, index):
        assert birth not in text  # never 19700101
        assert re.search(r"\b\d{1,2} [A-Z][a-z]{2} \d{4} \(\d{4}-\d{2}-\d{2}\)", text), text
        assert re.search(r"Study of \d{1,2} [A-Z][a-z]{2} \d{4}", text)
