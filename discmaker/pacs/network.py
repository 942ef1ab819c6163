"""One DICOM association with a PACS: C-ECHO, C-FIND (IMAGE level) and C-STORE, via pynetdicom.

Each :class:`Association` owns its own pynetdicom ``AE`` (our AE title, timeouts, the
presentation contexts for this disc's SOP classes), so imports in several threads share
nothing; pynetdicom's module-wide settings are never changed, and its log records go to the
``pynetdicom`` logger, silent unless the host configures it.

Presentation contexts: Verification, Study Root Query/Retrieve FIND (to ask which instances the
PACS already holds; a PACS that does not offer it is simply not asked), and one context per SOP
class of the disc: uncompressed images (Explicit VR Little Endian on a disc) offer Explicit and
Implicit VR Little Endian, so any PACS can take them (pynetdicom re-encodes the data set when
the PACS picks Implicit VR; the values and pixel data are unchanged); a lossy image carried
unchanged is offered only in its own transfer syntax.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association as _PynetAssociation
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from discmaker.errors import KeyFileError
from discmaker.pacs.destination import Destination, DestinationError

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
UNCOMPRESSED = "uncompressed"  # the transfer-syntax key of every uncompressed syntax
MAX_CONTEXTS = 128  # presentation context IDs are the odd numbers 1-255
STORAGE_CONTEXTS = MAX_CONTEXTS - 2  # Verification and Study Root FIND come first


def syntax_key(transfer_syntax: str) -> str:
    """The key an image's presentation context is built from: ``UNCOMPRESSED``, or the
    transfer syntax UID of a compressed (carried unchanged) image."""
    uid = UID(transfer_syntax)
    return UNCOMPRESSED if uid.is_transfer_syntax and not uid.is_compressed else str(uid)


def _context(sop_class: str, key: str) -> PresentationContext:
    if key == UNCOMPRESSED:
        return build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return build_context(sop_class, key)


@dataclass(frozen=True)
class StoreStatus:
    """The PACS's answer to one C-STORE."""

    stored: bool
    warning: bool = False  # stored, but the PACS coerced or discarded elements (0xB000...)
    code: int | None = None  # the DIMSE status; None: no answer
    message: str = ""
    retry: bool = True  # worth another attempt (not: the PACS does not take this kind)


_PERMANENT = frozenset({0x0122, 0x0124})  # not worth another attempt


def _failure_message(code: int) -> str:
    if 0xA700 <= code <= 0xA7FF:
        return "the PACS is out of resources (its disk may be full)"
    if 0xA900 <= code <= 0xA9FF:
        return "the PACS says the image does not match its SOP class"
    if 0xC000 <= code <= 0xCFFF:
        return "the PACS cannot understand the image"
    known = {
        0x0122: "the PACS does not support this kind of image (SOP class)",
        0x0124: "the PACS does not allow us to store this image (not authorised)",
        0x0111: "the PACS refused it as a duplicate of an instance it holds",
        0x0110: "the PACS failed while processing the image",
        0x0213: "the PACS hit a resource limit",
    }
    return known.get(code, "the PACS refused the image")


def _warning_message(code: int) -> str:
    known = {
        0xB000: "the PACS changed (coerced) some header values",
        0xB006: "the PACS discarded some elements",
        0xB007: "the PACS says the image does not fully match its SOP class",
    }
    return known.get(code, "the PACS stored it with a warning")


@dataclass(frozen=True)
class Tls:
    """DICOM over TLS (PS3.15 Annex B, the BCP 195 profile's TLS 1.2 or later): the PACS's
    certificate is verified against ``ca_file`` (default: this computer's trusted CAs) and
    must name the host in the PACS address; ``cert_file``/``key_file`` are ours, for a PACS
    that asks its senders for a certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client context; :class:`KeyFileError` names a file that cannot be used."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise KeyFileError(
                f"cannot use {self.ca_file} as the CA certificates for TLS ({exc}); give a PEM "
                "file with the certificate of the CA that signed the PACS's certificate"
            ) from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                key = self.key_file or "in the same file"
                raise KeyFileError(
                    f"cannot use {self.cert_file} (with key {key}) as this computer's TLS "
                    f"certificate ({exc})"
                ) from exc
        return ctx


def _refusal(destination: Destination, calling_aet: str, assoc: _PynetAssociation) -> str:
    """Why the association was not established, for the person at the keyboard."""
    where = f"{destination.host}:{destination.port}"
    primitive = assoc.acceptor.primitive
    if assoc.is_rejected and primitive is not None:
        source, diagnostic = primitive.result_source, primitive.diagnostic
        if source == 1 and diagnostic == 3:
            return (
                f"The PACS at {where} refused the connection: it does not know our AE title "
                f"{calling_aet!r}. Ask the PACS administrator to register {calling_aet!r} (this "
                "computer) as a DICOM sender, or set this computer's AE title to the one it knows."
            )
        if source == 1 and diagnostic == 7:
            return (
                f"The DICOM service at {where} refused the connection: it is not called "
                f"{destination.aet!r}. Check the PACS's AE title (capitals matter) in the PACS "
                f"address ({destination})."
            )
        if source == 3 or (source == 2 and diagnostic == 2):
            return (
                f"The PACS at {where} is busy and refused the connection for now. Try again "
                "in a few minutes."
            )
        return (
            f"The PACS at {where} refused the connection ({primitive.reason_str}). Ask the "
            f"PACS administrator whether {calling_aet!r} may send to {destination.aet!r}."
        )
    if primitive is not None:  # answered, then aborted (e.g. no presentation context accepted)
        return (
            f"The PACS at {where} answered but then broke off the connection. Ask the PACS "
            f"administrator whether {calling_aet!r} may send images to {destination.aet!r}."
        )
    return (
        f"No DICOM answer from {where}. Check the host name and port in the PACS address "
        f"({destination}), that the PACS is running, and ask IT whether a firewall blocks that "
        "port."
    )


def _probe(destination: Destination, timeout: float) -> None:
    """Can a TCP connection be made at all? Says precisely why not (unknown host, nothing
    listening, no answer), and spares pynetdicom a failed connect, whose socket it leaks."""
    where = f"{destination.host}:{destination.port}"
    try:
        with socket.create_connection((destination.host, destination.port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        raise DestinationError(
            f"The host name {destination.host!r} is unknown here. Check its spelling in the PACS "
            f"address ({destination}), or use the PACS's IP address."
        ) from exc
    except ConnectionRefusedError as exc:
        raise DestinationError(
            f"No DICOM answer from {where}: nothing listens on port {destination.port} of "
            f"{destination.host}. Check the port in the PACS address ({destination}) and that the "
            "PACS is running."
        ) from exc
    except TimeoutError as exc:
        raise DestinationError(
            f"No DICOM answer from {where} within {timeout:g} s. Check the host in the PACS "
            f"address ({destination}), and ask IT whether a firewall blocks that port."
        ) from exc
    except OSError as exc:
        raise DestinationError(
            f"No DICOM answer from {where} ({exc.strerror or exc}). Check the host and port in "
            f"the PACS address ({destination}), that the PACS is running, and ask IT whether a "
            "firewall blocks that port."
        ) from exc


def _close_socket(assoc: _PynetAssociation) -> None:
    """Close the socket of an association that failed (pynetdicom leaves it open when a TLS
    handshake fails)."""
    _close(_raw_socket(assoc))


def _raw_socket(assoc: _PynetAssociation) -> socket.socket | None:
    wrapper = assoc.dul.socket
    return wrapper.socket if wrapper is not None else None


def _close(sock: socket.socket | None) -> None:
    """Close ``sock`` (a no-op when it is closed already). pynetdicom closes a connection with
    shutdown() then close() in one try block, so when the PACS has gone (reset, killed),
    shutdown() fails and the socket stays open until the garbage collector finds it: in a
    long-lived process (the disc station, the guided workflow) one descriptor per lost
    association."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _no_delay(assoc: _PynetAssociation) -> None:
    """TCP_NODELAY on this association's socket: each C-STORE ends in small PDUs, and Nagle's
    algorithm against the PACS's delayed ACKs would add about 40 ms to every image."""
    wrapper = assoc.dul.socket
    sock = wrapper.socket if wrapper is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Association:
    """An association with ``destination`` for the (SOP class, syntax key) pairs given.

    Use as a context manager; :meth:`open` raises :class:`DestinationError` when the PACS is
    unreachable or refuses. A dropped association is opened again by the next request.
    """

    def __init__(
        self,
        destination: Destination,
        *,
        calling_aet: str,
        storage: Iterable[tuple[str, str]],
        timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        pairs = sorted(set(storage))
        if len(pairs) > STORAGE_CONTEXTS:
            raise ValueError(f"at most {STORAGE_CONTEXTS} storage contexts per association")
        self.destination = destination
        self.calling_aet = calling_aet
        self._ae = AE(ae_title=calling_aet)
        self._ae.acse_timeout = timeout
        self._ae.dimse_timeout = timeout
        self._ae.network_timeout = timeout
        self._ae.connection_timeout = timeout
        self._contexts = [build_context(VERIFICATION), build_context(STUDY_ROOT_FIND)]
        self._contexts += [_context(sop_class, key) for sop_class, key in pairs]
        self._assoc: _PynetAssociation | None = None
        self._sock: socket.socket | None = None  # the association's, closed with it
        self._message_id = 0
        self._tls_args = (tls, destination.host) if tls is not None else None

    def __enter__(self) -> Association:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(abort=exc is not None)

    def _next_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def open(self) -> _PynetAssociation:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        self._assoc = None
        d = self.destination
        _probe(d, self._ae.connection_timeout or 30.0)
        log.debug("associating with %s as %s", d, self.calling_aet)
        assoc = self._ae.associate(
            d.host, d.port, contexts=self._contexts, ae_title=d.aet, tls_args=self._tls_args
        )
        if not assoc.is_established:
            _close_socket(assoc)
            why = _refusal(d, self.calling_aet, assoc)
            if self._tls_args is not None and not assoc.is_rejected:
                why += (
                    " With --tls: check that this port of the PACS speaks DICOM over TLS, and "
                    "that its certificate names this host and is signed by the CA in --tls-ca."
                )
            raise DestinationError(why)
        _no_delay(assoc)
        self._assoc, self._sock = assoc, _raw_socket(assoc)
        return assoc

    def close(self, *, abort: bool = False) -> None:
        """Release the association (abort it when the import stopped on an error)."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            if abort:
                assoc.abort()
            else:
                assoc.release()
        self._close_socket()

    def _lost(self) -> None:
        """No answer, or the association died: end it (an answer still on its way would be
        out of step) and forget it; the next request opens a new one."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.abort()
        self._close_socket()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        _close(sock)

    def echo(self) -> None:
        """C-ECHO; :class:`DestinationError` unless the PACS answers success."""
        assoc = self.open()
        status = assoc.send_c_echo(msg_id=self._next_id())
        code = int(status.Status) if "Status" in status else None
        if code != 0x0000:
            self._lost()
            answer = "did not answer" if code is None else f"answered status 0x{code:04X}"
            raise DestinationError(
                f"The PACS {self.destination} {answer} to a DICOM echo (C-ECHO). Nothing was "
                "sent. Ask the PACS administrator to check the DICOM service."
            )
        log.debug("C-ECHO %s: success", self.destination)

    def can_find(self) -> bool:
        assoc = self.open()
        return any(
            cx.abstract_syntax == STUDY_ROOT_FIND and cx.as_scu for cx in assoc.accepted_contexts
        )

    def instances_in_series(self, study_uid: str, series_uid: str) -> frozenset[str] | None:
        """The SOP Instance UIDs the PACS holds in this series (C-FIND, IMAGE level);
        None when it does not answer such queries."""
        if not self.can_find():
            return None
        assoc = self.open()
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        query.SOPInstanceUID = ""
        found: set[str] = set()
        try:
            responses = assoc.send_c_find(query, STUDY_ROOT_FIND, msg_id=self._next_id())
            for status, identifier in responses:
                if "Status" not in status:
                    self._lost()
                    return None
                category = code_to_category(int(status.Status))
                if category == "Pending":
                    uid = getattr(identifier, "SOPInstanceUID", None) if identifier else None
                    if uid:
                        found.add(str(uid))
                elif category == "Success":
                    break
                else:
                    log.debug("C-FIND refused (0x%04X): using the import log", status.Status)
                    return None
        except (ValueError, RuntimeError, AttributeError) as exc:  # no context, association lost
            log.debug("C-FIND not possible (%s): using the import log", type(exc).__name__)
            if isinstance(exc, RuntimeError):
                self._lost()
            return None
        return frozenset(found)

    def store(self, dataset: Dataset) -> StoreStatus:
        """C-STORE ``dataset``; the PACS's answer (raises :class:`DestinationError` only when
        a dropped association cannot be opened again)."""
        assoc = self.open()
        try:
            status = assoc.send_c_store(dataset, msg_id=self._next_id())
        except ValueError as exc:  # no accepted context for it, or it cannot be encoded
            name = UID(str(dataset.SOPClassUID)).name
            syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
            how = "" if not syntax.is_compressed else f" in {syntax.name}"
            log.debug("C-STORE not possible: %s", exc)
            return StoreStatus(
                stored=False,
                message=f"the PACS does not accept {name} images{how}",
                retry=False,
            )
        except RuntimeError:  # the association ended between the check and the send
            self._lost()
            return StoreStatus(stored=False, message="the connection to the PACS was lost")
        if "Status" not in status:
            self._lost()
            return StoreStatus(
                stored=False, message="the PACS did not answer (time-out or lost connection)"
            )
        code = int(status.Status)
        category = code_to_category(code)
        if category == "Success":
            return StoreStatus(stored=True, code=code)
        if category == "Warning":
            return StoreStatus(stored=True, warning=True, code=code, message=_warning_message(code))
        return StoreStatus(
            stored=False,
            code=code,
            message=_failure_message(code),
            retry=code not in _PERMANENT,
        )


def context_groups(pairs: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The disc's (SOP class, syntax key) pairs in groups that fit one association each."""
    unique = sorted(set(pairs))
    return [unique[i : i + STORAGE_CONTEXTS] for i in range(0, len(unique), STORAGE_CONTEXTS)] or [
        []
    ]


__all__ = [
    "STORAGE_CONTEXTS",
    "STUDY_ROOT_FIND",
    "UNCOMPRESSED",
    "VERIFICATION",
    "Association",
    "StoreStatus",
    "Tls",
    "context_groups",
    "syntax_key",
]
