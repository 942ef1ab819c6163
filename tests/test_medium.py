"""The medium as any reader sees it: every view of a signed ISO image must be the signed one.

Each test builds its attack itself on a copy of a genuine disc: with pycdlib (a UDF bridge),
xorriso (a second session), or byte edits of descriptors, path tables and Rock Ridge entries.
The genuine disc, and the same disc after a burn (with its padding), must still verify.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pycdlib
import pytest

from discmaker.check.verify import check_disc
from discmaker.crypto.trust import TrustStore
from discmaker.disc.compare import compare_with_rebuild, signed_volume
from discmaker.disc.source import open_source
from discmaker.format import manifest as manifest_mod
from discmaker.models import CheckReport
from tests.conftest import Centre

SECTOR = 2048
TARGET = "PT000000/ST000000/SE000000/IM000001"


def _check(iso: Path, centre: Centre) -> CheckReport:
    return check_disc(iso, trust=TrustStore.from_paths([centre.cert_path]), workers=1)


def _medium(report: CheckReport) -> list[str]:
    return [f"{f.path}: {f.message}" for f in report.findings if f.kind == "medium"]


def _copy(disc_iso: Path, tmp_path: Path, name: str = "copy.iso") -> Path:
    out = tmp_path / name
    shutil.copyfile(disc_iso, out)
    return out


def _patch(iso: Path, offset: int, data: bytes) -> None:
    with open(iso, "r+b") as fp:
        fp.seek(offset)
        fp.write(data)


def test_the_genuine_disc_is_exactly_its_rebuild(disc_iso: Path, centre: Centre) -> None:
    report = _check(disc_iso, centre)
    assert report.ok, report.findings
    with open_source(disc_iso) as src:
        signed = manifest_mod.parse(src.read_bytes(manifest_mod.MANIFEST_PATH, limit=1 << 24))
        files = [(e.path, e.size) for e in src.files()]
    assert signed.iso is not None and signed.iso.volume_id == "TESTDISC"
    assert compare_with_rebuild(disc_iso, files, signed_volume(signed.iso)) == []


def test_zero_padding_after_the_volume_is_what_a_burn_adds(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    padded = _copy(disc_iso, tmp_path)
    with open(padded, "ab") as fp:
        fp.write(bytes(150 * SECTOR))
    assert _check(padded, centre).ok


def test_data_after_the_volume_is_tampered(disc_iso: Path, centre: Centre, tmp_path: Path) -> None:
    grown = _copy(disc_iso, tmp_path)
    end = grown.stat().st_size
    with open(grown, "ab") as fp:
        fp.write(bytes(4 * SECTOR) + b"hidden payload" * 100)
    report = _check(grown, centre)
    assert report.exit_code == 1
    (finding,) = _medium(report)
    assert "after the end of the signed volume" in finding
    assert f"sector {end // SECTOR + 4}" in finding or f"sectors {end // SECTOR + 4}-" in finding


def _iso_contents(iso: Path) -> dict[str, bytes]:
    """Every file of ``iso``'s ISO 9660 tree by its raw name (``README.TXT;1``)."""
    original = pycdlib.PyCdlib()
    original.open(str(iso))
    contents: dict[str, bytes] = {}
    for root, _dirs, names in original.walk(iso_path="/"):
        for name in names:
            buf = io.BytesIO()
            original.get_file_from_iso_fp(buf, iso_path=f"{root.rstrip('/')}/{name}")
            contents[f"{root.rstrip('/')}/{name}".lstrip("/")] = buf.getvalue()
    original.close()
    return contents


def _udf_bridge(contents: dict[str, bytes], out: Path) -> None:
    """An ISO 9660 + Joliet + Rock Ridge + UDF image of ``contents`` whose UDF tree points
    TARGET at a copy with another Patient ID and holds a file of its own."""
    bridge = pycdlib.PyCdlib()
    bridge.new(interchange_level=1, vol_ident="TESTDISC", joliet=3, rock_ridge="1.09", udf="2.60")
    dirs = sorted(
        {"/".join(p.split("/")[:i]) for p in contents for i in range(1, p.count("/") + 1)}
    )
    for d in sorted(dirs, key=lambda d: d.count("/")):
        bridge.add_directory(
            iso_path="/" + d, rr_name=d.rsplit("/", 1)[-1], joliet_path="/" + d, udf_path="/" + d
        )
    forged = contents[TARGET + ".;1"].replace(b"DM-000001", b"DM-666666")
    for raw, data in sorted(contents.items()):
        clean = raw.split(";", 1)[0].rstrip(".")
        names = {
            "iso_path": "/" + raw,
            "rr_name": clean.rsplit("/", 1)[-1],
            "joliet_path": "/" + clean,
        }
        if clean != TARGET:
            names["udf_path"] = "/" + clean
        bridge.add_fp(io.BytesIO(data), len(data), **names)
    bridge.add_fp(io.BytesIO(forged), len(forged), udf_path="/" + TARGET)
    bridge.add_fp(io.BytesIO(b"only in UDF"), 11, udf_path="/EXTRA.TXT")
    bridge.write(str(out))
    bridge.close()


def test_a_udf_bridge_showing_a_forged_image_is_tampered(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    """Windows, macOS and Linux mount UDF first: the UDF tree points the image at a forgery
    and holds a file of its own, while the ISO 9660 tree keeps every signed byte."""
    attacked = tmp_path / "bridge.iso"
    _udf_bridge(_iso_contents(disc_iso), attacked)
    report = _check(attacked, centre)
    assert report.exit_code == 1
    assert any("UDF" in finding for finding in _medium(report)), _medium(report)


@pytest.mark.parametrize("hide", ["boot2", "wipe"])
def test_a_hidden_udf_bridge_on_a_folder_signed_disc_is_found(
    disc_folder: Path, centre: Centre, tmp_path: Path, hide: str
) -> None:
    """A disc signed as a folder cannot be rebuilt; its UDF recognition sequence relabelled
    (BOOT2, which UDF readers step over) or wiped (7-Zip still finds the anchor at 256)."""
    contents = {
        p.relative_to(disc_folder).as_posix() + (";1" if "." in p.name else ".;1"): p.read_bytes()
        for p in disc_folder.rglob("*")
        if p.is_file()
    }
    attacked = tmp_path / "bridge.iso"
    _udf_bridge(contents, attacked)
    data = bytearray(attacked.read_bytes())
    for sector in range(17, 32):
        ident = bytes(data[sector * SECTOR + 1 : sector * SECTOR + 6])
        if ident in (b"BEA01", b"NSR02", b"NSR03", b"TEA01"):
            if hide == "wipe":
                data[sector * SECTOR : (sector + 1) * SECTOR] = bytes(SECTOR)
            elif ident == b"BEA01":
                data[sector * SECTOR + 1 : sector * SECTOR + 6] = b"BOOT2"
    attacked.write_bytes(bytes(data))
    report = _check(attacked, centre)
    assert report.exit_code == 1
    assert any("UDF" in finding for finding in _medium(report)), report.findings


def test_an_image_cut_inside_its_last_file_is_tampered(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    """The volume size lowered to match, so that the image still opens: the rebuild then
    runs past the end of the medium (found by an attacker's review: it crashed)."""
    reader = pycdlib.PyCdlib()
    reader.open(str(disc_iso))
    records = [
        reader.get_record(iso_path=f"{root.rstrip('/')}/{name}")
        for root, _dirs, names in reader.walk(iso_path="/")
        for name in names
    ]
    last = max(records, key=lambda r: r.extent_location())
    offset, length = last.extent_location() * SECTOR, last.get_data_length()
    reader.close()
    assert length % SECTOR, "the last file must end inside a sector for this test"
    cut = _copy(disc_iso, tmp_path)
    end = offset + length - 10
    with open(cut, "r+b") as fp:
        fp.truncate(end)
        fp.seek(16 * SECTOR + 80)
        fp.write(struct.pack("<I", end // SECTOR) + struct.pack(">I", end // SECTOR))
    report = _check(cut, centre)
    assert report.exit_code == 1
    assert any("before the signed volume does" in f for f in _medium(report)), _medium(report)


def test_a_huge_zero_tail_is_not_read_whole(disc_iso: Path, centre: Centre, tmp_path: Path) -> None:
    """A sparse 50 GiB of zeros after the volume: the image's length must not decide how
    long the check takes (it took 99 s per 100 GiB before the cap)."""
    sparse = _copy(disc_iso, tmp_path)
    os.truncate(sparse, sparse.stat().st_size + (50 << 30))
    started = time.monotonic()
    report = _check(sparse, centre)
    elapsed = time.monotonic() - started
    assert report.exit_code == 1
    assert any("continues" in f for f in _medium(report)), _medium(report)
    assert elapsed < 30, f"the tail was read ({elapsed:.0f} s)"


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso (apt: xorriso)")
def test_a_second_session_is_tampered(disc_iso: Path, centre: Centre, tmp_path: Path) -> None:
    """xorriso appends a session the way a burner does; an operating system mounts it."""
    grown = _copy(disc_iso, tmp_path)
    note = tmp_path / "NOTE.TXT"
    note.write_text("changed later\n")
    subprocess.run(
        ["xorriso", "-dev", str(grown), "-map", str(note), "/NOTE.TXT", "-commit"],
        check=True,
        capture_output=True,
    )
    assert grown.stat().st_size > disc_iso.stat().st_size
    report = _check(grown, centre)
    assert report.exit_code == 1
    medium = _medium(report)
    assert any("after the end of the signed volume" in f for f in medium), medium


def test_a_joliet_descriptor_with_volume_flags_is_tampered(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    """pycdlib skips a supplementary descriptor whose flags byte is not zero; libarchive and
    isoinfo -J still read it."""
    flagged = _copy(disc_iso, tmp_path)
    _patch(flagged, 17 * SECTOR + 7, b"\x01")
    report = _check(flagged, centre)
    assert report.exit_code == 1
    assert any("Joliet volume descriptor" in f and "sector 17" in f for f in _medium(report))


def test_rock_ridge_names_of_two_series_swapped_is_tampered(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    """Linux shows Rock Ridge names: swapping them swaps the series a viewer opens."""
    swapped = _copy(disc_iso, tmp_path)
    data = bytearray(swapped.read_bytes())
    first = bytes([ord("N"), ord("M"), 13, 1, 0]) + b"SE000000"
    second = bytes([ord("N"), ord("M"), 13, 1, 0]) + b"SE000001"
    a, b = data.index(first), data.index(second)
    data[a : a + 13], data[b : b + 13] = second, first
    swapped.write_bytes(bytes(data))
    report = _check(swapped, centre)
    assert report.exit_code == 1
    medium = _medium(report)
    assert any("Rock Ridge" in f and "SE000000" in f and "SE000001" in f for f in medium), medium


def _path_table_entries(data: bytes, start: int, size: int) -> dict[bytes, int]:
    """name -> offset of the extent field of each entry of an L-type path table."""
    out: dict[bytes, int] = {}
    pos = start
    while pos < start + size:
        length = data[pos]
        out[bytes(data[pos + 8 : pos + 8 + length])] = pos + 2
        pos += 8 + length + (length & 1)
    return out


def test_path_table_entries_of_two_directories_swapped_is_tampered(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    swapped = _copy(disc_iso, tmp_path)
    data = bytearray(swapped.read_bytes())
    pvd = 16 * SECTOR
    size = struct.unpack_from("<I", data, pvd + 132)[0]
    table = struct.unpack_from("<I", data, pvd + 140)[0] * SECTOR
    entries = _path_table_entries(bytes(data), table, size)
    a, b = entries[b"SE000000"], entries[b"SE000001"]
    data[a : a + 4], data[b : b + 4] = data[b : b + 4], data[a : a + 4]
    # the big-endian table likewise, so that both tables agree with each other
    m_table = struct.unpack_from(">I", data, pvd + 148)[0] * SECTOR
    a, b = (m_table + (x - table) for x in (a, b))
    data[a : a + 4], data[b : b + 4] = data[b : b + 4], data[a : a + 4]
    swapped.write_bytes(bytes(data))
    report = _check(swapped, centre)
    assert report.exit_code == 1
    assert any("path table" in f for f in _medium(report)), _medium(report)


def test_a_hidden_el_torito_boot_image_is_tampered(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    """A boot record in the descriptor set (where El Torito puts it, sector 17, with the
    Joliet descriptor moved up), its catalog and a boot image appended after the volume."""
    booted = _copy(disc_iso, tmp_path)
    data = booted.read_bytes()
    end = len(data) // SECTOR
    record = bytearray(SECTOR)
    record[0:7] = b"\x00CD001\x01"
    record[7:39] = b"EL TORITO SPECIFICATION".ljust(32, b"\x00")
    struct.pack_into("<I", record, 71, end)
    terminator = bytearray(SECTOR)
    terminator[0:7] = b"\xffCD001\x01"
    joliet = data[17 * SECTOR : 18 * SECTOR]
    _patch(booted, 17 * SECTOR, bytes(record) + joliet + bytes(terminator))
    catalog = bytearray(SECTOR)
    catalog[0] = 1  # validation entry: header, platform x86, checksum, key 55 AA
    catalog[30:32] = b"\x55\xaa"
    words = struct.unpack_from("<16H", catalog, 0)
    struct.pack_into("<H", catalog, 28, (-sum(words)) & 0xFFFF)
    catalog[32] = 0x88  # initial entry: bootable, no emulation
    struct.pack_into("<H", catalog, 38, 4)  # sectors to load
    struct.pack_into("<I", catalog, 40, end + 1)
    with open(booted, "ab") as fp:
        fp.write(bytes(catalog) + b"\xeb\xfe" * SECTOR)
    report = _check(booted, centre)
    assert report.exit_code == 1
    assert any("El Torito" in f for f in _medium(report)), _medium(report)


@pytest.mark.skipif(shutil.which("genisoimage") is None, reason="needs genisoimage")
def test_a_signed_folder_put_on_a_disc_by_another_tool_still_verifies(
    disc_folder: Path, centre: Centre, tmp_path: Path
) -> None:
    """A USB folder disc burned by someone else cannot be rebuilt: its views are compared."""
    iso = tmp_path / "other.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-J", "-R", "-V", "TESTDISC", "-o", str(iso), str(disc_folder)],
        check=True,
    )
    report = _check(iso, centre)
    assert report.ok, report.findings
    assert any("signed as a folder" in n for n in report.notes)


@pytest.mark.skipif(shutil.which("genisoimage") is None, reason="needs genisoimage")
def test_an_unsigned_disc_with_a_udf_bridge_reports_it(
    disc_folder: Path, centre: Centre, tmp_path: Path
) -> None:
    folder = tmp_path / "unsigned"
    shutil.copytree(disc_folder, folder)
    shutil.rmtree(folder / "DISCSIG")
    iso = tmp_path / "unsigned.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-udf", "-J", "-R", "-o", str(iso), str(folder)], check=True
    )
    report = _check(iso, centre)
    assert any("UDF" in f for f in _medium(report)), report.findings


@pytest.mark.parametrize(
    "field, value",
    [("publisher", "P" * 65), ("timestamp", "2026-13-40T99:00:00Z"), ("volume_set", [3, 2])],
)
def test_a_hostile_iso_description_signed_by_anyone_is_a_finding(
    disc_iso: Path, other_centre: Centre, tmp_path: Path, field: str, value: object
) -> None:
    """The manifest's signature may verify with a key nobody trusts: its "iso" block is
    input like any other (a 65-character publisher crashed the rebuild)."""
    from cryptography.hazmat.primitives import serialization

    from discmaker.crypto import signing
    from discmaker.disc.iso import DiscFile, VolumeInfo, write_iso
    from discmaker.format import canonical
    from tests.conftest import FIXED_TIME

    contents = {
        raw.split(";", 1)[0].rstrip("."): data for raw, data in _iso_contents(disc_iso).items()
    }
    doc = canonical.loads(contents[manifest_mod.MANIFEST_PATH], max_bytes=1 << 24)
    doc["iso"][field] = value
    manifest = canonical.dumps(doc)
    contents[manifest_mod.MANIFEST_PATH] = manifest
    contents[manifest_mod.SIGNATURE_PATH] = signing.sign(
        other_centre.identity.private_key, manifest
    )
    contents[manifest_mod.SIGNER_PATH] = other_centre.identity.certificate.public_bytes(
        serialization.Encoding.PEM
    )
    staged = []
    for n, (path, data) in enumerate(sorted(contents.items())):
        (tmp_path / f"f{n}").write_bytes(data)
        staged.append(DiscFile(path, tmp_path / f"f{n}"))
    resigned = tmp_path / "resigned.iso"
    volume = VolumeInfo(
        volume_id="TESTDISC", application_id="x", publisher="y", timestamp=FIXED_TIME
    )
    write_iso(staged, resigned, volume)
    report = check_disc(resigned, trust=TrustStore.from_paths([other_centre.cert_path]), workers=1)
    assert report.exit_code == 1
    assert any("cannot be compared" in f for f in _medium(report)), report.findings
