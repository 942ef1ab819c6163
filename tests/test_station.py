"""The disc station over the network on loopback: dcmtk's storescu, pynetdicom and Orthanc send
studies; each becomes a verified disc, once, whatever breaks on the way."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from discmaker import errors
from discmaker.check.verify import check_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.disc.media import Medium
from discmaker.disc.source import open_source
from discmaker.format.manifest import MANIFEST_PATH, parse
from discmaker.jsonlines import read_records
from discmaker.sample import SamplePatient, write_sample_study
from discmaker.station import config as station_config
from discmaker.station.queue import Queue
from discmaker.station.service import Station
from discmaker.ui.cli import main
from tests.conftest import PASSPHRASE, Centre
from tests.pacs_fixtures import LOOPBACK, free_port, media_request, run_orthanc

AET = "STATION"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "station.toml"


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_config(tmp: Path, centre: Centre, **changes: Any) -> station_config.StationConfig:
    base = station_config.StationConfig(
        aet=AET,
        host=LOOPBACK,
        port=0,
        out=tmp / "discs",
        state=tmp / "state",
        key=centre.key_path,
        cert=centre.cert_path,
        quiet_seconds=0.5,
        incomplete_seconds=30.0,
        workers=1,
        min_free_mb=16,
        allowed_callers=frozenset({"PACS", "ORTHANC"}),
    )
    return replace(base, **changes)


@contextmanager
def running(config: station_config.StationConfig, centre: Centre) -> Iterator[Station]:
    key = signing.load_private_key(centre.key_path, passphrase=PASSPHRASE)
    with Station(config, key=key, cert=centre.identity.certificate) as station:
        stop = threading.Event()
        listening = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                station.run(stop, poll=0.05, on_listening=lambda _: listening.set())
            except BaseException as exc:  # surfaced in the test below
                failure.append(exc)
                listening.set()

        thread = threading.Thread(target=run, name="station", daemon=True)
        thread.start()
        listening.wait(10)
        try:
            if failure:
                raise failure[0]
            yield station
        finally:
            stop.set()
            thread.join(60)
        if failure:
            raise failure[0]


def study(root: Path, seed: str, *, slices: int = 4, size: int = 64) -> list[Path]:
    patient = SamplePatient(patient_id=f"ST-{seed}")
    write_sample_study(
        root, ct_slices=slices, ct_size=size, mr_slices=0, seed=seed, patient=patient
    )
    return sorted(p for p in root.rglob("*") if p.is_file())


def uids(files: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}


def storescu(port: int, files: list[Path]) -> None:
    exe = shutil.which("storescu")
    if exe is None:
        pytest.skip("dcmtk's storescu is not installed (apt-get install dcmtk)")
    done = subprocess.run(
        [exe, "-aec", AET, "-aet", "PACS", LOOPBACK, str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def send(port: int, files: list[Path], *, abort_after: int | None = None) -> list[int]:
    """C-STORE with pynetdicom; returns the statuses. ``abort_after``: abort instead of
    releasing once that many were sent."""
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title="PACS")
    ae.requested_contexts = StoragePresentationContexts[:120]
    assoc = ae.associate(LOOPBACK, port, ae_title=AET)
    assert assoc.is_established
    statuses = []
    try:
        for n, path in enumerate(files):
            if abort_after is not None and n == abort_after:
                assoc.abort()
                return statuses
            status = assoc.send_c_store(dcmread(path))
            statuses.append(int(status.Status))
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def request_disc(port: int, request: Dataset) -> None:
    """A PACS asks the station for a disc: N-CREATE with ``request``, then N-ACTION."""
    from pynetdicom import AE
    from pynetdicom.sop_class import MediaCreationManagement

    ae = AE(ae_title="PACS")
    ae.add_requested_context(MediaCreationManagement)
    assoc = ae.associate(LOOPBACK, port, ae_title=AET)
    uid = generate_uid()
    try:
        assert int(assoc.send_n_create(request, MediaCreationManagement, uid)[0].Status) == 0
        assert int(assoc.send_n_action(None, 1, MediaCreationManagement, uid)[0].Status) == 0
    finally:
        assoc.release()


def verified_jobs(station: Station) -> list[Any]:
    return [j for j in station.queue.jobs() if j.state == "verified"]


def disc_uids(disc: Path) -> set[str]:
    with open_source(disc) as src:
        manifest = parse(src.read_bytes(MANIFEST_PATH, limit=1 << 24))
    return {i.sop_instance_uid for i in manifest.images}


# -- a study in, a verified disc out -----------------------------------------------------------


def test_a_study_sent_with_storescu_becomes_one_verified_disc(
    tmp_path: Path, centre: Centre
) -> None:
    files = study(tmp_path / "ct", "a")
    config = make_config(tmp_path, centre, keep_received_days=0)
    with running(config, centre) as station:
        storescu(station.receiver.port, files)
        (job,) = wait_for("a verified disc", lambda: verified_jobs(station))
        # the received copies go once the disc verified (keep_received_days = 0)
        wait_for("the received copies to go", lambda: not list(config.spool.rglob("*.dcm")))
    (iso,) = (Path(p) for p in job.outputs)
    assert iso.parent == config.out and iso.suffix == ".iso"
    assert disc_uids(iso) == uids(files)
    report = check_disc(iso, trust=TrustStore.from_paths([centre.cert_path]))
    assert report.exit_code == 0
    assert Path(job.label_pdf).is_file()
    (line,) = list(read_records(config.audit_path))
    with open_source(iso) as src:
        manifest_hash = hashlib.sha256(src.read_bytes(MANIFEST_PATH, limit=1 << 24)).hexdigest()
    assert line["result"] == "verified" and line["manifest_sha256"] == [manifest_hash]
    assert line["study_instance_uid"] == str(dcmread(files[0]).StudyInstanceUID)
    assert line["signer_fingerprint"] == signing.fingerprint(centre.identity.certificate)
    assert "ST-a" not in json.dumps(line)  # no patient data in the audit log
    assert line["senders"] == ["PACS"]


def test_eight_concurrent_associations_make_eight_discs(tmp_path: Path, centre: Centre) -> None:
    studies = {seed: study(tmp_path / seed, seed, slices=3) for seed in "abcdefgh"}
    # all eight from 127.0.0.1, as one PACS sending on eight associations at once
    config = make_config(tmp_path, centre, quiet_seconds=1.0, max_associations_per_address=8)
    with running(config, centre) as station:
        port = station.receiver.port
        results: dict[str, list[int]] = {}
        threads = [
            threading.Thread(target=lambda s=s, f=f: results.__setitem__(s, send(port, f)))
            for s, f in studies.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(statuses == [0] * 3 for statuses in results.values()), results
        jobs = wait_for(
            "8 discs", lambda: len(verified_jobs(station)) == 8 and verified_jobs(station), 180
        )
    on_discs = [disc_uids(Path(j.outputs[0])) for j in jobs]
    assert sorted(map(sorted, on_discs)) == sorted(sorted(uids(f)) for f in studies.values())
    assert len(list(config.out.glob("*.iso"))) == 8


# -- what breaks on the way ---------------------------------------------------------------------


def test_an_aborted_association_holds_the_study_back_until_it_is_finished(
    tmp_path: Path, centre: Centre, caplog: pytest.LogCaptureFixture
) -> None:
    files = study(tmp_path / "ct", "b")
    config = make_config(tmp_path, centre, quiet_seconds=0.3)
    with running(config, centre) as station, caplog.at_level("WARNING", "discmaker.station"):
        assert send(station.receiver.port, files, abort_after=2) == [0, 0]
        wait_for("the abort to be noted", lambda: "broke off after 2" in caplog.text)
        time.sleep(1.0)  # three quiet periods
        assert station.queue.jobs() == []  # the partial study is not authored
        assert send(station.receiver.port, files) == [0] * 4  # the sender starts again
        (job,) = wait_for("the disc", lambda: verified_jobs(station))
    assert disc_uids(Path(job.outputs[0])) == uids(files)


def test_a_study_whose_sender_never_comes_back_is_authored_after_the_patience(
    tmp_path: Path, centre: Centre, caplog: pytest.LogCaptureFixture
) -> None:
    files = study(tmp_path / "ct", "c")
    config = make_config(tmp_path, centre, quiet_seconds=0.2, incomplete_seconds=1.5)
    with running(config, centre) as station, caplog.at_level("WARNING", "discmaker.station"):
        send(station.receiver.port, files, abort_after=3)
        (job,) = wait_for("the disc", lambda: verified_jobs(station))
    assert job.images == 3
    assert "did not finish it" in caplog.text


def test_a_malformed_dataset_is_refused_and_the_association_goes_on(
    tmp_path: Path, centre: Centre
) -> None:
    from pynetdicom import AE, StoragePresentationContexts

    files = study(tmp_path / "ct", "d", slices=2)
    config = make_config(tmp_path, centre)
    with running(config, centre) as station:
        ae = AE(ae_title="PACS")
        ae.requested_contexts = StoragePresentationContexts[:120]
        assoc = ae.associate(LOOPBACK, station.receiver.port, ae_title=AET)
        bad = dcmread(files[0])
        del bad.PatientID
        bad.SOPInstanceUID = generate_uid()
        refused = assoc.send_c_store(bad)
        assert int(refused.Status) >= 0xA000 and "Patient ID" in str(refused.get("ErrorComment"))
        assert [int(assoc.send_c_store(dcmread(p)).Status) for p in files] == [0, 0]
        assoc.release()
        (job,) = wait_for("the disc", lambda: verified_jobs(station))
    assert job.images == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_output_disk_fails_the_job_clearly_and_leaves_no_partial_disc(
    tmp_path: Path, centre: Centre
) -> None:
    out = tmp_path / "small"
    out.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(out)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"tmpfs cannot be mounted here: {mounted.stderr.decode().strip()}")
    try:
        files = study(tmp_path / "ct", "e", slices=6, size=128)  # about 200 kB
        config = make_config(tmp_path, centre, out=out, label_pdf=False)
        with running(config, centre) as station:
            send(station.receiver.port, files)
            try:
                (job,) = wait_for(
                    "the job to fail",
                    lambda: [j for j in station.queue.jobs() if j.state == "failed"],
                )
            except AssertionError:
                raise AssertionError(str(station.queue.jobs())) from None
        assert "space" in job.reason.lower(), job.reason
        assert [p.name for p in out.iterdir()] == []  # nothing under a final name, no leftovers
        assert len(list(config.spool.rglob("*.dcm"))) == 6  # kept for station retry
        (line,) = list(read_records(config.audit_path))
        assert line["result"] == "failed" and "space" in line["reason"].lower()
    finally:
        subprocess.run(["umount", str(out)], check=False)


def _station_process(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, signing.PASSPHRASE_ENV: PASSPHRASE.decode(), "DISCMAKER_LOG": "info"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "discmaker", "station", "--config", str(config_path)],
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )


def _write_config(
    path: Path, config: station_config.StationConfig, port: int, *, ahead: bool = True
) -> None:
    path.write_text(
        f"""
[dicom]
aet = "{AET}"
allowed_callers = ["PACS"]
host = "{LOOPBACK}"
port = {port}
[station]
out = "{config.out}"
state = "{config.state}"
quiet_seconds = {config.quiet_seconds}
[signing]
key = "{config.key}"
cert = "{config.cert}"
[disc]
workers = 1
label_pdf = false
prepare_ahead = {str(ahead).lower()}
"""
    )


def test_killed_while_authoring_the_station_resumes_and_makes_one_disc(
    tmp_path: Path, centre: Centre
) -> None:
    files = study(tmp_path / "ct", "f", slices=12, size=128)
    config = make_config(tmp_path, centre, quiet_seconds=0.3)
    port = free_port()
    cfg = tmp_path / "station.toml"
    # sealing as they arrive would leave too short an authoring step to kill the station in
    _write_config(cfg, config, port, ahead=False)
    log = tmp_path / "station.log"
    proc = _station_process(cfg, log)
    try:
        wait_for("the station to listen", lambda: b"listening" in log.read_bytes(), 30)
        send(port, files)
        queue_path = config.queue_path

        def authoring() -> bool:
            with Queue(queue_path) as queue:
                return any(j.state == "authoring" for j in queue.jobs())

        wait_for("authoring to start", authoring, 60)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert not list(config.out.glob("*.iso"))  # nothing under a final name
        proc = _station_process(cfg, log)
        with Queue(queue_path) as queue:
            wait_for(
                "the resumed disc", lambda: [j for j in queue.jobs() if j.state == "verified"], 120
            )
            (job,) = queue.jobs()
        assert job.attempts == 2
        assert [p.name for p in config.out.iterdir()] == [Path(job.outputs[0]).name]
        assert disc_uids(Path(job.outputs[0])) == uids(files)
        assert b"interrupted while authoring" in log.read_bytes()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- Media Creation Management, Orthanc ---------------------------------------------------------


def test_a_media_creation_request_makes_the_disc_and_n_get_reports_it(
    tmp_path: Path, centre: Centre
) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import MediaCreationManagement

    files = study(tmp_path / "ct", "g", slices=3)
    # a quiet period that never ends: only the request makes the disc
    config = make_config(tmp_path, centre, quiet_seconds=3600, incomplete_seconds=7200)
    with running(config, centre) as station:
        send(station.receiver.port, files)
        time.sleep(0.3)
        assert station.queue.jobs() == []
        ae = AE(ae_title="PACS")
        ae.add_requested_context(MediaCreationManagement)
        assoc = ae.associate(LOOPBACK, station.receiver.port, ae_title=AET)
        request = media_request(files)
        uid = generate_uid()
        status, _ = assoc.send_n_create(request, MediaCreationManagement, uid)
        assert int(status.Status) == 0
        status, _ = assoc.send_n_action(None, 1, MediaCreationManagement, uid)
        assert int(status.Status) == 0

        def done() -> bool:
            status, attrs = assoc.send_n_get([0x21000020], MediaCreationManagement, uid)
            return int(status.Status) == 0 and attrs is not None and attrs.ExecutionStatus == "DONE"

        wait_for("N-GET to say DONE", done, 120)
        status, _ = assoc.send_n_get([0x21000020], MediaCreationManagement, generate_uid())
        assert int(status.Status) == 0x0112  # no such request
        assoc.release()
        (job,) = verified_jobs(station)
    assert job.trigger == "request" and disc_uids(Path(job.outputs[0])) == uids(files)


def test_orthanc_sends_a_study_to_the_station(tmp_path: Path, centre: Centre) -> None:
    files = study(tmp_path / "ct", "h", slices=3)
    config = make_config(tmp_path, centre)
    with run_orthanc(tmp_path / "orthanc") as orthanc, running(config, centre) as station:
        base = f"http://{LOOPBACK}:{orthanc.http_port}"

        def call(method: str, path: str, body: bytes) -> Any:
            req = urllib.request.Request(base + path, data=body, method=method)
            with urllib.request.urlopen(req, timeout=60) as answer:
                return json.loads(answer.read() or b"null")

        ids = [call("POST", "/instances", p.read_bytes())["ID"] for p in files]
        modality = {"AET": AET, "Host": LOOPBACK, "Port": station.receiver.port}
        call("PUT", "/modalities/station", json.dumps(modality).encode())
        call("POST", "/modalities/station/store", json.dumps(ids).encode())
        (job,) = wait_for("the disc", lambda: verified_jobs(station))
    assert disc_uids(Path(job.outputs[0])) == uids(files)


# -- the command line ---------------------------------------------------------------------------


def test_status_jobs_retry_and_cancel(
    tmp_path: Path, centre: Centre, capsys: pytest.CaptureFixture[str]
) -> None:
    files = study(tmp_path / "ct", "i", slices=2)
    config = make_config(tmp_path, centre)
    with running(config, centre) as station:
        send(station.receiver.port, files)
        (job,) = wait_for("the disc", lambda: verified_jobs(station))
    state = ["--state", str(config.state)]
    assert main(["station", "status", *state, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["jobs"]["verified"] == 1 and status["waiting_studies"] == []
    assert main(["station", "jobs", *state, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["jobs"]
    assert listed["id"] == job.id and listed["state"] == "verified" and listed["images"] == 2
    assert main(["station", "cancel", str(job.id), *state]) == errors.EX_USAGE  # verified
    assert "verified already" in " ".join(capsys.readouterr().err.split())
    assert main(["station", "retry", str(job.id), *state]) == 0  # its images are still kept
    assert "now received" in capsys.readouterr().out
    assert main(["station", "cancel", str(job.id), *state]) == 0
    assert main(["station", "cancel", "99", *state]) == errors.EX_USAGE


def test_the_example_configuration_loads_and_mistakes_are_named(tmp_path: Path) -> None:
    config = station_config.load(EXAMPLE)
    assert config.aet == "DISCMAKER" and config.port == 11112 and config.span
    assert (config.max_associations, config.max_associations_per_address) == (16, 4)
    assert config.max_instance_mb == 2048
    assert config.passphrase_file == Path("/etc/discmaker/passphrase")
    bad = tmp_path / "bad.toml"
    bad.write_text('[dicom]\naet = "X"\nprot = 104\n')
    with pytest.raises(errors.UsageError, match="no setting 'prot'"):
        station_config.load(bad)
    bad.write_text('[station]\nquiet_seconds = "soon"\n')
    with pytest.raises(errors.UsageError, match="quiet_seconds must be a number"):
        station_config.load(bad, out=tmp_path, key=tmp_path / "k", cert=tmp_path / "c")
    over = station_config.load(EXAMPLE, port=4242, aet="OTHER")
    assert (over.port, over.aet) == (4242, "OTHER")
    with pytest.raises(errors.UsageError, match="needs allowed_callers"):
        station_config.load(EXAMPLE, allowed_callers=[])
    assert station_config.load(EXAMPLE, allowed_callers="CT1, MR2").allowed_callers == {
        "CT1",
        "MR2",
    }


def test_a_passphrase_file_others_can_read_is_refused(tmp_path: Path, centre: Centre) -> None:
    secret = tmp_path / "passphrase"
    secret.write_bytes(PASSPHRASE + b"\n")
    secret.chmod(0o644)
    config = make_config(tmp_path, centre, passphrase_file=secret)
    with pytest.raises(errors.KeyFileError, match="chmod 600"):
        station_config.read_passphrase(config)
    secret.chmod(0o600)
    assert station_config.read_passphrase(config) == PASSPHRASE


# -- the review's cases: what a sender or an operator can do at the wrong moment --------------


def test_an_instance_uid_sent_again_for_another_study_is_refused(
    tmp_path: Path, centre: Centre
) -> None:
    from pynetdicom import AE, StoragePresentationContexts

    files = study(tmp_path / "ct", "j", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=3600, incomplete_seconds=7200)
    with running(config, centre) as station:
        assert send(station.receiver.port, files) == [0, 0]
        clash = dcmread(files[0])
        clash.StudyInstanceUID = generate_uid()
        ae = AE(ae_title="PACS")
        ae.requested_contexts = StoragePresentationContexts[:120]
        assoc = ae.associate(LOOPBACK, station.receiver.port, ae_title=AET)
        answer = assoc.send_c_store(clash)
        assoc.release()
        assert int(answer.Status) == 0xC000
        assert "another study" in str(answer.ErrorComment)
        with Queue(config.queue_path) as queue:
            assert queue.study_of(str(clash.SOPInstanceUID)) == str(
                dcmread(files[0]).StudyInstanceUID
            )
        assert len(list(config.spool.rglob("*.dcm"))) == 2  # the first copy is untouched


def test_a_study_sent_again_after_its_disc_makes_a_second_disc_only_if_it_changed(
    tmp_path: Path, centre: Centre
) -> None:
    files = study(tmp_path / "ct", "k", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=0.3)
    with running(config, centre) as station:
        send(station.receiver.port, files)
        wait_for("the first disc", lambda: verified_jobs(station))
        send(station.receiver.port, files[:1])  # the PACS retries one instance: same bytes
        time.sleep(1.0)
        assert len(station.queue.jobs()) == 1
        changed = dcmread(files[1])
        changed.SeriesDescription = "corrected"
        changed.save_as(files[1])
        send(station.receiver.port, files)  # the study sent again, one instance corrected
        jobs = wait_for(
            "the second disc", lambda: len(verified_jobs(station)) == 2 and verified_jobs(station)
        )
    assert [disc_uids(Path(j.outputs[0])) for j in jobs] == [uids(files)] * 2


def test_a_media_creation_request_before_the_instances_makes_one_disc(
    tmp_path: Path, centre: Centre
) -> None:

    files = study(tmp_path / "ct", "l", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=0.2)
    with running(config, centre) as station:
        request_disc(station.receiver.port, media_request(files))
        send(station.receiver.port, files)  # the instances come after the request
        wait_for("the disc", lambda: verified_jobs(station))
        time.sleep(1.0)  # five quiet periods: no second disc from the quiet rule
        (job,) = station.queue.jobs()
    assert job.trigger == "request" and job.state == "verified"


def test_a_job_cancelled_while_it_is_authored_leaves_no_disc(
    tmp_path: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.pacs.receive import ReceivedInstance
    from discmaker.station import jobs as station_jobs

    files = study(tmp_path / "ct", "m", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=0)
    key = signing.load_private_key(centre.key_path, passphrase=PASSPHRASE)
    with Station(config, key=key, cert=centre.identity.certificate) as station:
        for path in files:
            ds = dcmread(path, stop_before_pixels=True)
            station.store(
                ReceivedInstance(
                    calling_aet="PACS",
                    sop_class_uid=str(ds.SOPClassUID),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    study_uid=str(ds.StudyInstanceUID),
                    series_uid=str(ds.SeriesInstanceUID),
                    data=path.read_bytes(),
                )
            )
        real_author = station_jobs.author

        def author_then_cancel(*args: Any, **kwargs: Any) -> Any:
            result = real_author(*args, **kwargs)
            station.queue.cancel(1, now=time.time())  # an operator, at the worst moment
            return result

        monkeypatch.setattr(station_jobs, "author", author_then_cancel)
        assert station.step()
        (job,) = station.queue.jobs()
        assert job.state == "cancelled"
        assert list(config.out.iterdir()) == []
        assert not station.step()  # nothing more to do


def _instance(path: Path) -> Any:
    from discmaker.pacs.receive import ReceivedInstance

    ds = dcmread(path, stop_before_pixels=True)
    return ReceivedInstance(
        calling_aet="PACS",
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        data=path.read_bytes(),
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def offline(
    config: station_config.StationConfig, centre: Centre
) -> Iterator[tuple[Station, _Clock]]:
    """A station driven by the test: its sink called directly, its loop stepped, a fake clock."""
    key = signing.load_private_key(centre.key_path, passphrase=PASSPHRASE)
    clock = _Clock()
    with Station(config, key=key, cert=centre.identity.certificate, clock=clock) as station:
        yield station, clock


def test_a_study_sent_again_just_before_its_copies_expire_is_kept(
    tmp_path: Path, centre: Centre
) -> None:
    files = study(tmp_path / "ct", "n", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=10, keep_received_days=7)
    with offline(config, centre) as (station, clock):
        for path in files:
            station.store(_instance(path))
        clock.now += 11
        assert station.step()
        assert [j.state for j in station.queue.jobs()] == ["verified"]
        clock.now += 7 * 86400 - 10  # 10 s before the first disc's copies expire
        for path in files:  # sent again, corrected (the same bytes would make no new disc)
            changed = dcmread(path)
            changed.SeriesDescription = "corrected"
            changed.save_as(path)
            station.store(_instance(path))
        clock.now += 11  # expiry of the first disc's copies, and the second study is quiet
        assert station.step()
        assert sorted(j.state for j in station.queue.jobs()) == ["verified", "verified"]
        second = station.queue.jobs()[0]
        assert second.images == 2 and disc_uids(Path(second.outputs[0])) == uids(files)


def test_a_second_media_request_after_the_first_disc_makes_a_new_disc(
    tmp_path: Path, centre: Centre
) -> None:
    from discmaker.pacs.receive import MediaRequest

    files = study(tmp_path / "ct", "o", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=3600, incomplete_seconds=7200)
    pairs = tuple((str(dcmread(p).SOPClassUID), str(dcmread(p).SOPInstanceUID)) for p in files)
    with offline(config, centre) as (station, clock):
        for n in (1, 2):
            for path in files:
                station.store(_instance(path))
            uid = generate_uid()
            station.media_request(MediaRequest(uid, "PACS", pairs, "", ""))
            assert station.media_status(uid).execution_status == "IDLE"
            station.media_action(uid, 1)
            assert station.media_status(uid).execution_status == "PENDING"
            clock.now += 1
            assert station.step()
            assert station.media_status(uid).execution_status == "DONE"
            assert len(verified_jobs(station)) == n
        assert all(
            j.study_uid == str(dcmread(files[0]).StudyInstanceUID) for j in station.queue.jobs()
        )


def test_a_media_request_never_started_fails_after_the_patience(
    tmp_path: Path, centre: Centre
) -> None:
    from discmaker.pacs.receive import MediaRequest, Refused

    files = study(tmp_path / "ct", "p", slices=1)
    config = make_config(tmp_path, centre, quiet_seconds=60, incomplete_seconds=600)
    pairs = ((str(dcmread(files[0]).SOPClassUID), str(dcmread(files[0]).SOPInstanceUID)),)
    with offline(config, centre) as (station, clock):
        station.store(_instance(files[0]))
        uid = generate_uid()
        station.media_request(MediaRequest(uid, "PACS", pairs, "", ""))
        clock.now += 601
        assert not station.step()
        status = station.media_status(uid)
        assert status.execution_status == "FAILURE" and status.info == "PROC_FAILURE"
        (job,) = station.queue.jobs()
        assert "never started" in job.reason
        with pytest.raises(Refused):
            station.media_action(uid, 2)  # failed already: nothing to cancel


def test_a_nearly_full_disk_refuses_instances_before_writing_them(
    tmp_path: Path, centre: Centre
) -> None:
    from discmaker.pacs.receive import Refused

    files = study(tmp_path / "ct", "q", slices=1)
    free_mb = shutil.disk_usage(tmp_path).free // 1_000_000
    config = make_config(tmp_path, centre, min_free_mb=free_mb + 1000)
    with offline(config, centre) as (station, _):
        with pytest.raises(Refused) as refused:
            station.store(_instance(files[0]))
        assert refused.value.status == 0xA700 and "nearly full" in str(refused.value)
        assert not list(config.spool.rglob("*.dcm"))


def test_a_made_disc_can_no_longer_be_cancelled(tmp_path: Path, centre: Centre) -> None:
    files = study(tmp_path / "ct", "r", slices=1)
    config = make_config(tmp_path, centre)
    with offline(config, centre) as (station, _):
        station.store(_instance(files[0]))
        job_id = station.queue.create_study_job(str(dcmread(files[0]).StudyInstanceUID), now=1.0)
        assert job_id is not None
        station.queue.set_state(job_id, "written", now=2.0)
        with pytest.raises(errors.UsageError, match="can no longer be cancelled"):
            station.queue.cancel(job_id, now=3.0)


def test_a_second_station_on_the_same_state_is_refused_and_touches_nothing(
    tmp_path: Path, centre: Centre
) -> None:
    files = study(tmp_path / "ct", "s", slices=2)
    config = make_config(tmp_path, centre)
    key = signing.load_private_key(centre.key_path, passphrase=PASSPHRASE)
    with running(config, centre) as station:
        leftover = config.out / ".DS000009.iso.partial-abc"  # what the first one is writing
        leftover.write_bytes(b"in progress")
        with (
            Station(config, key=key, cert=centre.identity.certificate) as second,
            pytest.raises(errors.UsageError, match="Another station is already running"),
        ):
            second.run(threading.Event())
        assert leftover.exists()
        leftover.unlink()
        send(station.receiver.port, files)
        wait_for("the disc", lambda: verified_jobs(station))


@pytest.mark.parametrize(
    "study_uid", ["1.2.3\nWARNING station: job 7 verified", "1.2.3\\4.5.6", "1." + "2" * 70]
)
def test_a_study_uid_that_is_not_a_uid_is_refused(
    tmp_path: Path, centre: Centre, study_uid: str
) -> None:
    from pynetdicom import AE, StoragePresentationContexts

    files = study(tmp_path / "ct", "t", slices=1)
    config = make_config(tmp_path, centre)
    with running(config, centre) as station:
        ds = dcmread(files[0])
        ae = AE(ae_title="PACS")
        ae.requested_contexts = StoragePresentationContexts[:120]
        assoc = ae.associate(LOOPBACK, station.receiver.port, ae_title=AET)
        with warnings.catch_warnings():  # pydicom warns of the invalid UID a sender sends
            warnings.simplefilter("ignore", UserWarning)
            ds.StudyInstanceUID = study_uid
            answer = assoc.send_c_store(ds)
        assoc.release()
    assert int(answer.Status) == 0xC000 and "not a UID" in str(answer.ErrorComment)
    assert not list(config.spool.rglob("*.dcm"))


def _disc_requested_offline(
    config: station_config.StationConfig, centre: Centre, files: list[Path], *, copies: int
) -> Any:
    """The station (not listening) stores ``files``, a Media Creation request asks for
    ``copies`` discs of them, one step makes the disc: its verified job."""
    from discmaker.pacs.receive import MediaRequest

    pairs = tuple((str(dcmread(p).SOPClassUID), str(dcmread(p).SOPInstanceUID)) for p in files)
    with offline(config, centre) as (station, _):
        for path in files:
            station.store(_instance(path))
        uid = generate_uid()
        station.media_request(MediaRequest(uid, "PACS", pairs, "", "", copies=copies))
        station.media_action(uid, 1)
        assert station.step()
        (job,) = station.queue.jobs()
    assert job.state == "verified"
    return job


def test_a_disc_robot_gets_the_disc_its_label_and_then_its_job_file(
    tmp_path: Path, centre: Centre
) -> None:

    files = study(tmp_path / "ct", "u", slices=2)
    robot = tmp_path / "robot"
    robot.mkdir()
    config = make_config(tmp_path, centre, quiet_seconds=3600, hot_folder=robot)
    job = _disc_requested_offline(config, centre, files, copies=2)
    assert job.copies == 2
    ticket = json.loads((robot / f"{job.label}.JOB.json").read_bytes())
    assert ticket["format"] == "discmaker-robot-job" and ticket["copies"] == 2
    (disc,) = ticket["discs"]
    assert sorted(p.name for p in robot.iterdir()) == sorted(
        [disc["image"], disc["label_pdf"], f"{job.label}.JOB.json"]
    )
    report = check_disc(robot / disc["image"], trust=TrustStore.from_paths([centre.cert_path]))
    assert report.exit_code == 0
    (line,) = list(read_records(config.audit_path))
    assert line["result"] == "verified"


def test_a_ptburn_robot_gets_a_job_request_file_per_disc_and_never_a_second_one(
    tmp_path: Path, centre: Centre
) -> None:
    """robot = "ptburn": after the ISO and label, LABEL.JRQ naming the ISO by the path the
    robot's (Windows) computer sees, the disc type, the copies; once PTBurn has taken it
    (renamed to .QRJ, .INP, .DON or .ERR) a hand-over again writes no new job file."""
    from discmaker.station import jobs as station_jobs

    files = study(tmp_path / "ct", "pt", slices=2)
    robot = tmp_path / "robot"
    robot.mkdir()
    config = make_config(
        tmp_path,
        centre,
        quiet_seconds=3600,
        hot_folder=robot,
        robot="ptburn",
        robot_folder="\\\\DISCSERVER\\PTBurnJobs",
        medium=Medium.DVD,
    )
    job = _disc_requested_offline(config, centre, files, copies=3)
    iso = Path(job.outputs[0]).name
    jrq = robot / f"{job.label}.JRQ"
    assert sorted(p.name for p in robot.iterdir()) == sorted(
        [iso, Path(job.label_pdf).name, jrq.name]
    )
    assert jrq.read_bytes().split(b"\r\n") == [
        f"JobID={job.label}".encode(),
        b"ClientID=discmaker",
        b"DiscType=DVDR",
        f"ImageFile=\\\\DISCSERVER\\PTBurnJobs\\{iso}".encode(),
        b"Copies=3",
        b"VerifyDisc=YES",
        b"RejectIfNotBlank=YES",
        b"CloseDisc=YES",
        b"",
    ]
    report = check_disc(robot / iso, trust=TrustStore.from_paths([centre.cert_path]))
    assert report.exit_code == 0
    station_jobs._hand_over(job, config)  # again, the job file as it was: nothing written
    assert sorted(p.name for p in robot.iterdir()) == sorted(
        [iso, Path(job.label_pdf).name, jrq.name]
    )
    for stage in (".QRJ", ".INP", ".DON", ".ERR"):  # PTBurn took it and renamed it
        taken = jrq.rename(jrq.with_suffix(stage))
        station_jobs._hand_over(job, config)
        assert not jrq.exists(), stage
        taken.rename(jrq)


def test_robot_settings_are_checked(tmp_path: Path) -> None:
    base = tmp_path / "station.toml"
    robot = tmp_path / "robot"
    cases = {
        'robot = "rimage"': 'robot must be "discmaker" or "ptburn"',
        'robot = "ptburn"': "robot and robot_folder need hot_folder",
        f'hot_folder = "{robot}"\nrobot = "ptburn"\n[disc]\nmedium = "usb"': (
            "a PTBurn robot burns discs"
        ),
    }
    for output, message in cases.items():
        base.write_text(
            "[signing]\nkey = 'k'\ncert = 'c'\n[station]\nout = 'o'\n"
            f"[dicom]\nallowed_callers = ['PACS']\n[output]\n{output}\n"
        )
        with pytest.raises(errors.UsageError) as caught:
            station_config.load(base)
        assert message in str(caught.value), output


def test_a_job_cancelled_and_retried_while_it_is_authored_is_made_again_with_the_late_instance(
    tmp_path: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.station import jobs as station_jobs

    files = study(tmp_path / "ct", "v", slices=3)
    config = make_config(tmp_path, centre, quiet_seconds=0)
    with offline(config, centre) as (station, clock):
        for path in files[:2]:
            station.store(_instance(path))
        real_author = station_jobs.author
        calls = []

        def author_while_the_operator_acts(*args: Any, **kwargs: Any) -> Any:
            result = real_author(*args, **kwargs)
            if not calls:  # the first attempt: a late instance, then cancel and retry
                station.store(_instance(files[2]))
                station.queue.cancel(1, now=clock())
                station.queue.retry(1, now=clock())
            calls.append(result)
            return result

        monkeypatch.setattr(station_jobs, "author", author_while_the_operator_acts)
        assert station.step()  # the first attempt is superseded
        assert station.queue.jobs()[0].state == "received"
        assert station.step()  # the second makes the disc
        (job,) = station.queue.jobs()
        assert job.state == "verified" and job.attempts == 2 and len(calls) == 2
        assert disc_uids(Path(job.outputs[0])) == uids(files)


def test_the_instances_of_failed_and_cancelled_jobs_expire_unless_retried(
    tmp_path: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.station import jobs as station_jobs

    studies = {seed: study(tmp_path / seed, seed, slices=1) for seed in ("x1", "x2", "x3")}
    study_of = {seed: str(dcmread(files[0]).StudyInstanceUID) for seed, files in studies.items()}
    config = make_config(tmp_path, centre, quiet_seconds=10, keep_received_days=7)
    real_author, broken = station_jobs.author, [True]

    def author(*args: Any, **kwargs: Any) -> Any:
        if broken[0]:
            raise errors.OutputError("the output disk is gone")
        return real_author(*args, **kwargs)

    monkeypatch.setattr(station_jobs, "author", author)
    with offline(config, centre) as (station, clock):

        def job(seed: str) -> Any:
            (found,) = [j for j in station.queue.jobs() if j.study_uid == study_of[seed]]
            return found

        def job_seed(job_id: int) -> str:
            (seed,) = [s for s in studies if job(s).id == job_id]
            return seed

        for files in studies.values():
            station.store(_instance(files[0]))
        clock.now += 11
        first = station.queue.create_study_job(study_of["x1"], now=clock())
        assert first is not None
        station.queue.cancel(first, now=clock())  # an operator cancels it before it runs
        while station.step():
            pass
        assert sorted(j.state for j in station.queue.jobs()) == ["cancelled", "failed", "failed"]
        failed = [j.id for j in station.queue.jobs() if j.state == "failed"]
        clock.now += 6 * 86400  # an operator retries one failed job a day before it expires
        broken[0] = False
        station.queue.retry(failed[0], now=clock())
        assert station.step()
        retried = station.queue.job(failed[0])
        assert retried is not None and retried.state == "verified"
        clock.now += 86400 + 60
        assert not station.step()  # the loop expires what ended 7 days ago
        kept = {seed: station.queue.job_files(job(seed).id) for seed in studies}
        assert [seed for seed, files in kept.items() if files] == [job_seed(failed[0])]
        (path,) = (Path(p) for _, p in kept[job_seed(failed[0])])
        assert list(config.spool.rglob("*.dcm")) == [path]  # the others' files are deleted
        with pytest.raises(errors.UsageError, match="no longer kept"):
            station.queue.retry(failed[1], now=clock())


class _Killed(BaseException):
    """The station process dying at this point (nothing in it catches this)."""


@pytest.mark.parametrize("crash", ["before the audit line", "after the audit line"])
def test_a_stop_between_a_verified_disc_and_its_audit_line_leaves_it_audited_once(
    tmp_path: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    from discmaker.station.audit import AuditLog

    files = study(tmp_path / "ct", "y", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=10)
    real_audited = Queue.audited

    def die(*args: Any, **kwargs: Any) -> None:
        raise _Killed

    with offline(config, centre) as (station, clock):
        for path in files:
            station.store(_instance(path))
        clock.now += 11
        with monkeypatch.context() as m:
            if crash == "before the audit line":
                m.setattr(AuditLog, "record", die)
            else:
                m.setattr(Queue, "audited", die)
            with pytest.raises(_Killed):
                station.step()
        (job,) = station.queue.jobs()
        assert job.state == "verified"
    lines = list(read_records(config.audit_path))
    assert len(lines) == (0 if crash == "before the audit line" else 1)
    assert Queue.audited is real_audited
    with offline(config, centre) as (station, clock):  # the station starts again
        clock.now += 60
        assert not station.step()
        assert station.queue.audit_pending() == []
        station.queue.retry(job.id, now=clock())  # nothing owed: it may be made again
    (line,) = list(read_records(config.audit_path))
    assert line["job"] == job.id and line["result"] == "verified" and line["attempt"] == 1
    assert line["manifest_sha256"] == job.manifest_sha256.split(",")
    assert line["when"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.updated))


def test_a_stop_after_the_robots_job_file_does_not_hand_the_disc_over_again(
    tmp_path: Path,
    centre: Centre,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = study(tmp_path / "ct", "z", slices=2)
    robot = tmp_path / "robot"
    robot.mkdir()
    config = make_config(tmp_path, centre, quiet_seconds=10, hot_folder=robot)
    real_set_state = Queue.set_state

    def killed_at_handed_over(self: Queue, job_id: int, state: str, **kwargs: Any) -> bool:
        if state == "handed-over":
            raise _Killed  # the job file is in the robot's folder, the queue says "written"
        return real_set_state(self, job_id, state, **kwargs)

    with offline(config, centre) as (station, clock):
        for path in files:
            station.store(_instance(path))
        clock.now += 11
        with monkeypatch.context() as m:
            m.setattr(Queue, "set_state", killed_at_handed_over)
            with pytest.raises(_Killed):
                station.step()
        (job,) = station.queue.jobs()
        assert job.state == "written"
    handed = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in robot.iterdir()}
    assert sorted(handed) == sorted(
        [Path(job.outputs[0]).name, Path(job.label_pdf).name, f"{job.label}.JOB.json"]
    )
    with (
        caplog.at_level("INFO", "discmaker.station"),
        offline(config, centre) as (station, clock),
    ):  # the station starts again: the job goes on from "written"
        assert station.step()
        (job,) = station.queue.jobs()
        assert job.state == "verified"
    again = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in robot.iterdir()}
    assert again == handed  # nothing written again: the robot sees no new job file
    assert "holds its job file already" in caplog.text
    (line,) = list(read_records(config.audit_path))
    assert line["result"] == "verified"


def test_author_errors_are_worded_for_the_station_operator(tmp_path: Path, centre: Centre) -> None:
    """No CLI flags and no spool paths in a job's reason: the configuration key, the
    instance's UID, what to send again."""
    from discmaker.pacs.receive import MediaRequest

    one, other = study(tmp_path / "p1", "w1", slices=1), study(tmp_path / "p2", "w2", slices=1)
    truncated = dcmread(one[0])
    truncated.SOPInstanceUID = generate_uid()
    truncated.StudyInstanceUID, truncated.SeriesInstanceUID = generate_uid(), generate_uid()
    truncated.PixelData = truncated.PixelData[:100]  # readable, but cut short
    broken = tmp_path / "truncated.dcm"
    truncated.save_as(broken)
    config = make_config(tmp_path, centre, quiet_seconds=3600, incomplete_seconds=7200)
    with offline(config, centre) as (station, clock):
        both = [one[0], other[0]]  # two patients, named in one Media Creation request
        for path in both:
            station.store(_instance(path))
        pairs = tuple((str(dcmread(p).SOPClassUID), str(dcmread(p).SOPInstanceUID)) for p in both)
        uid = generate_uid()
        station.media_request(MediaRequest(uid, "PACS", pairs, "", ""))
        station.media_action(uid, 1)
        station.store(_instance(broken))
        assert station.step()
        request_job = station.queue.jobs()[0]
        clock.now += 3601  # the study with the truncated instance is quiet
        while station.step():
            pass
        (quiet_job,) = [j for j in station.queue.jobs() if j.trigger == "quiet"]
    assert request_job.state == "failed", request_job
    mixed = request_job.reason
    assert "2 different patients" in mixed and "one Media Creation request each" in mixed, mixed
    assert "--" not in mixed
    assert quiet_job.state == "failed", quiet_job
    unusable = quiet_job.reason
    assert f"The instance {truncated.SOPInstanceUID}" in unusable, unusable
    assert "send the study again" in unusable
    assert f"discmaker station retry {quiet_job.id}" in unusable
    assert "skip_unusable = true in [disc]" in unusable and "--" not in unusable
    assert str(config.spool) not in unusable  # no hash-named spool path
    lines = {line["job"]: line["reason"] for line in read_records(config.audit_path)}
    assert lines == {request_job.id: mixed, quiet_job.id: unusable}


def test_a_disc_too_large_is_worded_with_the_configuration_keys(tmp_path: Path) -> None:
    from discmaker.station.wording import job_failure

    spool = str(tmp_path / "received" / "ab" / "cd.dcm")
    exc = errors.TooLargeError(
        f"{spool} alone does not fit on a 737,280,000-byte medium. "
        "Choose a larger medium (--medium dvd, bd or usb)."
    )
    config = station_config.StationConfig(
        out=tmp_path, key=tmp_path / "k", cert=tmp_path / "c", span=False
    )
    reason = job_failure(exc, job=3, requested=False, files=[("1.2.3", spool)], config=config)
    assert reason == (
        "The instance 1.2.3 alone does not fit on a 737,280,000-byte medium. Set medium = "
        '"dvd", "bd", "usb" (larger) in [disc] of the station\'s configuration, or span = '
        "true to make a set of discs"
    )
    usb = replace(config, medium=Medium.USB, span=True)
    assert "--" not in job_failure(exc, job=3, requested=False, files=[], config=usb)


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext is not installed")
def test_a_media_creation_requests_label_text_is_printed_on_the_label(
    tmp_path: Path, centre: Centre
) -> None:
    from datetime import UTC, datetime

    from discmaker.people import long_date

    files = study(tmp_path / "ct", "lt", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=3600, incomplete_seconds=7200)
    with running(config, centre) as station:
        send(station.receiver.port, files)
        request = media_request(files)
        request.LabelText = "Für Dr. Müller,\r\nCardiology follow-up"
        request_disc(station.receiver.port, request)
        (job,) = wait_for("the disc", lambda: verified_jobs(station))
    text = subprocess.run(
        ["pdftotext", job.label_pdf, "-"], capture_output=True, text=True, check=True
    ).stdout
    assert text.count("Für Dr. Müller, Cardiology follow-up") == 2  # on the disc, in the insert
    words = " ".join(text.split())
    made = long_date(datetime.fromtimestamp(job.updated, UTC).date())  # what the author wrote
    for expected in (
        "DICOM ONLY",
        "ID ST-lt, born 1 January 1970",
        "Test Imaging Centre",  # the institution, from the disc's manifest
        "Study of 2 January 2026: DEMO STUDY",  # the description, from the received instances
        "Disc 1 of 1",
        f"Created {made}",
    ):
        assert expected in words, expected
    assert "Müller" not in json.dumps(job.to_json())
    assert "Müller" not in config.audit_path.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext is not installed")
def test_instances_are_sealed_as_they_arrive_and_the_disc_is_made_from_them(
    tmp_path: Path, centre: Centre
) -> None:
    """prepare_ahead (the default): each instance is sealed once stored, and the study's disc
    takes those results (byte for byte what the author makes itself, tests/test_ahead.py);
    with prepare_ahead = false nothing is sealed before the study is complete."""
    files = study(tmp_path / "ct", "ah", slices=6)
    for ahead in (True, False):
        config = make_config(tmp_path / str(ahead), centre, prepare_ahead=ahead)
        with running(config, centre) as station:
            send(station.receiver.port, files)
            (job,) = wait_for("the disc", lambda s=station: verified_jobs(s))
            assert disc_uids(Path(job.outputs[0])) == uids(files)
            if ahead:
                assert station.ahead is not None and station.ahead.used == len(files)
                assert not list((config.state / "ahead").iterdir())  # all taken
            else:
                assert station.ahead is None


def test_a_request_for_a_label_without_instance_information_names_no_patient(
    tmp_path: Path, centre: Centre
) -> None:
    """Label Using Information Extracted From Instances NO: the label holds the Label Text and
    the disc's own facts, and nothing from the images (name, ID, birth date, studies)."""
    files = study(tmp_path / "ct", "nl", slices=2)
    config = make_config(tmp_path, centre, quiet_seconds=3600, incomplete_seconds=7200)
    with running(config, centre) as station:
        send(station.receiver.port, files)
        request = media_request(
            files, LabelUsingInformationExtractedFromInstances="NO", LabelText="Case 4711"
        )
        request_disc(station.receiver.port, request)
        (job,) = wait_for("the disc", lambda: verified_jobs(station))
    assert not job.label_from_instances and job.to_json()["label_from_instances"] is False
    text = subprocess.run(
        ["pdftotext", job.label_pdf, "-"], capture_output=True, text=True, check=True
    ).stdout
    words = " ".join(text.split())
    assert text.count("Case 4711") == 2  # on the disc, in the insert
    for expected in ("DICOM ONLY", "Test Imaging Centre", "Disc 1 of 1"):
        assert expected in words, expected
    for absent in ("ST-nl", "1970", "DEMO STUDY", "Patient ID", "Born", "(no name)"):
        assert absent not in words, absent


def test_a_request_that_forbids_splitting_makes_one_disc_or_fails_saying_so(
    tmp_path: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allow Media Splitting NO: the job is authored with spanning off although the station
    spans (the author then refuses a study larger than one disc before any work), and such a
    failure tells the operator what the request asked; a request without it spans."""
    from discmaker.station import jobs as station_jobs
    from discmaker.station.wording import job_failure

    asked: list[bool] = []
    real_author = station_jobs.author

    def recording_author(request: Any, **kwargs: Any) -> Any:
        asked.append(request.span)
        return real_author(request, **kwargs)

    monkeypatch.setattr(station_jobs, "author", recording_author)
    config = make_config(tmp_path, centre, quiet_seconds=3600, incomplete_seconds=7200)
    assert config.span
    with running(config, centre) as station:
        for made, (seed, attrs) in enumerate(
            (("s1", {"AllowMediaSplitting": "NO"}), ("s2", {})), start=1
        ):
            files = study(tmp_path / seed, seed, slices=2)
            send(station.receiver.port, files)
            request_disc(station.receiver.port, media_request(files, **attrs))
            wait_for(f"disc {seed}", lambda n=made: len(verified_jobs(station)) == n)
        jobs = sorted(station.queue.jobs(), key=lambda j: j.id)
    assert [j.allow_splitting for j in jobs] == [False, True]
    assert asked == [False, True]

    exc = errors.TooLargeError("The study needs 2 discs of 737,280,000 bytes.")
    reason = job_failure(exc, job=1, requested=True, files=[], config=config, one_disc=True)
    assert "Allow Media Splitting YES" in reason and "span = true" not in reason


def _memory_mb(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of process ``pid`` in MB (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()

    def kb(key: str) -> int:
        return int(next(line for line in status if line.startswith(key)).split()[1])

    return kb("VmRSS:") // 1024, kb("VmHWM:") // 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_the_station_receives_a_large_instance_without_holding_it_in_memory(
    tmp_path: Path, centre: Centre
) -> None:
    """`discmaker station` (its own process: pynetdicom's chunked receive) takes a 120 MB
    instance from storescu into its spool with its peak memory up by far less than the
    instance (in memory it was about twice the instance: 200 MB took 82 -> 467 MB)."""
    (source,) = study(tmp_path / "ct", "big", slices=1)
    big = dcmread(source)
    big.Rows = big.Columns = 7746  # 16-bit: 120 MB of pixel data
    big.PixelData = bytes(7746 * 7746 * 2)
    sent = tmp_path / "big.dcm"
    big.save_as(sent)
    del big
    config = make_config(tmp_path, centre, quiet_seconds=3600)
    port = free_port()
    cfg = tmp_path / "station.toml"
    _write_config(cfg, config, port)
    log = tmp_path / "station.log"
    proc = _station_process(cfg, log)
    try:
        wait_for("the station to listen", lambda: b"listening" in log.read_bytes(), 30)
        time.sleep(0.5)  # settled after start
        _, peak_before = _memory_mb(proc.pid)
        storescu(port, [sent])
        _, peak = _memory_mb(proc.pid)
        (stored,) = config.spool.rglob("*.dcm")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert peak - peak_before < 40, (peak_before, peak)
    kept = dcmread(stored, stop_before_pixels=True)
    assert kept.SOPInstanceUID == dcmread(sent, stop_before_pixels=True).SOPInstanceUID
    assert stored.stat().st_size > sent.stat().st_size - 1000  # the whole instance
    assert stored.stat().st_mode & 0o777 == 0o600
