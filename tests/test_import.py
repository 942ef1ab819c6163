"""`discmaker import`: verified originals to a real PACS over loopback.

Receivers: dcmtk's storescp, Orthanc (with its REST API to look at what it stored), and a
pynetdicom SCP whose answers the test scripts (failures, retries, a refused association).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
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
    make_tls_files,
    run_orthanc,
    run_scripted_scp,
    run_storescp,
    server_tls_context,
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


def test_loose_files_verified_image_by_image_are_not_imported(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    """Check says images-verified (exit 0) for loose files; import sends only whole discs
    that verify, so it sends nothing and exits 2, never 0."""
    loose = tmp_path / "loose"
    loose.mkdir()
    for image in sorted((disc_folder / "PT000000/ST000000/SE000000").iterdir())[:2]:
        shutil.copyfile(image, loose / image.name)
    with run_storescp(tmp_path / "received") as scp:
        code, out = _cli(_import_args(loose, scp.to, centre, tmp_path / "l"))
        assert code == 2, out
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
    # the advice names the address as given, in words the guided workflow's user knows too
    assert f"in the PACS address ({to})" in " ".join(out.split()) and "--to" not in out
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


# -- (6) an association aborted half-way, then the same import again ---------------------------


def test_orthanc_gone_half_way_then_a_rerun_leaves_no_gap_and_no_duplicate(
    tmp_path: Path, disc_iso: Path, centre: Centre, authored_pixels: dict[str, bytes]
) -> None:
    root, log = tmp_path / "orthanc", tmp_path / "log.jsonl"
    with run_orthanc(root) as orthanc:
        assert orthanc.process is not None

        def kill_after_four(stage: str, done: int, total: int) -> None:
            if stage == "send" and done == 4 and orthanc.process is not None:
                orthanc.process.kill()  # the PACS dies in the middle of the association
                orthanc.process.wait()

        first = import_disc(
            disc_iso,
            orthanc.to,
            trust=_trust(centre),
            log_path=log,
            progress=kill_after_four,
            retry_delay=0,
            timeout=5,
        )
        ports = (orthanc.port, orthanc.http_port)
    assert first.exit_code == IMPORT_INCOMPLETE
    assert len(first.sent) == 4 and len(first.failed) == IMAGES - 4
    assert all("stopped answering" in i.message for i in first.failed)

    with run_orthanc(root, ports=ports) as orthanc:  # back up, over the same storage
        again = import_disc(disc_iso, orthanc.to, trust=_trust(centre), log_path=log)
        assert again.exit_code == 0, [i.message for i in again.failed]
        sent_before = {i.sop_instance_uid for i in first.sent}
        sent_now = {i.sop_instance_uid for i in again.sent}
        assert not sent_before & sent_now  # nothing stored twice
        assert {i.sop_instance_uid for i in again.skipped} == sent_before
        assert sent_before | sent_now == set(authored_pixels)  # and nothing missing
        assert orthanc.get("/statistics")["CountInstances"] == IMAGES
        for instance in orthanc.get("/instances"):
            ds = dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{instance}/file")))
            _assert_original(ds, authored_pixels)
    outcomes = [line["outcome"] for line in _log_lines(log) if line["event"] == "run"]
    assert outcomes == ["incomplete", "complete"]


def test_ctrl_c_during_an_import_says_what_happened_and_a_rerun_sends_the_rest(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    log = tmp_path / "log.jsonl"
    slow = threading.Event()
    slow.set()

    def answer_slowly(ds: Dataset, attempt: int) -> int:
        if slow.is_set():
            time.sleep(0.4)
        return 0x0000

    with run_scripted_scp(answer_slowly) as scp:
        env = {**os.environ, "DISCMAKER_TRUST_DIR": str(tmp_path / "empty-trust")}
        cmd = [sys.executable, "-m", "discmaker", *_import_args(disc_folder, scp.to, centre, log)]
        # pytest-xdist workers ignore SIGINT, and a child would inherit that: for the start
        # of the child, take Python's own handler (reset to the default in the child).
        ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
            )
        finally:
            signal.signal(signal.SIGINT, ignored)
        deadline = time.monotonic() + 60
        while len(scp.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, out + err
        said = " ".join(err.split())
        assert "Interrupted." in said and "Run the same command again" in said
        assert "Internal error" not in said and "Traceback" not in said
        interrupted = set(scp.received)
        assert 3 <= len(interrupted) < IMAGES

        slow.clear()
        code, text = _cli(_import_args(disc_folder, scp.to, centre, log))
        assert code == 0, text
    received = [uid for uid in scp.received]
    assert len(set(received)) == IMAGES  # no gap
    # At most the one in flight when Ctrl-C came was sent twice (a PACS keeps one copy).
    assert len(received) - IMAGES <= 1
    logged = [line for line in _log_lines(log) if line["event"] == "instance"]
    stored = [line["sop_instance_uid"] for line in logged if line["status"] == "stored"]
    assert len(stored) == len(set(stored)) == IMAGES  # the log says each is stored once


def test_import_json_is_one_document_for_every_outcome(
    tmp_path: Path, disc_folder: Path, tampered_disc: Path, centre: Centre
) -> None:
    from tests.test_schemas import run_json, validate_import

    log = tmp_path / "log.jsonl"
    with run_storescp(tmp_path / "received") as scp:
        outcomes = {}
        for name, disc, extra in (
            ("dry", disc_folder, ["--dry-run"]),
            ("sent", disc_folder, []),
            ("again", disc_folder, []),
            ("tampered", tampered_disc, []),
        ):
            code, doc = run_json([*_import_args(disc, scp.to, centre, log), "--json", *extra])
            validate_import(doc)
            assert doc["exit_code"] == code
            outcomes[name] = doc
    assert outcomes["dry"]["counts"]["would-send"] == IMAGES and outcomes["dry"]["log"] == ""
    assert outcomes["sent"]["counts"]["stored"] == IMAGES
    assert {i["status"] for i in outcomes["sent"]["instances"]} == {"stored"}
    assert outcomes["again"]["counts"]["already-stored"] == IMAGES
    assert outcomes["tampered"]["verdict"] == "tampered" and outcomes["tampered"]["instances"] == []
    assert outcomes["sent"]["destination"] == {
        "aet": "STORESCP",
        "host": "127.0.0.1",
        "port": scp.port,
    }

    nobody = f"P@127.0.0.1:{free_port()}"
    code, error = run_json([*_import_args(disc_folder, nobody, centre, log), "--json"])
    assert code == IMPORT_UNREACHABLE
    assert error["format"] == "discmaker-error" and error["exit_code"] == IMPORT_UNREACHABLE


# -- (7) DICOM over TLS --------------------------------------------------------------------------


def test_tls_sends_to_a_pacs_whose_certificate_the_given_ca_signed(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    files = make_tls_files(tmp_path / "tls")
    log = tmp_path / "log.jsonl"
    with run_scripted_scp(lambda ds, n: 0x0000, ssl_context=server_tls_context(files)) as scp:
        # Plain DICOM to a TLS port: no answer, and nothing sent.
        code, out = _cli(_import_args(disc_folder, scp.to, centre, log))
        assert code == IMPORT_UNREACHABLE, out
        # TLS without the CA that signed the PACS's certificate: refused, with the advice.
        code, out = _cli([*_import_args(disc_folder, scp.to, centre, log), "--tls"])
        assert code == IMPORT_UNREACHABLE, out
        assert "--tls-ca" in " ".join(out.split())
        assert scp.received == []
        # With it: every verified original goes over TLS.
        code, out = _cli(
            [*_import_args(disc_folder, scp.to, centre, log), "--tls-ca", str(files.ca)]
        )
        assert code == 0, out
        assert len(set(scp.received)) == len(scp.received) == IMAGES


def test_tls_files_that_cannot_be_used_stop_before_the_disc_is_read(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    log = tmp_path / "log.jsonl"
    code, out = _cli(
        [*_import_args(disc_folder, "P@127.0.0.1:1", centre, log), "--tls-ca", str(junk)]
    )
    assert code == 77 and "CA certificates for TLS" in out
    code, out = _cli(
        [*_import_args(disc_folder, "P@127.0.0.1:1", centre, log), "--tls-key", str(junk)]
    )
    assert code == 64 and "--tls-key needs --tls-cert" in out
    assert not log.exists()


# -- (8) the local order from a Modality Worklist ------------------------------------------------


@contextlib.contextmanager
def _worklist(orders: list[tuple[str, str, str]]) -> Iterator[str]:
    """A Modality Worklist SCP on loopback answering with the ``orders`` (Patient ID, name,
    Accession Number) that match the query's Accession Number or Patient ID."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    port = free_port()
    ae = AE(ae_title="WORKLIST")
    ae.add_supported_context(ModalityWorklistInformationFind)

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        for pid, name, accession in orders:
            if query.AccessionNumber and query.AccessionNumber != accession:
                continue
            if query.PatientID and query.PatientID != pid:
                continue
            answer = Dataset()
            answer.PatientID, answer.PatientName, answer.AccessionNumber = pid, name, accession
            yield 0xFF00, answer
        yield 0x0000, None

    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)]
    )
    try:
        yield f"WORKLIST@127.0.0.1:{port}"
    finally:
        server.shutdown()


def test_the_local_order_comes_from_the_worklist(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    orders = [("LOCAL-7", "DOE^JANE", "ACC123"), ("LOCAL-8", "ROE^RICHARD", "ACC124")]
    log = tmp_path / "log.jsonl"
    with _worklist(orders) as worklist, run_storescp(tmp_path / "received") as scp:
        args = [*_import_args(disc_folder, scp.to, centre, log), "--worklist", worklist]
        code, out = _cli([*args, "--accession", "ACC124"])
        assert code == 0, out
        assert "Patient ID LOCAL-8" in out
        received = [dcmread(p) for p in scp.received()]
        assert len(received) == IMAGES
        for ds in received:
            assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber) == (
                "LOCAL-8",
                "ROE^RICHARD",
                "ACC124",
            )
            assert ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID
        # No such order, or no key to look for: nothing sent, the operator is told.
        code, out = _cli([*args, "--accession", "ACC999"])
        assert code == 64 and "no order with Accession Number 'ACC999'" in out
        code, out = _cli(args)
        assert code == 64 and "--worklist needs the local order" in out
        assert len(scp.received()) == IMAGES


def test_a_worklist_with_two_patients_for_one_order_is_not_guessed(
    tmp_path: Path, disc_folder: Path, centre: Centre
) -> None:
    orders = [("LOCAL-7", "DOE^JANE", "ACC5"), ("LOCAL-9", "DOE^JOHN", "ACC5")]
    with _worklist(orders) as worklist:
        args = _import_args(disc_folder, "P@127.0.0.1:1", centre, tmp_path / "log")
        code, out = _cli([*args, "--worklist", worklist, "--accession", "ACC5"])
    assert code == 64 and "2 different patients" in out


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


def test_orthanc_holds_the_reconciled_copies_and_nothing_tampered(
    tmp_path: Path, disc_iso: Path, tampered_disc: Path, centre: Centre
) -> None:
    with run_orthanc(tmp_path / "orthanc") as orthanc:
        bad = import_disc(tampered_disc, orthanc.to, trust=_trust(centre), log_path=tmp_path / "a")
        assert bad.exit_code == 1 and orthanc.get("/instances") == []
        result = import_disc(
            disc_iso,
            orthanc.to,
            trust=_trust(centre),
            log_path=tmp_path / "b",
            reconcile=Reconciliation(patient_id="LOCAL-1", accession_number="L-ACC"),
        )
        assert result.exit_code == 0 and len(result.sent) == IMAGES
        ids = orthanc.get("/instances")
        assert len(ids) == IMAGES
        for instance in ids:
            ds = dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{instance}/file")))
            assert (ds.PatientID, ds.AccessionNumber) == ("LOCAL-1", "L-ACC")
            before = ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
            assert before.PatientID == "DM-000001"
        assert [p["MainDicomTags"]["PatientID"] for p in orthanc.get("/patients?expand")] == [
            "LOCAL-1"
        ]


def test_a_lost_association_leaves_no_socket_open() -> None:
    # pynetdicom's own close skips close() when shutdown() fails (the PACS reset or gone):
    # ours closes the socket it opened, so a long-lived process keeps no descriptor.
    from discmaker.pacs.network import Association

    with run_scripted_scp(lambda ds, attempt: 0x0000) as scp:
        for abort in (False, True):
            assoc = Association(
                Destination.parse(scp.to), calling_aet="DISCMAKER", storage=[], timeout=5
            )
            assoc.echo()
            sock = assoc._sock
            assert sock is not None and sock.fileno() != -1
            sock.shutdown(2)  # the connection dies under the association
            assoc.close(abort=abort)
            assert sock.fileno() == -1
