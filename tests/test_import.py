"""`discmaker import`: verified originals to a real PACS over loopback.

Receivers: dcmtk's storescp, Orthanc (with its REST API to look at what it stored), and a
pynetdicom SCP whose answers the test scripts (failures, retries, a refused association).
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from rich.console import Console

import discmaker
from discmaker.pacs.destination import IMPORT_INCOMPLETE, IMPORT_UNREACHABLE, Destination
from discmaker.pacs.log import IMPORT_LOG_ENV
from discmaker.pacs.reconcile import Reconciliation
from discmaker.pacs.store import InstanceStatus, import_disc
from discmaker.ui.cli import main
from tests.conftest import Centre
from tests.pacs_fixtures import (
    ScriptedScp,
    free_port,
    run_orthanc,
    run_scripted_scp,
    run_storescp,
)

pytestmark = pytest.mark.external

IMAGES = 10  # the conftest study: 6 CT + 4 MR slices


@pytest.fixture(autouse=True)
def _private_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the user's real import log or reads their trust store."""
    monkeypatch.setenv(IMPORT_LOG_ENV, str(tmp_path / "default-log.jsonl"))
    monkeypatch.setenv("DISCMAKER_TRUST_DIR", str(tmp_path / "empty-trust"))


@pytest.fixture(scope="module")
def authored_pixels(study_dir: Path) -> dict[str, bytes]:
    """SOP Instance UID -> Pixel Data of the study the disc was authored from."""
    out: dict[str, bytes] = {}
    for path in sorted(study_dir.rglob("*")):
        if path.is_file():
            ds = dcmread(path)
            out[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    return out


def _cli(args: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, highlight=False, emoji=False)
    code = main(args, console=console)
    return code, buffer.getvalue()


def _import_args(disc: Path, to: str, centre: Centre, log: Path, *extra: str) -> list[str]:
    return [
        "import",
        str(disc),
        "--to",
        to,
        "--trust",
        str(centre.cert_path),
        "--log",
        str(log),
        *extra,
    ]


def _log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_original(ds: Dataset, authored: dict[str, bytes]) -> None:
    uid = str(ds.SOPInstanceUID)
    assert bytes(ds.PixelData) == authored[uid], uid  # the watermark is gone, bit for bit
    assert not any(elem.tag.group == 0x0009 for elem in ds), "discmaker's private block sent"


def _trust(centre: Centre) -> discmaker.TrustStore:
    return discmaker.TrustStore.from_paths([centre.cert_path])


# -- (1) storescp, and (4) a re-run ------------------------------------------------------------


def test_storescp_receives_the_verified_originals_once(
    tmp_path: Path, disc_folder: Path, centre: Centre, authored_pixels: dict[str, bytes]
) -> None:
    log = tmp_path / "import.jsonl"
    with run_storescp(tmp_path / "received") as scp:
        args = ["import", str(disc_folder), "--to", scp.to, "--trust", str(centre.cert_path)]
        code, out = _cli([*args, "--log", str(log), "--workers", "1"])
        assert code == 0, out
        assert f"{IMAGES} images sent to {scp.to}" in out
        received = scp.received()
        assert len(received) == IMAGES
        for path in received:
            _assert_original(dcmread(path), authored_pixels)
        # Exactly what `restore` writes (storescp writes its own file meta).
        restored = discmaker.restore_disc(disc_folder, trust=_trust(centre), out=tmp_path / "r")
        by_uid = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in restored.restored}
        for path in received:
            ds = dcmread(path)
            assert ds == by_uid[str(ds.SOPInstanceUID)]

        lines = _log_lines(log)
        stored = [line for line in lines if line["event"] == "instance"]
        assert {line["sop_instance_uid"] for line in stored} == set(by_uid)
        assert {line["status"] for line in stored} == {"stored"}
        run = lines[-1]
        assert run["event"] == "run" and run["outcome"] == "complete"
        report = restored.report
        assert report.signer is not None
        for line in lines:
            assert line["destination"] == scp.to and line["calling_aet"] == "DISCMAKER"
            assert line["fileset_id"] == "TESTDISC" and line["verdict"] == "verified"
            assert line["signer_fingerprint"] == report.signer.fingerprint
            assert line["user"] and line["when"].endswith("Z") and line["source"]

        # (4) the same import again: the log says everything is there; nothing is sent.
        code, out = _cli([*args, "--log", str(log)])
        assert code == 0, out
        assert "Nothing new to send" in out
        assert len(scp.received()) == IMAGES
        again = _log_lines(log)[len(lines) :]
        assert [line["event"] for line in again] == ["run"]
        assert again[0]["counts"]["already-stored"] == IMAGES


def test_reconciliation_keeps_the_received_values(
    tmp_path: Path, disc_folder: Path, centre: Centre, authored_pixels: dict[str, bytes]
) -> None:
    with run_storescp(tmp_path / "received") as scp:
        result = import_disc(
            disc_folder,
            scp.to,
            trust=_trust(centre),
            log_path=tmp_path / "log.jsonl",
            reconcile=Reconciliation(
                patient_id="LOCAL-42", patient_name="MÜLLER^JANE", accession_number="ACC9"
            ),
        )
        assert result.exit_code == 0 and len(result.sent) == IMAGES
        for path in scp.received():
            ds = dcmread(path)
            _assert_original(ds, authored_pixels)
            assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber) == (
                "LOCAL-42",
                "MÜLLER^JANE",
                "ACC9",
            )
            item = ds.OriginalAttributesSequence[-1]
            assert item.ReasonForTheAttributeModification == "COERCE"
            assert item.ModifyingSystem.startswith("discmaker")
            before = item.ModifiedAttributesSequence[0]
            assert before.PatientID == "DM-000001"
            assert "PatientName" in before and "AccessionNumber" in before
    assert "LOCAL-42" not in (tmp_path / "log.jsonl").read_text()  # no patient data logged


# -- (2) Orthanc ---------------------------------------------------------------------------------


def test_orthanc_stores_the_originals_and_is_asked_before_a_resend(
    tmp_path: Path, disc_iso: Path, centre: Centre, authored_pixels: dict[str, bytes]
) -> None:
    with run_orthanc(tmp_path / "orthanc") as orthanc:
        result = import_disc(disc_iso, orthanc.to, trust=_trust(centre), log_path=tmp_path / "a")
        assert result.exit_code == 0
        assert len(result.sent) == IMAGES and not result.failed
        ids = orthanc.get("/instances")
        assert len(ids) == IMAGES
        assert orthanc.get("/statistics")["CountInstances"] == IMAGES
        uids = set()
        for instance in ids:
            ds = dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{instance}/file")))
            _assert_original(ds, authored_pixels)
            uids.add(str(ds.SOPInstanceUID))
        assert uids == set(authored_pixels)

        # Another computer (another, empty log): Orthanc answers C-FIND, so nothing is resent.
        again = import_disc(disc_iso, orthanc.to, trust=_trust(centre), log_path=tmp_path / "b")
        assert again.exit_code == 0 and not again.sent
        assert {i.status for i in again.instances} == {InstanceStatus.IN_PACS}
        assert orthanc.get("/statistics")["CountInstances"] == IMAGES


# -- (3) a tampered disc, or one nobody vouches for: nothing sent -------------------------------


@pytest.fixture
def tampered_disc(disc_copy: Callable[[], Path]) -> Path:
    disc = disc_copy()
    image = next(p for p in sorted(disc.rglob("IM*")) if p.is_file())
    ds = dcmread(image)
    ds.PatientName = "SOMEONE^ELSE"
    ds.save_as(image)
    return disc


def test_a_tampered_disc_sends_nothing(tmp_path: Path, tampered_disc: Path, centre: Centre) -> None:
    log = tmp_path / "log.jsonl"
    with run_storescp(tmp_path / "received") as scp:
        code, out = _cli(_import_args(tampered_disc, scp.to, centre, log))
        assert code == 1, out
        assert "Nothing was sent" in out and "Do not import it" in out
        assert scp.received() == []
    lines = _log_lines(log)
    assert [(line["event"], line["outcome"]) for line in lines] == [("run", "not-verified")]
    assert lines[0]["verdict"] == "tampered"


def test_an_untrusted_disc_sends_nothing(tmp_path: Path, disc_folder: Path) -> None:
    with run_storescp(tmp_path / "received") as scp:
        code, out = _cli(["import", str(disc_folder), "--to", scp.to, "--log", str(tmp_path / "l")])
        assert code == 2, out
        assert "trust add" in out
        assert scp.received() == []


# -- (5) a PACS that cannot be reached, or refuses us --------------------------------------------


def test_an_unreachable_pacs_is_exit_69_with_advice(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    log = tmp_path / "log.jsonl"
    to = f"PACS@127.0.0.1:{free_port()}"  # nothing listens there
    code, out = _cli(_import_args(disc_folder, to, centre, log))
    assert code == IMPORT_UNREACHABLE == 69, out
    assert "No DICOM answer from 127.0.0.1" in out and "nothing listens on port" in out
    lines = _log_lines(log)
    assert [line.get("outcome") for line in lines] == ["unreachable"]


def test_a_refused_association_names_the_ae_title(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    with run_scripted_scp(lambda ds, n: 0x0000, aet="RIGHT", check_called_aet=True) as scp:
        wrong = f"WRONG@127.0.0.1:{scp.port}"
        with pytest.raises(discmaker.DestinationError, match="not called 'WRONG'") as caught:
            import_disc(disc_folder, wrong, trust=_trust(centre), log_path=tmp_path / "log")
        assert caught.value.exit_code == 69
        assert scp.received == []


# -- (6) a dry run ---------------------------------------------------------------------------


def test_dry_run_sends_and_logs_nothing(tmp_path: Path, disc_folder: Path, centre: Centre) -> None:
    log = tmp_path / "log.jsonl"
    with run_storescp(tmp_path / "received") as scp:
        code, out = _cli(_import_args(disc_folder, scp.to, centre, log, "--dry-run"))
        assert code == 0, out
        assert f"{IMAGES} images would be sent" in out and "Nothing was sent" in out
        assert scp.received() == []
    assert not log.exists()


# -- failures and retries ----------------------------------------------------------------------


def test_failed_instances_are_retried_then_reported_and_sent_by_a_rerun(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    log = tmp_path / "log.jsonl"
    uids: list[str] = []

    def flaky(ds: Dataset, attempt: int) -> int:
        uid = str(ds.SOPInstanceUID)
        if uid not in uids:
            uids.append(uid)
        if uid == uids[0]:
            return 0xA700  # out of resources, every time
        if uid == uids[1] and attempt == 1:
            return 0xA700  # once; the retry stores it
        return 0x0000

    with run_scripted_scp(flaky) as scp:
        result = import_disc(
            disc_folder, scp.to, trust=_trust(centre), log_path=log, retries=2, retry_delay=0
        )
        assert result.exit_code == IMPORT_INCOMPLETE == 75
        [failed] = result.failed
        assert failed.sop_instance_uid == uids[0] and failed.attempts == 3
        assert failed.dimse_status == 0xA700 and "out of resources" in failed.message
        assert len(result.sent) == IMAGES - 1
        assert scp.received.count(uids[0]) == 3 and scp.received.count(uids[1]) == 2
        run = _log_lines(log)[-1]
        assert run["outcome"] == "incomplete" and run["failed_instances"] == [uids[0]]


def test_rerun_after_failure_sends_only_the_missing_instance(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    log = tmp_path / "log.jsonl"
    first: list[str] = []  # the first instance the PACS sees; it "cannot understand" it

    def refuse_first(ds: Dataset, attempt: int) -> int:
        uid = str(ds.SOPInstanceUID)
        if not first:
            first.append(uid)
        return 0xC000 if uid == first[0] else 0x0000

    with run_scripted_scp(refuse_first) as scp:
        result = import_disc(
            disc_folder, scp.to, trust=_trust(centre), log_path=log, retries=0, retry_delay=0
        )
        assert result.exit_code == 75 and len(result.failed) == 1
        assert len(scp.received) == IMAGES
        first.clear()
        first.append("nothing refused now")
        again = import_disc(disc_folder, scp.to, trust=_trust(centre), log_path=log)
        assert again.exit_code == 0
        assert [i.sop_instance_uid for i in again.sent] == [result.failed[0].sop_instance_uid]
        assert len(scp.received) == IMAGES + 1


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PACS@pacs.example:104", ("PACS", "pacs.example", 104)),
        ("MY AE@10.0.0.5:11112", ("MY AE", "10.0.0.5", 11112)),
        ("PACS@[fd00::5]:104", ("PACS", "fd00::5", 104)),
    ],
)
def test_destination_parses(text: str, expected: tuple[str, str, int]) -> None:
    d = Destination.parse(text)
    assert (d.aet, d.host, d.port) == expected
    assert Destination.parse(str(d)) == d


@pytest.mark.parametrize(
    "text", ["pacs.example:104", "PACS@pacs.example", "PACS@:104", "PACS@h:0", "A\\B@h:104", "@h:1"]
)
def test_bad_destinations_are_usage_errors(text: str) -> None:
    with pytest.raises(discmaker.UsageError):
        Destination.parse(text)


def test_bad_calling_aet_is_a_usage_error(tmp_path: Path, disc_folder: Path) -> None:
    log = str(tmp_path / "l")
    code, out = _cli(
        ["import", str(disc_folder), "--to", "P@127.0.0.1:104", "--aet", "X" * 17, "--log", log]
    )
    assert code == 64 and "at most 16" in out


def test_an_unwritable_log_stops_before_anything(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(discmaker.OutputError, match="import log"):
        import_disc(
            disc_folder,
            f"P@127.0.0.1:{free_port()}",
            trust=_trust(centre),
            log_path=blocker / "log.jsonl",
        )


@pytest.fixture
def _no_leftovers(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    work.mkdir()
    yield work
    assert list(work.iterdir()) == []  # the restored originals never outlive the import
    shutil.rmtree(work)


def test_temporary_originals_are_removed(
    tmp_path: Path, disc_folder: Path, centre: Centre, _no_leftovers: Path
) -> None:
    with pytest.raises(discmaker.DestinationError):
        import_disc(
            disc_folder,
            f"P@127.0.0.1:{free_port()}",
            trust=_trust(centre),
            log_path=tmp_path / "log",
            work_dir=_no_leftovers,
        )


def test_a_dropped_association_is_reopened_for_the_retry(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    scps: list[ScriptedScp] = []
    dropped: list[str] = []

    def drop_third(ds: Dataset, attempt: int) -> int:
        scp = scps[0]
        if len(scp.received) == 3 and not dropped:
            dropped.append(str(ds.SOPInstanceUID))
            threading.Thread(target=scp.association.abort).start()  # the PACS goes away
            time.sleep(1.0)  # ... before it answers
        return 0x0000

    log = tmp_path / "log.jsonl"
    with run_scripted_scp(drop_third) as scp:
        scps.append(scp)
        result = import_disc(
            disc_folder, scp.to, trust=_trust(centre), log_path=log, retry_delay=0, timeout=5
        )
    assert result.exit_code == 0, [i.message for i in result.failed]
    assert len(result.sent) == IMAGES
    # The dropped one, and any sent while the abort was on its way, needed a second attempt.
    retried = {i.sop_instance_uid: i.attempts for i in result.instances if i.attempts > 1}
    assert retried.get(dropped[0]) == 2 and set(retried.values()) == {2}
    lines = [line for line in _log_lines(log) if line.get("sop_instance_uid") == dropped[0]]
    assert [(line["status"], line["dimse_status"]) for line in lines] == [
        ("failed", None),  # no answer: the association was aborted
        ("stored", 0),
    ]
