"""discmaker.disc.iso (ISO and folder writers) and discmaker.disc.media (capacities, fit check)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from discmaker.disc.iso import DiscFile, VolumeInfo, validate_disc_path, write_folder, write_iso
from discmaker.disc.media import Medium, check_fits, estimate_iso_size
from discmaker.errors import InternalError, OutputError, TooLargeError, UsageError

TS = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

TREE: dict[str, bytes] = {
    "DICOMDIR": b"\0" * 128 + b"DICM" + b"fake dicomdir" * 10,
    "README.TXT": b"Patient disc\r\n",
    "DISCSIG/MANIFEST.JSN": b'{"files": []}',
    "DICOM/PT000000/ST000000/SE000000/IM000000": b"\0" * 128 + b"DICM" + os.urandom(5000),
    "DICOM/PT000000/ST000000/SE000000/IM000001": b"\0" * 128 + b"DICM" + os.urandom(300_000),
    "DICOM/PT000000/ST000000/SE000001/IM000000": b"",
    "DICOM/PT000000/ST000001/SE000000/IM000000": bytes(range(256)) * 9,
}


#: sha256 of the image test_layout_is_the_golden_one writes (pycdlib 1.22, ISO_LAYOUT 1)
GOLDEN_LAYOUT_1 = "638a76867cc5e65cb0c7d28744423e71f82e203dff8edf07d0d61b86e121932c"


def make_files(root: Path, tree: dict[str, bytes] | None = None) -> list[DiscFile]:
    tree = TREE if tree is None else tree
    files = []
    for i, (disc_path, data) in enumerate(sorted(tree.items())):
        src = root / "staging" / f"f{i}.bin"  # local names unrelated to the disc names
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        files.append(DiscFile(disc_path, src))
    return files


def volume(**kw: object) -> VolumeInfo:
    args: dict[str, object] = {
        "volume_id": "DISC_2024_01",
        "application_id": "discmaker 0.1.0",
        "publisher": "General Hospital",
        "timestamp": TS,
    }
    args.update(kw)
    return VolumeInfo(**args)  # type: ignore[arg-type]


@pytest.fixture
def files(tmp_path: Path) -> list[DiscFile]:
    return make_files(tmp_path)


@pytest.fixture
def iso(tmp_path: Path, files: list[DiscFile]) -> Path:
    out = tmp_path / "out" / "disc.iso"
    out.parent.mkdir()
    write_iso(files, out, volume())
    return out


def need(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} is not installed")
    return exe


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- external tools


@pytest.mark.external
def test_isoinfo_descriptors(tmp_path: Path, files: list[DiscFile]) -> None:
    iso = tmp_path / "set.iso"
    write_iso(files, iso, volume(volume_set=(2, 3)))
    r = run(need("isoinfo"), "-d", "-i", str(iso))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^Volume id: DISC_2024_01\s*$", out, re.M)
    assert re.search(r"^Application id: discmaker 0\.1\.0\s*$", out, re.M)
    assert re.search(r"^Publisher id: General Hospital\s*$", out, re.M)
    assert "Volume set size is: 3" in out
    assert "Volume set sequence number is: 2" in out
    assert "Joliet" in out
    assert "Rock Ridge" in out
    assert "PYCDLIB" not in out.upper()


@pytest.mark.external
def test_isoinfo_raw_names_are_level1(iso: Path) -> None:
    r = run(need("isoinfo"), "-f", "-i", str(iso))
    assert r.returncode == 0, r.stderr
    names = [n for n in r.stdout.splitlines() if n]
    files = [n for n in names if ";" in n]
    dirs = [n for n in names if ";" not in n]
    assert len(files) == len(TREE)
    for n in files:
        assert n.endswith(";1"), n
        *parents, last = n.lstrip("/").split("/")
        assert re.fullmatch(r"[A-Z0-9_]{1,8}\.([A-Z0-9_]{1,3})?;1", last), n
        for p in parents:
            assert re.fullmatch(r"[A-Z0-9_]{1,8}", p), n
    assert "/DICOMDIR.;1" in files
    assert "/README.TXT;1" in files
    for d in dirs:
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}", p) for p in d.lstrip("/").split("/")), d


@pytest.mark.external
def test_isovfy_no_errors(iso: Path) -> None:
    # Disc 1 of 1. (isovfy also flags every record of disc k>1 of a set, since it expects
    # volume sequence number 1 in directory records; ECMA-119 9.1.9 wants k there.)
    r = run(need("isovfy"), str(iso))
    assert "No errors found" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.external
def test_xorriso_check_media(iso: Path) -> None:
    r = run(need("xorriso"), "-indev", str(iso), "-check_media", "--")
    assert r.returncode == 0, r.stderr
    regions = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Media region")]
    assert regions
    assert all("good" in ln for ln in regions), regions


def _assert_tree(root: Path) -> None:
    for disc_path, data in TREE.items():
        got = root / disc_path
        assert got.is_file(), disc_path
        assert got.read_bytes() == data, disc_path
    n = sum(1 for p in root.rglob("*") if p.is_file())
    assert n == len(TREE)


@pytest.mark.external
def test_extract_with_7z(iso: Path, tmp_path: Path) -> None:
    dest = tmp_path / "x7z"
    r = run(need("7z"), "x", "-y", f"-o{dest}", str(iso))
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_tree(dest)


@pytest.mark.external
def test_extract_with_bsdtar(iso: Path, tmp_path: Path) -> None:
    dest = tmp_path / "xtar"
    dest.mkdir()
    r = run(need("bsdtar"), "-xf", str(iso), "-C", str(dest))
    assert r.returncode == 0, r.stderr
    for p in dest.rglob("*"):  # the image is read-only (r--/r-x); let pytest clean up
        p.chmod(0o755 if p.is_dir() else 0o644)
    _assert_tree(dest)


# --------------------------------------------------------------------------- reproducibility


def test_reproducible_across_time_timezone_and_order(
    tmp_path: Path, files: list[DiscFile], iso: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "second.iso"
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 12_345_678)  # "another day"
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        write_iso(list(reversed(files)), second, volume())
    finally:
        monkeypatch.undo()
        time.tzset()
    assert iso.read_bytes() == second.read_bytes()


def test_timestamp_controls_all_dates(tmp_path: Path, files: list[DiscFile], iso: Path) -> None:
    other = tmp_path / "other.iso"
    write_iso(files, other, volume(timestamp=TS + timedelta(seconds=1)))
    a, b = iso.read_bytes(), other.read_bytes()
    assert a != b
    assert len(a) == len(b)
    # PVD creation date (ISO 9660 8.4.26): 16 digits + GMT offset.
    pvd = a[16 * 2048 : 17 * 2048]
    assert pvd[813:829] == b"2024050607080900"
    assert pvd[829] == 0
    # Every differing byte is part of a date; no time of day from the build machine leaks.
    diffs = sum(1 for x, y in zip(a, b, strict=True) if x != y)
    assert 0 < diffs < 500


def test_timestamp_offset_is_recorded(tmp_path: Path, files: list[DiscFile]) -> None:
    out = tmp_path / "tz.iso"
    ts = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    write_iso(files, out, volume(timestamp=ts))
    pvd = out.read_bytes()[16 * 2048 : 17 * 2048]
    assert pvd[813:829] == b"2024050609080900"
    assert pvd[829] == 8  # +2h in 15-minute units


# --------------------------------------------------------------------------- atomicity, output


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_crash_mid_write_leaves_nothing(
    tmp_path: Path, files: list[DiscFile], exc: type[BaseException]
) -> None:
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    calls = []

    def boom(done: int, total: int) -> None:
        calls.append(done)
        if done > total // 2:
            raise exc("simulated crash")

    with pytest.raises(exc):
        write_iso(files, out_dir / "disc.iso", volume(), progress=boom)
    assert calls
    assert _listing(out_dir) == []
    with pytest.raises(exc):
        write_folder(files, out_dir / "usb", progress=boom)
    assert _listing(out_dir) == []


def test_progress_reaches_total(tmp_path: Path, files: list[DiscFile]) -> None:
    seen: list[tuple[int, int]] = []
    out = tmp_path / "p.iso"
    write_iso(files, out, volume(), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == out.stat().st_size
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    seen.clear()
    write_folder(files, tmp_path / "usb", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == sum(len(v) for v in TREE.values())


def test_overwrite_refused_then_allowed(tmp_path: Path, files: list[DiscFile]) -> None:
    out = tmp_path / "disc.iso"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        write_iso(files, out, volume())
    assert out.read_bytes() == b"precious"
    write_iso(files, out, volume(), overwrite=True)
    assert out.read_bytes()[16 * 2048 + 1 : 16 * 2048 + 6] == b"CD001"
    assert _listing(tmp_path) == ["disc.iso", "staging"]


def test_folder_overwrite_refused_then_allowed(tmp_path: Path, files: list[DiscFile]) -> None:
    out = tmp_path / "usb"
    out.mkdir()
    (out / "OLD").write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"):
        write_folder(files, out)
    assert _listing(out) == ["OLD"]
    write_folder(files, out, overwrite=True)
    _assert_tree(out)
    assert _listing(tmp_path) == ["staging", "usb"]


def test_folder_tree_matches(tmp_path: Path, files: list[DiscFile]) -> None:
    out = tmp_path / "usb"
    write_folder(files, out)
    _assert_tree(out)


def test_missing_output_directory(tmp_path: Path, files: list[DiscFile]) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        write_iso(files, tmp_path / "nope" / "disc.iso", volume())
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(OutputError):
        write_iso(files, tmp_path / "afile" / "disc.iso", volume())
    with pytest.raises(OutputError):
        write_folder(files, tmp_path / "afile" / "usb")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_output_directory(tmp_path: Path, files: list[DiscFile]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permissions"):
            write_iso(files, ro / "disc.iso", volume())
        with pytest.raises(OutputError, match="permissions"):
            write_folder(files, ro / "usb")
    finally:
        ro.chmod(0o755)


def test_output_is_a_directory(tmp_path: Path, files: list[DiscFile]) -> None:
    (tmp_path / "d.iso").mkdir()
    with pytest.raises(OutputError):
        write_iso(files, tmp_path / "d.iso", volume(), overwrite=True)


def test_many_files_bounded_handles(tmp_path: Path) -> None:
    tree = {f"DICOM/SE{i // 100:06d}/IM{i:06d}": os.urandom(100 + i) for i in range(320)}
    files = make_files(tmp_path, tree)
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("/proc/self/fd is not available")
    base = len(os.listdir(fd_dir))
    peak = [0]

    def watch(done: int, total: int) -> None:
        peak[0] = max(peak[0], len(os.listdir(fd_dir)))

    out = tmp_path / "many.iso"
    write_iso(files, out, volume(), progress=watch)
    assert peak[0] <= base + 8
    from discmaker.disc.source import open_source

    with open_source(out) as src:
        assert len(src.files()) == 320
        for disc_path, data in tree.items():
            assert src.read_bytes(disc_path, limit=10_000) == data


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "path",
    [
        "DICOMDIR",
        "README.TXT",
        "DISCSIG/MANIFEST.JSN",
        "DICOM/PT000000/ST000000/SE000000/IM000000",
        "A/B/C/D/E/F/G/H",
        "A.B",
    ],
)
def test_valid_disc_paths(path: str) -> None:
    validate_disc_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "readme.txt",
        "/DICOMDIR",
        "DICOM//IM0",
        "DICOM/../X",
        "./X",
        "TOOLONGNAME",
        "A/B/C/D/E/F/G/H/I",
        "A.TOOL",
        "A.B.C",
        "DIR.X/FILE",
        "IM-1",
        "ÄRZTE",
        "DICOMDIR/",
    ],
)
def test_invalid_disc_paths(path: str) -> None:
    with pytest.raises(InternalError):
        validate_disc_path(path)


def test_duplicate_and_clashing_paths(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(InternalError, match="twice"):
        write_iso([DiscFile("A", src), DiscFile("A", src)], tmp_path / "x.iso", volume())
    with pytest.raises(InternalError, match="both"):
        write_iso([DiscFile("A", src), DiscFile("A/B", src)], tmp_path / "x.iso", volume())
    with pytest.raises(InternalError, match="cannot be read"):
        write_iso([DiscFile("A", tmp_path / "missing")], tmp_path / "x.iso", volume())
    assert not (tmp_path / "x.iso").exists()


@pytest.mark.parametrize(
    "kw",
    [
        {"volume_id": "disc"},
        {"volume_id": "A" * 17},
        {"volume_id": ""},
        {"volume_id": "DISC 1"},
        {"application_id": "x" * 129},
        {"publisher": "Hôpital"},
        {"volume_set": (3, 2)},
        {"volume_set": (0, 1)},
        {"timestamp": datetime(1969, 1, 1, tzinfo=UTC)},
        {"timestamp": datetime(2024, 1, 1, tzinfo=timezone(timedelta(minutes=7)))},
    ],
)
def test_bad_volume_info(tmp_path: Path, files: list[DiscFile], kw: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        write_iso(files, tmp_path / "x.iso", volume(**kw))
    assert not (tmp_path / "x.iso").exists()


# --------------------------------------------------------------------------- media


def _n_dirs(paths: list[str]) -> int:
    return len({"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)})


@pytest.mark.parametrize(
    "make_tree",
    [
        lambda: TREE,
        lambda: {"A": b""},
        lambda: {f"D{i:03d}/E/F/G/H/I/IM": b"x" * i for i in range(60)},
        lambda: {f"DICOM/S{i % 7}/IM{i:06d}": b"y" * (i * 37 % 5000) for i in range(400)},
    ],
)
def test_estimate_never_underestimates(
    tmp_path: Path, make_tree: Callable[[], dict[str, bytes]]
) -> None:
    tree = make_tree()
    files = make_files(tmp_path, tree)
    out = tmp_path / "e.iso"
    write_iso(files, out, volume())
    est = estimate_iso_size([len(v) for v in tree.values()], _n_dirs(list(tree)))
    actual = out.stat().st_size
    assert est % 2048 == 0
    assert actual <= est <= actual * 3 + 200 * 2048


def test_check_fits() -> None:
    check_fits(Medium.CD.capacity or 0, Medium.CD)
    check_fits(10**13, Medium.USB)
    with pytest.raises(TooLargeError, match="DVD") as err:
        check_fits(800_000_000, Medium.CD)
    assert "800,000,000" in str(err.value)
    with pytest.raises(TooLargeError, match="BD"):
        check_fits(5_000_000_000, Medium.DVD)
    with pytest.raises(TooLargeError, match="split"):
        check_fits(30_000_000_000, Medium.BD)
    with pytest.raises(TooLargeError, match="USB"):
        check_fits(2_000_000, Medium.USB, capacity=1_000_000)
    assert Medium.CD.capacity == 737_280_000
    assert Medium.DVD.capacity == 4_700_372_992
    assert Medium.BD.capacity == 25_025_314_816
    assert Medium.USB.capacity is None


def test_permission_denied_message(
    tmp_path: Path, files: list[DiscFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same as the unwritable-directory test, but also meaningful when running as root."""
    import tempfile

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(OutputError, match=r"Permission denied.*permissions") as err:
        write_iso(files, tmp_path / "disc.iso", volume())
    assert err.value.exit_code == 73
    with pytest.raises(OutputError, match="permissions"):
        write_folder(files, tmp_path / "usb")
    assert _listing(tmp_path) == ["staging"]


def test_layout_is_the_golden_one(tmp_path: Path) -> None:
    """ISO_LAYOUT 1, byte for byte. Checkers rebuild signed images and compare media with
    them (discmaker/disc/compare.py), so if a pycdlib upgrade moves anything, this fails:
    then raise ISO_LAYOUT and keep the old layout readable, never just update the digest."""
    tree = {
        "DICOMDIR": b"\0" * 128 + b"DICM" + b"golden" * 50,
        "README.TXT": b"Patient disc\r\n",
        "PT000000/ST000000/SE000000/IM000000": bytes(range(256)) * 40,
        "PT000000/ST000000/SE000001/IM000000": b"",
    }
    out = tmp_path / "golden.iso"
    write_iso(make_files(tmp_path, tree), out, volume())
    assert sha(out) == GOLDEN_LAYOUT_1
