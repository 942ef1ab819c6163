"""Keys, certificates, signatures, and the stock-OpenSSL check a receiving clinic can run."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from discmaker.crypto import signing
from discmaker.errors import (
    DiscError,
    KeyFileError,
    OutputError,
    UsageError,
    VerificationError,
)

PASS = b"correct horse battery staple"
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl CLI is not installed")
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture(scope="module")
def identity() -> signing.Identity:
    return signing.generate_identity("Example Imaging")


@pytest.fixture
def written(identity: signing.Identity, tmp_path: Path) -> tuple[Path, Path]:
    return signing.write_identity(identity, tmp_path / "keys", passphrase=PASS)


# -- generate_identity ---------------------------------------------------------------------


def test_certificate_profile(identity: signing.Identity) -> None:
    cert = identity.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Example Imaging"
    )
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Example Imaging discmaker signing"
    )
    assert signing.subject_text(cert) == "CN=Example Imaging discmaker signing,O=Example Imaging"
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.content_commitment
    cert.verify_directly_issued_by(cert)  # properly self-signed
    signing.check_pair(identity.private_key, cert)


def test_validity_is_backdated_one_hour_and_lasts_ten_years() -> None:
    now = dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=dt.UTC)
    cert = signing.generate_identity("Clinic", now=now).certificate
    assert cert.not_valid_before_utc == dt.datetime(2024, 2, 29, 11, 0, 0, tzinfo=dt.UTC)
    assert cert.not_valid_after_utc.year == 2034
    assert dt.timedelta(days=3652) <= cert.not_valid_after_utc - now <= dt.timedelta(days=3654)


def test_naive_and_non_utc_now() -> None:
    naive = signing.generate_identity("C", now=dt.datetime(2025, 1, 1, 12)).certificate
    assert naive.not_valid_before_utc == dt.datetime(2025, 1, 1, 11, tzinfo=dt.UTC)
    cet = dt.timezone(dt.timedelta(hours=1))
    aware = signing.generate_identity("C", now=dt.datetime(2025, 1, 1, 12, tzinfo=cet))
    assert aware.certificate.not_valid_before_utc == dt.datetime(2025, 1, 1, 10, tzinfo=dt.UTC)


def test_each_identity_is_new() -> None:
    first, second = signing.generate_identity("A"), signing.generate_identity("A")
    assert signing.fingerprint(first.certificate) != signing.fingerprint(second.certificate)
    with pytest.raises(KeyFileError, match="does not belong"):
        signing.check_pair(first.private_key, second.certificate)


def test_long_organisation_name_keeps_full_o_and_shortens_cn() -> None:
    org = "Universitätsklinikum Musterstadt Radiologie Ost"  # 47 chars
    cert = signing.generate_identity(org).certificate
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == org
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(common_name, str)
    assert common_name.endswith(" discmaker signing") and len(common_name) <= 64


@pytest.mark.parametrize("org", ["", "   ", "x" * 65, "Evil\nCN=Other", "Tab\there"])
def test_bad_organisation_names(org: str) -> None:
    with pytest.raises(UsageError):
        signing.generate_identity(org)


def test_special_characters_in_subject_are_escaped() -> None:
    cert = signing.generate_identity("Smith, Jones + Partners").certificate
    assert signing.subject_text(cert).endswith(r"O=Smith\, Jones \+ Partners")


# -- write_identity / load_private_key / load_certificate -----------------------------------


def test_write_and_load_round_trip(identity: signing.Identity, written: tuple[Path, Path]) -> None:
    key_path, cert_path = written
    assert key_path.name == "key.pem" and cert_path.name == "cert.pem"
    assert key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = signing.load_private_key(key_path, passphrase=PASS)
    cert = signing.load_certificate(cert_path)
    assert cert == identity.certificate
    signing.check_pair(key, cert)


@posix_only
def test_file_modes(written: tuple[Path, Path]) -> None:
    key_path, _ = written
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700


@posix_only
def test_key_mode_is_0600_even_with_a_permissive_umask(
    identity: signing.Identity, tmp_path: Path
) -> None:
    old = os.umask(0)
    try:
        key_path, _ = signing.write_identity(identity, tmp_path, passphrase=PASS)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_never_overwrites(identity: signing.Identity, written: tuple[Path, Path]) -> None:
    key_path, cert_path = written
    before = key_path.read_bytes(), cert_path.read_bytes()
    other = signing.generate_identity("Other")
    with pytest.raises(OutputError, match="already exists"):
        signing.write_identity(other, key_path.parent, passphrase=PASS)
    assert (key_path.read_bytes(), cert_path.read_bytes()) == before


def test_existing_cert_alone_blocks_and_writes_nothing(
    identity: signing.Identity, tmp_path: Path
) -> None:
    (tmp_path / "cert.pem").write_bytes(b"someone else's")
    with pytest.raises(OutputError):
        signing.write_identity(identity, tmp_path, passphrase=PASS)
    assert not (tmp_path / "key.pem").exists()


@posix_only
def test_dangling_symlink_is_not_followed(identity: signing.Identity, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pem"
    (tmp_path / "key.pem").symlink_to(target)
    with pytest.raises(OutputError):
        signing.write_identity(identity, tmp_path, passphrase=PASS)
    assert not target.exists()


def test_empty_passphrase_is_a_usage_error(identity: signing.Identity, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        signing.write_identity(identity, tmp_path, passphrase=b"")
    assert not (tmp_path / "key.pem").exists()


def test_mismatched_identity_is_refused(identity: signing.Identity, tmp_path: Path) -> None:
    other = signing.generate_identity("Other")
    mixed = signing.Identity(identity.private_key, other.certificate)
    with pytest.raises(KeyFileError):
        signing.write_identity(mixed, tmp_path, passphrase=PASS)


def test_out_dir_that_is_a_file(identity: signing.Identity, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        signing.write_identity(identity, blocker, passphrase=PASS)


def test_wrong_passphrase(written: tuple[Path, Path]) -> None:
    key_path, _ = written
    with pytest.raises(KeyFileError, match=r"the passphrase does not open .*key\.pem"):
        signing.load_private_key(key_path, passphrase=b"wrong")


def test_every_wrong_passphrase_is_named_as_such(written: tuple[Path, Path]) -> None:
    # About one wrong passphrase in 170 decrypts to garbage with valid padding; the key file
    # must still be reported as "not opened by the passphrase", not as damaged (CI saw it).
    key_path, _ = written
    for n in range(1500):
        with pytest.raises(KeyFileError, match="the passphrase does not open"):
            signing.load_private_key(key_path, passphrase=b"wrong %d" % n)


def test_missing_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        signing.load_private_key(tmp_path / "nope.pem", passphrase=PASS)


def test_key_path_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a file"):
        signing.load_private_key(tmp_path, passphrase=PASS)


def _private(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello", "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "damaged"),
        (b"x" * (signing.MAX_PEM_BYTES + 1), "bytes"),
    ],
)
def test_garbage_key(tmp_path: Path, data: bytes, match: str) -> None:
    with pytest.raises(KeyFileError, match=match):
        signing.load_private_key(_private(tmp_path, "k.pem", data), passphrase=PASS)


def test_certificate_given_as_key(written: tuple[Path, Path], tmp_path: Path) -> None:
    path = _private(tmp_path, "k.pem", written[1].read_bytes())
    with pytest.raises(KeyFileError, match="certificate, not a private key"):
        signing.load_private_key(path, passphrase=PASS)


def test_unencrypted_key_is_refused(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFileError, match="not passphrase-protected"):
        signing.load_private_key(_private(tmp_path, "k.pem", pem), passphrase=PASS)


def test_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASS),
    )
    with pytest.raises(KeyFileError, match="EC key; discmaker signs with Ed25519"):
        signing.load_private_key(_private(tmp_path, "k.pem", pem), passphrase=PASS)


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_readable_by_others_is_refused(written: tuple[Path, Path], mode: int) -> None:
    key_path, _ = written
    key_path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        signing.load_private_key(key_path, passphrase=PASS)


def test_load_key_needs_passphrase(written: tuple[Path, Path]) -> None:
    with pytest.raises(UsageError):
        signing.load_private_key(written[0], passphrase=b"")


def test_load_certificate_errors(tmp_path: Path, written: tuple[Path, Path]) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        signing.load_certificate(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyFileError, match=r"not a readable X\.509 certificate"):
        signing.load_certificate(garbage)
    with pytest.raises(KeyFileError, match="private key, not a certificate"):
        signing.load_certificate(written[0])


def test_load_certificate_accepts_der(identity: signing.Identity, tmp_path: Path) -> None:
    path = tmp_path / "cert.der"
    path.write_bytes(identity.certificate.public_bytes(serialization.Encoding.DER))
    assert signing.load_certificate(path) == identity.certificate


def _ec_certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_load_certificate_bytes(identity: signing.Identity) -> None:
    pem = identity.certificate.public_bytes(serialization.Encoding.PEM)
    assert signing.load_certificate_bytes(pem) == identity.certificate
    with pytest.raises(DiscError, match="exactly one"):
        signing.load_certificate_bytes(pem + pem)
    ec_pem = _ec_certificate().public_bytes(serialization.Encoding.PEM)
    with pytest.raises(DiscError, match="EC key, not Ed25519"):
        signing.load_certificate_bytes(ec_pem)
    for garbage in (b"", b"\x00" * 100, b"-----BEGIN CERTIFICATE-----\n", pem[:200]):
        with pytest.raises(DiscError):
            signing.load_certificate_bytes(garbage)
    with pytest.raises(DiscError, match="bytes"):
        signing.load_certificate_bytes(b"x" * (signing.MAX_PEM_BYTES + 1))


# -- fingerprints, key ids, signatures ------------------------------------------------------


def test_fingerprint_and_key_id(identity: signing.Identity) -> None:
    fp = signing.fingerprint(identity.certificate)
    assert len(fp) == 95 and fp == fp.upper() and fp.count(":") == 31
    kid = signing.key_id(identity.private_key.public_key())
    assert len(kid) == 8
    cert_key = identity.certificate.public_key()
    assert isinstance(cert_key, ed25519.Ed25519PublicKey)
    assert signing.key_id(cert_key) == kid


def test_sign_and_verify(identity: signing.Identity) -> None:
    data = b'{"manifest":1}\n'
    signature = signing.sign(identity.private_key, data)
    assert len(signature) == 64
    signing.verify(identity.certificate, signature, data)
    signing.verify(identity.private_key.public_key(), signature, data)
    with pytest.raises(VerificationError, match="signature does not match the manifest"):
        signing.verify(identity.certificate, signature, data + b" ", what="the manifest")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(VerificationError, match="signature does not match"):
        signing.verify(identity.certificate, flipped, data)
    with pytest.raises(VerificationError, match="63 bytes"):
        signing.verify(identity.certificate, signature[:63], data)
    other = signing.generate_identity("Other")
    with pytest.raises(VerificationError):
        signing.verify(other.certificate, signature, data)
    with pytest.raises(VerificationError, match="not an Ed25519 key"):
        signing.verify(_ec_certificate(), signature, data)


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCMAKER_PASSPHRASE", raising=False)
    assert signing.passphrase_from_env() is None
    monkeypatch.setenv("DISCMAKER_PASSPHRASE", "")
    assert signing.passphrase_from_env() is None
    monkeypatch.setenv("DISCMAKER_PASSPHRASE", "pässword")
    assert signing.passphrase_from_env() == "pässword".encode()
    monkeypatch.setenv("OTHER_VAR", "x")
    assert signing.passphrase_from_env("OTHER_VAR") == b"x"


# -- stock OpenSSL, as the receiving clinic would run it --------------------------------------


def _disc_folder(identity: signing.Identity, folder: Path, *, tamper: bool = False) -> Path:
    folder.mkdir()
    manifest = b'{"files":[{"path":"DICOM/IM000001","sha256":"ab"}],"version":1}\n'
    (folder / "SIGNER.PEM").write_bytes(
        identity.certificate.public_bytes(serialization.Encoding.PEM)
    )
    (folder / "MANIFEST.SIG").write_bytes(signing.sign(identity.private_key, manifest))
    if tamper:
        manifest = manifest.replace(b"ab", b"ac")
    (folder / "MANIFEST.JSN").write_bytes(manifest)
    return folder


def _run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # the documented command is a shell line
        command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@needs_openssl
def test_openssl_verifies_our_signature(identity: signing.Identity, tmp_path: Path) -> None:
    folder = _disc_folder(identity, tmp_path / "DISCSIG")
    result = _run_shell(signing.OPENSSL_VERIFY_COMMAND, folder)
    assert result.returncode == 0, result.stderr
    assert signing.OPENSSL_VERIFY_OK in result.stdout


@needs_openssl
def test_openssl_rejects_a_changed_manifest(identity: signing.Identity, tmp_path: Path) -> None:
    folder = _disc_folder(identity, tmp_path / "DISCSIG", tamper=True)
    result = _run_shell(signing.OPENSSL_VERIFY_COMMAND, folder)
    assert result.returncode != 0
    assert signing.OPENSSL_VERIFY_OK not in result.stdout
    assert "Failure" in result.stdout + result.stderr


@needs_openssl
@posix_only
def test_openssl_one_step_command_from_a_read_only_folder(
    identity: signing.Identity, tmp_path: Path
) -> None:
    good = _disc_folder(identity, tmp_path / "good")
    bad = _disc_folder(identity, tmp_path / "bad", tamper=True)
    for folder in (good, bad):
        folder.chmod(0o555)  # like a mounted CD
    try:
        ok = subprocess.run(
            shlex.split(signing.OPENSSL_VERIFY_COMMAND_ONE_STEP),
            cwd=good,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        failed = subprocess.run(
            shlex.split(signing.OPENSSL_VERIFY_COMMAND_ONE_STEP),
            cwd=bad,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        for folder in (good, bad):
            folder.chmod(0o755)
    assert ok.returncode == 0, ok.stderr
    assert signing.OPENSSL_VERIFY_OK in ok.stdout
    assert failed.returncode != 0
    assert signing.OPENSSL_VERIFY_OK not in failed.stdout


@needs_openssl
def test_openssl_fingerprint_matches_ours(identity: signing.Identity, tmp_path: Path) -> None:
    folder = _disc_folder(identity, tmp_path / "DISCSIG")
    result = subprocess.run(
        shlex.split(signing.OPENSSL_FINGERPRINT_COMMAND),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip().split("=", 1)[1] == signing.fingerprint(identity.certificate)


@needs_openssl
def test_openssl_opens_our_encrypted_key(written: tuple[Path, Path]) -> None:
    key_path, cert_path = written
    assert OPENSSL is not None
    result = subprocess.run(
        [OPENSSL, "pkey", "-in", str(key_path), "-passin", "env:DM_TEST_PASS", "-pubout"],
        env={**os.environ, "DM_TEST_PASS": PASS.decode()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    cert_pub = subprocess.run(
        [OPENSSL, "x509", "-in", str(cert_path), "-pubkey", "-noout"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == cert_pub.stdout
