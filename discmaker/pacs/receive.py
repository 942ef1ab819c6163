"""The DICOM side of the unattended disc station: a Storage SCP that hands what it receives on.

A :class:`Receiver` listens with its own pynetdicom ``AE`` (our AE title, which callers must
use: ``require_called_aet``; the calling AE titles it accepts, empty for any; at most
``max_associations`` at once, and ``max_associations_per_address`` connections from one
address, so a host holding idle or slow connections cannot take every slot; one beyond it is
closed at once and logged with the address). Everything it knows lives in the instance, so
one process can run several receivers (the tests do), and pynetdicom's module-wide settings
are never changed.
It writes nothing and queues nothing itself: every decision that needs the disc or the job
queue is the :class:`ReceiveSink`'s (``discmaker.station``). Its log records go to this
module's logger; they name AE titles and UIDs, never patient data.

Services (presentation contexts):

* Verification (C-ECHO).
* Every storage SOP class pynetdicom knows (``AllStoragePresentationContexts``) in every
  transfer syntax it knows, except JPIP (the pixel data would be a URL, not on the disc) and
  the SMPTE ST 2110 streaming syntaxes. pynetdicom picks the first of *our* syntaxes that the
  sender proposed, so ours are ordered uncompressed, lossless, lossy: a sender that can send
  either way sends losslessly, and a JPEG image offered only as JPEG is taken as sent.
* Media Creation Management (PS3.4 Annex S): N-CREATE, N-ACTION and N-GET of a media creation
  request, so a sender can say "this study, on a disc, now" instead of waiting for the quiet
  period after which the station deems a study complete. The sink keeps the jobs: an unknown
  request is its :class:`Refused` (0x0112); a sink that fails otherwise gets 0x0110.

C-STORE: the data set is kept exactly as sent (:meth:`pynetdicom.events.Event.encoded_dataset`,
with the File Meta Information pynetdicom derives from the request and the presentation
context; with pynetdicom's chunked receive, ``STORE_RECV_CHUNKED_DATASET``, the file it wrote
that to as the data arrived, :attr:`~pynetdicom.events.Event.dataset_path`, so an instance is
never held in memory whole) and read back with pydicom, up to the pixel data, only to check
it: larger than ``max_instance_bytes`` is refused (0xA700); SOP Class and
Instance UIDs equal to the request's, Study and Series Instance UID and Patient ID not empty. A
data set that fails these checks, or cannot be read, is refused with 0xC000 "cannot
understand" and an Error Comment saying what is wrong; the association goes on. Success
(0x0000) goes back only once :meth:`ReceiveSink.store` has returned, i.e. once the instance is
durable. A sink that raises :class:`Refused` gets its status and comment sent; any other
exception from it is logged and answered 0xA700 (out of resources).

Associations: the sink hears :meth:`~ReceiveSink.association_started` once an association is
established, and :meth:`~ReceiveSink.association_ended` exactly once when it ends, with the
studies it stored instances of and how many: ``aborted=False`` after an orderly release,
``aborted=True`` after an A-ABORT (from either side, or ours at :meth:`Receiver.stop`) or a
connection that closed without one. That call comes after every sink call made for the
association has returned (it waits for a C-STORE still being written).

No handler ever raises into pynetdicom (that would abort the association): every request gets
a status. Accepted connections get TCP_NODELAY (small response PDUs, as in
:mod:`discmaker.pacs.network`).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association as _PynetAssociation
from pynetdicom.dimse_primitives import C_STORE, N_ACTION, N_CREATE, N_GET
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from discmaker.errors import InputError, UsageError
from discmaker.pacs.destination import check_aet

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
MEDIA_CREATION_MANAGEMENT = "1.2.840.10008.5.1.1.33"  # PS3.4 Annex S

# DIMSE statuses (PS3.7 Annex C, PS3.4 Annexes B and S).
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000  # C-STORE failure: the data set is unusable
OUT_OF_RESOURCES = 0xA700  # C-STORE failure: we could not keep it
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_CLASS = 0x0118
NO_SUCH_SOP_INSTANCE = 0x0112
NO_SUCH_ACTION = 0x0123
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121

ACTION_INITIATE = 1  # N-ACTION Action Type ID: Initiate Media Creation
ACTION_CANCEL = 2  # Cancel Media Creation

EXECUTION_STATUSES = frozenset({"IDLE", "PENDING", "CREATING", "DONE", "FAILURE"})

MAX_ERROR_COMMENT = 64  # Error Comment (0000,0902) is LO
MAX_CS = 16
STOP_JOIN_SECONDS = 5.0

# Transfer syntaxes whose pixel data is exactly what the sender had (compressed or not).
_LOSSLESS = frozenset(
    {
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Lossless
        "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
    }
)
# Not for a disc: JPIP references the pixel data by URL; SMPTE ST 2110 is for live streams.
_EXCLUDED = frozenset(
    {
        "1.2.840.10008.1.2.4.94",
        "1.2.840.10008.1.2.4.95",
        "1.2.840.10008.1.2.4.204",
        "1.2.840.10008.1.2.4.205",
        "1.2.840.10008.1.2.7.1",
        "1.2.840.10008.1.2.7.2",
        "1.2.840.10008.1.2.7.3",
    }
)
_UNCOMPRESSED_ORDER = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
)


def _storage_syntaxes() -> list[str]:
    """The transfer syntaxes we accept for storage, in order of preference."""

    def rank(uid: str) -> tuple[int, int]:
        if uid in _UNCOMPRESSED_ORDER:
            return (0, _UNCOMPRESSED_ORDER.index(uid))
        return (1, 0) if uid in _LOSSLESS else (2, 0)

    syntaxes = [str(uid) for uid in ALL_TRANSFER_SYNTAXES if str(uid) not in _EXCLUDED]
    return sorted(syntaxes, key=rank)  # stable: pynetdicom's order within a rank


STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(_storage_syntaxes())


# -- the API the station codes against ----------------------------------------------------------


@dataclass(frozen=True)
class ReceivedInstance:
    """One instance a sender stored with us."""

    calling_aet: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    # The complete DICOM Part 10 file (preamble, file meta, dataset) as received: in memory,
    # or, with pynetdicom's chunked receive (``STORE_RECV_CHUNKED_DATASET``, which only the
    # station's own process turns on), the file pynetdicom wrote it to. The sink may move
    # that file away (e.g. rename it into its spool); pynetdicom deletes it otherwise once
    # the sink returns.
    data: bytes = b""
    path: Path | None = None

    @property
    def size(self) -> int:
        """The Part 10 file's size in bytes."""
        return len(self.data) if self.path is None else self.path.stat().st_size


@dataclass(frozen=True)
class MediaRequest:
    """A Media Creation Management N-CREATE: put these instances on a disc."""

    request_uid: str  # the Media Creation Request SOP Instance UID (the SCU's, or one we mint)
    calling_aet: str
    instances: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID), in order
    fileset_id: str  # Storage Media File-Set ID (0088,0130), "" when absent
    label_text: str  # Label Text (2200,0002), "" when absent
    copies: int = 1  # Number of Copies (2000,0010), 1 when absent
    # Label Using Information Extracted From Instances (2200,0001): NO -> the label shows the
    # Label Text and the disc's own facts only, no patient or study data; YES or absent -> both
    label_from_instances: bool = True
    # Allow Media Splitting (2200,0007): NO -> a study that needs more than one disc fails
    # instead of becoming a set; YES or absent -> the station's own setting (span) decides
    allow_splitting: bool = True


@dataclass(frozen=True)
class MediaStatus:
    """What an N-GET of a media creation request reports."""

    execution_status: str  # "IDLE" | "PENDING" | "CREATING" | "DONE" | "FAILURE"
    info: str = ""  # Execution Status Info (2100,0030), e.g. "NORMAL" or a failure reason
    media_created: int = 0  # Total Number of Pieces of Media Created (2200,000B)
    failed: tuple[tuple[str, str], ...] = ()  # Failed SOP Sequence (class, instance)


class Refused(Exception):
    """Raised by a sink method to refuse a request with a DIMSE ``status`` (e.g. 0xA700 out
    of resources, 0xC000 cannot understand, 0x0112 no such SOP instance for an unknown media
    creation request, 0x0106 invalid attribute value); ``message`` goes back as the Error
    Comment (at most 64 plain characters are sent) and must not contain patient data."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple[type[Refused], tuple[int, str]]:
        return (type(self), (self.status, self.message))


class ReceiveSink(Protocol):
    """Where the receiver's work goes (implemented by the station). Called from pynetdicom's
    association threads, several at once: implementations must be thread-safe."""

    def store(self, instance: ReceivedInstance) -> None:
        """Keep ``instance``; return only once it is durable. May raise :class:`Refused`."""
        ...

    def association_ended(
        self, calling_aet: str, studies: frozenset[str], *, instances: int, aborted: bool
    ) -> None:
        """An association ended; ``studies`` and ``instances``: what it stored."""
        ...

    def association_started(self, calling_aet: str) -> None:
        """A sender is busy (so the station does not deem its study complete meanwhile)."""
        ...

    def media_request(self, request: MediaRequest) -> None:
        """N-CREATE of a media creation request. May raise :class:`Refused`."""
        ...

    def media_action(self, request_uid: str, action: int) -> None:
        """N-ACTION: 1 initiate, 2 cancel. May raise :class:`Refused` (0x0112: unknown)."""
        ...

    def media_status(self, request_uid: str) -> MediaStatus:
        """N-GET. May raise :class:`Refused` (0x0112: unknown request)."""
        ...


@dataclass(frozen=True)
class ReceiverConfig:
    """Where and as whom the receiver listens. The AE titles are checked and stripped of
    surrounding spaces (:class:`~discmaker.errors.UsageError` when one is invalid)."""

    aet: str  # our AE title
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_callers: frozenset[str] = frozenset()  # empty: any calling AE title
    max_associations: int = 16
    # Connections one address may hold open at once (idle ones too): one host, slow or
    # hostile, cannot take every association slot. A connection beyond it is closed at once.
    max_associations_per_address: int = 4
    request_timeout: float = 5.0  # seconds a new connection has to ask for an association
    # An instance larger than this is refused (0xA700, with a comment naming the limit);
    # None: no limit.
    max_instance_bytes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "aet", check_aet(self.aet, what="AE title of this station"))
        callers = frozenset(
            check_aet(title, what="allowed calling AE title") for title in self.allowed_callers
        )
        object.__setattr__(self, "allowed_callers", callers)
        if not 0 <= self.port <= 65535:
            raise UsageError(
                f"Port {self.port} is not a TCP port (1-65535; 0 lets the system choose). "
                "The usual DICOM ports are 104 and 11112."
            )
        if self.max_instance_bytes is not None and self.max_instance_bytes < 1:
            raise UsageError(f"max_instance_bytes is {self.max_instance_bytes}; at least 1.")
        if self.max_associations < 1 or self.max_associations_per_address < 1:
            raise UsageError(
                f"max_associations is {self.max_associations} and "
                f"max_associations_per_address {self.max_associations_per_address}; each needs "
                "at least 1."
            )


# -- helpers -------------------------------------------------------------------------------------


def _comment(text: str) -> str:
    """``text`` as an Error Comment: plain printable characters, no backslash, 64 at most."""
    clean = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text).strip()
    if len(clean) > MAX_ERROR_COMMENT:
        clean = clean[: MAX_ERROR_COMMENT - 3].rstrip() + "..."
    return clean


def _status(code: int, comment: str = "") -> Dataset:
    """A status data set for pynetdicom: Status and, on failure, Error Comment."""
    status = Dataset()
    status.Status = code
    if comment and code != SUCCESS:
        status.ErrorComment = _comment(comment)
    return status


def _cs(text: str) -> str:
    """``text`` as a Code String in the style of the defined terms: upper case letters and
    digits, words joined by underscores, 16 characters at most ("no media!" -> NO_MEDIA)."""
    words = "".join(c if c.isascii() and c.isalnum() else " " for c in text.upper()).split()
    return "_".join(words)[:MAX_CS].rstrip("_")


def _text(ds: Dataset, keyword: str) -> str:
    """The value of ``keyword`` in ``ds`` as stripped text; empty when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip("\x00 ")


def _calling_aet(assoc: _PynetAssociation) -> str:
    return str(assoc.requestor.ae_title).strip()


class _Invalid(Exception):
    """A request we refuse: its status and comment."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_REQUEST_INSTANCES = 100_000  # instances one Media Creation request may name
MAX_COPIES = 99  # copies of a disc one request may ask for


def is_uid(text: str) -> bool:
    """A single DICOM UID (PS3.5 9.1: digits and dots, at most 64 characters): what the
    station lets name a file, a log line or a database row."""
    return len(text) <= 64 and _UID.fullmatch(text) is not None


def _check_instance(data: bytes | Path, sop_class: str, sop_instance: str) -> tuple[str, str]:
    """(Study, Series Instance UID) of the Part 10 ``data`` (bytes, or a file: only its
    header is read); :class:`_Invalid` when it cannot be read or lacks what the station
    needs."""
    try:
        ds = dcmread(BytesIO(data) if isinstance(data, bytes) else data, stop_before_pixels=True)
        found_class = _text(ds, "SOPClassUID")
        found_instance = _text(ds, "SOPInstanceUID")
        study = _text(ds, "StudyInstanceUID")
        series = _text(ds, "SeriesInstanceUID")
        patient = _text(ds, "PatientID")
    except Exception as exc:  # pydicom raises many kinds on damaged data (and warnings-as-errors)
        log.debug("C-STORE data set unreadable: %s: %s", type(exc).__name__, exc)
        raise _Invalid(CANNOT_UNDERSTAND, "the data set cannot be decoded") from exc
    problems = []
    if not found_instance:
        problems.append("SOP Instance UID missing or empty")
    elif found_instance != sop_instance:
        problems.append("SOP Instance UID differs from the request's")
    if not found_class:
        problems.append("SOP Class UID missing or empty")
    elif found_class != sop_class:
        problems.append("SOP Class UID differs from the request's")
    if not study:
        problems.append("Study Instance UID missing or empty")
    if not series:
        problems.append("Series Instance UID missing or empty")
    for what, uid in (
        ("SOP Instance", found_instance),
        ("SOP Class", found_class),
        ("Study Instance", study),
        ("Series Instance", series),
    ):
        if uid and not is_uid(uid):
            problems.append(f"{what} UID is not a UID (digits and dots, 64 at most)")
    if not patient:
        problems.append("Patient ID missing or empty")
    if problems:
        raise _Invalid(CANNOT_UNDERSTAND, "; ".join(problems))
    return study, series


def _media_request(ds: Dataset, request_uid: str, calling_aet: str) -> MediaRequest:
    """The N-CREATE attribute list ``ds`` as a :class:`MediaRequest`; :class:`_Invalid` when
    it lacks the Referenced SOP Sequence or one of its items is incomplete."""
    if "ReferencedSOPSequence" not in ds:
        raise _Invalid(MISSING_ATTRIBUTE, "Referenced SOP Sequence (0008,1199) missing")
    items = ds.ReferencedSOPSequence or []
    if not items:
        raise _Invalid(MISSING_ATTRIBUTE_VALUE, "Referenced SOP Sequence (0008,1199) is empty")
    instances = []
    for number, item in enumerate(items, start=1):
        pair = (_text(item, "ReferencedSOPClassUID"), _text(item, "ReferencedSOPInstanceUID"))
        if not all(pair):
            raise _Invalid(
                MISSING_ATTRIBUTE_VALUE,
                f"Referenced SOP Sequence item {number} lacks a class or instance UID",
            )
        if not all(map(is_uid, pair)):
            raise _Invalid(
                INVALID_ATTRIBUTE_VALUE, f"Referenced SOP Sequence item {number}: not a UID"
            )
        instances.append(pair)
    if len(instances) > MAX_REQUEST_INSTANCES:
        raise _Invalid(
            INVALID_ATTRIBUTE_VALUE,
            f"more than {MAX_REQUEST_INSTANCES} instances in one media creation request",
        )
    copies = _text(ds, "NumberOfCopies") or "1"
    if not copies.isdigit() or not 1 <= int(copies) <= MAX_COPIES:
        raise _Invalid(INVALID_ATTRIBUTE_VALUE, f"Number of Copies must be 1 to {MAX_COPIES}")
    return MediaRequest(
        request_uid=request_uid,
        calling_aet=calling_aet,
        instances=tuple(instances),
        fileset_id=_text(ds, "StorageMediaFileSetID"),
        label_text=_text(ds, "LabelText"),
        copies=int(copies),
        label_from_instances=_yes_no(ds, 0x22000001),
        allow_splitting=_yes_no(ds, 0x22000007),
    )


def _yes_no(ds: Dataset, tag: int) -> bool:
    """The YES/NO attribute ``tag`` of a media creation request: True for YES or absent (the
    behaviour PS3.4 Annex S describes for both), False for NO; :class:`_Invalid` otherwise."""
    elem = ds.get(tag)
    value = "" if elem is None or elem.value is None else str(elem.value).strip("\x00 ").upper()
    if value not in ("", "YES", "NO"):
        t = Tag(tag)
        raise _Invalid(
            INVALID_ATTRIBUTE_VALUE, f"({t.group:04X},{t.element:04X}) must be YES or NO"
        )
    return value != "NO"


def _status_dataset(status: MediaStatus, wanted: Iterable[Any] | None) -> Dataset:
    """The N-GET attribute list for ``status``: the attributes of PS3.4 Table S.3.2.4.1-1 we
    maintain, only those in ``wanted`` (the Attribute Identifier List) when it names some."""
    if status.execution_status not in EXECUTION_STATUSES:
        raise ValueError(f"execution status {status.execution_status!r} is not a defined term")
    ds = Dataset()
    ds.ExecutionStatus = status.execution_status
    ds.ExecutionStatusInfo = _cs(status.info) or (
        "NORMAL" if status.execution_status != "FAILURE" else ""
    )
    ds.TotalNumberOfPiecesOfMediaCreated = max(0, int(status.media_created))
    failed = Sequence()
    for sop_class, sop_instance in status.failed:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        item.FailureReason = PROCESSING_FAILURE
        failed.append(item)
    ds.FailedSOPSequence = failed  # type 2 for the SCP: present, empty when none failed
    ds.ReferencedStorageMediaSequence = Sequence()  # type 2; the station does not track media
    tags = {Tag(t) for t in wanted} if wanted else set()
    if tags:
        for elem in list(ds):
            if elem.tag not in tags:
                del ds[elem.tag]
    return ds


_T = TypeVar("_T")


@dataclass
class _Peer:
    """What one association did, for :meth:`ReceiveSink.association_ended`."""

    calling_aet: str
    studies: set[str] = field(default_factory=set)
    instances: int = 0
    busy: int = 0  # sink calls in progress for this association
    ending: bool | None = None  # the association ended while busy: was it aborted?


# -- the receiver --------------------------------------------------------------------------------

REFUSAL_LOG_SECONDS = 60.0  # a host refused again and again is logged once a minute
MAX_REFUSED_HOSTS = 1024  # hosts remembered for that


class _CappedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server (made with ``AE.make_server(server_class=...)``), which
    closes a new connection at once while its address holds ``per_address`` open already.

    A connection counts from its accept until its association thread ends (also while it
    has not asked for an association yet, as pynetdicom's own limit counts it)."""

    def __init__(self, *args: Any, per_address: int, **kwargs: Any) -> None:
        self.per_address = per_address
        self._cap_lock = threading.Lock()
        self._pending: dict[str, set[socket.socket]] = {}  # accepted, thread not started yet
        self._refusals: dict[str, tuple[float, int]] = {}  # host -> (last logged, since)
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = _host(client_address)
        with self._cap_lock:
            held = self._open_from(host)
            if held >= self.per_address:
                self._refused(host, held)
                return False  # socketserver closes the connection
            self._pending.setdefault(host, set()).add(request)
        return True

    def finish_request(self, request: Any, client_address: Any) -> None:
        # In the connection's own thread: makes the association and starts its thread.
        try:
            super().finish_request(request, client_address)
        finally:
            with self._cap_lock:
                waiting = self._pending.get(_host(client_address), set())
                waiting.discard(request)
                if not waiting:
                    self._pending.pop(_host(client_address), None)

    def shutdown_request(self, request: Any) -> None:
        # a connection refused, or one whose thread could not start: no longer pending
        with self._cap_lock:
            for host, waiting in list(self._pending.items()):
                waiting.discard(request)
                if not waiting:
                    del self._pending[host]
        super().shutdown_request(request)

    def shutdown(self) -> None:
        """Stop accepting and close the socket (as pynetdicom's, without the AE's list of
        servers, which only ``AE.start_server`` adds to)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()

    def _open_from(self, host: str) -> int:
        pending = self._pending.get(host, set())
        running = 0
        for assoc in self.active_associations:
            with contextlib.suppress(Exception):  # one ending meanwhile
                wrapper = assoc.dul.socket
                if wrapper is not None and wrapper.socket in pending:
                    continue  # counted as pending
                if assoc.requestor.address == host:
                    running += 1
        return running + len(pending)

    def _refused(self, host: str, held: int) -> None:
        now = time.monotonic()
        last, since = self._refusals.get(host, (-REFUSAL_LOG_SECONDS, 0))
        if now - last < REFUSAL_LOG_SECONDS:
            self._refusals[host] = (last, since + 1)
            return
        if len(self._refusals) > MAX_REFUSED_HOSTS:  # forget hosts quiet for a while
            cutoff = now - REFUSAL_LOG_SECONDS
            self._refusals = {h: v for h, v in self._refusals.items() if v[0] >= cutoff}
        self._refusals[host] = (now, 0)
        log.warning(
            "connection from %s refused: it holds %d open already (max_associations_per_address)%s",
            host,
            held,
            f"; {since} more refused since the last message" if since else "",
        )


def _host(address: Any) -> str:
    """The host part of a socket address (IPv4 or IPv6 tuple)."""
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


class Receiver:
    """A DICOM Storage (and Media Creation Management) SCP feeding ``sink``.

    :meth:`start` listens in pynetdicom's server thread and returns; :meth:`stop` (also at the
    end of a ``with`` block) closes the server and aborts the associations still open.
    """

    def __init__(self, config: ReceiverConfig, sink: ReceiveSink) -> None:
        self.config = config
        self._sink = sink
        self._lock = threading.Lock()
        self._peers: dict[_PynetAssociation, _Peer] = {}
        self._server: _CappedServer | None = None
        ae = AE(ae_title=config.aet)
        ae.require_called_aet = True
        ae.require_calling_aet = sorted(config.allowed_callers)
        ae.maximum_associations = config.max_associations
        # A connection that sends no association request within this time is dropped, so
        # idle sockets cannot hold every association slot for long (pynetdicom: 30 s).
        ae.acse_timeout = config.request_timeout
        ae.add_supported_context(VERIFICATION)
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, list(STORAGE_TRANSFER_SYNTAXES))
        ae.add_supported_context(MEDIA_CREATION_MANAGEMENT)
        self._ae = ae

    # -- lifecycle

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port we listen on (the system's choice when ``config.port`` is 0)."""
        server = self._server
        if server is None:
            raise RuntimeError("the receiver is not listening; call start() first")
        return int(server.server_address[1])

    def start(self) -> None:
        """Listen; :class:`~discmaker.errors.InputError` says why when we cannot."""
        with self._lock:
            if self._server is not None:
                return
            handlers: list[Any] = [
                (evt.EVT_C_ECHO, self._on_echo),
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_N_CREATE, self._on_n_create),
                (evt.EVT_N_ACTION, self._on_n_action),
                (evt.EVT_N_GET, self._on_n_get),
                (evt.EVT_ESTABLISHED, self._on_established),
                (evt.EVT_RELEASED, self._on_released),
                (evt.EVT_ABORTED, self._on_aborted),
                (evt.EVT_CONN_OPEN, _on_conn_open),
                (evt.EVT_CONN_CLOSE, self._on_conn_close),
            ]
            c = self.config
            try:
                server = cast(
                    _CappedServer,
                    self._ae.make_server(
                        (c.host, c.port),
                        evt_handlers=handlers,
                        server_class=_CappedServer,
                        per_address=c.max_associations_per_address,
                    ),
                )
            except OSError as exc:
                raise InputError(_listen_problem(c, exc)) from exc
            thread = threading.Thread(
                target=server.serve_forever, name=f"DICOM receiver {c.aet}", daemon=True
            )
            thread.start()
            self._server = server
        log.info("DICOM receiver %s listening on %s:%d", c.aet, c.host, self.port)

    def stop(self) -> None:
        """Stop listening and abort the open associations (their senders will try again);
        idempotent."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # no new associations from here on
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        open_ones = server.active_associations
        for _ in range(2):  # again for one that became established meanwhile
            for assoc in open_ones:
                _end_now(assoc)
            for assoc in open_ones:
                assoc.join(max(0.0, min(0.2, deadline - time.monotonic())))
            open_ones = [a for a in open_ones if a.is_alive()]
        for assoc in open_ones:
            assoc.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftover = [a for a, peer in self._peers.items() if peer.busy == 0]
        for assoc in leftover:  # a safety net: each association is reported once
            self._finish(assoc, aborted=True)
        log.info("DICOM receiver %s stopped", self.config.aet)

    # -- association bookkeeping

    def _enter(self, assoc: _PynetAssociation) -> _Peer | None:
        with self._lock:
            peer = self._peers.get(assoc)
            if peer is not None:
                peer.busy += 1
            return peer

    def _leave(self, assoc: _PynetAssociation, peer: _Peer | None) -> None:
        if peer is None:
            return
        with self._lock:
            peer.busy -= 1
            ending = peer.ending if peer.busy == 0 else None
        if ending is not None:
            self._finish(assoc, aborted=ending)

    def _finish(self, assoc: _PynetAssociation, *, aborted: bool) -> None:
        """Report the end of ``assoc`` to the sink, once (later, if a sink call for it is in
        progress)."""
        with self._lock:
            peer = self._peers.get(assoc)
            if peer is None:  # not established (rejected), or already reported
                return
            if peer.busy:
                if peer.ending is None:
                    peer.ending = aborted
                return
            del self._peers[assoc]
        how = "aborted" if aborted else "released"
        log.info(
            "association from %s %s: %d instance(s) of %d study(ies) stored",
            peer.calling_aet,
            how,
            peer.instances,
            len(peer.studies),
        )
        self._call(
            "association_ended",
            lambda: self._sink.association_ended(
                peer.calling_aet,
                frozenset(peer.studies),
                instances=peer.instances,
                aborted=aborted,
            ),
        )

    def _call(self, what: str, call: Callable[[], _T]) -> _T | None:
        """``call()``; an exception is logged, not raised (for notifications)."""
        try:
            return call()
        except Exception:
            log.exception("the station's %s failed", what)
            return None

    def _on_established(self, event: Event) -> None:
        assoc = event.assoc
        try:
            peer = _Peer(calling_aet=_calling_aet(assoc), busy=1)
        except Exception:  # never raise into pynetdicom
            log.exception("an established association could not be recorded")
            return
        with self._lock:
            self._peers[assoc] = peer
        log.info("association from %s established", peer.calling_aet)
        try:
            self._call(
                "association_started", lambda: self._sink.association_started(peer.calling_aet)
            )
        finally:
            self._leave(assoc, peer)

    def _on_released(self, event: Event) -> None:
        self._finish(event.assoc, aborted=False)

    def _on_aborted(self, event: Event) -> None:
        self._finish(event.assoc, aborted=True)

    def _on_conn_close(self, event: Event) -> None:
        # In Sta13 we had sent an A-RELEASE-RP or an A-ABORT: EVT_RELEASED or EVT_ABORTED is
        # (or was) triggered for it, and must decide; deciding here could race the release.
        # Anywhere else the connection went without either: the sender broke off.
        try:
            state = event.assoc.dul.state_machine.current_state
        except AttributeError:
            state = ""
        if state != "Sta13":
            self._finish(event.assoc, aborted=True)

    # -- services

    def _on_echo(self, event: Event) -> int:
        return SUCCESS

    def _on_store(self, event: Event) -> Dataset:
        assoc = event.assoc
        peer = self._enter(assoc)
        try:
            return self._store(event, peer)
        except Exception:
            log.exception("C-STORE could not be handled")
            return _status(OUT_OF_RESOURCES, "the station could not keep the instance")
        finally:
            self._leave(assoc, peer)

    def _store(self, event: Event, peer: _Peer | None) -> Dataset:
        request = cast(C_STORE, event.request)
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        calling = _calling_aet(event.assoc)
        path = _chunked_path(event)
        try:
            # chunked: pynetdicom wrote the data set to a file as it arrived; else in memory
            data = b"" if path is not None else event.encoded_dataset(include_meta=True)
            self._check_size(path.stat().st_size if path is not None else len(data))
            study, series = _check_instance(path or data, sop_class, sop_instance)
        except _Invalid as bad:
            log.warning("C-STORE from %s refused: %s", calling, bad.message)
            return _status(bad.status, bad.message)
        instance = ReceivedInstance(
            calling_aet=calling,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            study_uid=study,
            series_uid=series,
            data=data,
            path=path,
        )
        try:
            self._sink.store(instance)
        except Refused as refusal:
            log.warning(
                "C-STORE from %s refused by the station (0x%04X): %s",
                calling,
                refusal.status,
                refusal.message,
            )
            return _status(refusal.status, refusal.message)
        except Exception:
            log.exception("the station could not store an instance from %s", calling)
            return _status(OUT_OF_RESOURCES, "the station could not keep the instance")
        if peer is not None:
            with self._lock:
                peer.instances += 1
                peer.studies.add(study)
        log.debug("C-STORE from %s: %s stored", calling, sop_instance)
        return _status(SUCCESS)

    def _check_size(self, size: int) -> None:
        limit = self.config.max_instance_bytes
        if limit is not None and size > limit:
            raise _Invalid(
                OUT_OF_RESOURCES,
                f"instance of {_megabytes(size)} exceeds this station's limit "
                f"({_megabytes(limit)})",
            )

    def _n_service(
        self, event: Event, what: str, handle: Callable[[Event], tuple[Dataset, Dataset | None]]
    ) -> tuple[Dataset, Dataset | None]:
        """Run ``handle`` for an N-service request; every outcome is a status."""
        assoc = event.assoc
        peer = self._enter(assoc)
        try:
            return handle(event)
        except _Invalid as bad:
            log.warning("%s from %s refused: %s", what, _calling_aet(assoc), bad.message)
            return _status(bad.status, bad.message), None
        except Refused as refusal:
            log.warning(
                "%s from %s refused by the station (0x%04X): %s",
                what,
                _calling_aet(assoc),
                refusal.status,
                refusal.message,
            )
            return _status(refusal.status, refusal.message), None
        except Exception:
            log.exception("%s from %s could not be handled", what, _calling_aet(assoc))
            return _status(PROCESSING_FAILURE, f"the station could not handle the {what}"), None
        finally:
            self._leave(assoc, peer)

    def _on_n_create(self, event: Event) -> tuple[Dataset, Dataset | None]:
        return self._n_service(event, "N-CREATE", self._n_create)

    def _n_create(self, event: Event) -> tuple[Dataset, Dataset | None]:
        request = cast(N_CREATE, event.request)
        if str(request.AffectedSOPClassUID or "") != MEDIA_CREATION_MANAGEMENT:
            raise _Invalid(NO_SUCH_SOP_CLASS, "only Media Creation Management is supported")
        try:
            attributes = event.attribute_list
        except Exception as exc:
            raise _Invalid(PROCESSING_FAILURE, "the attribute list cannot be decoded") from exc
        given = str(request.AffectedSOPInstanceUID or "")
        request_uid = given or str(generate_uid())
        media = _media_request(attributes, request_uid, _calling_aet(event.assoc))
        reply = copy.deepcopy(attributes)
        reply.ExecutionStatus = "IDLE"  # PS3.4 S.3.2.1.3: created implicitly by the N-CREATE
        reply.ExecutionStatusInfo = "NORMAL"
        if not given:  # pynetdicom moves it into the response's Affected SOP Instance UID
            reply.AffectedSOPInstanceUID = request_uid
        self._sink.media_request(media)
        log.info(
            "media creation request %s from %s: %d instance(s)",
            request_uid,
            media.calling_aet,
            len(media.instances),
        )
        return _status(SUCCESS), reply

    def _on_n_action(self, event: Event) -> tuple[Dataset, Dataset | None]:
        return self._n_service(event, "N-ACTION", self._n_action)

    def _n_action(self, event: Event) -> tuple[Dataset, Dataset | None]:
        request = cast(N_ACTION, event.request)
        if str(request.RequestedSOPClassUID or "") != MEDIA_CREATION_MANAGEMENT:
            raise _Invalid(NO_SUCH_SOP_CLASS, "only Media Creation Management is supported")
        request_uid = str(request.RequestedSOPInstanceUID or "")
        action = request.ActionTypeID
        if action not in (ACTION_INITIATE, ACTION_CANCEL):
            raise _Invalid(NO_SUCH_ACTION, f"action type {action} is not 1 or 2")
        self._sink.media_action(request_uid, int(action))
        what = "initiated" if action == ACTION_INITIATE else "cancelled"
        log.info("media creation request %s %s by %s", request_uid, what, _calling_aet(event.assoc))
        return _status(SUCCESS), None

    def _on_n_get(self, event: Event) -> tuple[Dataset, Dataset | None]:
        return self._n_service(event, "N-GET", self._n_get)

    def _n_get(self, event: Event) -> tuple[Dataset, Dataset | None]:
        request = cast(N_GET, event.request)
        if str(request.RequestedSOPClassUID or "") != MEDIA_CREATION_MANAGEMENT:
            raise _Invalid(NO_SUCH_SOP_CLASS, "only Media Creation Management is supported")
        request_uid = str(request.RequestedSOPInstanceUID or "")
        status = self._sink.media_status(request_uid)
        wanted = request.AttributeIdentifierList
        if wanted is not None and not isinstance(wanted, list):
            wanted = [wanted]  # a single tag
        return _status(SUCCESS), _status_dataset(status, wanted)


def _chunked_path(event: Event) -> Path | None:
    """The file pynetdicom received the C-STORE data set into (``STORE_RECV_CHUNKED_DATASET``
    on), else None."""
    try:
        path = event.dataset_path
    except AttributeError:
        return None
    return None if path is None else Path(path)


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


def _on_conn_open(event: Event) -> None:
    """TCP_NODELAY on a sender's connection: each C-STORE ends in a small response PDU, and
    Nagle's algorithm against the sender's delayed ACKs would add ~40 ms to every instance."""
    with contextlib.suppress(Exception):  # never raise into pynetdicom
        wrapper = event.assoc.dul.socket
        sock = wrapper.socket if wrapper is not None else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _end_now(assoc: _PynetAssociation) -> None:
    """Abort ``assoc``; one still waiting for its A-ASSOCIATE-RQ is woken instead (pynetdicom
    would wait for it up to the ACSE timeout, and an A-ABORT is no answer before it)."""
    with contextlib.suppress(Exception):  # it may be ending by itself meanwhile
        if assoc.is_established:
            assoc.abort()
        elif assoc.requestor.primitive is None:
            assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]  # = ACSE timeout: it ends


def _listen_problem(config: ReceiverConfig, exc: OSError) -> str:
    """Why we cannot listen on ``config.host:config.port``, for the operator."""
    where = f"{config.host}:{config.port}"
    if isinstance(exc, socket.gaierror):
        return (
            f"Cannot listen for DICOM on {where}: {config.host!r} is not a known host name. "
            "Use an address of this computer, or 0.0.0.0 for all of them."
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"Cannot listen for DICOM on {where}: the port is already in use (another DICOM "
            "receiver, or an earlier station still running?). Stop that program, or set "
            "another port."
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        low = " Ports below 1024 need administrator rights (or CAP_NET_BIND_SERVICE)"
        return f"Cannot listen for DICOM on {where}: no permission to use port {config.port}." + (
            low + "; use e.g. 11112." if 0 < config.port < 1024 else ""
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"Cannot listen for DICOM on {where}: {config.host} is not an address of this "
            "computer. Use one of its addresses, or 0.0.0.0 for all of them."
        )
    return f"Cannot listen for DICOM on {where}: {exc.strerror or exc}."


__all__ = [
    "ACTION_CANCEL",
    "ACTION_INITIATE",
    "MAX_REQUEST_INSTANCES",
    "MEDIA_CREATION_MANAGEMENT",
    "STORAGE_TRANSFER_SYNTAXES",
    "VERIFICATION",
    "MediaRequest",
    "MediaStatus",
    "ReceiveSink",
    "ReceivedInstance",
    "Receiver",
    "ReceiverConfig",
    "Refused",
    "is_uid",
]
