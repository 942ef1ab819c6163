"""Real DICOM receivers on loopback for the import tests: dcmtk's storescp, Orthanc, and a
pynetdicom Storage SCP whose answers a test decides.

Every server listens on 127.0.0.1 only, on a port the kernel chose, and is stopped (by its
own process or server object) when the test ends.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

LOOPBACK = "127.0.0.1"
ORTHANC = "/usr/sbin/Orthanc"
START_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} at start")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_SECONDS} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- dcmtk storescp ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreScp:
    aet: str
    port: int
    out: Path

    @property
    def to(self) -> str:
        return f"{self.aet}@{LOOPBACK}:{self.port}"

    def received(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())


@contextmanager
def run_storescp(out: Path, *, aet: str = "STORESCP") -> Iterator[StoreScp]:
    """storescp writing every received instance to its own new file under ``out``."""
    exe = shutil.which("storescp")
    if exe is None:
        pytest.skip("dcmtk's storescp is not installed (apt-get install dcmtk)")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # +uf: a unique file per received instance, so a second send of one shows as a new file.
    args = [exe, "--aetitle", aet, "--output-directory", str(out), "+uf", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, "storescp")
        yield StoreScp(aet, port, out)
    finally:
        _stop(proc)


# -- Orthanc -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrthancServer:
    aet: str
    port: int
    http_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def to(self) -> str:
        return f"{self.aet}@{LOOPBACK}:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}{path}", timeout=10) as r:
            data: bytes = r.read()
            return data


@contextmanager
def run_orthanc(
    root: Path, *, aet: str = "ORTHANC", ports: tuple[int, int] | None = None
) -> Iterator[OrthancServer]:
    """A private Orthanc: its own storage, loopback only, any calling AE may echo, store and
    find (C-FIND lets the importer ask what Orthanc already holds). ``ports`` (DICOM, HTTP)
    restarts a stopped one on its old ports, over the storage it left under ``root``."""
    if not Path(ORTHANC).is_file():
        pytest.skip(f"Orthanc is not installed ({ORTHANC}; apt-get install orthanc)")
    root.mkdir(parents=True, exist_ok=True)
    port, http_port = ports or (free_port(), free_port())
    config = {
        "Name": "discmaker-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "DicomAet": aet,
        "DicomPort": port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomModalities": {},
        "Plugins": [],
        "LuaScripts": [],
        "SaveJobs": False,
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config))
    with (root / "orthanc.log").open("wb") as log:
        proc = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=log)
    server = OrthancServer(aet, port, http_port, proc)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with status {proc.returncode} at start: "
                    + (root / "orthanc.log").read_text(errors="replace")[-2000:]
                )
            try:
                server.get("/system")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        _wait_for_port(port, proc, "Orthanc")
        yield server
    finally:
        _stop(proc)


# -- a pynetdicom SCP whose answers the test decides -----------------------------------------


@dataclass
class ScriptedScp:
    """Answers each C-STORE with ``answer(dataset, attempt)`` (a DIMSE status)."""

    port: int
    aet: str
    received: list[str] = field(default_factory=list)  # SOP Instance UIDs, one per request
    association: Any = None  # the association of the request being answered

    @property
    def to(self) -> str:
        return f"{self.aet}@{LOOPBACK}:{self.port}"


@contextmanager
def run_scripted_scp(
    answer: Callable[[Dataset, int], int],
    *,
    aet: str = "SCRIPTED",
    check_called_aet: bool = False,
    ssl_context: Any = None,
) -> Iterator[ScriptedScp]:
    """``ssl_context`` (a server-side ``ssl.SSLContext``): DICOM over TLS only."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    scp = ScriptedScp(port=free_port(), aet=aet)
    ae = AE(ae_title=aet)
    ae.require_called_aet = check_called_aet
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax)

    def on_store(event: Any) -> int:
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        scp.received.append(uid)
        scp.association = event.assoc
        return answer(ds, scp.received.count(uid))

    # pynetdicom closes a connection with shutdown() then close() in one try block: when the
    # peer has gone (a client killed with Ctrl-C), shutdown() fails and the socket is left
    # to the garbage collector, whose ResourceWarning then fails whichever test it runs in.
    connections: list[Any] = []

    def on_open(event: Any) -> None:
        connections.append(event.assoc.dul.socket.socket)

    server = ae.start_server(
        (LOOPBACK, scp.port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, on_open)],
        ssl_context=ssl_context,
    )
    try:
        yield scp
    finally:
        server.shutdown()
        for connection in connections:
            connection.close()  # a no-op for those pynetdicom closed


# -- TLS: a private CA and a certificate for the loopback address ---------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA's certificate (PEM)
    cert: Path  # the server's certificate, for 127.0.0.1, signed by the CA
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Test PACS CA"))
        .issuer_name(name("Test PACS CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("pacs.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def server_tls_context(files: TlsFiles) -> Any:
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


def media_request(study: list[Path], **attrs: str) -> Dataset:
    """A Media Creation N-CREATE attribute list naming ``study``'s instances (and ``attrs``)."""
    ds = Dataset()
    ds.ReferencedSOPSequence = []
    for path in study:
        original = dcmread(path, stop_before_pixels=True)
        item = Dataset()
        item.ReferencedSOPClassUID = original.SOPClassUID
        item.ReferencedSOPInstanceUID = original.SOPInstanceUID
        ds.ReferencedSOPSequence.append(item)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds
