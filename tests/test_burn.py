"""Burning: parsing `xorriso -devices`, and a real burn to xorriso's stdio: pseudo-drive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from discmaker.check.burned import verify_burn
from discmaker.crypto.trust import TrustStore
from discmaker.disc import burn as burn_mod
from discmaker.disc.burn import Drive, burn, list_drives, parse_devices, readable_path
from discmaker.errors import InputError, OutputError
from discmaker.sample import write_sample_study
from tests.conftest import Centre, author_disc

needs_xorriso = pytest.mark.skipif(
    shutil.which("xorriso") is None, reason="xorriso is not installed"
)

WITH_DRIVES = """\
xorriso 1.5.4 : RockRidge filesystem manipulator, libburnia project.

Beginning to scan for devices ...
Full drive scan done
-----------------------------------------------------------------------------
0  -dev '/dev/sr0' rwrw-- :  'HL-DT-ST' 'DVDRAM GH24NSD1'
1  -dev '/dev/sr1' rwrw-- :  'TSSTcorp' 'DVD-ROM SH-D162C
-----------------------------------------------------------------------------
"""

DEVICE_LINKS = """\
1  -dev '/dev/cdrw'   rwrw-- :  'TSSTcorp' 'CDDVDW SH-S223B'
2  -dev '/dev/cdrw3'  rwrw-- :  'HL-DT-ST' 'BDDVDRW_GGC-H20L'
"""

NO_DRIVES = """\
xorriso 1.5.4 : RockRidge filesystem manipulator, libburnia project.

Beginning to scan for devices ...
xorriso : SORRY : No drives found
xorriso : NOTE : Tolerated problem event of severity 'SORRY'
xorriso : NOTE : -return_with SORRY 32 triggered by problem severity SORRY
"""


def test_parse_devices_with_drives() -> None:
    drives = parse_devices(WITH_DRIVES)
    assert drives == [
        Drive("/dev/sr0", "HL-DT-ST", "DVDRAM GH24NSD1", "rwrw--", 0),
        Drive("/dev/sr1", "TSSTcorp", "DVD-ROM SH-D162C", "rwrw--", 1),  # unclosed quote
    ]
    assert drives[0].description == "HL-DT-ST DVDRAM GH24NSD1 (/dev/sr0)"


def test_parse_device_links_with_padding() -> None:
    assert [d.address for d in parse_devices(DEVICE_LINKS)] == ["/dev/cdrw", "/dev/cdrw3"]


@pytest.mark.parametrize("text", [NO_DRIVES, "", "garbage\n-dev\n0 -dev /dev/sr0\n"])
def test_parse_devices_none(text: str) -> None:
    assert parse_devices(text) == []


def test_drive_without_names_describes_its_address() -> None:
    assert parse_devices("0  -dev '/dev/sr0' rwrw-- :\n")[0].description == "/dev/sr0"


def test_no_xorriso(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(burn_mod, "find_xorriso", lambda: None)
    assert list_drives() == []
    iso = tmp_path / "disc.iso"
    iso.write_bytes(b"\0" * 2048)
    with pytest.raises(InputError, match="install xorriso"):
        burn(iso, "/dev/sr0")


def test_readable_path() -> None:
    assert readable_path("stdio:/tmp/x/burned.iso") == Path("/tmp/x/burned.iso")
    assert readable_path("/dev/sr0") == Path("/dev/sr0")


@needs_xorriso
def test_list_drives_runs_xorriso() -> None:
    drives = list_drives()  # this machine may or may not have a burner; it must not fail
    assert all(d.address for d in drives)


@pytest.fixture(scope="module")
def small_iso(tmp_path_factory: pytest.TempPathFactory, centre: Centre) -> Path:
    study = tmp_path_factory.mktemp("burnstudy")
    write_sample_study(study, ct_slices=3, ct_size=128, mr_slices=2, mr_size=64)
    out = tmp_path_factory.mktemp("burniso") / "disc.iso"
    author_disc(centre, [study], out, label="BURNTEST")
    return out


@needs_xorriso
def test_burn_to_stdio_drive_and_verify(tmp_path: Path, small_iso: Path, centre: Centre) -> None:
    target = tmp_path / "burned.iso"
    calls: list[tuple[str, int, int]] = []
    burn(small_iso, f"stdio:{target}", progress=lambda s, d, t: calls.append((s, d, t)))
    assert target.is_file()
    assert target.read_bytes()[: small_iso.stat().st_size] == small_iso.read_bytes()
    assert calls[0][0] == "burn"
    assert calls[-1][1] == calls[-1][2]  # finished

    report = verify_burn(f"stdio:{target}", TrustStore.from_paths([centre.cert_path]))
    assert report.ok, report
    assert report.exit_code == 0
    assert report.fileset_id == "BURNTEST"


@needs_xorriso
def test_burn_failure_reports_xorriso_lines(tmp_path: Path, small_iso: Path) -> None:
    with pytest.raises(OutputError) as info:
        burn(small_iso, f"stdio:{tmp_path}/missing/dir/burned.iso")
    message = str(info.value)
    assert "Burning to stdio:" in message
    assert "xorriso said:" in message
    assert "Cannot acquire drive" in message or "FAILURE" in message


def test_burn_missing_image(tmp_path: Path) -> None:
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is not installed")
    with pytest.raises(InputError, match="does not exist"):
        burn(tmp_path / "nope.iso", "stdio:/dev/null")


# -- author --burn -------------------------------------------------------------------------------


def _author_args(study: Path, centre: Centre, out: Path, *extra: str) -> list[str]:
    return [
        "author", str(study), "--key", str(centre.key_path), "--cert", str(centre.cert_path),
        "--out", str(out), "--label", "BURNCLI", "--workers", "1", *extra,
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso is not installed")
def test_author_burns_and_reads_the_disc_back(
    tmp_path: Path, study_dir: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.crypto import signing
    from discmaker.ui.cli import main
    from tests.conftest import PASSPHRASE

    monkeypatch.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())
    burned = tmp_path / "burned.iso"
    out = tmp_path / "disc.iso"
    code = main(_author_args(study_dir, centre, out, "--burn", f"stdio:{burned}"))
    assert code == 0
    assert burned.is_file() and out.is_file()
    report = verify_burn(f"stdio:{burned}", TrustStore.from_paths([centre.cert_path]))
    assert report.ok and report.fileset_id == "BURNCLI"


def test_author_burn_is_refused_before_any_work(
    tmp_path: Path, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discmaker.ui.cli import main

    missing = tmp_path / "no-study"  # reading it would be another error
    out = tmp_path / "disc.iso"
    monkeypatch.setattr(burn_mod, "list_drives", lambda: [])
    monkeypatch.setattr(burn_mod, "find_xorriso", lambda: "/usr/bin/xorriso")
    assert main(_author_args(missing, centre, out, "--burn")) == 65  # no burner found
    assert main(_author_args(missing, centre, out, "--burn", "--format", "folder")) == 64
    assert main(_author_args(missing, centre, out, "--burn", str(tmp_path / "sr9"))) == 64
    two = [Drive("/dev/sr0"), Drive("/dev/sr1")]
    monkeypatch.setattr(burn_mod, "list_drives", lambda: two)
    assert main(_author_args(missing, centre, out, "--burn")) == 64
    monkeypatch.setattr(burn_mod, "find_xorriso", lambda: None)
    assert main(_author_args(missing, centre, out, "--burn")) == 65
    assert not out.exists()
