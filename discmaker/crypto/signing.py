"""Keys, certificates and detached Ed25519 signatures.

An imaging centre's identity is an Ed25519 private key plus a self-signed X.509 certificate
(``O=<org>, CN=<org> discmaker signing``). The key is stored as passphrase-encrypted PKCS#8
PEM, mode 0600; the certificate travels on every disc as ``DISCSIG/SIGNER.PEM`` next to
``DISCSIG/MANIFEST.JSN`` and ``DISCSIG/MANIFEST.SIG`` (the raw 64-byte Ed25519 signature over
the exact bytes of the manifest).

A receiving clinic without discmaker can check the manifest with stock OpenSSL 3 (confirmed
with OpenSSL 3.0; prints ``Signature Verified Successfully`` and exits 0, or prints
``Signature Verification Failure`` and exits 1)::

    openssl x509 -in SIGNER.PEM -pubkey -noout > signer.pub &&
    openssl pkeyutl -verify -pubin -inkey signer.pub -rawin -in MANIFEST.JSN -sigfile MANIFEST.SIG

(:data:`OPENSSL_VERIFY_COMMAND`, one line), run where ``signer.pub`` may be written,

or, in one step that writes nothing (works straight from the read-only disc;
:data:`OPENSSL_VERIFY_COMMAND_ONE_STEP`)::

    openssl pkeyutl -verify -certin -inkey SIGNER.PEM -rawin -in MANIFEST.JSN -sigfile MANIFEST.SIG

Either only proves that the manifest matches the certificate *on the disc*; to know who signed
it, compare the certificate's fingerprint with the one the sender gave by phone::

    openssl x509 -in SIGNER.PEM -noout -fingerprint -sha256

which prints ``sha256 Fingerprint=AB:CD:...`` in the same form as :func:`fingerprint`.

A centre whose certificate nears its end renews it over the same key (:func:`renew_certificate`):
clinics trust the key, so they keep trusting the centre, and :func:`key_fingerprint` stays the
same. A disc is only made while the certificate is valid (:func:`check_valid_at`), and the
checker refuses a disc signed outside its certificate's validity.

Key-file policy: on POSIX, :func:`load_private_key` refuses a key file that group or other users
can read (like ssh does) and says to run ``chmod 600``; unencrypted key files are refused too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID

from discmaker.diagnostics import captured_warnings
from discmaker.errors import (
    DiscError,
    InternalError,
    KeyFileError,
    OutputError,
    UsageError,
    VerificationError,
)

OPENSSL_VERIFY_COMMAND = (
    "openssl x509 -in SIGNER.PEM -pubkey -noout > signer.pub && "
    "openssl pkeyutl -verify -pubin -inkey signer.pub -rawin "
    "-in MANIFEST.JSN -sigfile MANIFEST.SIG"
)
"""Verify MANIFEST.SIG with stock OpenSSL 3 (run where ``signer.pub`` may be written)."""

OPENSSL_VERIFY_COMMAND_ONE_STEP = (
    "openssl pkeyutl -verify -certin -inkey SIGNER.PEM -rawin "
    "-in MANIFEST.JSN -sigfile MANIFEST.SIG"
)
"""The same check in one command that writes no file (usable from inside read-only DISCSIG/)."""

OPENSSL_FINGERPRINT_COMMAND = "openssl x509 -in SIGNER.PEM -noout -fingerprint -sha256"
"""Prints ``sha256 Fingerprint=<fingerprint(cert)>`` for confirmation by phone."""

OPENSSL_VERIFY_OK = "Signature Verified Successfully"

KEY_FILE_NAME = "key.pem"
CERT_FILE_NAME = "cert.pem"
PASSPHRASE_ENV = "DISCMAKER_PASSPHRASE"

SIGNATURE_SIZE = 64
KEY_ID_SIZE = 8
VALIDITY = dt.timedelta(days=3653)  # ten years, leap days included
BACKDATE = dt.timedelta(hours=1)  # dcmtk rejects signatures made in the certificate's first second
MAX_ORG_LENGTH = 64  # X.520 upper bound for organizationName and commonName
MAX_PEM_BYTES = 64 * 1024  # a key or certificate file is a few hundred bytes
_CN_SUFFIX = " discmaker signing"


@dataclass(frozen=True)
class Identity:
    """An imaging centre's signing identity: private key and its self-signed certificate."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate


def generate_identity(org: str, *, now: dt.datetime | None = None) -> Identity:
    """Make a new Ed25519 key and a ten-year self-signed certificate for ``org``.

    ``now`` (default: the current time; a naive value is taken as UTC) sets the validity:
    notBefore is ``now`` minus one hour, notAfter ``now`` plus ten years. The common name is
    ``<org> discmaker signing``, with ``org`` shortened there if the whole exceeds 64 bytes
    of UTF-8; the organisation attribute always holds ``org`` (at most 64 characters) in full.
    """
    org = _check_org(org)
    now = _utc(now)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, _common_name(org)),
        ]
    )
    key = Ed25519PrivateKey.generate()
    return Identity(private_key=key, certificate=_self_signed(key, name, now))


def renew_certificate(identity: Identity, *, now: dt.datetime | None = None) -> Identity:
    """The same key with a new ten-year certificate: same subject, validity from ``now``.

    Receiving clinics trust the key (:mod:`discmaker.crypto.trust`), so they keep trusting a
    centre that renews this way, and its older discs stay verifiable.
    """
    check_pair(identity.private_key, identity.certificate)
    certificate = _self_signed(identity.private_key, identity.certificate.subject, _utc(now))
    return Identity(private_key=identity.private_key, certificate=certificate)


def write_identity(identity: Identity, out_dir: Path, *, passphrase: bytes) -> tuple[Path, Path]:
    """Write ``key.pem`` (encrypted PKCS#8, mode 0600) and ``cert.pem`` into ``out_dir``.

    ``out_dir`` is created (mode 0700) if needed. Existing key or certificate files are never
    overwritten (:class:`OutputError`); nothing is written unless both names are free. An empty
    passphrase is a :class:`UsageError`. Returns ``(key_path, cert_path)``.
    """
    if not passphrase:
        raise UsageError("an empty passphrase would leave the signing key unprotected")
    check_pair(identity.private_key, identity.certificate)
    key_path = out_dir / KEY_FILE_NAME
    cert_path = out_dir / CERT_FILE_NAME
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the key folder {out_dir}: {exc.strerror}") from exc
    if not out_dir.is_dir():
        raise OutputError(f"{out_dir} is not a folder")
    for path in (key_path, cert_path):
        if path.exists() or path.is_symlink():
            raise OutputError(
                f"{path} already exists; discmaker never overwrites a key or certificate "
                "(move it away or choose another folder)"
            )
    key_pem = identity.private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.BestAvailableEncryption(passphrase),
    )
    cert_pem = identity.certificate.public_bytes(serialization.Encoding.PEM)
    _write_new_file(key_path, key_pem, mode=0o600)
    try:
        _write_new_file(cert_path, cert_pem, mode=0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, cert_path


def load_private_key(path: Path, *, passphrase: bytes) -> Ed25519PrivateKey:
    """Read a passphrase-encrypted Ed25519 private key written by :func:`write_identity`.

    :class:`KeyFileError` when the file is missing or unreadable, readable by group/others
    (POSIX; fix with ``chmod 600``), not a PEM private key, not encrypted, not opened by the
    passphrase, or not an Ed25519 key. An empty passphrase is a :class:`UsageError`.
    """
    if not passphrase:
        raise UsageError(f"a passphrase is needed to open the signing key {path}")
    data = _read_small_file(path, what="signing key")
    if os.name == "posix":
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            raise KeyFileError(f"cannot read the signing key {path}: {exc.strerror}") from None
        if mode & 0o077:
            raise KeyFileError(
                f"the signing key {path} can be read by other users (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
    if b"-----BEGIN" not in data:
        raise KeyFileError(f"{path} is not a PEM private key file")
    if b"CERTIFICATE-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{path} holds a certificate, not a private key")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:  # "Password was given but private key is not encrypted."
        raise KeyFileError(
            f"the signing key {path} is not passphrase-protected; discmaker only uses "
            "encrypted keys (make one with: discmaker keygen)"
        ) from exc
    except ValueError:
        if b"ENCRYPTED" in data:
            # A wrong passphrase usually fails the padding check, but about one time in 170
            # the garbage decrypts with valid padding and fails later as "cannot deserialize"
            # (seen in CI). Both mean the same to the user.
            raise KeyFileError(
                f"the passphrase does not open {path} (if you are sure of the passphrase, "
                "the key file is damaged: restore it from your backup)"
            ) from None
        raise KeyFileError(f"{path} is damaged or is not a private key file") from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path} holds a key type or encryption discmaker cannot use") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path} holds {_key_kind(key)} key; discmaker signs with Ed25519 keys "
            "(make one with: discmaker keygen)"
        )
    return key


def load_certificate(path: Path) -> x509.Certificate:
    """Read one Ed25519 X.509 certificate (PEM or DER) from ``path``; :class:`KeyFileError`."""
    data = _read_small_file(path, what="certificate")
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(
            f"{path} holds a private key, not a certificate (never hand out the key file; "
            f"share {CERT_FILE_NAME})"
        )
    try:
        return _parse_certificate(data)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def load_certificate_bytes(data: bytes) -> x509.Certificate:
    """Parse the signer certificate read from a received disc; :class:`DiscError` on garbage."""
    if len(data) > MAX_PEM_BYTES:
        raise DiscError(f"signer certificate is {len(data)} bytes, more than {MAX_PEM_BYTES}")
    try:
        return _parse_certificate(data)
    except ValueError as exc:
        raise DiscError(f"signer certificate: {exc}") from None


def check_pair(key: Ed25519PrivateKey, cert: x509.Certificate) -> None:
    """:class:`KeyFileError` unless ``cert`` certifies ``key``'s public key."""
    cert_key = cert.public_key()
    if not isinstance(cert_key, Ed25519PublicKey) or _raw(cert_key) != _raw(key.public_key()):
        raise KeyFileError(
            f"the certificate ({fingerprint(cert)}) does not belong to this signing key"
        )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding as ``AB:CD:...`` (as ``openssl x509`` shows)."""
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """First 8 bytes of SHA-256 over the raw 32-byte public key (names the key in watermarks)."""
    return hashlib.sha256(_raw(public_key)).digest()[:KEY_ID_SIZE]


def subject_text(cert: x509.Certificate) -> str:
    """The certificate subject as an RFC 4514 string, e.g. ``CN=X discmaker signing,O=X``."""
    return cert.subject.rfc4514_string()


def key_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's public key (its DER SubjectPublicKeyInfo) as ``AB:CD:...``.

    The same for every certificate of one key, a renewed one included. OpenSSL prints it
    (without colons) with ``openssl x509 -in SIGNER.PEM -pubkey -noout | openssl pkey -pubin
    -outform DER | openssl dgst -sha256``.
    """
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def self_signed(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is signed by its own key, i.e. was made by whoever holds that key.

    Anyone can copy a public key into a certificate of their own making; only the key's holder
    can sign one, so a certificate that fails this says nothing about its key's owner.
    """
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def valid_at(cert: x509.Certificate, when: dt.datetime) -> bool:
    """Whether ``when`` (naive is UTC) lies within the certificate's validity, ends included."""
    return cert.not_valid_before_utc <= _utc(when) <= cert.not_valid_after_utc


def utc_text(when: dt.datetime) -> str:
    """``when`` as ISO 8601 UTC to the second, e.g. ``2026-01-02T10:00:00Z``."""
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_valid_at(cert: x509.Certificate, when: dt.datetime) -> None:
    """:class:`KeyFileError` unless the signing certificate is valid at ``when``, the time the
    disc is made (a disc signed outside its certificate's validity never verifies)."""
    if valid_at(cert, when):
        return
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    dates = f"(valid from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC)"
    at = f"{_utc(when):%Y-%m-%d %H:%M} UTC"
    if _utc(when) > end:
        raise KeyFileError(
            f"The signing certificate of {subject_text(cert)} expired on {end:%Y-%m-%d} "
            f"{dates}: a disc made at {at} could never be verified. Nothing was written. "
            "Renew the certificate over the same key (clinics that trust you keep trusting "
            "you), or make a new key and certificate with: discmaker keygen, and give the "
            "clinics the new cert.pem and its fingerprint."
        )
    raise KeyFileError(
        f"The signing certificate of {subject_text(cert)} is not valid yet at {at} {dates}. "
        "Nothing was written. Check this computer's date and time (and --timestamp, if you "
        "gave one), or use a certificate that is valid now."
    )


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Raw 64-byte Ed25519 signature over ``data``."""
    return private_key.sign(data)


def verify(
    cert_or_public_key: x509.Certificate | Ed25519PublicKey,
    signature: bytes,
    data: bytes,
    *,
    what: str = "the signed data",
) -> None:
    """Raise :class:`VerificationError` ("signature does not match <what>") unless it matches.

    This checks the mathematics only: whether the certificate is trusted is the trust store's
    question (:mod:`discmaker.crypto.trust`).
    """
    if isinstance(cert_or_public_key, x509.Certificate):
        public_key = cert_or_public_key.public_key()
    else:
        public_key = cert_or_public_key
    if not isinstance(public_key, Ed25519PublicKey):
        raise VerificationError(
            f"signature does not match {what}: the signer's key is not an Ed25519 key"
        )
    if len(signature) != SIGNATURE_SIZE:
        raise VerificationError(
            f"signature does not match {what}: it is {len(signature)} bytes, "
            f"an Ed25519 signature is {SIGNATURE_SIZE}"
        )
    try:
        public_key.verify(bytes(signature), bytes(data))
    except InvalidSignature:
        raise VerificationError(f"signature does not match {what}") from None


def passphrase_from_env(var: str = PASSPHRASE_ENV) -> bytes | None:
    """The passphrase from environment variable ``var``, or None when unset or empty."""
    value = os.environ.get(var)
    if not value:
        return None
    return value.encode("utf-8", errors="surrogateescape")


# -- helpers -----------------------------------------------------------------------------------


def _utc(when: dt.datetime | None) -> dt.datetime:
    """``when`` (default: now; naive is UTC) in UTC, to the second."""
    if when is None:
        when = dt.datetime.now(dt.UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0)


def _self_signed(key: Ed25519PrivateKey, name: x509.Name, now: dt.datetime) -> x509.Certificate:
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, algorithm=None)
    )


def _check_org(org: str) -> str:
    org = org.strip()
    if not org:
        raise UsageError("the organisation name is empty")
    if len(org) > MAX_ORG_LENGTH:
        raise UsageError(
            f"the organisation name is {len(org)} characters; certificates allow at most "
            f"{MAX_ORG_LENGTH}"
        )
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in org):
        raise UsageError("the organisation name contains control characters")
    return org


def _common_name(org: str) -> str:
    """``<org> discmaker signing``, shortening ``org`` to fit 64 UTF-8 bytes (cryptography's
    commonName limit)."""
    part = org
    while len((part + _CN_SUFFIX).encode("utf-8")) > MAX_ORG_LENGTH:
        part = part[:-1]
    return part.rstrip() + _CN_SUFFIX


def _write_new_file(path: Path, data: bytes, *, mode: int) -> None:
    """Create ``path`` exclusively with ``mode`` from the first instant, and fill it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise OutputError(f"{path} already exists; discmaker never overwrites it") from None
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
        raise


def _read_small_file(path: Path, *, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise KeyFileError(f"the {what} {path} is not a file")
        if size > MAX_PEM_BYTES:
            raise KeyFileError(f"the {what} {path} is {size} bytes; that is not a {what} file")
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"the {what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _parse_certificate(data: bytes) -> x509.Certificate:
    """Parse exactly one Ed25519 certificate (PEM or DER); ValueError with a reason if not."""
    # Odd-but-parseable encodings raise deprecation warnings; the caller judges the result.
    # captured_warnings, unlike warnings.catch_warnings, is safe with other threads.
    with captured_warnings():
        try:
            if b"-----BEGIN" in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise ValueError("not a readable X.509 certificate") from None
        if len(certs) != 1:
            raise ValueError(f"holds {len(certs)} certificates, expected exactly one")
        cert = certs[0]
        try:
            public_key = cert.public_key()
            # Touch the lazily parsed parts now, so garbage fails here and not later.
            cert.subject.rfc4514_string()
            _ = cert.not_valid_after_utc, cert.not_valid_before_utc
        except ValueError:
            raise ValueError("not a readable X.509 certificate") from None
        except UnsupportedAlgorithm:
            raise ValueError("the certificate uses a key type discmaker cannot read") from None
    if not isinstance(public_key, Ed25519PublicKey):
        raise ValueError(f"the certificate holds {_key_kind(public_key)} key, not Ed25519")
    return cert


def _key_kind(key: object) -> str:
    kinds: tuple[tuple[tuple[type, ...], str], ...] = (
        ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "an RSA"),
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an EC"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448"),
    )
    for classes, kind in kinds:
        if isinstance(key, classes):
            return kind
    return "an unsupported"


def _raw(public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if len(raw) != 32:
        raise InternalError("an Ed25519 public key is not 32 bytes")
    return raw


__all__ = [
    "CERT_FILE_NAME",
    "KEY_FILE_NAME",
    "OPENSSL_FINGERPRINT_COMMAND",
    "OPENSSL_VERIFY_COMMAND",
    "OPENSSL_VERIFY_COMMAND_ONE_STEP",
    "OPENSSL_VERIFY_OK",
    "PASSPHRASE_ENV",
    "Identity",
    "check_pair",
    "check_valid_at",
    "fingerprint",
    "generate_identity",
    "key_fingerprint",
    "key_id",
    "load_certificate",
    "load_certificate_bytes",
    "load_private_key",
    "passphrase_from_env",
    "renew_certificate",
    "self_signed",
    "sign",
    "subject_text",
    "utc_text",
    "valid_at",
    "verify",
    "write_identity",
]
