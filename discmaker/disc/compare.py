"""Compare a received ISO image with the image discmaker writes for the same files.

A reader may see an ISO image through many structures: the primary volume descriptor's
ISO 9660 tree (what discmaker checks), the Joliet tree (Windows, 7-Zip), Rock Ridge names
(Linux), both path tables (DOS-era readers and some drivers), a UDF bridge (what Windows,
macOS and Linux mount first when it is there), a later session (what an operating system
mounts), an El Torito boot image, and bytes past the end of the volume. An attacker who
edits one of these changes what some reader shows while the verified tree stays intact.

Rather than parse each of them and ask whether it agrees, we rebuild: discmaker's images
are reproducible (:mod:`discmaker.disc.iso`), so the signed volume fields and the names and
sizes of the files give back every byte of the image except the files' contents, which the
checker verifies against the signed manifest through the ISO 9660 tree itself. Whatever
differs from the rebuilt image is found by construction, whatever structure it is; each
difference is then explained by what the rebuilt image holds there, and by what the
medium holds there when it is a known kind of descriptor (UDF, El Torito, Joliet).

What a burn may add is allowed: zero bytes after the volume (padding, a lead-out read as
zeros). Anything else after the volume, such as a second session, is a difference.

The rebuild runs in a short-lived process of its own (as
:func:`~discmaker.disc.iso.in_child_process` runs it), where pycdlib's clock can be fixed
without touching the host process; :class:`RebuildComparison` lets the checker judge the
images meanwhile.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import numpy as np
import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from discmaker.disc.iso import (
    ISO_LAYOUT,
    POLL_SECONDS,
    VolumeInfo,
    add_directories,
    child_main,  # the child side of in_child_process: one protocol, one set of messages
    disc_directories,
    file_names,
    new_volume,
    pycdlib_clock,
    validate_disc_path,
    validate_volume,
)
from discmaker.errors import DiscError, InternalError, UsageError
from discmaker.format.manifest import IsoInfo
from discmaker.parallel import process_context

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext

log = logging.getLogger(__name__)

SECTOR_SIZE = 2048

#: Differences reported one by one; more are summarised in one line (a rebuilt layout
#: that differs everywhere is one story, not ten thousand findings).
MAX_DIFFERENCES = 20
#: After the volume a burn adds zeros (xorriso pads 300 KiB; a drive reads a run-out). Up
#: to this much of it is read whole: a second session starts right after the first...
MAX_TAIL_HEAD = 64 * 1024 * 1024
#: ...and this much at the very end, where UDF puts its last anchors (N-1, N-257). What
#: lies between is not read: an image file's length must not decide how long a check takes.
MAX_TAIL_END = 1024 * 1024
#: Bytes read at a time when checking that unused space and the tail are zeros.
_CHUNK = 1024 * 1024
_UDF_IDS = (b"BEA01", b"NSR02", b"NSR03", b"TEA01", b"BOOT2", b"CDW02")
#: Volume descriptors looked at after the primary one (ISO 9660 sets are a handful long).
_MAX_DESCRIPTORS = 64


@dataclass(frozen=True)
class Difference:
    """Bytes of the medium that are not what discmaker writes there.

    ``sector`` is the first differing 2048-byte sector and ``sectors`` how many follow;
    ``message`` says what is there (what the rebuilt image holds, or what the medium holds
    when it is a structure discmaker never writes); ``path`` the disc path it concerns.
    """

    sector: int
    sectors: int
    message: str
    path: str = ""


def _where(sector: int, sectors: int) -> str:
    return f"sector {sector}" if sectors == 1 else f"sectors {sector}-{sector + sectors - 1}"


def signed_volume(info: IsoInfo) -> VolumeInfo:
    """The volume fields a signed manifest gives, checked; :class:`DiscError` if unusable.

    The manifest's signature may verify with a key nobody trusts, so its fields are input
    like any other: they must be what discmaker could have written.
    """
    if info.layout != ISO_LAYOUT:
        raise DiscError(
            f"the image was laid out by discmaker's ISO layout {info.layout}, which this "
            f"version (layout {ISO_LAYOUT}) cannot rebuild; update discmaker"
        )
    try:
        volume = VolumeInfo(
            volume_id=info.volume_id,
            application_id=info.application_id,
            publisher=info.publisher,
            timestamp=datetime.strptime(info.timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
            volume_set=info.volume_set,
        )
        validate_volume(volume)
    except (ValueError, UsageError) as exc:
        raise DiscError(f"the manifest's description of the ISO image is unusable: {exc}") from exc
    return volume


def compare_with_rebuild(
    medium: Path, files: Sequence[tuple[str, int]], volume: VolumeInfo
) -> list[Difference]:
    """Every way ``medium`` differs from the image discmaker writes for ``files``.

    ``files`` are (disc path, size) of every file the medium's ISO 9660 tree lists (their
    contents are verified elsewhere, so they are not read here). Returns [] when the medium
    is exactly that image, possibly followed by zero bytes. Raises :class:`DiscError` when
    the medium cannot be read, or its files have names or a layout discmaker never writes.
    """
    with RebuildComparison(medium, files, volume) as comparison:
        return comparison.differences()


_COMPARING = "comparing the disc with the image that was signed"


class RebuildComparison:
    """:func:`compare_with_rebuild` started now and waited for later: the rebuild runs in
    its child process (as :func:`~discmaker.disc.iso.in_child_process` runs it, with the same
    results and errors) while the caller does other work, such as judging the images.

    Starting raises :class:`DiscError` for names discmaker never writes, as
    :func:`compare_with_rebuild` does. Use it as a context manager: leaving the block stops
    a child that was not waited for (an error elsewhere, Ctrl-C).
    """

    def __init__(self, medium: Path, files: Sequence[tuple[str, int]], volume: VolumeInfo) -> None:
        self._started = time.monotonic()
        self._files = len(files)
        for path, _size in files:
            try:
                validate_disc_path(path)
            except InternalError:
                raise DiscError(f"{path} is not a name discmaker writes on a disc") from None
        context = cast("ForkServerContext", process_context())  # fork only when single-threaded
        self._receive, send = context.Pipe(duplex=False)
        args = (_compare, (os.fspath(medium), list(files), volume), _COMPARING)
        self._child = context.Process(target=child_main, args=(send, *args), daemon=True)
        self._child.start()
        send.close()
        self._open = True

    def differences(self) -> list[Difference]:
        """Wait for the rebuild: the differences, or the error :func:`compare_with_rebuild`
        raises (:class:`DiscError` when the medium cannot be read)."""
        try:
            while not self._receive.poll(POLL_SECONDS):
                if not self._child.is_alive() and not self._receive.poll(0):
                    raise InternalError(
                        f"{_COMPARING} ended unexpectedly (exit {self._child.exitcode}); "
                        "please report this bug"
                    )
            kind, value = self._receive.recv()
        finally:
            self.close()
        if kind == "os":
            raise DiscError(f"cannot read the disc: {value}")
        if kind == "internal":
            raise InternalError(value)
        differences = cast("list[Difference]", value)
        log.debug(
            "medium: compared with its rebuild (%d files), %d differences in %.0f ms",
            self._files,
            len(differences),
            (time.monotonic() - self._started) * 1000,
        )
        return differences

    def close(self) -> None:
        """Stop the child if it has not answered, and release it (idempotent)."""
        if not self._open:
            return
        self._open = False
        if self._child.is_alive() and not self._receive.poll(0):
            self._child.terminate()
        self._child.join()
        self._receive.close()

    def __enter__(self) -> RebuildComparison:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def foreign_structures(medium: Path) -> list[Difference]:
    """What a medium that cannot be rebuilt shows beyond one ISO 9660 tree and Joliet.

    For unsigned discs and discs signed as folders: every descriptor of the volume
    recognition area that is not the primary one or a plain Joliet one (UDF's BEA01, NSR02,
    NSR03, TEA01, BOOT2; El Torito; a supplementary descriptor whose flags some readers
    honour and others skip), a UDF anchor where UDF readers look for one (sector 256, the
    last sector and 256 before it) even when the recognition area was wiped, and data after
    the volume (read as far as :func:`_tail_runs` reads it).
    """
    out: list[Difference] = []
    with open(medium, "rb") as fp:
        fd = fp.fileno()
        st = os.fstat(fd)
        size = os.lseek(fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        pvd = os.pread(fd, SECTOR_SIZE, 16 * SECTOR_SIZE)
        if len(pvd) < SECTOR_SIZE or pvd[1:6] != b"CD001":
            return out
        volume_end = int.from_bytes(pvd[80:84], "little") * SECTOR_SIZE
        for sector in range(17, 16 + _MAX_DESCRIPTORS):
            head = os.pread(fd, 8, sector * SECTOR_SIZE)
            if len(head) < 8:
                break
            kind, described = _medium_kind(fd, sector)
            if kind in (255, -1) or (kind == 2 and head[7] == 0):
                continue  # a terminator, another sector, or a plain Joliet descriptor
            if kind == 2:
                described = (
                    f"a supplementary volume descriptor with volume flags {head[7]:#04x}, "
                    "which some readers show and others skip"
                )
            out.append(Difference(sector, 1, f"{described} (sector {sector})"))
        last = size // SECTOR_SIZE - 1
        for sector in sorted({256, last, last - 256}):
            if sector > 16 and _udf_anchor(fd, sector):
                out.append(
                    Difference(sector, 1, f"a UDF anchor (a UDF file system) is at sector {sector}")
                )
        runs: list[tuple[int, int]] = []
        long_tail = _tail_runs(fd, volume_end, size, runs)
        out.extend(_after_volume(fd, start, end, signed=False) for start, end in _merge(runs))
        if long_tail is not None and not stat.S_ISBLK(st.st_mode):
            out.append(long_tail)
    return out


def _udf_anchor(fd: int, sector: int) -> bool:
    """Whether ``sector`` holds a UDF Anchor Volume Descriptor Pointer (ECMA-167 3/10.2):
    tag identifier 2, a valid tag checksum, and its own location in the tag."""
    tag = os.pread(fd, 16, sector * SECTOR_SIZE)
    if len(tag) < 16 or int.from_bytes(tag[0:2], "little") != 2:
        return False
    checksum = sum(tag[0:4]) + sum(tag[5:16])
    return tag[4] == checksum & 0xFF and int.from_bytes(tag[12:16], "little") == sector


# --------------------------------------------------------------------------- in the child


class _Unread(bytes):
    """A file's bytes as pycdlib copies them: not compared here (verified by the checker)."""


class _UnreadFile(io.RawIOBase):
    """What pycdlib reads a file's content from: ``size`` bytes that are never looked at."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = max(0, self._size - self._pos)
        n = left if size is None or size < 0 else min(size, left)
        self._pos += n
        return _Unread(n)


class _Comparer:
    """The file pycdlib "writes" the rebuilt image to: each write is compared with the
    medium at the same place, and the places written are remembered."""

    mode = "wb"  # pycdlib refuses an output without "b" in its mode

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._pos = 0
        self._end = 0
        self.written: list[tuple[int, int]] = []  # [start, end) of everything written
        self.differing: list[tuple[int, int]] = []  # [start, end) written and not equal
        self.records: list[tuple[int, str]] = []  # (offset, name) of differing dir records

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = base + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: bytes) -> int:
        n = len(data)
        start, end = self._pos, self._pos + n
        # Past the end of a short medium nothing is compared here: the missing end is one
        # difference of its own (see _compare).
        present = max(0, min(end, self._size) - start)
        if present and type(data) is not _Unread:
            expected = bytes(data[:present])
            got = os.pread(self._fd, present, start)
            if got != expected:
                self.differing.append(_sectors_of(start, got, expected))
                name = _record_name(bytes(data))
                if name:
                    self.records.append((start, name))
        self.written.append((start, end))
        self._pos = end
        self._end = max(self._end, end)
        return n

    def flush(self) -> None:
        pass

    @property
    def end(self) -> int:
        return self._end


def _sectors_of(start: int, got: bytes, expected: bytes) -> tuple[int, int]:
    """[first differing sector's start, last differing byte + 1) of ``got`` against
    ``expected`` (both read at ``start``; ``got`` may be short: the medium ended)."""
    padded = got.ljust(len(expected), b"\0")
    unequal = np.flatnonzero(np.frombuffer(padded, np.uint8) != np.frombuffer(expected, np.uint8))
    if len(got) < len(expected) or not unequal.size:
        unequal = np.append(unequal, [len(got)]) if not unequal.size else unequal
    first, last = int(unequal[0]), int(unequal[-1])
    return (start + first) // SECTOR_SIZE * SECTOR_SIZE, start + last + 1


def _record_name(data: bytes) -> str:
    """The file or directory name when ``data`` is one directory record (ISO 9660 or
    Joliet, as pycdlib writes them one by one), else ""."""
    if len(data) < 34 or data[0] != len(data) or 33 + data[32] > len(data):
        return ""
    ident = data[33 : 33 + data[32]]
    if ident in (b"\x00", b"\x01"):
        return ""
    try:
        name = ident.decode("ascii")
    except UnicodeDecodeError:
        name = ident.decode("utf-16-be", "replace")
    if "\x00" in name:
        name = ident.decode("utf-16-be", "replace")
    return name.split(";", 1)[0].rstrip(".").upper()


def _merge(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _gaps(covered: Sequence[tuple[int, int]], total: int) -> Iterator[tuple[int, int]]:
    pos = 0
    for start, end in covered:
        if start > pos:
            yield pos, min(start, total)
        pos = max(pos, end)
        if pos >= total:
            return
    if pos < total:
        yield pos, total


def _nonzero_runs(
    fd: int, start: int, end: int, *, stop_at_error: bool = False
) -> Iterator[tuple[int, int]]:
    """Sector-aligned [start, end) runs of the medium in [start, end) holding non-zero bytes.

    ``stop_at_error``: a read error ends the scan (after the volume, a drive cannot read a
    burned disc's run-out sectors: that is where the medium ends).
    """
    run: tuple[int, int] | None = None
    pos = start
    while pos < end:
        try:
            data = os.pread(fd, min(_CHUNK, end - pos), pos)
        except OSError:
            if not stop_at_error:
                raise
            break
        if not data:
            break
        if data.count(0) != len(data):
            first = pos + next(i for i, b in enumerate(data) if b)
            last = pos + len(data.rstrip(b"\0"))
            lo = first // SECTOR_SIZE * SECTOR_SIZE
            if run is not None and lo <= run[1] + _CHUNK:
                run = (run[0], last)
            else:
                if run is not None:
                    yield run
                run = (lo, last)
        pos += len(data)
    if run is not None:
        yield run


@dataclass(frozen=True)
class _Region:
    start: int  # sector
    end: int  # sector, exclusive
    structure: str
    path: str = ""
    descriptor: int = -1  # the volume descriptor type written here, if one is
    entries: str = ""  # for a directory: how its entries are described, "{path}" their path


def _layout(iso: pycdlib.PyCdlib, dirs: Sequence[str], files: Sequence[str]) -> list[_Region]:
    """What each sector of the rebuilt image holds, for explaining differences.

    pycdlib's placement is read from its volume descriptors (attributes that pycdlib 1.14
    to 1.22 all have) and its records; a structure it does not expose is simply left out,
    and a difference there is reported as "space the signed image leaves empty".
    """
    system = "the system area (sectors 0-15, where boot code or a partition table would go)"
    regions = [_Region(0, 16, system)]
    named = (
        ("pvds", "the primary volume descriptor", 1),
        ("svds", "the Joliet volume descriptor (what Windows and 7-Zip read)", 2),
        ("vdsts", "the volume descriptor set terminator", 255),
    )
    for attr, label, kind in named:
        for vd in getattr(iso, attr, []):
            loc = int(vd.extent_location())
            regions.append(_Region(loc, loc + 1, label, descriptor=kind))
    version_vd = getattr(iso, "version_vd", None)
    if version_vd is not None:
        loc = int(version_vd.extent_location())
        regions.append(_Region(loc, loc + 1, "the sector after the volume descriptors"))
    trees = [(vd, "ISO 9660") for vd in getattr(iso, "pvds", [])[:1]]
    trees += [(vd, "Joliet") for vd in getattr(iso, "svds", [])]
    for vd, tree in trees:
        size = -(-int(vd.path_table_size()) // SECTOR_SIZE)
        for attr, order in (
            ("path_table_location_le", "little-endian"),
            ("path_table_location_be", "big-endian"),
        ):
            table = getattr(vd, attr, None)
            if isinstance(table, int):
                regions.append(_Region(table, table + size, f"the {tree} path table ({order})"))
    for d in ["", *dirs]:
        for tree, key in (("ISO 9660", "iso_path"), ("Joliet", "joliet_path")):
            rec = iso.get_record(**{key: "/" + d})
            loc = int(rec.extent_location())
            count = max(1, -(-int(rec.get_data_length()) // SECTOR_SIZE))
            label = f"the {tree} directory {d or '/'}"
            entries = (
                "ISO 9660 {entries} of {paths} (with Rock Ridge names, what Linux shows)"
                if tree == "ISO 9660"
                else "Joliet {entries} of {paths} (what Windows and 7-Zip show)"
            )
            regions.append(_Region(loc, loc + count, label, d, entries=entries))
    for path in files:
        rec = iso.get_record(iso_path=file_names(path)["iso_path"])
        loc = int(rec.extent_location())
        count = max(1, -(-int(rec.get_data_length()) // SECTOR_SIZE))
        regions.append(_Region(loc, loc + count, f"the unused end of the file {path}", path))
    return sorted(regions, key=lambda r: (r.start, r.end))


def _medium_kind(fd: int, sector: int) -> tuple[int, str]:
    """(descriptor type, description) of what the medium holds at ``sector``, when it is a
    volume structure; (-1, "") otherwise."""
    head = os.pread(fd, 8, sector * SECTOR_SIZE)
    if head[1:6] in _UDF_IDS:
        return -2, (
            "a UDF file system (what Windows, macOS and Linux show instead of the verified "
            "files) was added"
        )
    if head[1:6] == b"CD001":
        kinds = {
            0: "an El Torito boot record (a hidden boot image) was added",
            1: "a primary volume descriptor (another session or another tree) was added",
            2: "a supplementary volume descriptor (another tree of names for the files) was added",
        }
        if head[0] in kinds:
            return head[0], kinds[head[0]]
    if _udf_anchor(fd, sector):
        return -2, "a UDF anchor (the start of a UDF file system) was added"
    return -1, ""


def _after_volume(fd: int, start: int, end: int, *, signed: bool) -> Difference:
    """The run [start, end) of non-zero bytes after the volume, named by what it holds."""
    first, count = start // SECTOR_SIZE, (end - 1) // SECTOR_SIZE - start // SECTOR_SIZE + 1
    _kind, described = _medium_kind(fd, first)
    what = described.removesuffix(" was added") if described else "a second session, or other data"
    volume = "the signed volume" if signed else "the volume"
    return Difference(
        first,
        count,
        f"data after the end of {volume} ({_where(first, count)}): {what}; "
        "an operating system may show it instead",
    )


def _explain(
    fd: int,
    runs: Sequence[tuple[int, int]],
    regions: Sequence[_Region],
    volume_end: int,
    records: Sequence[tuple[int, str]] = (),
) -> list[Difference]:
    starts = [r.start for r in regions]
    out: list[Difference] = []
    for start, end in runs:
        first, last = start // SECTOR_SIZE, (end - 1) // SECTOR_SIZE
        count = last - first + 1
        where = _where(first, count)
        if start >= volume_end:
            out.append(_after_volume(fd, start, end, signed=True))
            continue
        kind, described = _medium_kind(fd, first)
        i = bisect.bisect_right(starts, first)
        holder = next((r for r in reversed(regions[:i]) if r.start <= first < r.end), None)
        if described and (holder is None or holder.descriptor != kind):
            out.append(Difference(first, count, f"{described} ({where})"))
        elif holder is None:
            out.append(
                Difference(
                    first, count, f"space the signed image leaves empty holds data ({where})"
                )
            )
        else:
            names = sorted({name for at, name in records if start <= at < end})
            if names and holder.entries:
                paths = [f"{holder.path}/{n}" if holder.path else n for n in names]
                many = len(paths) > 1
                entry = holder.entries.format(
                    entries="entries" if many else "entry", paths=", ".join(paths)
                )
                verb = "differ" if many else "differs"
                message = f"the {entry} {verb} from what was signed ({where})"
                out.append(Difference(first, count, message, holder.path if many else paths[0]))
                continue
            message = f"{holder.structure} differs from what was signed ({where})"
            out.append(Difference(first, count, message, holder.path))
    return out


def _compare(medium: str, files: list[tuple[str, int]], volume: VolumeInfo) -> list[Difference]:
    """In the child process: rebuild, compare, explain."""
    paths = [p for p, _size in files]
    dirs = disc_directories(paths)
    iso = pycdlib.PyCdlib()
    fd = os.open(medium, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        is_device = stat.S_ISBLK(st.st_mode)
        size = os.lseek(fd, 0, os.SEEK_END) if is_device else st.st_size
        comparer = _Comparer(fd, size)
        try:
            with pycdlib_clock(volume.timestamp):
                new_volume(iso, volume)
                add_directories(iso, dirs)
                for path, length in files:
                    iso.add_fp(cast("BinaryIO", _UnreadFile(length)), length, **file_names(path))
                iso.write_fp(cast("BinaryIO", comparer))
                regions = _layout(iso, dirs, paths)
        except PyCdlibException as exc:  # names or sizes discmaker would never lay out
            message = (
                f"the files on this image cannot be laid out as discmaker writes a disc ({exc})"
            )
            return [Difference(16, 1, message)]
        volume_end = comparer.end
        runs = list(comparer.differing)
        covered = _merge(comparer.written)
        inside = min(size, volume_end)
        for gap_start, gap_end in _gaps(covered, inside):
            runs.extend(_nonzero_runs(fd, gap_start, min(gap_end, inside)))
        long_tail = _tail_runs(fd, volume_end, size, runs)
        differences = _explain(fd, _merge(runs), regions, volume_end, comparer.records)
        if long_tail and not is_device:
            differences.append(long_tail)
        if size < volume_end:
            short = f"the image ends {volume_end - size:,} bytes before the signed volume does"
            differences.append(Difference(size // SECTOR_SIZE, 1, short))
    finally:
        os.close(fd)
        with contextlib.suppress(PyCdlibException):  # never opened when new() refused
            iso.close()
    return _summarised(differences)


def _tail_runs(
    fd: int, volume_end: int, size: int, runs: list[tuple[int, int]]
) -> Difference | None:
    """Add the non-zero runs after the volume to ``runs``, reading at most its first
    :data:`MAX_TAIL_HEAD` and last :data:`MAX_TAIL_END` bytes (where a session or a UDF
    anchor would be found). Returns a difference when more than that follows (an image
    file that long was not made by a burn; a drive may report the whole disc's capacity).
    """
    if size <= volume_end:
        return None
    head_end = min(size, volume_end + MAX_TAIL_HEAD)
    runs.extend(_nonzero_runs(fd, volume_end, head_end, stop_at_error=True))
    if size <= head_end:
        return None
    end_start = max(head_end, (size - MAX_TAIL_END) // SECTOR_SIZE * SECTOR_SIZE)
    runs.extend(_nonzero_runs(fd, end_start, size, stop_at_error=True))
    if end_start == head_end:
        return None
    first = volume_end // SECTOR_SIZE
    return Difference(
        first,
        (size - volume_end) // SECTOR_SIZE,
        f"the image continues {size - volume_end:,} bytes after the signed volume "
        f"(from sector {first}); a burn adds a few hundred kilobytes of zeros at most",
    )


def _summarised(differences: list[Difference]) -> list[Difference]:
    """At most :data:`MAX_DIFFERENCES`, keeping what lies after the volume (a second session
    is the story however many sectors the rest of the image differs in)."""
    if len(differences) <= MAX_DIFFERENCES:
        return differences
    after = [d for d in differences if d.message.startswith("data after the end")]
    differences = [d for d in differences if d not in after]
    tail = after[:3]
    keep = MAX_DIFFERENCES - 1 - len(tail)
    rest = differences[keep:]
    if not rest:
        return [*differences, *tail]
    sectors = sum(d.sectors for d in rest)
    more = f"{len(rest)} more parts of the image differ from what was signed"
    return [*differences[:keep], Difference(rest[0].sector, sectors, more), *tail]


__all__ = [
    "MAX_DIFFERENCES",
    "Difference",
    "RebuildComparison",
    "compare_with_rebuild",
    "foreign_structures",
    "signed_volume",
]
