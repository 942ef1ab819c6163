"""Shared fixtures: a signing identity, generated studies and authored discs.

Session-scoped objects are read-only by convention; a test that changes a disc works on its
own copy (``disc_copy``).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from discmaker.author.create import AuthorRequest, AuthorResult, author
from discmaker.crypto import signing
from discmaker.sample import SamplePatient, write_sample_study

PASSPHRASE = b"test-passphrase"
FIXED_TIME = datetime(2026, 1, 2, 10, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Centre:
    identity: signing.Identity
    key_path: Path
    cert_path: Path


def make_centre(tmp: Path, org: str, *, now: datetime = FIXED_TIME) -> Centre:
    identity = signing.generate_identity(org, now=now)  # valid when its discs are made
    key, cert = signing.write_identity(identity, tmp, passphrase=PASSPHRASE)
    return Centre(identity, key, cert)


@pytest.fixture(scope="session")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Centre:
    return make_centre(tmp_path_factory.mktemp("centre"), "Test Imaging Centre")


@pytest.fixture(scope="session")
def other_centre(tmp_path_factory: pytest.TempPathFactory) -> Centre:
    return make_centre(tmp_path_factory.mktemp("other"), "Other Imaging Centre")


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_sample_study(root, ct_slices=6, ct_size=512, mr_slices=4, mr_size=256)
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with its SHA-256 (to prove inputs are untouched)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def author_disc(centre: Centre, inputs: list[Path], out: Path, **kwargs: object) -> AuthorResult:
    req = AuthorRequest(
        inputs=tuple(inputs),
        out=out,
        key=centre.identity.private_key,
        cert=centre.identity.certificate,
        timestamp=FIXED_TIME,
        workers=1,
        **kwargs,  # type: ignore[arg-type]
    )
    return author(req)


@pytest.fixture(scope="session")
def disc_folder(tmp_path_factory: pytest.TempPathFactory, centre: Centre, study_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("discs") / "DISC"
    author_disc(centre, [study_dir], out, format="folder", label="TESTDISC")
    return out


@pytest.fixture(scope="session")
def disc_iso(tmp_path_factory: pytest.TempPathFactory, centre: Centre, study_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("iso") / "disc.iso"
    author_disc(centre, [study_dir], out, label="TESTDISC")
    return out


@pytest.fixture
def disc_copy(tmp_path: Path, disc_folder: Path) -> Callable[[], Path]:
    def make() -> Path:
        dest = tmp_path / "copy"
        shutil.copytree(disc_folder, dest)
        for p in dest.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        return dest

    return make


@pytest.fixture
def patient_b() -> SamplePatient:
    return SamplePatient(name="OTHER^PATIENT", patient_id="DM-000002", birth_date="19800202")
