"""The genuine material every fuzz case starts from: a study, identities, folder and ISO discs."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PASSPHRASE = "fuzz-passphrase"
TIMESTAMP = "2026-01-01T00:00:00"
_SIGNED_AT = datetime(2026, 1, 1, tzinfo=UTC)  # TIMESTAMP: the certificates are valid then


@dataclass(frozen=True)
class Fixture:
    root: Path
    folder: Path  # the genuine disc as a folder
    iso: Path  # the genuine disc as an ISO image
    cert: Path  # trusted certificate
    trusted_key: Ed25519PrivateKey  # the key the genuine disc was signed with
    trusted_cert_pem: bytes
    untrusted_key: Ed25519PrivateKey  # a second identity, not in the trust store
    untrusted_cert_pem: bytes


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DISCMAKER_PASSPHRASE"] = PASSPHRASE
    env["DISCMAKER_DEBUG"] = "1"  # uncaught exceptions print their traceback
    env.setdefault("NO_COLOR", "1")
    env["COLUMNS"] = "200"
    return env


def build_fixture(root: Path, *, ct_size: int = 256, mr_size: int = 128) -> Fixture:
    """Author the genuine disc (folder and ISO) under ``root`` (must be empty or absent)."""
    # imported late: the library is edited while the fuzzer runs, and the CLI is what is tested
    from discmaker.crypto.signing import generate_identity, write_identity  # noqa: PLC0415
    from discmaker.sample import write_sample_study  # noqa: PLC0415

    root.mkdir(parents=True, exist_ok=True)
    study = root / "study"
    write_sample_study(study, ct_slices=3, ct_size=ct_size, mr_slices=2, mr_size=mr_size)
    trusted = generate_identity("Fuzz Centre", now=_SIGNED_AT)
    untrusted = generate_identity("Mallory Imaging", now=_SIGNED_AT)
    key_path, cert_path = write_identity(trusted, root / "id", passphrase=PASSPHRASE.encode())
    folder = root / "disc"
    iso = root / "disc.iso"
    for out, fmt in ((folder, "folder"), (iso, "iso")):
        cmd = [sys.executable, "-m", "discmaker", "author", str(study), "--key", str(key_path)]
        cmd += ["--cert", str(cert_path), "--out", str(out), "--format", fmt]
        cmd += ["--timestamp", TIMESTAMP, "--workers", "1"]
        proc = subprocess.run(
            cmd, env=cli_env(), capture_output=True, text=True, timeout=300, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"authoring the genuine disc failed: {proc.stdout}\n{proc.stderr}")
    pem = serialization.Encoding.PEM
    return Fixture(
        root=root,
        folder=folder,
        iso=iso,
        cert=cert_path,
        trusted_key=trusted.private_key,
        trusted_cert_pem=trusted.certificate.public_bytes(pem),
        untrusted_key=untrusted.private_key,
        untrusted_cert_pem=untrusted.certificate.public_bytes(pem),
    )
