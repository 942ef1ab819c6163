"""The guided workflow, driven by scripted answers (and once in a real pseudo-terminal)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from discmaker.author.preview import format_date, format_person_name, preview
from discmaker.check import burned as burned_mod
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.disc import burn as burn_mod
from discmaker.disc.burn import Drive
from discmaker.sample import write_sample_study
from discmaker.ui import guide, guide_session, guide_tasks
from discmaker.ui.cli import main
from tests.conftest import PASSPHRASE, Centre, author_disc

PATIENT_NAME = "DEMO, SAMPLE PATIENT"  # how the guide reads back DEMO^SAMPLE^PATIENT
PATIENT_ID = "DM-000001"


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guidestudy")
    write_sample_study(root, ct_slices=3, ct_size=128, mr_slices=2, mr_size=64)
    return root


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Private trust store and settings; the test passphrase; no real disc burners."""
    monkeypatch.setenv("DISCMAKER_TRUST_DIR", str(tmp_path / "trust"))
    monkeypatch.setenv("DISCMAKER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # burn images are staged here
    monkeypatch.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())
    monkeypatch.setattr(burn_mod, "list_drives", lambda: [])
    out = tmp_path / "out"
    out.mkdir()
    return out


Run = Callable[..., tuple[int, str]]


@pytest.fixture
def run() -> Run:
    def go(*answers: object) -> tuple[int, str]:
        console = Console(record=True, width=120, file=io.StringIO())
        stream = io.StringIO("".join(f"{a}\n" for a in answers))
        code = guide.run_guide(console=console, stream=stream)
        return code, console.export_text()

    return go


def create_answers(study: Path, out: Path, centre: Centre, *, confirm: str = "y") -> list[object]:
    """Menu 1 up to and including the patient confirmation (ISO on a CD, no key remembered)."""
    key = ["y", centre.key_path, centre.cert_path]  # "already have a key?", key, certificate
    return [1, study, "i", "cd", "GUIDETEST", out, *key, confirm]


def test_create_disc_confirm_check_and_command(
    run: Run, env: Path, small_study: Path, centre: Centre
) -> None:
    out = env / "disc.iso"
    code, text = run(*create_answers(small_study, out, centre), "y", "q")
    assert code == 0, text
    assert out.is_file()
    # what was found, read back before writing
    assert PATIENT_NAME in text
    assert PATIENT_ID in text
    assert "1 Jan 1970 (1970-01-01)" in text
    assert "1 study, 2 series, 5 images" in text
    assert "CT demo series" in text
    assert "match the request form" in text
    # the self-check after writing, and the equivalent command
    assert "VERIFIED" in text
    assert (
        f"discmaker author {small_study} --key {centre.key_path} --cert {centre.cert_path} "
        f"--out {out} --label GUIDETEST --medium cd"
    ) in text
    settings = json.loads((Path(os.environ["DISCMAKER_CONFIG_DIR"]) / "guide.json").read_text())
    assert settings["key"] == str(centre.key_path)
    assert settings["cert"] == str(centre.cert_path)
    assert PATIENT_ID not in json.dumps(settings)  # no patient data remembered


def test_defaults_remembered_usb_folder(
    run: Run, env: Path, small_study: Path, centre: Centre
) -> None:
    code, _ = run(*create_answers(small_study, env / "first.iso", centre), "n", "q")
    assert code == 0
    usb = env / "USBDISC"
    # key and certificate: just press Enter to take last time's
    code, text = run(1, small_study, "u", "USBDISC", usb, "", "", "y", "y", "q")
    assert code == 0, text
    assert (usb / "DICOMDIR").is_file()
    assert "--format folder" in text
    assert f"--key {centre.key_path}" in text
    assert "safely eject the USB stick" in text


def test_decline_patient_writes_nothing(
    run: Run, env: Path, small_study: Path, centre: Centre
) -> None:
    out = env / "disc.iso"
    code, text = run(*create_answers(small_study, out, centre, confirm="n"), "q")
    assert code == guide_session.EXIT_STOPPED
    assert "Stopped: nothing was written" in text
    assert not out.exists()
    assert list(env.iterdir()) == []


def test_ctrl_c_at_confirmation(
    run: Run, env: Path, small_study: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_yes = guide_session.Asker.yes

    def interrupt_at_confirmation(self: guide_session.Asker, prompt: str, *, default: bool) -> bool:
        if "match the request form" in prompt:
            raise KeyboardInterrupt
        return real_yes(self, prompt, default=default)

    monkeypatch.setattr(guide_session.Asker, "yes", interrupt_at_confirmation)
    out = env / "disc.iso"
    code, text = run(*create_answers(small_study, out, centre)[:-1], "q")
    assert code == 130  # the status of the last task: cancelled
    assert "Cancelled: nothing was written." in text
    assert "Back to the main menu" in text and "Goodbye." in text
    assert list(env.iterdir()) == []


def test_ctrl_c_while_writing_leaves_nothing(
    run: Run, env: Path, small_study: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.author import create as author_mod

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(author_mod, "write_iso", interrupt)
    code, text = run(*create_answers(small_study, env / "disc.iso", centre))
    assert code == 130
    assert "Cancelled: nothing was written." in text
    assert list(env.iterdir()) == []  # no ISO, no half-made work folder


def test_answers_running_out_cancels(run: Run, env: Path, small_study: Path) -> None:
    code, text = run(1, small_study)
    assert code == 130
    assert "Cancelled" in text


def test_trust_add_list_remove_then_check(
    run: Run, env: Path, small_study: Path, centre: Centre
) -> None:
    out = env / "disc.iso"
    fp = signing.fingerprint(centre.identity.certificate)
    code, text = run(*create_answers(small_study, out, centre), "n", "q")
    assert code == 0
    # Not trusted yet: the check says "not verifiable" (exit 2) and what to do.
    # (trust the sender? no; save the report? no)
    code, text = run(2, out, "n", "n", "q")
    assert code == 2, text
    assert "No trusted senders are set up yet" in text
    # Trust: refuse when the fingerprint was not confirmed, then accept.
    code, text = run(5, 2, centre.cert_path, "n", 2, centre.cert_path, "y", 3, "b", "q")
    assert code == 0, text
    assert fp in text
    assert "Not trusted. Nothing was changed." in text
    assert "Trusted: CN=Test Imaging Centre" in text
    assert f"discmaker trust add {centre.cert_path}" in text
    assert [s.fingerprint for s in TrustStore.default().list()] == [fp]
    # Now the received-disc check verifies (save the report? no; import? no).
    code, text = run(2, out, "n", "n", "q")
    assert code == 0, text
    assert "VERIFIED" in text
    assert f"discmaker check {out}" in text
    # Remove.
    code, text = run(5, 4, 1, "y", 3, "b", "q")
    assert code == 0, text
    assert f"discmaker trust remove {fp}" in text
    assert "No trusted senders yet" in text
    assert TrustStore.default().list() == []


def test_restore_via_menu(run: Run, env: Path, small_study: Path, centre: Centre) -> None:
    out = env / "disc.iso"
    run(*create_answers(small_study, out, centre), "n", "q")
    TrustStore.default().add(centre.cert_path)
    restored = env / "RESTORED"
    code, text = run(3, out, restored, "q")
    assert code == 0, text
    assert len([p for p in restored.rglob("*") if p.is_file()]) == 5
    assert f"discmaker restore {out} --out {restored}" in text


def test_keygen_via_menu_with_typed_passphrase(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(signing.PASSPHRASE_ENV)
    keys = env / "keys"
    first, other = "correct horse one", "correct horse two"
    code, text = run(5, 1, "City Imaging", keys, first, other, first, first, "b", "q")
    assert code == 0, text
    assert "The two passphrases differ" in text
    assert first not in text  # typed passphrases are not echoed
    signing.load_private_key(keys / "key.pem", passphrase=first.encode())
    assert "discmaker keygen --org 'City Imaging' --out" in text
    assert (
        json.loads((guide_session.config_dir() / "guide.json").read_text())["org"] == "City Imaging"
    )


def test_problem_is_explained_and_guide_goes_on(run: Run, env: Path, tmp_path: Path) -> None:
    # A certificate that cannot be used, as a task's problem: explained, the menu comes back.
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    code, text = run(5, 2, bad, "q")
    assert code == 130  # the answers ran out while the certificate was asked again
    assert "Choose the sender's certificate file again" in " ".join(text.split())


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso is not installed")
def test_burn_to_stdio_drive_via_guide(
    run: Run,
    env: Path,
    small_study: Path,
    centre: Centre,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    target = tmp_path / "burned.iso"
    drive = f"stdio:{target}"
    monkeypatch.setattr(burn_mod, "list_drives", lambda: [Drive(drive, "Test", "Pseudo")])
    code, text = run(
        1, small_study, "b", "cd", "BURNDISC", "y", centre.key_path, centre.cert_path, "y", "q"
    )
    assert code == 0, text
    assert target.is_file()
    assert "The disc is burned and verified." in text
    assert f"xorriso -as cdrecord -v dev={drive} blank=as_needed disc.iso" in text
    assert list(env.iterdir()) == []  # the intermediate ISO was temporary
    assert not any((env.parent / "cache").rglob("*.iso"))


def test_cli_without_arguments_opens_the_guide(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("q\n"))
    console = Console(record=True, width=120, file=io.StringIO())
    assert main([], console=console) == 0
    assert "What would you like to do?" in console.export_text()


def test_damaged_settings_are_ignored(env: Path) -> None:
    guide_session.config_dir().mkdir(parents=True)
    (guide_session.config_dir() / "guide.json").write_text("{not json")
    assert guide_session.load_settings() == {}
    assert guide_session.save_settings({"key": "/k"})
    assert guide_session.load_settings() == {"key": "/k"}


def test_preview_reads_headers(small_study: Path) -> None:
    found = preview([small_study])
    assert found.patient.id == PATIENT_ID
    assert found.patient.display_name == PATIENT_NAME
    assert found.patient.birth_date == "19700101"
    assert found.images == 5
    assert found.series_count == 2
    [study] = found.studies
    assert [(s.modality, s.images) for s in study.series] == [("CT", 3), ("MR", 2)]
    assert found.total_bytes == sum(p.stat().st_size for p in small_study.rglob("*.dcm")) + sum(
        p.stat().st_size for p in (small_study / "mr").iterdir()
    )


def test_name_and_date_formatting() -> None:
    assert format_person_name("DOE^JANE^M") == "DOE, JANE M"
    assert format_person_name("DOE") == "DOE"
    assert format_person_name("") == ""
    assert format_date("19700312") == "12 Mar 1970 (1970-03-12)"
    assert format_date("") == "(not recorded)"
    assert format_date("1970") == "1970"


def test_suggest_medium() -> None:
    assert guide_tasks.suggest_medium(100_000_000).name == "CD"
    assert guide_tasks.suggest_medium(1_000_000_000).name == "DVD"
    assert guide_tasks.suggest_medium(10**10).name == "BD"
    assert guide_tasks.suggest_medium(10**11).name == "USB"


# -- a real terminal -------------------------------------------------------------------------


def spawn_guide(pexpect: Any, *, trust: Path, config: Path) -> Any:
    """``python -m discmaker`` in a pseudo-terminal, with a private trust store and settings."""
    child_env = dict(os.environ)
    child_env.update(
        DISCMAKER_TRUST_DIR=str(trust),
        DISCMAKER_CONFIG_DIR=str(config),
        DISCMAKER_PASSPHRASE=PASSPHRASE.decode(),
        PATH="/nonexistent",  # no xorriso: no burners offered, whatever this machine has
        TERM="xterm",
        NO_COLOR="1",
    )
    return pexpect.spawn(
        sys.executable,
        ["-m", "discmaker"],
        env=child_env,
        cwd=str(Path(__file__).resolve().parents[1]),
        encoding="utf-8",
        dimensions=(50, 200),
        timeout=20,
        # pytest-xdist workers ignore SIGINT and a child inherits that: restore the default,
        # so Ctrl-C in the terminal reaches the guide as it does for a person.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_guide_in_a_real_terminal(tmp_path: Path, small_study: Path, centre: Centre) -> None:
    pexpect = pytest.importorskip("pexpect", reason="pexpect is needed to drive a terminal")
    trust = tmp_path / "trust"
    TrustStore(trust).add(centre.cert_path)
    out = tmp_path / "pty.iso"
    child = spawn_guide(pexpect, trust=trust, config=tmp_path / "config")
    try:
        steps: list[tuple[str, object]] = [
            ("What would you like to do", 1),
            ("Folder with the exported study", small_study),
            ("Where should the disc go", "i"),
            ("Disc type", "cd"),
            ("Disc label", "PTYDISC"),
            ("Save the disc image as", out),
            ("already have a signing key", "y"),
            ("Signing key", centre.key_path),
            (r"Certificate \(cert\.pem\)", centre.cert_path),
            ("match the request form", "y"),
            ("Check the new disc now", "n"),
            ("discmaker author", None),
            ("What would you like to do", 2),
            ("ISO file or folder to check", out),
            ("VERIFIED", None),
            ("Save a report", "n"),
            ("Import these images", "n"),
            ("What would you like to do", "q"),
        ]
        for expected, answer in steps:
            child.expect(expected)
            if expected.startswith(("What would", "Where")):
                child.expect("Choose")
            if answer is not None:
                child.sendline(str(answer))
        child.expect("Goodbye")
        child.expect(pexpect.EOF)
        transcript = child.before or ""
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, transcript
    assert out.is_file()


def test_first_disc_makes_the_signing_key_on_the_way(
    run: Run, env: Path, small_study: Path
) -> None:
    keys = env / "keys"
    out = env / "disc.iso"
    # "already have a key?" no -> organisation, folder; then take the new key and certificate
    answers = [1, small_study, "i", "cd", "FIRST", out, "n", "New Centre", keys, "", "", "y"]
    code, text = run(*answers, "y", "q")
    assert code == 0, text
    assert out.is_file()
    assert "Signing key created" in text
    assert "VERIFIED" in text
    assert f"--key {keys / 'key.pem'}" in text


def test_ctrl_c_in_a_real_terminal(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect", reason="pexpect is needed to drive a terminal")
    child = spawn_guide(pexpect, trust=tmp_path / "trust", config=tmp_path / "config")
    try:
        child.expect("Choose")
        child.sendline("1")
        child.expect("Folder with the exported study")
        child.sendintr()  # Ctrl-C, delivered by the terminal as SIGINT
        child.expect("Cancelled: nothing was written")
        child.expect("Back to the main menu")  # the task stops, the guide does not
        child.expect("Choose")
        child.sendintr()  # Ctrl-C again, at the menu: leave
        child.expect("Cancelled at the main menu")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130


# -- found in review -----------------------------------------------------------------------------


def test_study_that_changes_after_the_patient_was_confirmed_is_refused(
    run: Run, env: Path, tmp_path: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PACS export still landing in the folder must not put another study on the disc."""
    import discmaker.ui.guide_tasks as tasks

    study = tmp_path / "landing"
    write_sample_study(study, ct_slices=2, ct_size=64, mr_slices=0)
    real_confirm = tasks._confirm_patient

    def confirm_then_swap(session: object, found: object) -> bool:
        answer = real_confirm(session, found)  # type: ignore[arg-type]
        # More images of the same patient land after the confirmation.
        write_sample_study(study / "late", ct_slices=1, ct_size=64, mr_slices=0, seed="late")
        return answer

    monkeypatch.setattr(tasks, "_confirm_patient", confirm_then_swap)
    out = env / "disc.iso"
    _, text = run(*create_answers(study, out, centre), "q")
    assert "changed after the patient was confirmed" in " ".join(text.split())
    assert not out.exists()


def test_interrupt_while_reading_back_a_burned_disc_says_it_is_unchecked(
    run: Run,
    env: Path,
    small_study: Path,
    centre: Centre,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    drive = f"stdio:{tmp_path / 'burned.iso'}"
    monkeypatch.setattr(burn_mod, "list_drives", lambda: [Drive(drive, "Test", "Pseudo")])

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(burned_mod, "verify_burn", interrupted)
    code, text = run(
        1, small_study, "b", "cd", "BURNDISC", "y", centre.key_path, centre.cert_path, "y", "q"
    )
    assert code == 130
    assert "burned but NOT checked" in " ".join(text.split())
    assert "nothing was written" not in text.lower()


def test_check_remembers_the_folder_not_the_file_name(
    run: Run, env: Path, disc_iso: Path, centre: Centre
) -> None:
    named = disc_iso.parent / "SMITH_JOHN.iso"
    named.write_bytes(disc_iso.read_bytes())
    run(2, named, "n", "n", "q")
    settings = guide_session.load_settings()
    assert "SMITH_JOHN" not in json.dumps(settings)


@pytest.mark.parametrize("answer", ["n", "y"])
def test_guided_restore_asks_before_an_incomplete_series_goes_to_pacs(
    run: Run, env: Path, small_study: Path, centre: Centre, answer: str
) -> None:
    """One CT slice altered: the guide names it and asks; "no" writes only the complete
    series, "yes" writes the rest of CT too and says the folder has an incomplete series."""
    folder = env / "DISC"
    author_disc(centre, [small_study], folder, format="folder", label="GUIDETEST")
    victim = folder / "PT000000" / "ST000000" / "SE000000" / "IM000001"
    data = victim.read_bytes()
    victim.chmod(0o644)
    victim.write_bytes(data.replace(b"DM-000001", b"DM-999999", 1))
    TrustStore.default().add(centre.cert_path)
    restored = env / "RESTORED"
    code, text = run(3, folder, restored, answer, "q")
    assert code == 1, text
    assert "SE000000/IM000001" in text and "incomplete series anyway?" in text
    ct = {p.name for p in (restored / "PT000000" / "ST000000" / "SE000000").glob("IM*")}
    if answer == "n":
        assert ct == set()
        assert "held back too" in text
    else:
        assert ct == {"IM000000", "IM000002"}
        assert "incomplete" in text and "--allow-partial" in text


def test_check_trust_report_import_in_a_real_terminal(
    tmp_path: Path, small_study: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiving clinic's whole visit: check an unknown sender's disc, trust them after
    the telephone confirmation, save the report, import into a PACS (dcmtk's storescp)."""
    pexpect = pytest.importorskip("pexpect", reason="pexpect is needed to drive a terminal")
    from tests.pacs_fixtures import run_storescp

    disc = tmp_path / "DISC"
    author_disc(centre, [small_study], disc, format="folder", label="PTYE2E")
    trust, report, log = tmp_path / "trust", tmp_path / "visit.html", tmp_path / "import.jsonl"
    monkeypatch.setenv("DISCMAKER_IMPORT_LOG", str(log))
    monkeypatch.setenv("DISCMAKER_SITE_TRUST_DIR", str(tmp_path / "site"))
    with run_storescp(tmp_path / "received") as scp:
        child = spawn_guide(pexpect, trust=trust, config=tmp_path / "config")
        try:
            steps: list[tuple[str, object]] = [
                ("Choose", 2),
                ("ISO file or folder to check", disc),
                ("NOT VERIFIABLE", None),
                (r"Trust this sender\?", "Y"),  # any case
                ("Did the sender read out exactly this fingerprint", "yes"),
                ("VERIFIED", None),  # checked again, now against the trusted sender
                ("Save a report of this check", "y"),
                ("Save the report as", report),
                ("Import these images into PACS now", "y"),
                ("AE title of the PACS", scp.aet),
                ("Host name or IP address of the PACS", "127.0.0.1"),
                ("DICOM port of the PACS", scp.port),
                ("AE title of this computer", ""),
                ("answered", None),  # the echo, before any question about the patient
                ("Local Patient ID", "LOC123"),
                ("Local patient name", ""),
                ("Local accession number", ""),
                ("Stored in PACS", None),
                ("Choose", "q"),
            ]
            for expected, answer in steps:
                child.expect(expected, timeout=60)
                if answer is not None:
                    child.sendline(str(answer))
            child.expect("Goodbye")
            child.expect(pexpect.EOF)
            transcript = child.before or ""
        finally:
            child.close(force=True)
        received = scp.received()
    assert child.exitstatus == 0, transcript
    assert [s.fingerprint for s in TrustStore(trust).list()] == [
        signing.fingerprint(signing.load_certificate(centre.cert_path))
    ]
    assert "PTYE2E" in report.read_text(encoding="utf-8")
    from pydicom import dcmread

    sent = [dcmread(p) for p in received]
    assert len(sent) == 5 and {ds.PatientID for ds in sent} == {"LOC123"}
    assert len({ds.SOPInstanceUID for ds in sent}) == 5
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[-1]["event"] == "run" and lines[-1]["outcome"] == "complete"


@pytest.mark.parametrize("quit_answer", ["Q", "q", " Q "])
def test_answers_are_read_in_any_case(run: Run, env: Path, quit_answer: str) -> None:
    code, text = run(quit_answer)
    assert code == 0 and "Goodbye" in text


def test_a_new_key_needs_a_passphrase_of_twelve_characters(
    run: Run, env: Path, small_study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "short")
    keys = env / "keys"
    out = env / "disc.iso"
    strong = "correct horse battery"
    answers = [1, small_study, "i", "cd", "FIRST", out, "n", "New Centre", keys]
    # too short, then a long one that is mistyped the second time, then a good pair
    typed = ["x", strong, strong + "!", strong, strong]
    # then the new key and certificate; the short variable does not open it: typed once
    code, text = run(*answers, *typed, "", "", strong, "y", "n", "q")
    flat = " ".join(text.split())
    assert "shorter than 12 characters" in flat
    assert "That passphrase has 1 characters" in flat
    assert "The two passphrases differ" in flat
    assert code == 0, text
    assert signing.load_private_key(keys / "key.pem", passphrase=strong.encode()) is not None
    assert "Back up the key" in text


def test_a_folder_without_dicom_asks_only_for_the_folder_again(
    run: Run, env: Path, small_study: Path, centre: Centre, tmp_path: Path
) -> None:
    empty = tmp_path / "no-dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    out = env / "again.iso"
    key = ["y", centre.key_path, centre.cert_path]
    code, text = run(1, empty, small_study, "i", "cd", "AGAIN", out, *key, "y", "n", "q")
    assert code == 0, text
    assert out.is_file()
    assert text.count("What would you like to do") == 2  # not thrown back to the menu


def _study_with_unusable(root: Path, kind: str) -> Path:
    """The sample study plus one file that cannot go on a disc: an SR without Patient ID
    (found when the headers are read) or a CT slice whose pixel data is cut (found only
    when the disc is made)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    write_sample_study(root, ct_slices=2, ct_size=64, mr_slices=0)
    if kind == "header":
        bad = dcmread(get_testdata_file("test-SR.dcm"))
        del bad.PatientID
    else:
        bad = dcmread(sorted(p for p in root.rglob("*") if p.is_file())[0])
        bad.SOPInstanceUID = generate_uid()
        bad.file_meta.MediaStorageSOPInstanceUID = bad.SOPInstanceUID
        bad.PixelData = bad.PixelData[: len(bad.PixelData) // 2]
    bad.save_as(root / "bad.dcm")
    return root


@pytest.mark.parametrize("kind", ["header", "pixels"])
def test_a_file_that_cannot_go_on_a_disc_can_be_left_out(
    run: Run, env: Path, centre: Centre, tmp_path: Path, kind: str
) -> None:
    study = _study_with_unusable(tmp_path / "export", kind)
    out = env / "left.iso"
    key = ["y", centre.key_path, centre.cert_path]
    if kind == "header":  # asked while the headers are read, before anything else
        answers = [1, study, "y", "i", "cd", "LEFTOUT", out, *key, "y", "n", "q"]
    else:  # asked when the disc is made, then made again without it
        answers = [1, study, "i", "cd", "LEFTOUT", out, *key, "y", "y", "n", "q"]
    code, text = run(*answers)
    assert code == 0, text
    flat = " ".join(text.split())
    assert "Leave such files out and go on?" in flat
    assert "1 file could not go on the disc" in flat and "bad.dcm" in flat
    assert "--skip-unusable" in flat  # the equivalent command says so too
    assert out.is_file()
    from discmaker.check.verify import check_disc

    report = check_disc(out, trust=TrustStore.from_paths([centre.cert_path]), workers=1)
    assert report.exit_code == 0 and len(report.images) == 2


def test_refusing_to_leave_a_file_out_asks_for_the_folder_again(
    run: Run, env: Path, small_study: Path, centre: Centre, tmp_path: Path
) -> None:
    study = _study_with_unusable(tmp_path / "export", "header")
    out = env / "fixed.iso"
    key = ["y", centre.key_path, centre.cert_path]
    code, text = run(1, study, "n", small_study, "i", "cd", "FIXED", out, *key, "y", "n", "q")
    assert code == 0, text
    assert "Choose the folder again once the file is fixed" in text
    assert out.is_file() and "--skip-unusable" not in text


@pytest.mark.parametrize("xorriso", [None, "/usr/bin/xorriso"])
def test_no_burner_says_which_of_the_two_it_is(
    run: Run,
    env: Path,
    small_study: Path,
    centre: Centre,
    monkeypatch: pytest.MonkeyPatch,
    xorriso: str | None,
) -> None:
    monkeypatch.setattr(burn_mod, "find_xorriso", lambda: xorriso)  # no drives: see env
    code, text = run(*create_answers(small_study, env / "d.iso", centre, confirm="n"), "q")
    assert code == guide_session.EXIT_STOPPED
    flat = " ".join(text.split())
    if xorriso is None:
        assert "xorriso, the burning program, is not installed" in flat
        assert "No disc burner found" not in flat
    else:
        assert "No disc burner found on this computer" in flat
        assert "not installed" not in flat


def test_a_loose_image_checked_in_the_guide_is_verified_by_its_watermark(
    run: Run, env: Path, disc_folder: Path, centre: Centre
) -> None:
    """One image sent on its own: the guide says it verified by its watermark, that loose
    files cannot show a missing image, and offers no import."""
    TrustStore.default().add(centre.cert_path)
    image = env / "forwarded.dcm"
    image.write_bytes((disc_folder / "PT000000/ST000000/SE000000/IM000001").read_bytes())
    code, text = run(2, image, "n", "q")  # save the report? no
    assert code == 2, text  # verified image by image: never the whole study
    assert "IMAGES VERIFIED" in text
    assert "Each image verified by its watermark" in text
    assert "missing" in text
    assert "Import these images into PACS now?" not in text
