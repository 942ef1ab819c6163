"""`trust add` takes what a clinic has in hand (a certificate, the disc itself, an ISO, a
drive), shows whose it is and asks before trusting; a site-wide store serves every user."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from discmaker.crypto import signing
from discmaker.crypto.trust import SITE_TRUST_DIR_ENV, TRUST_DIR_ENV, TrustStore
from discmaker.ui.cli import main
from tests.conftest import Centre


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    user, site = tmp_path / "user", tmp_path / "site"
    site.mkdir()
    monkeypatch.setenv(TRUST_DIR_ENV, str(user))
    monkeypatch.setenv(SITE_TRUST_DIR_ENV, str(site))
    return user, site


def _run(args: list[str]) -> tuple[int, str]:
    console = Console(record=True, width=200, file=io.StringIO())
    code = main(args, console=console)
    return code, console.export_text()


@pytest.mark.parametrize("what", ["certificate", "folder disc", "ISO image"])
def test_trust_add_reads_the_sender_from_what_the_clinic_has(
    stores: tuple[Path, Path], centre: Centre, disc_folder: Path, disc_iso: Path, what: str
) -> None:
    source = {"certificate": centre.cert_path, "folder disc": disc_folder, "ISO image": disc_iso}
    code, text = _run(["trust", "add", str(source[what]), "--yes"])
    assert code == 0, text
    fingerprint = signing.fingerprint(centre.identity.certificate)
    assert fingerprint in text and "Test Imaging Centre" in text
    assert [s.fingerprint for s in TrustStore.default().list()] == [fingerprint]


def test_without_a_terminal_or_yes_nothing_is_trusted(
    stores: tuple[Path, Path], centre: Centre, disc_iso: Path
) -> None:
    code, text = _run(["trust", "add", str(disc_iso)])
    assert code == 64 and "--yes" in text
    assert TrustStore.default().list() == []


def test_a_disc_without_a_signer_is_refused_with_advice(
    stores: tuple[Path, Path], disc_folder: Path, tmp_path: Path
) -> None:
    unsigned = tmp_path / "unsigned"
    shutil.copytree(disc_folder, unsigned)
    shutil.rmtree(unsigned / "DISCSIG")
    code, text = _run(["trust", "add", str(unsigned), "--yes"])
    assert code == 64 and "carries no sender certificate" in text


def test_the_site_store_is_read_by_every_user_and_never_changed(
    stores: tuple[Path, Path], centre: Centre, disc_iso: Path
) -> None:
    _user, site = stores
    shutil.copy(centre.cert_path, site / "centre.pem")
    store = TrustStore.default()
    assert store.site_directory == site
    assert [s.subject for s in store.list()] == [signing.subject_text(centre.identity.certificate)]
    assert main(["check", str(disc_iso)]) == 0  # verifies through the site store alone
    fingerprint = signing.fingerprint(centre.identity.certificate)
    code, text = _run(["trust", "remove", fingerprint])
    assert code == 64 and "site-wide store" in text
    assert (site / "centre.pem").exists()


def test_the_check_of_an_untrusted_disc_says_how_to_trust_it_from_the_disc(
    stores: tuple[Path, Path], disc_iso: Path
) -> None:
    """Not "trust add DISCSIG/SIGNER.PEM", a path no ISO or drive has: the disc itself."""
    code, text = _run(["check", str(disc_iso)])
    assert code == 2
    assert f"discmaker trust add {disc_iso}" in " ".join(text.split())


def test_the_sender_certificate_is_read_the_same_from_every_source(
    centre: Centre, disc_folder: Path, disc_iso: Path, tmp_path: Path
) -> None:
    """The library function behind `trust add` and the guided workflow's offer to trust."""
    from discmaker.check.sender import sender_certificate
    from discmaker.errors import KeyFileError, UsageError

    for source in (centre.cert_path, disc_folder, disc_iso):
        assert sender_certificate(source) == centre.identity.certificate
    with pytest.raises(UsageError, match="does not exist"):
        sender_certificate(tmp_path / "nothing here")
    with pytest.raises(KeyFileError, match="private key"):
        sender_certificate(centre.key_path)
