"""Discs made before watermark format v4 still check.

``tests/data/disc-v3`` was authored by the v3 release of discmaker (commit 41b30c6, with
``tests/data/disc-v3-make.py``) from the generated sample study: two 256 x 256 CT slices and
one MR slice, signed by a throw-away "Format v3 Imaging Centre" key whose certificate is on the
disc. These tests read those exact bytes with today's checker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from discmaker.check.restore import restore_disc
from discmaker.check.verify import check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.format.layout import PRIVATE_CREATOR, PRIVATE_GROUP
from discmaker.models import ImageStatus
from discmaker.sample import write_sample_study

DISC = Path(__file__).parent / "data" / "disc-v3"
CERT = DISC / "DISCSIG" / "SIGNER.PEM"
CT2 = "PT000000/ST000000/SE000000/IM000001"


@pytest.fixture
def v3_disc(tmp_path: Path) -> Path:
    copy = tmp_path / "disc"
    shutil.copytree(DISC, copy)
    return copy


def _trust() -> TrustStore:
    return TrustStore.from_paths([CERT])


def test_a_v3_disc_is_verified_and_restores_the_original_pixels(tmp_path: Path) -> None:
    report = check_disc(DISC, trust=_trust())
    assert report.exit_code == 0, report
    assert [v.status for v in report.images] == [ImageStatus.OK] * 3
    out = tmp_path / "restored"
    result = restore_disc(DISC, trust=_trust(), out=out)
    originals = tmp_path / "study"
    write_sample_study(originals, ct_slices=2, ct_size=256, mr_slices=1, mr_size=256)
    want = sorted(dcmread(p).PixelData for p in originals.rglob("*") if p.is_file())
    got = sorted(dcmread(p).PixelData for p in result.restored)
    assert got == want


def test_an_edited_v3_image_on_a_stripped_disc_is_tampered(v3_disc: Path) -> None:
    shutil.rmtree(v3_disc / "DISCSIG")
    for path in (p for p in v3_disc.rglob("IM*") if p.is_file()):
        ds = dcmread(path)
        for elem in list(ds.group_dataset(PRIVATE_GROUP)):
            del ds[elem.tag]
        if path.as_posix().endswith(CT2):
            ds.PatientName = "SOMEONE^ELSE"
        ds.save_as(path, enforce_file_format=True)
        assert PRIVATE_CREATOR not in path.read_bytes().decode("latin-1")
    report = check_disc(v3_disc, trust=_trust())
    assert report.exit_code == 1
    verdict = next(v for v in report.images if v.path == CT2)
    assert verdict.status is ImageStatus.TAMPERED
    assert "identity" in verdict.attributes or "PatientName" in verdict.attributes
    assert any("identity sealed in the pixels" in r for r in verdict.reasons), verdict.reasons
