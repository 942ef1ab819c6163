"""The station's DICOM receiver (discmaker.pacs.receive) on loopback: C-ECHO, C-STORE from
pynetdicom and dcmtk, refusals that leave the association open, AE title checks, concurrent
and aborted associations, and Media Creation Management (N-CREATE, N-ACTION, N-GET).

The sink is an in-memory fake; every receiver listens on 127.0.0.1, port 0, and is stopped
when its test ends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association

from discmaker.errors import InputError, UsageError
from discmaker.pacs.receive import (
    ACTION_CANCEL,
    ACTION_INITIATE,
    MEDIA_CREATION_MANAGEMENT,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION,
    MediaRequest,
    MediaStatus,
    ReceivedInstance,
    Receiver,
    ReceiverConfig,
    Refused,
)
from discmaker.sample import CT_IMAGE_STORAGE, write_sample_study
from tests.pacs_fixtures import LOOPBACK, media_request

OUR_AET = "DISCSTATION"
SENDER = "SENDER"
WAIT_SECONDS = 30.0  # a timeout only when something is wrong: generous, as CI machines are loaded


# -- the fake station ---------------------------------------------------------------------------


@dataclass
class Ended:
    calling_aet: str
    studies: frozenset[str]
    instances: int
    aborted: bool


@dataclass
class FakeSink:
    """Remembers everything; ``refuse``/``crash`` decide the next C-STOREs' fate."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stored: list[ReceivedInstance] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    ended: list[Ended] = field(default_factory=list)
    requests: dict[str, MediaRequest] = field(default_factory=dict)
    actions: list[tuple[str, int]] = field(default_factory=list)
    refuse: Refused | None = None
    crash: bool = False
    received_as_file: int = 0  # instances handed over as pynetdicom's file (chunked receive)

    def store(self, instance: ReceivedInstance) -> None:
        with self.lock:
            if self.refuse is not None:
                raise self.refuse
            if self.crash:
                raise OSError("disk on fire")
            if instance.path is not None:  # pynetdicom deletes it once this returns
                self.received_as_file += 1
                instance = replace(instance, data=instance.path.read_bytes(), path=None)
            self.stored.append(instance)

    def association_started(self, calling_aet: str) -> None:
        with self.lock:
            self.started.append(calling_aet)

    def association_ended(
        self, calling_aet: str, studies: frozenset[str], *, instances: int, aborted: bool
    ) -> None:
        with self.lock:
            self.ended.append(Ended(calling_aet, studies, instances, aborted))

    def media_request(self, request: MediaRequest) -> None:
        with self.lock:
            if request.request_uid in self.requests:
                raise Refused(0x0111, "duplicate media creation request")
            self.requests[request.request_uid] = request

    def media_action(self, request_uid: str, action: int) -> None:
        with self.lock:
            if request_uid not in self.requests:
                raise Refused(0x0112, "no such media creation request")
            self.actions.append((request_uid, action))

    def media_status(self, request_uid: str) -> MediaStatus:
        with self.lock:
            if request_uid not in self.requests:
                raise Refused(0x0112, "no such media creation request")
            if (request_uid, ACTION_INITIATE) in self.actions:
                return MediaStatus("DONE", "NORMAL", media_created=1)
            return MediaStatus("IDLE", "NORMAL")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@contextmanager
def running(sink: FakeSink, **config: Any) -> Iterator[Receiver]:
    receiver = Receiver(ReceiverConfig(aet=OUR_AET, host=LOOPBACK, port=0, **config), sink)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def receiver(sink: FakeSink) -> Iterator[Receiver]:
    with running(sink) as r:
        yield r


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("receive-study")
    return write_sample_study(root, ct_slices=3, ct_size=64, mr_slices=0)


def ct(study: list[Path], *, study_uid: str | None = None) -> Dataset:
    """A sample CT slice with a new SOP Instance UID (and Study Instance UID if given)."""
    ds = dcmread(study[0])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    return ds


@contextmanager
def associate(
    receiver: Receiver,
    *,
    calling: str = SENDER,
    called: str = OUR_AET,
    contexts: tuple[str, ...] = (VERIFICATION, CT_IMAGE_STORAGE),
    handlers: list[Any] | None = None,
) -> Iterator[Association]:
    """A pynetdicom association with the receiver; released at the end unless it was ended
    (the test aborted it, or it was refused)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT_SECONDS
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, receiver.port, ae_title=called, evt_handlers=handlers)
    no_delay(assoc)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def no_delay(assoc: Association) -> None:
    """TCP_NODELAY, as discmaker's own sender sets it (else ~40 ms per C-STORE on loopback)."""
    wrapper = assoc.dul.socket
    if assoc.is_established and wrapper is not None and wrapper.socket is not None:
        wrapper.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def status_of(response: Dataset) -> int:
    assert "Status" in response, "no answer"
    return int(response.Status)


# -- C-ECHO --------------------------------------------------------------------------------------


def test_echo_with_pynetdicom(receiver: Receiver, sink: FakeSink) -> None:
    with associate(receiver) as assoc:
        assert assoc.is_established
        assert status_of(assoc.send_c_echo()) == 0x0000
    wait_for(lambda: len(sink.ended) == 1, "the end of the association")
    assert sink.started == [SENDER]
    assert sink.ended == [Ended(SENDER, frozenset(), 0, aborted=False)]


def test_echo_with_dcmtk(receiver: Receiver) -> None:
    exe = shutil.which("echoscu")
    if exe is None:
        pytest.skip("dcmtk's echoscu is not installed (apt-get install dcmtk)")
    args = [exe, "-aet", "ECHOER", "-aec", OUR_AET, LOOPBACK, str(receiver.port)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    wrong = [exe, "-aet", "ECHOER", "-aec", "NOTUS", LOOPBACK, str(receiver.port)]
    refused = subprocess.run(wrong, capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode != 0


# -- C-STORE -------------------------------------------------------------------------------------


def test_dcmtk_storescu_sends_a_study(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    exe = shutil.which("storescu")
    if exe is None:
        pytest.skip("dcmtk's storescu is not installed (apt-get install dcmtk)")
    args = [exe, "-aet", "MODALITY", "-aec", OUR_AET, LOOPBACK, str(receiver.port)]
    done = subprocess.run(
        args + [str(p) for p in study], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: len(sink.ended) == 1, "the end of the association")
    sent = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in study}
    assert sorted(i.sop_instance_uid for i in sink.stored) == sorted(sent)
    for instance in sink.stored:
        ds = dcmread(BytesIO(instance.data))
        original = sent[instance.sop_instance_uid]
        assert instance.calling_aet == "MODALITY"
        assert (
            ds.SOPInstanceUID == original.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        )
        assert ds.SOPClassUID == instance.sop_class_uid == CT_IMAGE_STORAGE
        assert instance.study_uid == original.StudyInstanceUID
        assert instance.series_uid == original.SeriesInstanceUID
        assert ds.PixelData == original.PixelData
    studies = frozenset(str(ds.StudyInstanceUID) for ds in sent.values())
    assert sink.ended == [Ended("MODALITY", studies, len(study), aborted=False)]


def test_the_instance_is_kept_as_sent(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    """The bytes are the sender's encoding, not a re-encoding (Implicit VR here)."""
    ds = ct(study)
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2")  # Implicit VR only
    assoc = ae.associate(LOOPBACK, receiver.port, ae_title=OUR_AET)
    try:
        assert status_of(assoc.send_c_store(ds)) == 0x0000
    finally:
        assoc.release()
        ae.shutdown()
    (instance,) = sink.stored
    kept = dcmread(BytesIO(instance.data))
    assert kept.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert kept.SOPInstanceUID == ds.SOPInstanceUID
    assert instance.data[128:132] == b"DICM"


def test_with_chunked_receive_the_instance_comes_as_a_file_and_is_the_same(
    sink: FakeSink, study: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom's STORE_RECV_CHUNKED_DATASET (which only the station's own process sets):
    the sink gets the file pynetdicom wrote, with the bytes the in-memory receive gives; an
    instance over max_instance_bytes is refused 0xA700, and the next one is stored."""
    from pynetdicom import _config

    ds = ct(study)
    with running(sink) as receiver, associate(receiver) as assoc:
        assert status_of(assoc.send_c_store(ds)) == 0x0000
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    size = len(sink.stored[0].data)
    with running(sink, max_instance_bytes=size) as receiver, associate(receiver) as assoc:
        assert status_of(assoc.send_c_store(ds)) == 0x0000
        bigger = ct(study)
        bigger.ImageComments = "x" * 1000
        refused = assoc.send_c_store(bigger)
        assert status_of(refused) == 0xA700
        assert "exceeds this station's limit" in str(refused.ErrorComment)
        assert status_of(assoc.send_c_store(ct(study))) == 0x0000  # the association goes on
    first, again, after = sink.stored
    assert sink.received_as_file == 2
    assert again.data == first.data  # chunked or not: the same Part 10 file
    assert after.sop_instance_uid != first.sop_instance_uid


def test_a_bad_instance_is_refused_and_the_association_goes_on(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    no_patient = ct(study)
    del no_patient.PatientID
    with associate(receiver) as assoc:
        answer = assoc.send_c_store(no_patient)
        assert 0xC000 <= status_of(answer) <= 0xCFFF
        assert "Patient ID" in answer.ErrorComment
        good = ct(study)
        assert status_of(assoc.send_c_store(good)) == 0x0000
    wait_for(lambda: len(sink.ended) == 1, "the end of the association")
    assert [i.sop_instance_uid for i in sink.stored] == [good.SOPInstanceUID]
    assert sink.ended[0].instances == 1
    assert sink.ended[0].aborted is False


def raw_file(path: Path, sop_instance: str, body: bytes) -> Path:
    """A Part 10 file: proper file meta, then ``body`` as the data set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(buffer.getvalue() + body)
    return path


@pytest.fixture
def send_files_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's data set as it is, with the request's UIDs from its meta."""
    import pynetdicom._config

    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.mark.usefixtures("send_files_raw")
def test_undecodable_data_set_is_refused(
    receiver: Receiver, sink: FakeSink, study: list[Path], tmp_path: Path
) -> None:
    path = raw_file(tmp_path / "garbage.dcm", str(generate_uid()), b"\xff" * 64)
    with associate(receiver) as assoc:
        answer = assoc.send_c_store(path)
        assert 0xC000 <= status_of(answer) <= 0xCFFF
        assert answer.ErrorComment
        assert status_of(assoc.send_c_store(ct(study))) == 0x0000
    assert len(sink.stored) == 1


@pytest.mark.usefixtures("send_files_raw")
def test_a_uid_that_differs_from_the_request_is_refused(
    receiver: Receiver, sink: FakeSink, study: list[Path], tmp_path: Path
) -> None:
    ds = ct(study)
    body = BytesIO()
    ds.save_as(body, enforce_file_format=True)
    meta_end = 132 + 12 + int.from_bytes(body.getvalue()[140:144], "little")
    path = raw_file(tmp_path / "other.dcm", str(generate_uid()), body.getvalue()[meta_end:])
    with associate(receiver) as assoc:
        answer = assoc.send_c_store(path)
        assert 0xC000 <= status_of(answer) <= 0xCFFF
        assert "SOP Instance UID differs" in answer.ErrorComment
        assert status_of(assoc.send_c_store(ct(study))) == 0x0000
    assert len(sink.stored) == 1


def test_the_sinks_refusal_goes_back(receiver: Receiver, sink: FakeSink, study: list[Path]) -> None:
    sink.refuse = Refused(0xA700, "the disk is full")
    with associate(receiver) as assoc:
        answer = assoc.send_c_store(ct(study))
        assert status_of(answer) == 0xA700
        assert answer.ErrorComment == "the disk is full"
        sink.refuse = None
        assert status_of(assoc.send_c_store(ct(study))) == 0x0000


def test_a_sink_crash_is_out_of_resources(
    receiver: Receiver, sink: FakeSink, study: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    sink.crash = True
    with associate(receiver) as assoc:
        answer = assoc.send_c_store(ct(study))
        assert status_of(answer) == 0xA700
        assert answer.ErrorComment
        sink.crash = False
        assert status_of(assoc.send_c_store(ct(study))) == 0x0000
    assert any("could not store" in r.getMessage() for r in caplog.records)


# -- AE titles -----------------------------------------------------------------------------------


def test_wrong_called_aet_is_rejected(receiver: Receiver, sink: FakeSink) -> None:
    with associate(receiver, called="SOMEONEELSE") as assoc:
        assert assoc.is_rejected
        primitive = assoc.acceptor.primitive
        assert primitive is not None
        assert (primitive.result_source, primitive.diagnostic) == (1, 7)
    assert sink.started == []


def test_only_allowed_callers_may_associate(sink: FakeSink) -> None:
    with running(sink, allowed_callers=frozenset({"MODALITY"})) as receiver:
        with associate(receiver, calling="INTRUDER") as assoc:
            assert assoc.is_rejected
            primitive = assoc.acceptor.primitive
            assert primitive is not None
            assert (primitive.result_source, primitive.diagnostic) == (1, 3)  # not recognised
        with associate(receiver, calling="MODALITY") as assoc:
            assert assoc.is_established
            assert status_of(assoc.send_c_echo()) == 0x0000
        wait_for(lambda: len(sink.ended) == 1, "the end of the association")
    assert sink.started == ["MODALITY"]


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(UsageError):
        ReceiverConfig(aet="")
    with pytest.raises(UsageError):
        ReceiverConfig(aet="A" * 17)
    with pytest.raises(UsageError):
        ReceiverConfig(aet="OK", port=70000)
    assert ReceiverConfig(aet=" OK ", allowed_callers=frozenset({" PACS"})) == ReceiverConfig(
        aet="OK", allowed_callers=frozenset({"PACS"})
    )


# -- many and broken associations ----------------------------------------------------------------


def test_eight_concurrent_associations(sink: FakeSink, study: list[Path]) -> None:
    with running(sink, max_associations_per_address=8) as receiver:  # all from 127.0.0.1
        _eight_concurrent_associations(receiver, sink, study)


def _eight_concurrent_associations(receiver: Receiver, sink: FakeSink, study: list[Path]) -> None:
    senders, each = 8, 5
    studies = [str(generate_uid()) for _ in range(senders)]
    failures: list[str] = []
    go = threading.Barrier(senders)

    def send(number: int) -> None:
        try:
            with associate(receiver, calling=f"SENDER{number}") as assoc:
                assert assoc.is_established
                go.wait(timeout=WAIT_SECONDS)
                for _ in range(each):
                    code = status_of(assoc.send_c_store(ct(study, study_uid=studies[number])))
                    assert code == 0x0000, f"0x{code:04X}"
        except Exception as exc:
            failures.append(f"sender {number}: {exc!r}")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert failures == []
    wait_for(lambda: len(sink.ended) == senders, "the end of every association")
    uids = [i.sop_instance_uid for i in sink.stored]
    assert len(uids) == len(set(uids)) == senders * each
    assert sorted(e.calling_aet for e in sink.ended) == sorted(f"SENDER{n}" for n in range(8))
    for ended in sink.ended:
        number = int(ended.calling_aet.removeprefix("SENDER"))
        assert ended == Ended(ended.calling_aet, frozenset({studies[number]}), each, False)


def test_an_aborted_association_is_reported_once(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    with associate(receiver) as assoc:
        for _ in range(2):
            assert status_of(assoc.send_c_store(ct(study))) == 0x0000
        assoc.abort()
    wait_for(lambda: len(sink.ended) == 1, "the end of the association")
    time.sleep(0.2)  # a second report would come now
    (ended,) = sink.ended
    assert ended.aborted is True
    assert ended.instances == 2
    assert len(ended.studies) == 1


def test_a_dropped_connection_is_an_abort(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    """The sender's connection goes without an A-RELEASE or A-ABORT (a crash, a cable)."""
    with associate(receiver) as assoc:
        assert status_of(assoc.send_c_store(ct(study))) == 0x0000
        wrapper = assoc.dul.socket
        assert wrapper is not None and wrapper.socket is not None
        sock = wrapper.socket
        try:
            sock.shutdown(socket.SHUT_RDWR)
            wait_for(lambda: len(sink.ended) == 1, "the end of the association")
            wait_for(lambda: not assoc.is_established, "the sender to notice")
        finally:
            sock.close()  # pynetdicom leaves a socket it did not shut down itself open
    time.sleep(0.2)
    assert sink.ended == [Ended(SENDER, sink.ended[0].studies, 1, aborted=True)]


def test_stop_aborts_open_associations(sink: FakeSink, study: list[Path]) -> None:
    receiver = Receiver(ReceiverConfig(aet=OUR_AET, host=LOOPBACK, port=0), sink)
    receiver.start()
    try:
        with associate(receiver) as assoc:
            assert status_of(assoc.send_c_store(ct(study))) == 0x0000
            receiver.stop()
            assert sink.ended == [Ended(SENDER, sink.ended[0].studies, 1, aborted=True)]
            wait_for(lambda: not assoc.is_established, "the sender to notice")
    finally:
        receiver.stop()
        receiver.stop()  # idempotent


def _idle_connection(port: int, source: str) -> socket.socket:
    """A TCP connection from ``source`` (another loopback address) that never asks for an
    association."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect((LOOPBACK, port))
    return sock


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_one_address_cannot_take_every_association_slot(
    sink: FakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Idle connections from one host (127.0.0.2) hold at most max_associations_per_address
    slots; the next from it is closed at once and logged; other hosts still get in; once the
    idle ones are dropped (request_timeout), the host may connect again."""
    noisy = "127.0.0.2"
    limits = {"max_associations": 6, "max_associations_per_address": 4, "request_timeout": 3.0}
    with (
        caplog.at_level("WARNING", "discmaker.pacs.receive"),
        running(sink, **limits) as receiver,
    ):
        idle = [_idle_connection(receiver.port, noisy) for _ in range(4)]
        try:
            with _idle_connection(receiver.port, noisy) as extra:
                assert _closed_by_peer(extra, within=1.0)  # not after the 3 s request timeout
            assert not any(_closed_by_peer(s, within=0.05) for s in idle)  # those stay open
            with associate(receiver) as assoc:  # from 127.0.0.1: a slot is free for it
                assert assoc.is_established
                assert status_of(assoc.send_c_echo()) == 0x0000
            assert all(_closed_by_peer(s, within=5.0) for s in idle)  # the request timeout
            wait_for(lambda: not receiver_threads(receiver), "the idle connections to end")
            with _idle_connection(receiver.port, noisy) as again:
                assert not _closed_by_peer(again, within=0.3)  # its slots are free again
        finally:
            for sock in idle:
                sock.close()
    (message,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert noisy in message and "max_associations_per_address" in message


def receiver_threads(receiver: Receiver) -> list[Any]:
    """The receiver's association threads (pynetdicom's acceptors), open connections."""
    server = receiver._server
    assert server is not None
    return list(server.active_associations)


# -- listening -----------------------------------------------------------------------------------


def test_a_port_in_use_is_a_clear_error(sink: FakeSink) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        receiver = Receiver(ReceiverConfig(aet=OUR_AET, host=LOOPBACK, port=port), sink)
        with pytest.raises(InputError, match="already in use"):
            receiver.start()
        receiver.stop()  # nothing to stop; no error


def test_the_context_manager_listens_and_stops(sink: FakeSink) -> None:
    with Receiver(ReceiverConfig(aet=OUR_AET, host=LOOPBACK, port=0), sink) as receiver:
        port = receiver.port
        with socket.create_connection((LOOPBACK, port), timeout=WAIT_SECONDS):
            pass
    with pytest.raises(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
        pass


def test_compressed_syntaxes_are_accepted_after_uncompressed() -> None:
    assert STORAGE_TRANSFER_SYNTAXES[:2] == ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert "1.2.840.10008.1.2.4.50" in STORAGE_TRANSFER_SYNTAXES  # JPEG Baseline, as sent
    lossless = STORAGE_TRANSFER_SYNTAXES.index("1.2.840.10008.1.2.4.70")
    assert lossless < STORAGE_TRANSFER_SYNTAXES.index("1.2.840.10008.1.2.4.50")
    assert "1.2.840.10008.1.2.4.94" not in STORAGE_TRANSFER_SYNTAXES  # JPIP: pixels by URL


def test_a_jpeg_image_is_accepted_as_sent(receiver: Receiver, sink: FakeSink) -> None:
    """Only JPEG Baseline offered: the receiver takes it and keeps the compressed bytes."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "DM-000001"
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    frame = b"\xff\xd8\xff\xd9"  # not a real JPEG; the receiver does not decode pixels
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta = Dataset()  # type: ignore[assignment]
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ae = AE(ae_title=SENDER)
    ae.add_requested_context(ds.SOPClassUID, "1.2.840.10008.1.2.4.50")
    assoc = ae.associate(LOOPBACK, receiver.port, ae_title=OUR_AET)
    try:
        assert assoc.is_established
        assert status_of(assoc.send_c_store(ds)) == 0x0000
    finally:
        assoc.release()
        ae.shutdown()
    (instance,) = sink.stored
    kept = dcmread(BytesIO(instance.data))
    assert kept.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert frame in kept.PixelData


# -- Media Creation Management -------------------------------------------------------------------


MCM_CONTEXTS = (MEDIA_CREATION_MANAGEMENT,)


def test_media_creation_request_initiate_and_status(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    request_uid = str(generate_uid())
    attrs = media_request(study, StorageMediaFileSetID="DISC1", LabelText="For Dr Who")
    with associate(receiver, contexts=MCM_CONTEXTS) as assoc:
        status, reply = assoc.send_n_create(attrs, MEDIA_CREATION_MANAGEMENT, request_uid)
        assert status_of(status) == 0x0000
        assert reply is not None
        assert reply.ExecutionStatus == "IDLE"
        assert len(reply.ReferencedSOPSequence) == len(study)

        tags = [0x21000020, 0x21000030, 0x2200000B, 0x00081198]
        status, current = assoc.send_n_get(tags, MEDIA_CREATION_MANAGEMENT, request_uid)
        assert status_of(status) == 0x0000
        assert current is not None and current.ExecutionStatus == "IDLE"

        status, _ = assoc.send_n_action(
            None, ACTION_INITIATE, MEDIA_CREATION_MANAGEMENT, request_uid
        )
        assert status_of(status) == 0x0000

        status, current = assoc.send_n_get(tags, MEDIA_CREATION_MANAGEMENT, request_uid)
        assert status_of(status) == 0x0000
        assert current is not None
        assert current.ExecutionStatus == "DONE"
        assert current.ExecutionStatusInfo == "NORMAL"
        assert current.TotalNumberOfPiecesOfMediaCreated == 1
        assert len(current.FailedSOPSequence) == 0

    request = sink.requests[request_uid]
    assert request.calling_aet == SENDER
    assert request.fileset_id == "DISC1"
    assert request.label_text == "For Dr Who"
    expected = [(CT_IMAGE_STORAGE, str(dcmread(p).SOPInstanceUID)) for p in study]
    assert list(request.instances) == expected
    assert sink.actions == [(request_uid, ACTION_INITIATE)]


def test_media_status_reports_failures(sink: FakeSink) -> None:
    class Failing(FakeSink):
        def media_status(self, request_uid: str) -> MediaStatus:
            return MediaStatus("FAILURE", "no media left!", failed=((CT_IMAGE_STORAGE, "1.2.3.4"),))

    failing = Failing()
    with running(failing) as receiver, associate(receiver, contexts=MCM_CONTEXTS) as assoc:
        status, current = assoc.send_n_get([], MEDIA_CREATION_MANAGEMENT, "1.2.3")
    assert status_of(status) == 0x0000
    assert current is not None
    assert current.ExecutionStatus == "FAILURE"
    assert current.ExecutionStatusInfo == "NO_MEDIA_LEFT"  # as a Code String
    (item,) = current.FailedSOPSequence
    assert (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) == (
        CT_IMAGE_STORAGE,
        "1.2.3.4",
    )
    assert item.FailureReason == 0x0110


def test_unknown_media_requests_and_actions(receiver: Receiver, sink: FakeSink) -> None:
    unknown = str(generate_uid())
    with associate(receiver, contexts=MCM_CONTEXTS) as assoc:
        status, _ = assoc.send_n_action(None, ACTION_CANCEL, MEDIA_CREATION_MANAGEMENT, unknown)
        assert status_of(status) == 0x0112
        status, _ = assoc.send_n_get([0x21000020], MEDIA_CREATION_MANAGEMENT, unknown)
        assert status_of(status) == 0x0112
        status, _ = assoc.send_n_action(None, 7, MEDIA_CREATION_MANAGEMENT, unknown)
        assert status_of(status) == 0x0123
        no_references = Dataset()
        no_references.LabelText = "nothing"  # pynetdicom cannot send an empty attribute list
        status, _ = assoc.send_n_create(no_references, MEDIA_CREATION_MANAGEMENT)
        assert status_of(status) == 0x0120
        assert "Referenced SOP Sequence" in status.ErrorComment
        no_references.ReferencedSOPSequence = []
        status, _ = assoc.send_n_create(no_references, MEDIA_CREATION_MANAGEMENT)
        assert status_of(status) == 0x0121
    assert sink.requests == {}
    assert sink.actions == []


def test_a_media_request_without_uid_gets_one(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    responses: list[Any] = []

    def on_receive(event: Any) -> None:
        responses.append(event.message.command_set)

    handlers = [(evt.EVT_DIMSE_RECV, on_receive)]
    with associate(receiver, contexts=MCM_CONTEXTS, handlers=handlers) as assoc:
        status, _reply = assoc.send_n_create(media_request(study), MEDIA_CREATION_MANAGEMENT)
        assert status_of(status) == 0x0000
    (request_uid,) = sink.requests
    assert request_uid
    assert any(getattr(r, "AffectedSOPInstanceUID", None) == request_uid for r in responses), (
        "the SCU is told the UID we minted"
    )


def test_a_media_creation_request_says_yes_or_no_to_labels_and_splitting(
    receiver: Receiver, sink: FakeSink, study: list[Path]
) -> None:
    """Label Using Information Extracted From Instances (2200,0001) and Allow Media
    Splitting (2200,0007): absent and YES leave both on, NO turns each off, anything else is
    refused with 0x0106 naming the attribute."""
    asked = {
        "absent": {},
        "yes": {"LabelUsingInformationExtractedFromInstances": "YES", "AllowMediaSplitting": "YES"},
        "no": {"LabelUsingInformationExtractedFromInstances": "NO", "AllowMediaSplitting": "NO"},
    }
    uids = {name: str(generate_uid()) for name in asked}
    with associate(receiver, contexts=MCM_CONTEXTS) as assoc:
        for name, attrs in asked.items():
            status, _ = assoc.send_n_create(
                media_request(study, **attrs), MEDIA_CREATION_MANAGEMENT, uids[name]
            )
            assert status_of(status) == 0x0000, name
        for keyword, tag in (
            ("LabelUsingInformationExtractedFromInstances", "(2200,0001)"),
            ("AllowMediaSplitting", "(2200,0007)"),
        ):
            status, _ = assoc.send_n_create(
                media_request(study, **{keyword: "MAYBE"}),
                MEDIA_CREATION_MANAGEMENT,
                str(generate_uid()),
            )
            assert status_of(status) == 0x0106
            assert status.ErrorComment == f"{tag} must be YES or NO"
    flags = {
        name: (sink.requests[uid].label_from_instances, sink.requests[uid].allow_splitting)
        for name, uid in uids.items()
    }
    assert flags == {"absent": (True, True), "yes": (True, True), "no": (False, False)}
    assert len(sink.requests) == 3
