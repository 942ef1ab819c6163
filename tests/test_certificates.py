"""Signer certificates over time: validity when authoring, at signing and now; renewal.

Every centre here is made at an explicit date, so the tests hold for any check run between
2026 and 2035 (a certificate made in 2010 expired in 2020, one made in 2025 is valid until
2035).
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from rich.console import Console

from discmaker.author.create import AuthorRequest, author
from discmaker.check.restore import restore_disc
from discmaker.check.verify import check_disc
from discmaker.crypto import signing
from discmaker.crypto.trust import TrustStore
from discmaker.errors import EX_NOPERM, KeyFileError
from discmaker.format import canonical
from discmaker.format.manifest import MANIFEST_PATH, SIGNATURE_PATH, SIGNER_PATH
from discmaker.models import CheckReport, Verdict
from discmaker.sample import write_sample_study
from discmaker.ui.cli import main
from discmaker.ui.render import check_summary
from tests.conftest import FIXED_TIME, PASSPHRASE, Centre
from tests.test_schemas import run_json, validate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

Y2010 = datetime(2010, 3, 1, 8, 0, tzinfo=UTC)  # valid 2010-03-01 07:00 .. 2020-03-01 08:00
Y2015 = datetime(2015, 1, 5, 12, 0, tzinfo=UTC)  # .. 2025-01-05
Y2025 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # .. 2035-01-02 (3653 days)
Y2030 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # not valid before 2030


def _centre(tmp: Path, identity: signing.Identity) -> Centre:
    key, cert = signing.write_identity(identity, tmp, passphrase=PASSPHRASE)
    return Centre(identity, key, cert)


def _author(
    identity: signing.Identity, study: Path, out: Path, *, at: datetime = FIXED_TIME
) -> Path:
    author(
        AuthorRequest(
            inputs=(study,),
            out=out,
            key=identity.private_key,
            cert=identity.certificate,
            format="folder",
            label="CERTS",
            timestamp=at,
            workers=1,
        )
    )
    return out


def _trust(tmp: Path, *certs: x509.Certificate) -> TrustStore:
    files = []
    for n, cert in enumerate(certs):
        path = tmp / f"trusted-{n}.pem"
        path.write_bytes(cert.public_bytes(Encoding.PEM))
        files.append(path)
    return TrustStore.from_paths(files)


def _resign(disc: Path, identity: signing.Identity, **changes: Any) -> None:
    """Edit the manifest's top level and sign it again, as a centre's own key would."""
    doc = canonical.loads((disc / MANIFEST_PATH).read_bytes(), max_bytes=1 << 26)
    doc.update(changes)
    body = canonical.dumps(doc)
    (disc / MANIFEST_PATH).write_bytes(body)
    (disc / SIGNATURE_PATH).write_bytes(signing.sign(identity.private_key, body))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cert_study")
    write_sample_study(root, ct_slices=2, ct_size=128, mr_slices=2, mr_size=96)
    return root


@pytest.fixture(scope="module")
def key_k() -> signing.Identity:
    """Key K with its first certificate, A (valid 2025-01-01 to 2035-01-02)."""
    return signing.generate_identity("Renewal Imaging", now=Y2025)


# -- authoring --------------------------------------------------------------------------------


def test_author_refuses_an_expired_certificate_before_reading_any_image(tmp_path: Path) -> None:
    expired = signing.generate_identity("Lapsed Imaging", now=Y2010)
    out = tmp_path / "disc"
    with pytest.raises(KeyFileError) as caught:
        # The input does not exist: reading it would be a different error.
        _author(expired, tmp_path / "no-such-study", out)
    message = str(caught.value)
    assert "expired on 2020-03-01" in message
    assert "valid from 2010-03-01 07:00 to 2020-03-01 08:00 UTC" in message
    assert "2026-01-02 10:00 UTC" in message  # the authoring time
    assert "Renew the certificate" in message and "discmaker keygen" in message
    assert caught.value.exit_code == EX_NOPERM
    assert not out.exists()


def test_author_refuses_a_certificate_not_valid_yet(tmp_path: Path, study: Path) -> None:
    future = signing.generate_identity("Early Imaging", now=Y2030)
    with pytest.raises(KeyFileError, match="not valid yet at 2026-01-02 10:00 UTC") as caught:
        _author(future, study, tmp_path / "disc")
    assert "Check this computer's date and time" in str(caught.value)
    assert not (tmp_path / "disc").exists()


def test_cli_author_with_expired_certificate(
    tmp_path: Path, study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    centre = _centre(tmp_path / "keys", signing.generate_identity("Lapsed Imaging", now=Y2010))
    monkeypatch.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())
    console = Console(record=True, width=200)
    argv = ["author", str(study), "--key", str(centre.key_path), "--cert", str(centre.cert_path)]
    argv += ["--out", str(tmp_path / "disc"), "--format", "folder"]
    assert main(argv, console=console) == EX_NOPERM  # no --timestamp: authored now
    text = console.export_text()
    assert "expired on 2020-03-01" in text and "Renew the certificate" in text
    assert not (tmp_path / "disc").exists()


# -- checking: validity at signing and now ---------------------------------------------------


def test_check_reports_the_signer_certificate_validity(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    disc = _author(key_k, study, tmp_path / "disc")
    report = check_disc(disc, trust=_trust(tmp_path, key_k.certificate), workers=1)
    assert report.verdict is Verdict.VERIFIED
    signer = report.signer
    assert signer is not None
    assert signer.not_before == "2025-01-01T11:00:00Z"
    assert signer.not_after == "2035-01-02T12:00:00Z"
    assert signer.valid_at_signing is True and signer.valid_now is True
    assert signer.key_fingerprint == signing.key_fingerprint(key_k.certificate)
    assert signer.key_fingerprint != signer.fingerprint
    assert signer.to_json()["not_after"] == "2035-01-02T12:00:00Z"
    assert not any("expired" in note for note in report.notes)


def test_certificate_expired_since_signing_is_only_a_note(
    tmp_path: Path, study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _centre(tmp_path / "keys", signing.generate_identity("Old Imaging", now=Y2015))
    disc = _author(old.identity, study, tmp_path / "disc", at=datetime(2020, 6, 1, tzinfo=UTC))
    report = check_disc(disc, trust=_trust(tmp_path, old.identity.certificate), workers=1)
    assert report.verdict is Verdict.VERIFIED and report.findings == ()
    assert report.signer is not None
    assert report.signer.valid_at_signing is True and report.signer.valid_now is False
    assert any(
        "has expired since the disc was made; the disc's signature stays valid" in note
        for note in report.notes
    )
    console = Console(record=True, width=200)
    console.print(check_summary(report))
    assert "valid 2015-01-05 to 2025-01-05; expired since the disc was made" in (
        console.export_text()
    )
    # The real CLI document, against the published schema; and the HTML report.
    html = tmp_path / "report.html"
    code, doc = run_json(
        ["check", str(disc), "--trust", str(old.cert_path), "--json", "--report", str(html)]
    )
    validate(doc)
    assert code == 0
    assert doc["signer"]["valid_at_signing"] is True and doc["signer"]["valid_now"] is False
    assert doc["signer"]["not_before"] == "2015-01-05T11:00:00Z"
    assert "valid 2015-01-05 to 2025-01-05; expired since the disc was made" in html.read_text()


def test_certificate_not_valid_at_signing_is_a_signature_finding(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    disc = _author(key_k, study, tmp_path / "disc")
    # The key's holder signs a manifest that claims a time outside the certificate (2024).
    _resign(disc, key_k, created="2024-06-01T10:00:00Z")
    trust = _trust(tmp_path, key_k.certificate)
    report = check_disc(disc, trust=trust, workers=1)
    assert report.signature_valid and report.signer is not None and report.signer.trusted
    assert report.signer.valid_at_signing is False and report.signer.valid_now is True
    findings = [f for f in report.findings if f.step == 1 and f.kind == "signature"]
    assert len(findings) == 1 and findings[0].path == SIGNER_PATH
    assert "was not valid when the disc was made (2024-06-01 10:00 UTC)" in findings[0].message
    assert "valid from 2025-01-01 to 2035-01-02" in findings[0].message
    assert report.verdict is Verdict.TAMPERED and report.exit_code == 1
    console = Console(record=True, width=200)
    console.print(check_summary(report))
    text = console.export_text()
    assert "NOT valid when the disc was made" in text
    assert "signature cannot be relied on" in text
    assert "changed after the sender signed it" not in text  # nothing on it was changed
    # Restore writes nothing a signature outside its certificate's validity vouches for.
    result = restore_disc(disc, trust=trust, out=tmp_path / "restored")
    assert result.restored == () and len(result.refused) == 4 and result.exit_code == 1


def test_unreadable_signing_time_is_a_signature_finding(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    disc = _author(key_k, study, tmp_path / "disc")
    _resign(disc, key_k, created="yesterday")
    report = check_disc(disc, trust=_trust(tmp_path, key_k.certificate), workers=1)
    assert report.signer is not None and report.signer.valid_at_signing is None
    assert any(f.step == 1 and "creation time cannot be read" in f.message for f in report.findings)
    assert report.verdict is Verdict.TAMPERED


# -- renewal: trust belongs to the key --------------------------------------------------------


def _assert_verified_by(report: CheckReport, cert: x509.Certificate) -> None:
    assert report.findings == (), report.findings
    assert report.verdict is Verdict.VERIFIED
    assert report.signer is not None and report.signer.trusted
    assert report.signer.fingerprint == signing.fingerprint(cert)  # the disc's certificate


def test_disc_signed_with_renewed_certificate_verifies_against_the_old_one(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    renewed = signing.renew_certificate(key_k, now=datetime(2026, 1, 1, tzinfo=UTC))
    cert_a, cert_b = key_k.certificate, renewed.certificate
    assert cert_a.public_bytes(Encoding.DER) != cert_b.public_bytes(Encoding.DER)
    assert signing.key_fingerprint(cert_a) == signing.key_fingerprint(cert_b)
    disc = _author(renewed, study, tmp_path / "disc")
    report = check_disc(disc, trust=_trust(tmp_path, cert_a), workers=1)
    _assert_verified_by(report, cert_b)
    assert not any("replaced" in f.message for f in report.findings)


def test_old_disc_verifies_after_the_store_holds_the_renewed_certificate(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    disc = _author(key_k, study, tmp_path / "disc", at=datetime(2025, 6, 1, tzinfo=UTC))
    renewed = signing.renew_certificate(key_k, now=datetime(2026, 1, 1, tzinfo=UTC))
    store = TrustStore(tmp_path / "store")
    (tmp_path / "renewed.pem").write_bytes(renewed.certificate.public_bytes(Encoding.PEM))
    store.add(tmp_path / "renewed.pem")
    report = check_disc(disc, trust=store, workers=1)
    _assert_verified_by(report, key_k.certificate)
    result = restore_disc(disc, trust=store, out=tmp_path / "restored")
    assert result.exit_code == 0 and len(result.restored) == 4


def test_another_key_with_the_same_subject_is_not_trusted(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    impostor = signing.generate_identity("Renewal Imaging", now=Y2025)
    assert signing.subject_text(impostor.certificate) == signing.subject_text(key_k.certificate)
    trust = _trust(tmp_path, key_k.certificate)
    assert trust.find(impostor.certificate) is None
    disc = _author(impostor, study, tmp_path / "disc")
    report = check_disc(disc, trust=trust, workers=1)
    assert report.signer is not None and not report.signer.trusted
    assert report.verdict is Verdict.NOT_VERIFIABLE and report.exit_code == 2


def _forged(identity: signing.Identity) -> x509.Certificate:
    """``identity``'s public key and name in a certificate signed by someone else."""
    forger = Ed25519PrivateKey.generate()
    return (
        x509.CertificateBuilder()
        .subject_name(identity.certificate.subject)
        .issuer_name(identity.certificate.subject)
        .public_key(identity.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2100, 1, 1, tzinfo=UTC))
        .sign(forger, None)
    )


def test_a_pinned_key_in_a_certificate_its_key_did_not_sign_is_not_trusted(
    tmp_path: Path, key_k: signing.Identity
) -> None:
    """Anyone can copy a public key into a certificate; only its holder can sign one."""
    forged = _forged(key_k)
    assert not signing.self_signed(forged) and signing.self_signed(key_k.certificate)
    trust = _trust(tmp_path, key_k.certificate)
    assert trust.find(forged) is None
    assert trust.find(key_k.certificate) is not None


def test_forged_certificate_swapped_onto_a_genuine_disc_is_a_signature_finding(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    """Its dates (2000-2100) must not pass off a disc signed outside the real certificate."""
    forged = _forged(key_k)
    disc = _author(key_k, study, tmp_path / "disc")
    (disc / SIGNER_PATH).write_bytes(forged.public_bytes(Encoding.PEM))
    report = check_disc(disc, trust=_trust(tmp_path, key_k.certificate), workers=1)
    assert report.signature_valid  # the manifest is the key holder's ...
    assert report.signer is not None and not report.signer.trusted  # ... the certificate not
    assert any("not signed by its own key" in f.message for f in report.findings)
    assert report.verdict is Verdict.TAMPERED


def test_same_key_under_another_name_is_trusted_with_a_note(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    renamed_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=New Name discmaker signing,O=New Name"))
        .issuer_name(x509.Name.from_rfc4514_string("CN=New Name discmaker signing,O=New Name"))
        .public_key(key_k.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(Y2025)
        .not_valid_after(Y2030)
        .sign(key_k.private_key, None)
    )
    renamed = signing.Identity(key_k.private_key, renamed_cert)
    disc = _author(renamed, study, tmp_path / "disc")
    report = check_disc(disc, trust=_trust(tmp_path, key_k.certificate), workers=1)
    _assert_verified_by(report, renamed_cert)
    assert any(
        "names CN=New Name discmaker signing,O=New Name; you trusted its key as "
        "CN=Renewal Imaging discmaker signing,O=Renewal Imaging" in note
        for note in report.notes
    )


def test_renewal_keeps_subject_and_key(key_k: signing.Identity) -> None:
    renewed = signing.renew_certificate(key_k, now=datetime(2034, 12, 1, tzinfo=UTC))
    assert renewed.private_key is key_k.private_key
    assert renewed.certificate.subject == key_k.certificate.subject
    assert renewed.certificate.not_valid_after_utc == datetime(2044, 12, 1, tzinfo=UTC)
    assert signing.self_signed(renewed.certificate)
    signing.check_pair(renewed.private_key, renewed.certificate)
    assert signing.valid_at(renewed.certificate, datetime(2040, 1, 1, tzinfo=UTC))
    assert not signing.valid_at(key_k.certificate, datetime(2040, 1, 1, tzinfo=UTC))


def test_renewed_certificate_on_a_copied_disc_with_its_hash_updated(
    tmp_path: Path, study: Path, key_k: signing.Identity
) -> None:
    """The key holder may swap in the renewed certificate and re-sign: still one signer."""
    disc = _author(key_k, study, tmp_path / "disc")
    copy = tmp_path / "copy"
    shutil.copytree(disc, copy)
    renewed = signing.renew_certificate(key_k, now=datetime(2025, 12, 1, tzinfo=UTC))
    pem = renewed.certificate.public_bytes(Encoding.PEM)
    (copy / SIGNER_PATH).write_bytes(pem)
    doc = canonical.loads((copy / MANIFEST_PATH).read_bytes(), max_bytes=1 << 26)
    for entry in doc["files"]:
        if entry["path"] == SIGNER_PATH:
            entry["sha256"], entry["size"] = hashlib.sha256(pem).hexdigest(), len(pem)
    _resign(copy, key_k, files=doc["files"])
    report = check_disc(copy, trust=_trust(tmp_path, key_k.certificate), workers=1)
    _assert_verified_by(report, renewed.certificate)
