"""discmaker.disc.source: reading received discs (ISO image, device, folder) safely."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from discmaker.disc.iso import DiscFile, VolumeInfo, write_folder, write_iso
from discmaker.disc.source import MAX_WALK_DEPTH, DiscSource, open_source
from discmaker.errors import DiscError

TREE: dict[str, bytes] = {
    "DICOMDIR": b"\0" * 128 + b"DICM" + b"dicomdir" * 20,
    "README.TXT": b"hello\r\n",
    "X": b"single letter name, patched in hostile tests",
    "DISCSIG/MANIFEST.JSN": b"{}",
    "DICOM/PT000000/ST000000/SE000000/IM000000": b"\0" * 128 + b"DICM" + os.urandom(70_000),
    "DICOM/PT000000/ST000000/SE000000/IM000001": b"",
    "DICOM/PT000000/ST000000/SE000001/IM000000": os.urandom(4096),
}


def _files(root: Path) -> list[DiscFile]:
    out = []
    for i, (p, data) in enumerate(sorted(TREE.items())):
        src = root / "staging" / str(i)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        out.append(DiscFile(p, src))
    return out


VOL = VolumeInfo(
    volume_id="TESTDISC",
    application_id="discmaker test",
    timestamp=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
)


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    out = tmp_path / "disc.iso"
    write_iso(_files(tmp_path), out, VOL)
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "usb"
    write_folder(_files(tmp_path), out)
    return out


def _roundtrip(src: DiscSource) -> None:
    assert sorted(e.path for e in src.files()) == sorted(TREE)
    for e in src.files():
        assert e.size == len(TREE[e.path])
        assert src.read_bytes(e.path, limit=1 << 20) == TREE[e.path]
        with src.open(e.path) as fp:
            assert fp.read() == TREE[e.path]
    assert src.skipped() == []


def test_iso_round_trip(iso: Path) -> None:
    with open_source(iso) as src:
        assert src.description == f"ISO image {iso}"
        _roundtrip(src)
        raw = {e.path: e.raw_path for e in src.files()}
        assert raw["DICOMDIR"] == "DICOMDIR.;1"
        assert raw["README.TXT"] == "README.TXT;1"


def test_folder_round_trip(folder: Path) -> None:
    with open_source(folder) as src:
        assert src.description == f"folder {folder}"
        _roundtrip(src)


def test_case_insensitive_lookup_and_version_suffix(iso: Path) -> None:
    with open_source(iso) as src:
        assert src.read_bytes("dicomdir", limit=10_000) == TREE["DICOMDIR"]
        assert src.read_bytes("DICOMDIR.;1", limit=10_000) == TREE["DICOMDIR"]
        assert src.read_bytes("Readme.txt", limit=10_000) == TREE["README.TXT"]


def test_folder_lowercase_names(tmp_path: Path) -> None:
    root = tmp_path / "mnt"
    (root / "dicom").mkdir(parents=True)
    (root / "dicomdir").write_bytes(b"d")
    (root / "dicom" / "im000000").write_bytes(b"i")
    with open_source(root) as src:
        assert [(e.path, e.raw_path) for e in src.files()] == [
            ("DICOM/IM000000", "dicom/im000000"),
            ("DICOMDIR", "dicomdir"),
        ]
        assert src.read_bytes("DICOM/IM000000", limit=10) == b"i"


def test_folder_case_collision_refused(tmp_path: Path) -> None:
    root = tmp_path / "mnt"
    root.mkdir()
    (root / "a").write_bytes(b"1")
    (root / "A").write_bytes(b"2")
    with pytest.raises(DiscError, match="differ only in case"):
        open_source(root)


@pytest.mark.parametrize(
    "request_path",
    [
        "../disc.iso",
        "/etc/passwd",
        "DICOM/../DICOMDIR",
        "DICOM/../../etc/passwd",
        "./DICOMDIR",
        "DICOM//X",
        "DICOM\\..\\DICOMDIR",
        "DICOMDIR\x00",
        "",
        "NOTHERE",
        "DICOM",
        "..",
        ";1",
    ],
)
@pytest.mark.parametrize("kind", ["iso", "folder"])
def test_bad_requests_refused(iso: Path, folder: Path, kind: str, request_path: str) -> None:
    with open_source(iso if kind == "iso" else folder) as src:
        with pytest.raises(DiscError):
            src.open(request_path)
        with pytest.raises(DiscError):
            src.read_bytes(request_path, limit=1 << 20)


def test_read_limit(iso: Path, folder: Path) -> None:
    for p in (iso, folder):
        with open_source(p) as src:
            with pytest.raises(DiscError, match="more than"):
                src.read_bytes("DICOM/PT000000/ST000000/SE000000/IM000000", limit=1000)
            assert src.read_bytes("DICOM/PT000000/ST000000/SE000000/IM000001", limit=0) == b""


def test_folder_grown_file_hits_limit(folder: Path) -> None:
    with open_source(folder) as src:
        (folder / "README.TXT").write_bytes(b"x" * 5000)  # grows after listing
        with pytest.raises(DiscError, match="changed size"):  # read as listed, +1
            src.read_bytes("README.TXT", limit=100)


# --------------------------------------------------------------------------- folder links


def test_symlink_to_passwd_not_readable(folder: Path) -> None:
    (folder / "PASSWD").symlink_to("/etc/passwd")
    (folder / "DICOM" / "ETC").symlink_to("/etc")
    (folder / "LOOP").symlink_to(folder)
    with open_source(folder) as src:
        paths = {e.path for e in src.files()}
        assert "PASSWD" not in paths
        assert not any(p.startswith(("DICOM/ETC", "LOOP")) for p in paths)
        assert {s.raw_path for s in src.skipped()} == {"PASSWD", "DICOM/ETC", "LOOP"}
        assert all("symbolic link" in s.reason for s in src.skipped())
        for req in ("PASSWD", "passwd", "DICOM/ETC/PASSWD", "LOOP/DICOMDIR"):
            with pytest.raises(DiscError):
                src.read_bytes(req, limit=1 << 20)


def test_swapped_for_symlink_after_listing(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "MANIFEST.JSN").write_bytes(b"secret outside the source")
    with open_source(folder) as src:
        shutil.rmtree(folder / "DISCSIG")
        (folder / "DISCSIG").symlink_to(outside)
        with pytest.raises(DiscError):
            src.read_bytes("DISCSIG/MANIFEST.JSN", limit=1 << 20)
        (folder / "README.TXT").unlink()
        (folder / "README.TXT").symlink_to(outside / "MANIFEST.JSN")
        with pytest.raises(DiscError):
            src.read_bytes("README.TXT", limit=1 << 20)


def test_root_given_as_symlink_is_followed(folder: Path, tmp_path: Path) -> None:
    link = tmp_path / "cdrom"
    link.symlink_to(folder)
    with open_source(link) as src:
        assert src.read_bytes("README.TXT", limit=100) == TREE["README.TXT"]


def test_fifo_is_skipped_not_read(folder: Path) -> None:
    os.mkfifo(folder / "PIPE")
    with open_source(folder) as src:
        assert [s.raw_path for s in src.skipped()] == ["PIPE"]
        with pytest.raises(DiscError):
            src.read_bytes("PIPE", limit=10)


def test_deep_folder(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    d = root
    for _ in range(40):
        d = d / "D"
    d.mkdir(parents=True)
    (d / "F").write_bytes(b"deep")
    with open_source(root) as src:
        (entry,) = src.files()
        assert entry.path.count("/") == 40
        assert src.read_bytes(entry.path, limit=10) == b"deep"


def test_absurdly_deep_folder_refused(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    rel = "/".join(["D"] * (MAX_WALK_DEPTH + 5))
    (root / rel).mkdir(parents=True)
    with pytest.raises(DiscError, match="deeper"):
        open_source(root)


# --------------------------------------------------------------------------- hostile ISOs


def _expect_disc_error(path: Path) -> None:
    with pytest.raises(DiscError):
        open_source(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DiscError, match="does not exist"):
        open_source(tmp_path / "nope.iso")


def test_not_a_file_or_dir() -> None:
    with pytest.raises(DiscError, match="neither"):
        open_source(Path("/dev/null"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(iso: Path) -> None:
    iso.chmod(0)
    with pytest.raises(DiscError, match="cannot open"):
        open_source(iso)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello world\n",
        os.urandom(100_000),
        b"\0" * 100_000,
        b"\0" * 32768 + b"\x01CD001\x01" + os.urandom(2041) + os.urandom(40_000),
        b"\0" * 32768 + b"\x01CD001\x01" + b"\0" * 2041 + b"\xffCD001\x01" + b"\0" * 20_000,
    ],
    ids=["empty", "text", "random", "zeros", "pvd-garbage", "pvd-zero"],
)
def test_garbage_is_disc_error(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.iso"
    p.write_bytes(content)
    _expect_disc_error(p)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_iso(iso: Path, keep: float) -> None:
    data = iso.read_bytes()
    iso.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DiscError, match=r"truncated|not an ISO"):
        open_source(iso)


def _record_offset(data: bytes, name: bytes) -> int:
    """Offset of the ISO 9660 directory record whose file identifier is ``name``."""
    i = data.find(bytes([len(name)]) + name)
    assert i > 33
    return i - 32


def test_absurd_file_size(iso: Path) -> None:
    data = bytearray(iso.read_bytes())
    rec = _record_offset(data, b"README.TXT;1")
    data[rec + 10 : rec + 18] = (0xFFFFFFF0).to_bytes(4, "little") + (0xFFFFFFF0).to_bytes(4, "big")
    iso.write_bytes(bytes(data))
    try:
        src = open_source(iso)
    except DiscError:
        return  # refusing the whole image is fine too
    with src:
        (entry,) = [e for e in src.files() if e.path == "README.TXT"]
        assert entry.size == 0xFFFFFFF0
        with pytest.raises(DiscError, match="more than"):
            src.read_bytes("README.TXT", limit=1 << 20)
        with pytest.raises(DiscError, match="beyond the end"):
            src.open("README.TXT")


@pytest.mark.parametrize("new_name", [b"..;1", b"/..;", b"\\;;1", b"\0.;1", b".;1\0"])
def test_hostile_names_in_iso(iso: Path, new_name: bytes) -> None:
    data = bytearray(iso.read_bytes())
    rec = _record_offset(data, b"X.;1")
    data[rec + 33 : rec + 37] = new_name
    iso.write_bytes(bytes(data))
    _expect_disc_error(iso)


def test_fuzzed_iso_never_crashes(iso: Path, tmp_path: Path) -> None:
    """Random corruption of the descriptor and directory area: open or DiscError, nothing else."""
    original = iso.read_bytes()
    rng = random.Random(1234)
    bad = tmp_path / "fuzz.iso"
    opened = refused = 0
    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(16 * 2048, 60 * 2048)] = rng.randrange(256)
        bad.write_bytes(bytes(data))
        try:
            src = open_source(bad)
        except DiscError:
            refused += 1
            continue
        opened += 1
        with src:
            for e in src.files():
                with contextlib.suppress(DiscError):
                    src.read_bytes(e.path, limit=1 << 20)
    assert opened + refused == 300


def _mkisofs(tmp_path: Path, tree_root: Path, *extra: str) -> Path:
    exe = shutil.which("xorriso")
    if exe is None:
        pytest.skip("xorriso is not installed")
    out = tmp_path / "x.iso"
    r = subprocess.run(
        [exe, "-as", "mkisofs", "-quiet", *extra, "-o", str(out), str(tree_root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"xorriso could not build the test image: {r.stderr[-300:]}")
    return out


@pytest.mark.external
def test_foreign_iso_with_deep_tree_and_symlink(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    deep = root / "/".join(f"D{i}" for i in range(12))
    deep.mkdir(parents=True)
    (deep / "F").write_bytes(b"deep file")
    (root / "README.TXT").write_bytes(b"top")
    (root / "LINK").symlink_to("/etc/passwd")
    iso = _mkisofs(tmp_path, root, "-R", "-J")
    with open_source(iso) as src:
        assert src.read_bytes("README.TXT", limit=100) == b"top"
        assert all(".." not in e.path.split("/") for e in src.files())
        assert any(s.raw_path.startswith("LINK") for s in src.skipped())
        with pytest.raises(DiscError):
            src.read_bytes("LINK", limit=1 << 20)


def test_workers_read_an_iso_from_its_extents_as_listed_once(tmp_path: Path) -> None:
    """The checker lists an ISO once; its workers read files from the extents it found, and
    refuse an image that changed size meanwhile."""
    from discmaker.disc.source import ExtentSource, IsoSource

    files = []
    for n in range(3):
        path = tmp_path / f"f{n}"
        path.write_bytes(bytes([n]) * (5000 + n))
        files.append(DiscFile(f"DIR/F{n}", path))
    iso = tmp_path / "x.iso"
    write_iso(
        files, iso, VolumeInfo(volume_id="X", application_id="x", timestamp=datetime.now(UTC))
    )
    with open_source(iso) as listed:
        assert isinstance(listed, IsoSource)
        extents = listed.extents()
        want = {e.path: listed.read_bytes(e.path, limit=1 << 20) for e in listed.files()}
    with ExtentSource(extents) as worker:
        assert [e.path for e in worker.files()] == sorted(want)
        assert {p: worker.read_bytes(p, limit=1 << 20) for p in want} == want
    with iso.open("ab") as fp:
        fp.write(bytes(2048))
    with pytest.raises(DiscError, match="changed size"):
        ExtentSource(extents)
