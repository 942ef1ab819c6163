"""A verdict for every kind of input, worded for what it is, with whose disc it is.

Each input is built here: nothing at all, a folder of other files, an empty ISO image, a folder
inside a disc or around one, loose DICOM files, a vendor's disc (pydicom's File-set writer),
consistent or not, a discmaker disc genuine, tampered, stripped of its signature, and one disc
of a set. Each gets its verdict, its exit code through the command line, its JSON validated
against docs/schemas, and wording a radiographer can act on. Nothing said about an input
nobody signed speaks of a signature, a signer or a sender.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from rich.console import Console

from discmaker.author.create import estimate_disc_size
from discmaker.author.intake import scan
from discmaker.check.verify import check_disc, check_set
from discmaker.crypto.trust import TrustStore
from discmaker.disc.iso import DiscFile, VolumeInfo, write_iso
from discmaker.format.manifest import MANIFEST_PATH, parse
from discmaker.models import CheckReport, InputKind, PatientsSource, Verdict
from discmaker.sample import SamplePatient, write_sample_study
from discmaker.ui import render, report_html
from discmaker.ui.wording import (
    check_steps,
    patient_blocks,
    patients_source_text,
    person_date,
    person_name,
    verdict_text,
)
from tests.conftest import FIXED_TIME, Centre, author_disc
from tests.test_render import _parse
from tests.test_schemas import run_json, validate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIGNING_WORDS = re.compile(r"sign|sender", re.IGNORECASE)  # signed, signature, signer, sender
PATIENT = SamplePatient()  # the sample study's patient


def _trust(centre: Centre) -> TrustStore:
    return TrustStore.from_paths([centre.cert_path])


def _check(path: Path, centre: Centre) -> CheckReport:
    return check_disc(path, trust=_trust(centre), workers=1)


def _cli(path: Path | list[Path], centre: Centre) -> tuple[int, dict[str, Any]]:
    """``discmaker check --json``: the exit status and the one JSON object, validated."""
    paths = path if isinstance(path, list) else [path]
    code, doc = run_json(["check", *map(str, paths), "--trust", str(centre.cert_path), "--json"])
    validate(doc)
    assert doc["exit_code"] == code
    return code, doc


def _text(report: CheckReport) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(render.check_summary(report))
    return console.export_text()


def _messages(report: CheckReport) -> Iterator[str]:
    """Everything said about the input: the verdict, each step's sentence, the findings, each
    image's reasons, the notes, where the patient block comes from. (Not the fixed names of
    the steps: step 1 is called "Signature" on every report.)"""
    words = verdict_text(report)
    yield words.headline
    yield from words.explanation
    yield words.advice
    yield words.exit_meaning
    for step in check_steps(report):
        yield step.detail
    for finding in report.findings:
        yield finding.message
    for image in report.images:
        yield from image.reasons
    yield from report.notes
    yield patients_source_text(report)


def _never_speaks_of_signing(report: CheckReport) -> None:
    said = [m for m in _messages(report) if SIGNING_WORDS.search(m)]
    assert said == [], said
    # ... and both renderings say it: the terminal summary and a well-formed HTML report
    headline = verdict_text(report).headline
    assert f"(5) Verdict: {headline}" in _text(report)
    html = " ".join(_parse(report_html.render_html_report(report)).text)
    assert f"(5) Verdict: {headline}" in html and "TAMPERED" not in html


def _vendor_disc(out: Path, *sources: Path) -> Path:
    """A disc as another vendor writes it: DICOMDIR and images, no discmaker signature."""
    fs = FileSet()
    for source in sources:
        for p in sorted(source.rglob("*")):
            if p.is_file():
                fs.add(p)
    fs.write(out)
    fs._stage["t"].cleanup()  # pydicom only removes its staging folder at collection
    return out


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    write_sample_study(root, ct_slices=3, ct_size=64, mr_slices=2, mr_size=32)
    return root


@pytest.fixture(scope="module")
def other_patient_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("other")
    patient = SamplePatient(name="OTHER^PATIENT", patient_id="DM-000002", birth_date="19800202")
    write_sample_study(root, ct_slices=2, ct_size=64, mr_slices=0, seed="another", patient=patient)
    return root


# -- not a disc (exit 3) -----------------------------------------------------------------------


def _not_a_disc(path: Path, centre: Centre) -> tuple[CheckReport, dict[str, Any]]:
    report = _check(path, centre)
    assert report.verdict is Verdict.NOT_A_DISC and report.kind is InputKind.NOT_A_DISC
    assert report.exit_code == 3
    code, doc = _cli(path, centre)
    assert code == 3 and doc["verdict"] == "not-a-disc" and doc["input"] == "not-a-disc"
    assert doc["images"] == [] and doc["patients"] == []
    words = verdict_text(report)
    assert words.headline == "NOT A DISC" and "exit code 3" in words.exit_meaning
    assert "top folder" in words.advice
    _never_speaks_of_signing(report)
    assert "TAMPERED" not in _text(report)
    return report, doc


def _the_sample_patients_one_study(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON patient block names the sample patient; returns their only study."""
    (patient,) = doc["patients"]
    assert (patient["name"], patient["id"], patient["birth_date"], patient["sex"]) == (
        PATIENT.name,
        PATIENT.patient_id,
        PATIENT.birth_date,
        PATIENT.sex,
    )
    (study,) = patient["studies"]
    return dict(study)


def test_an_empty_folder_is_not_a_disc(tmp_path: Path, centre: Centre) -> None:
    (tmp_path / "empty").mkdir()
    report, doc = _not_a_disc(tmp_path / "empty", centre)
    assert doc["top_folder"] == ""
    assert "no DICOM image" in " ".join(verdict_text(report).explanation)


def test_a_folder_of_other_files_is_not_a_disc(tmp_path: Path, centre: Centre) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "letter.pdf").write_bytes(b"%PDF-1.4 not an image")
    (folder / "README.TXT").write_text("hello")
    report, _ = _not_a_disc(folder, centre)
    assert any("2 files, none of them a DICOM image" in n for n in report.notes)


def test_an_empty_iso_image_is_not_a_disc(tmp_path: Path, centre: Centre) -> None:
    iso = tmp_path / "empty.iso"
    write_iso([], iso, VolumeInfo(volume_id="EMPTY", application_id="x", timestamp=FIXED_TIME))
    _not_a_disc(iso, centre)


def test_a_folder_inside_a_disc_names_the_top_folder(disc_folder: Path, centre: Centre) -> None:
    series = next(p.parent for p in disc_folder.rglob("IM*") if p.is_file())
    assert series != disc_folder
    report, doc = _not_a_disc(series, centre)
    assert doc["top_folder"] == str(disc_folder.resolve())
    words = verdict_text(report)
    assert "inside a disc" in " ".join(words.explanation)
    assert words.advice == f"Check the disc's top folder instead: discmaker check {disc_folder}"


def test_a_folder_around_a_disc_names_the_disc_inside(
    disc_folder: Path, tmp_path: Path, centre: Centre
) -> None:
    usb = tmp_path / "usb"
    shutil.copytree(disc_folder, usb / "PatientDisc")
    report, doc = _not_a_disc(usb, centre)
    assert doc["top_folder"] == str(usb / "PatientDisc")
    assert "inside this one" in " ".join(verdict_text(report).explanation)


def test_the_subfolder_of_an_unsigned_disc_is_not_a_disc(
    small_study: Path, tmp_path: Path, centre: Centre
) -> None:
    vendor = _vendor_disc(tmp_path / "vendor", small_study)
    inner = next(p.parent for p in vendor.rglob("*") if p.is_file() and p.parent != vendor)
    _, doc = _not_a_disc(inner, centre)
    assert doc["top_folder"] == str(vendor.resolve())


# -- loose DICOM files (no DICOMDIR) -------------------------------------------------------------


def test_loose_files_are_checked_as_files(small_study: Path, centre: Centre) -> None:
    report = _check(small_study, centre)
    assert report.kind is InputKind.FILES and report.verdict is Verdict.NOT_VERIFIABLE
    assert report.findings == () and len(report.images) == 5
    assert all(i.sop_instance_uid and i.series_uid for i in report.images)
    code, doc = _cli(small_study, centre)
    assert code == 2 and doc["verdict"] == "not-verifiable" and doc["input"] == "files"
    words = verdict_text(report)
    assert "loose DICOM files, not a disc" in words.explanation[0]
    assert "top folder" in words.advice
    _never_speaks_of_signing(report)
    # whose files: from their headers, Study Description included
    assert doc["patients_source"] == "headers"
    study = _the_sample_patients_one_study(doc)
    assert study["description"] == "DEMO STUDY (generated, no patient data)"
    assert (study["date"], study["accession_number"]) == ("20260102", "DEMO0001")
    assert study["modalities"] == ["CT", "MR"] and study["images"] == 5
    assert study["study_instance_uid"].startswith("1.")


def test_loose_files_of_two_patients_are_inconsistent(
    small_study: Path, other_patient_study: Path, tmp_path: Path, centre: Centre
) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(small_study, mixed / "a")
    shutil.copytree(other_patient_study, mixed / "b")
    report = _check(mixed, centre)
    assert report.verdict is Verdict.INCONSISTENT and report.exit_code == 1
    assert any(f.kind == "patients" and f.step == 3 for f in report.findings)
    code, doc = _cli(mixed, centre)
    assert code == 1 and doc["verdict"] == "inconsistent"
    assert [p["id"] for p in doc["patients"]] == ["DM-000001", "DM-000002"]  # sorted by name
    words = verdict_text(report)
    assert words.explanation[0].startswith("These files are inconsistent: ")
    assert "more than one patient" in words.explanation[0]
    _never_speaks_of_signing(report)


# -- a vendor's disc (DICOMDIR, no discmaker signature) ------------------------------------------


def test_an_unsigned_consistent_disc_is_not_verifiable(
    small_study: Path, tmp_path: Path, centre: Centre
) -> None:
    vendor = _vendor_disc(tmp_path / "vendor", small_study)
    report = _check(vendor, centre)
    assert report.verdict is Verdict.NOT_VERIFIABLE and report.kind is InputKind.DISC
    code, doc = _cli(vendor, centre)
    assert code == 2 and doc["verdict"] == "not-verifiable" and doc["findings"] == []
    words = verdict_text(report)
    assert words.headline == "NOT VERIFIABLE"
    assert "not made with discmaker" in words.explanation[0]
    steps = check_steps(report)
    assert steps[0].detail.startswith("None: ")  # (1) Signature: none
    assert steps[1].state == "pass" and steps[2].state == "pass"
    _never_speaks_of_signing(report)
    # whose disc: the DICOMDIR's records, what they leave out from a header of the study
    assert doc["patients_source"] == "dicomdir"
    study = _the_sample_patients_one_study(doc)
    assert study["description"].startswith("DEMO STUDY")
    assert [(s["modality"], s["images"]) for s in study["series"]] == [("CT", 3), ("MR", 2)]


def test_an_unsigned_disc_with_an_edited_header_is_inconsistent(
    small_study: Path, tmp_path: Path, centre: Centre
) -> None:
    vendor = _vendor_disc(tmp_path / "vendor", small_study)
    victim = next(p for p in sorted(vendor.rglob("*")) if p.is_file() and p.name != "DICOMDIR")
    ds = dcmread(victim)
    ds.PatientName = "FORGED^NAME"
    ds.save_as(victim)
    report = _check(vendor, centre)
    assert report.verdict is Verdict.INCONSISTENT
    code, doc = _cli(vendor, centre)
    assert code == 1 and doc["verdict"] == "inconsistent"
    words = verdict_text(report)
    assert words.headline == "INCONSISTENT"
    assert words.explanation[0].startswith("The disc is inconsistent: 1 image whose header")
    assert check_steps(report)[2].state == "fail"
    text = _text(report)
    assert "INCONSISTENT" in text and "TAMPERED" not in text and "PatientName" in text
    _never_speaks_of_signing(report)


def test_an_unsigned_disc_of_two_patients_is_inconsistent(
    small_study: Path, other_patient_study: Path, tmp_path: Path, centre: Centre
) -> None:
    vendor = _vendor_disc(tmp_path / "vendor", small_study, other_patient_study)
    report = _check(vendor, centre)
    assert report.verdict is Verdict.INCONSISTENT
    assert [f.kind for f in report.findings] == ["patients"]
    assert {p.patient_id for p in report.patients} == {"DM-000001", "DM-000002"}
    code, doc = _cli(vendor, centre)
    assert code == 1 and len(doc["patients"]) == 2
    assert "more than one patient" in verdict_text(report).explanation[0]
    assert "Patients (2)" in _text(report)
    _never_speaks_of_signing(report)


# -- discmaker discs -----------------------------------------------------------------------------


def test_a_genuine_disc_is_verified_with_its_signed_patient(
    disc_folder: Path, centre: Centre
) -> None:
    report = _check(disc_folder, centre)
    assert report.verdict is Verdict.VERIFIED and report.patients_source is PatientsSource.MANIFEST
    code, doc = _cli(disc_folder, centre)
    assert code == 0 and doc["verdict"] == "verified" and doc["input"] == "disc"
    study = _the_sample_patients_one_study(doc)
    manifest = parse((disc_folder / MANIFEST_PATH).read_bytes())
    assert study["study_instance_uid"] == manifest.images[0].identity["StudyInstanceUID"]
    assert study["images"] == 10 and study["modalities"] == ["CT", "MR"]
    assert study["description"] == ""  # the manifest does not carry it
    # people read names and dates as they write them
    text = _text(report)
    assert "DEMO, SAMPLE PATIENT" in text and "born 1 January 1970" in text
    assert "Study 2 January 2026" in text and "accession DEMO0001" in text
    assert "CT 6 images, MR 4 images" in text
    assert "as the sender signed them" in text
    html = report_html.render_html_report(report)
    assert "DEMO, SAMPLE PATIENT" in html and "1 January 1970" in html
    assert "2 January 2026" in html and "DEMO0001" in html and "CT 6 images, MR 4 images" in html


def test_a_tampered_disc_numbers_frames_from_1_in_json_and_text(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    target = next(i.file_id for i in parse((disc / MANIFEST_PATH).read_bytes()).images)
    ds = dcmread(disc / target)
    arr = ds.pixel_array.copy()
    arr[40:60, 40:60] = arr.max()
    ds.PixelData = arr.tobytes()
    ds.save_as(disc / target)
    code, doc = _cli(disc, centre)
    assert code == 1 and doc["verdict"] == "tampered"
    (image,) = [i for i in doc["images"] if i["regions"]]
    assert {r["frame"] for r in image["regions"]} == {1}
    report = _check(disc, centre)
    assert "frame 1, rows" in _text(report) and "frame 0" not in _text(report)
    assert verdict_text(report).explanation[0] == (
        "Something on this disc was changed after the sender signed it."
    )


def test_a_disc_whose_signature_was_removed_stays_tampered(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    shutil.rmtree(disc / "DISCSIG")
    report = _check(disc, centre)
    assert report.verdict is Verdict.TAMPERED and not report.unsigned
    code, doc = _cli(disc, centre)
    assert code == 1 and doc["verdict"] == "tampered"
    assert "signature was removed" in " ".join(f.message for f in report.findings)
    assert verdict_text(report).headline == "TAMPERED"


def test_discmaker_images_in_a_folder_without_dicomdir_or_signature_are_loose_files(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    """A folder that still holds the disc's README.TXT and INDEX.HTM is a disc whose
    signature was removed; without them its images are loose files: each verified by its
    watermark, and the report says that whether images are missing cannot be told."""
    disc = disc_copy()
    shutil.rmtree(disc / "DISCSIG")
    (disc / "DICOMDIR").unlink()
    report = _check(disc, centre)
    assert report.kind is InputKind.FILES and report.verdict is Verdict.TAMPERED
    assert [f.kind for f in report.findings] == ["signature"]
    (disc / "README.TXT").unlink()
    (disc / "INDEX.HTM").unlink()
    report = _check(disc, centre)
    assert report.kind is InputKind.FILES and report.verdict is Verdict.IMAGES_VERIFIED
    assert not report.findings
    assert "missing" in verdict_text(report).explanation[-1]
    code, doc = _cli(disc, centre)
    assert code == 2 and doc["verdict"] == "images-verified" and doc["patients_source"] == "headers"


def test_a_disc_image_without_dicomdir_or_signature_stays_tampered(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    """On an ISO the same files say that the disc's signature was removed."""
    disc = disc_copy()
    shutil.rmtree(disc / "DISCSIG")
    (disc / "DICOMDIR").unlink()
    files = [
        DiscFile(p.relative_to(disc).as_posix(), p) for p in sorted(disc.rglob("*")) if p.is_file()
    ]
    iso = tmp_path / "stripped.iso"
    write_iso(
        files, iso, VolumeInfo(volume_id="STRIPPED", application_id="x", timestamp=FIXED_TIME)
    )
    report = _check(iso, centre)
    assert report.kind is InputKind.FILES and report.verdict is Verdict.TAMPERED
    assert [f.kind for f in report.findings] == ["signature"]


def test_an_untrusted_signer_is_not_verifiable(disc_folder: Path, other_centre: Centre) -> None:
    code, doc = _cli(disc_folder, other_centre)
    assert code == 2 and doc["verdict"] == "not-verifiable"
    assert doc["patients_source"] == "manifest" and len(doc["patients"]) == 1


# -- one disc of a set ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disc_set(
    tmp_path_factory: pytest.TempPathFactory, centre: Centre, study_dir: Path
) -> list[Path]:
    """A study spanned over two discs (folder format): CT on one, MR on the other."""
    ct = [i for i in scan([study_dir]).instances if i.modality == "CT"]
    out = tmp_path_factory.mktemp("set") / "SET"
    result = author_disc(
        centre,
        [study_dir],
        out,
        format="folder",
        label="SET",
        span=True,
        capacity=estimate_disc_size(ct) + 4096,
    )
    assert len(result.outputs) == 2
    return list(result.outputs)


def test_one_disc_of_a_set_alone_is_an_incomplete_set(disc_set: list[Path], centre: Centre) -> None:
    report = _check(disc_set[0], centre)
    assert report.verdict is Verdict.INCOMPLETE_SET and report.exit_code == 2
    assert report.missing_discs == ((2, "SET_2OF2"),)
    code, doc = _cli(disc_set[0], centre)
    assert code == 2 and doc["verdict"] == "incomplete-set"
    assert doc["disc"]["missing"] == [{"number": 2, "fileset_id": "SET_2OF2"}]
    words = verdict_text(report)
    assert words.headline == "INCOMPLETE SET" and "You can import" not in words.advice
    said = " ".join(words.explanation)
    assert "disc 1 of 2" in said and "disc 2 (SET_2OF2)" in said
    assert "series that continues on another disc is incomplete" in said
    assert "Check all 2 discs of the set together" in words.advice
    assert "VERIFIED" not in _text(report)


def test_the_whole_set_checked_together_is_verified(disc_set: list[Path], centre: Centre) -> None:
    reports = [_check(p, centre) for p in disc_set]
    result = check_set(reports)
    assert result.verdict is Verdict.VERIFIED and result.exit_code == 0 and result.complete
    assert [d.verdict for d in result.discs] == [Verdict.VERIFIED] * 2
    code, doc = _cli(disc_set, centre)
    assert code == 0 and doc["verdict"] == "verified" and doc["complete"]
    assert [d["verdict"] for d in doc["discs"]] == ["verified"] * 2
    for disc in doc["discs"]:
        validate(disc)
        assert disc["disc"]["missing"] == []
    # Both discs given, but the same one twice: the other is missing, and one is repeated.
    twice = check_set([reports[0], reports[0]])
    assert twice.verdict is Verdict.INCONSISTENT and twice.exit_code == 1


def test_unsigned_discs_checked_together_are_not_called_tampered(
    small_study: Path, tmp_path: Path, centre: Centre
) -> None:
    a = _vendor_disc(tmp_path / "a", small_study)
    b = _vendor_disc(tmp_path / "b", small_study)
    code, doc = _cli([a, b], centre)
    assert code == 2 and doc["verdict"] == "not-verifiable"
    assert {f["kind"] for f in doc["set_findings"]} == {"not-in-set"}


# -- restore of a path that is not a disc --------------------------------------------------------


def test_restore_of_a_folder_that_is_not_a_disc_is_3(tmp_path: Path, centre: Centre) -> None:
    (tmp_path / "empty").mkdir()
    code, doc = run_json(
        [
            "restore",
            str(tmp_path / "empty"),
            "--trust",
            str(centre.cert_path),
            "--out",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    validate(doc)
    assert code == 3 and doc["verdict"] == "not-a-disc" and doc["restored"] == []


# -- wording helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("20260102", "2 January 2026"),
        ("19701231", "31 December 1970"),
        ("2026", "2026"),
        ("20261340", "20261340"),
        ("", ""),
    ],
)
def test_person_date(value: str, shown: str) -> None:
    assert person_date(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("DOE^JANE", "DOE, JANE"),
        ("DOE^JANE^MARY^DR^PHD", "DOE, DR JANE MARY PHD"),
        ("DOE^JANE^^^", "DOE, JANE"),
        ("DOE", "DOE"),
        ("Yamada^Tarou=山田^太郎", "Yamada, Tarou"),
    ],
)
def test_person_name(value: str, shown: str) -> None:
    assert person_name(value) == shown


def test_patient_block_words_hostile_values_plainly(disc_folder: Path, centre: Centre) -> None:
    from dataclasses import replace

    report = _check(disc_folder, centre)
    evil = replace(report.patients[0], name="EVIL\x1b[31m^[bold]X[/bold]")
    blocks = patient_blocks(replace(report, patients=(evil,)))
    assert "\x1b" not in blocks[0].name and "[bold]X[/bold]" in blocks[0].name
