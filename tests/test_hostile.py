"""A received disc is hostile input: every malformed part becomes a finding or exit 3.

Never a traceback, never a read outside the source.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker import canonical
from discmaker.check import check_disc
from discmaker.cli import main
from discmaker.manifest import MANIFEST_PATH, SIGNER_PATH
from discmaker.models import ImageStatus
from discmaker.trust import TrustStore
from tests.conftest import Centre

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _check(disc: Path, centre: Centre):  # type: ignore[no-untyped-def]
    return check_disc(disc, trust=TrustStore.from_paths([centre.cert_path]), workers=1)


def test_dicomdir_path_traversal_is_a_finding(
    disc_copy: Callable[[], Path], centre: Centre, tmp_path: Path
) -> None:
    secret = tmp_path / "SECRET"
    secret.write_text("outside the disc")
    disc = disc_copy()
    ds = dcmread(disc / "DICOMDIR")
    leaf = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    leaf.ReferencedFileID = ["..", "..", "SECRET"]
    ds.save_as(disc / "DICOMDIR")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.kind == "naming" for f in report.findings)


def test_manifest_path_traversal_is_never_read(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    doc = canonical.loads((disc / MANIFEST_PATH).read_bytes(), max_bytes=1 << 26)
    image = doc["patients"][0]["studies"][0]["series"][0]["images"][0]
    image["file"] = "../../../../etc/passwd"
    (disc / MANIFEST_PATH).write_bytes(canonical.dumps(doc))
    report = _check(disc, centre)
    assert report.exit_code == 1  # the signature no longer matches, and the path is refused
    verdict = next(v for v in report.images if v.path == "../../../../etc/passwd")
    assert verdict.status is ImageStatus.TAMPERED


def test_symlink_in_folder_disc_is_reported_not_followed(
    disc_copy: Callable[[], Path], centre: Centre
) -> None:
    disc = disc_copy()
    os.symlink("/etc/passwd", disc / "PASSWD")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.path.endswith("PASSWD") for f in report.findings)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b"[1, 2", b'{"format": 1.5}', b"\xff\xfe", b"{" * 10_000],
    ids=["empty", "open-brace", "truncated", "float", "not-utf8", "deep-nesting"],
)
def test_malformed_manifest(disc_copy: Callable[[], Path], centre: Centre, garbage: bytes) -> None:
    disc = disc_copy()
    (disc / MANIFEST_PATH).write_bytes(garbage)
    report = _check(disc, centre)
    assert report.exit_code in (1, 3)
    assert report.findings


def test_malformed_pem(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    (disc / SIGNER_PATH).write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.step == 1 for f in report.findings)


def test_malformed_dicom_file(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    target = next(p for p in disc.rglob("IM*"))
    target.write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(2000))
    report = _check(disc, centre)
    rel = target.relative_to(disc).as_posix()
    assert next(v for v in report.images if v.path == rel).status is ImageStatus.TAMPERED


def test_malformed_dicomdir(disc_copy: Callable[[], Path], centre: Centre) -> None:
    disc = disc_copy()
    (disc / "DICOMDIR").write_bytes(os.urandom(5000))
    report = _check(disc, centre)
    assert report.exit_code == 1
    assert any(f.path == "DICOMDIR" for f in report.findings)


@pytest.mark.parametrize("size", [0, 2048, 1 << 20])
def test_malformed_iso_is_exit_3(
    tmp_path: Path, size: int, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(os.urandom(size))
    assert main(["check", str(junk), "--trust", str(tmp_path)]) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_truncated_real_iso_is_exit_3(disc_iso: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.iso"
    cut.write_bytes(disc_iso.read_bytes()[: 40 * 2048])
    assert main(["check", str(cut), "--trust", str(tmp_path)]) in (1, 3)
