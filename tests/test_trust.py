"""The receiving clinic's trust store: pinning, listing, removing, garbage tolerance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from discmaker.crypto import signing
from discmaker.crypto.trust import TRUST_DIR_ENV, TrustedSigner, TrustStore, normalise_fingerprint
from discmaker.errors import KeyFileError, UsageError


@pytest.fixture(scope="module")
def alpha() -> signing.Identity:
    return signing.generate_identity("Alpha Imaging")


@pytest.fixture(scope="module")
def beta() -> signing.Identity:
    return signing.generate_identity("Beta Radiology")


def _cert_file(identity: signing.Identity, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(identity.certificate.public_bytes(serialization.Encoding.PEM))
    return path


def test_new_store_is_empty_and_trusts_nobody(tmp_path: Path, alpha: signing.Identity) -> None:
    store = TrustStore(tmp_path / "not-yet-created")
    assert store.is_empty()
    assert store.list() == []
    assert store.find(alpha.certificate) is None
    assert store.public_keys() == {}
    assert store.problems == []


def test_add_find_list(tmp_path: Path, alpha: signing.Identity, beta: signing.Identity) -> None:
    store = TrustStore(tmp_path / "trusted")
    signer = store.add(_cert_file(alpha, tmp_path / "in" / "alpha.pem"))
    fp = signing.fingerprint(alpha.certificate)
    assert signer == TrustedSigner.from_certificate(alpha.certificate)
    assert signer.subject == "CN=Alpha Imaging discmaker signing,O=Alpha Imaging"
    assert signer.fingerprint == fp
    assert signer.not_after == alpha.certificate.not_valid_after_utc
    assert signer.not_after.tzinfo is not None
    assert (tmp_path / "trusted" / f"{fp.replace(':', '')}.pem").is_file()
    assert not store.is_empty()
    assert store.find(alpha.certificate) == signer
    assert store.find(beta.certificate) is None
    store.add(_cert_file(beta, tmp_path / "in" / "beta.pem"))
    assert [s.subject.split(",")[0] for s in store.list()] == [
        "CN=Alpha Imaging discmaker signing",
        "CN=Beta Radiology discmaker signing",
    ]
    # A fresh object over the same folder sees the same signers.
    assert TrustStore(tmp_path / "trusted").list() == store.list()


def test_add_is_idempotent(tmp_path: Path, alpha: signing.Identity) -> None:
    store = TrustStore(tmp_path / "trusted")
    cert = _cert_file(alpha, tmp_path / "alpha.pem")
    assert store.add(cert) == store.add(cert)
    assert len(list((tmp_path / "trusted").iterdir())) == 1
    assert len(store.list()) == 1


def test_add_garbage_raises_and_writes_nothing(tmp_path: Path, alpha: signing.Identity) -> None:
    store = TrustStore(tmp_path / "trusted")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(KeyFileError):
        store.add(garbage)
    with pytest.raises(KeyFileError):
        store.add(tmp_path / "missing.pem")
    key_path, _ = signing.write_identity(alpha, tmp_path / "keys", passphrase=b"pw")
    with pytest.raises(KeyFileError, match="private key"):
        store.add(key_path)
    assert store.is_empty()


def test_trust_belongs_to_the_key_whatever_certificate_carries_it(
    tmp_path: Path, alpha: signing.Identity
) -> None:
    """A renewed or re-issued certificate over the pinned key, signed by that key, is the
    same signer (its discs and watermarks are the key's); see test_certificates.py for the
    name-change note and the certificates a pinned key did not sign."""
    store = TrustStore(tmp_path / "trusted")
    store.add(_cert_file(alpha, tmp_path / "alpha.pem"))
    # Same key, different certificate (e.g. someone re-issued it with another subject).
    other = signing.generate_identity("Mallory").certificate
    reissued = (
        x509.CertificateBuilder()
        .subject_name(other.subject)
        .issuer_name(other.subject)
        .public_key(alpha.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(alpha.certificate.not_valid_before_utc)
        .not_valid_after(alpha.certificate.not_valid_after_utc)
        .sign(alpha.private_key, None)
    )
    found = store.find(reissued)
    assert found is not None and found.key_id == signing.key_id(alpha.private_key.public_key())
    assert store.find(alpha.certificate) is not None


@pytest.mark.parametrize("style", ["colons", "plain", "lower", "spaced"])
def test_remove_accepts_fingerprint_spellings(
    tmp_path: Path, alpha: signing.Identity, beta: signing.Identity, style: str
) -> None:
    store = TrustStore(tmp_path / "trusted")
    store.add(_cert_file(alpha, tmp_path / "alpha.pem"))
    store.add(_cert_file(beta, tmp_path / "beta.pem"))
    fp = signing.fingerprint(alpha.certificate)
    text = {
        "colons": fp,
        "plain": fp.replace(":", ""),
        "lower": fp.lower(),
        "spaced": f"  {fp.replace(':', ' ')}\n",
    }[style]
    removed = store.remove(text)
    assert removed.fingerprint == fp
    assert store.find(alpha.certificate) is None
    assert store.find(beta.certificate) is not None


def test_remove_absent_or_malformed(tmp_path: Path, alpha: signing.Identity) -> None:
    store = TrustStore(tmp_path / "trusted")
    fp = signing.fingerprint(alpha.certificate)
    with pytest.raises(UsageError, match="no trusted signer"):
        store.remove(fp)
    for bad in ("", "AB:CD", fp[:-1] + "G", fp + ":00"):
        with pytest.raises(UsageError, match="not a SHA-256 fingerprint"):
            store.remove(bad)


def test_remove_also_deletes_copies_under_other_names(
    tmp_path: Path, alpha: signing.Identity
) -> None:
    store = TrustStore(tmp_path / "trusted")
    store.add(_cert_file(alpha, tmp_path / "alpha.pem"))
    _cert_file(alpha, tmp_path / "trusted" / "copied-by-hand.pem")
    assert len(store.list()) == 1  # duplicates collapse
    store.remove(signing.fingerprint(alpha.certificate))
    assert store.is_empty()


def test_garbage_in_store_is_skipped_and_reported(tmp_path: Path, alpha: signing.Identity) -> None:
    directory = tmp_path / "trusted"
    store = TrustStore(directory)
    store.add(_cert_file(alpha, tmp_path / "alpha.pem"))
    (directory / "junk.pem").write_bytes(b"\x00\xff garbage")
    (directory / "empty.pem").write_bytes(b"")
    (directory / "README.txt").write_text("ignored: not *.pem")
    (directory / "sub.pem").mkdir()
    assert [s.fingerprint for s in store.list()] == [signing.fingerprint(alpha.certificate)]
    assert store.find(alpha.certificate) is not None
    problems = {p.path.name: p.reason for p in store.problems}
    assert set(problems) == {"junk.pem", "empty.pem", "sub.pem"}
    assert all(reason for reason in problems.values())
    assert str(store.problems[0]).startswith(str(directory))


def test_store_of_only_garbage_is_empty(tmp_path: Path) -> None:
    directory = tmp_path / "trusted"
    directory.mkdir()
    (directory / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
    store = TrustStore(directory)
    assert store.is_empty()
    assert store.public_keys() == {}
    assert len(store.problems) == 1


def test_public_keys(tmp_path: Path, alpha: signing.Identity, beta: signing.Identity) -> None:
    store = TrustStore(tmp_path / "trusted")
    store.add(_cert_file(alpha, tmp_path / "a.pem"))
    store.add(_cert_file(beta, tmp_path / "b.pem"))
    keys = store.public_keys()
    for identity in (alpha, beta):
        public = identity.private_key.public_key()
        assert keys[signing.key_id(public)].public_bytes_raw() == public.public_bytes_raw()
    assert len(keys) == 2


def test_from_paths_mixes_folders_and_files(
    tmp_path: Path, alpha: signing.Identity, beta: signing.Identity
) -> None:
    folder = tmp_path / "certs"
    _cert_file(alpha, folder / "alpha.pem")
    (folder / "junk.pem").write_text("junk")
    beta_file = _cert_file(beta, tmp_path / "beta.crt")
    store = TrustStore.from_paths([folder, beta_file])
    assert store.read_only and store.directory is None
    assert store.find(alpha.certificate) is not None
    assert store.find(beta.certificate) is not None
    assert [p.path.name for p in store.problems] == ["junk.pem"]
    with pytest.raises(UsageError, match="read-only"):
        store.add(beta_file)
    with pytest.raises(UsageError, match="read-only"):
        store.remove(signing.fingerprint(alpha.certificate))
    assert (folder / "alpha.pem").exists()


def test_from_paths_refuses_missing_or_garbage_named_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        TrustStore.from_paths([tmp_path / "missing"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage")
    with pytest.raises(KeyFileError):
        TrustStore.from_paths([garbage])
    assert TrustStore.from_paths([]).is_empty()


def test_default_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(TRUST_DIR_ENV, str(tmp_path / "env-store"))
    assert TrustStore.default().directory == tmp_path / "env-store"
    monkeypatch.delenv(TRUST_DIR_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    directory = TrustStore.default().directory
    assert directory is not None
    assert directory.name == "trusted" and "discmaker" in directory.parts


def test_expired_certificate_is_listed_with_its_date(tmp_path: Path) -> None:
    old = signing.generate_identity("Old", now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    store = TrustStore(tmp_path / "trusted")
    signer = store.add(_cert_file(old, tmp_path / "old.pem"))
    assert signer.not_after < dt.datetime.now(dt.UTC)


def test_normalise_fingerprint(alpha: signing.Identity) -> None:
    fp = signing.fingerprint(alpha.certificate)
    assert normalise_fingerprint(fp.lower()) == fp.replace(":", "")
