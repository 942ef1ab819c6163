"""Open a RECEIVED disc for reading, safely: an ISO image, a block device, or a folder.

Everything here treats the medium as hostile:

* Only entries found while listing the source can be opened; a requested path is
  normalised, must be relative without ``.``/``..``, and is looked up case-insensitively
  in that listing. The bytes are then read through the entry's own location (an extent of
  the image, or a file reached component by component with ``O_NOFOLLOW``), never through
  the requested string, so no request can reach outside the source.
* Symbolic links and special files in a folder are reported in :meth:`DiscSource.skipped`
  and never followed or read.
* Sizes are checked before reading; :meth:`DiscSource.read_bytes` never allocates more than
  ``limit`` (+1) bytes.
* Trees are walked iteratively (no recursion), with caps on depth and entry count.
* Malformed images (random bytes, truncated, inconsistent descriptors) raise
  :class:`DiscError`, never a traceback.

ISO images are read from a read-only file descriptor by a small reader of their own; nothing is
mounted. Both name trees are walked iteratively from the volume descriptors, every directory at
most once, with caps on depth, directories, entries, directory bytes and Rock Ridge
continuation areas checked before anything beyond them is read (pycdlib, which parses the whole
image into objects first, took 1.1 GiB and 23 s for a million empty files). Names are the
ISO 9660 ones (what DICOM File IDs map to) with the ``;1`` version and a trailing ``.``
stripped; the Joliet and Rock Ridge names are only compared with them (:meth:`view_problems`).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from discmaker.errors import DiscError

SECTOR = 2048
#: Deeper trees than this are refused (DICOM allows 8 levels; this only bounds the work).
MAX_WALK_DEPTH = 64
#: More entries (files and links) than this are refused, counted while listing. A full 25 GB
#: Blu-ray holds about 50,000 CT images and a viewer a few thousand files, so four times that
#: is no patient disc; an entry costs about half a KiB, so a listing stays near 100 MiB.
MAX_ENTRIES = 200_000
#: More directories than this (in the ISO 9660 tree, or in the Joliet tree) are refused: a
#: patient disc has one per series, plus a viewer's few hundred.
MAX_DIRECTORIES = 50_000
#: Directory bytes read per tree, at most: 200,000 records of about 120 bytes (Rock Ridge
#: entries included) fill 24 MiB. Bounds the time a hostile tree of tiny records costs.
MAX_TREE_BYTES = 64 * 1024 * 1024
#: A path table's size, at most: 50,000 directories with the longest Joliet names take
#: about 7 MiB. The little- and big-endian copies are read and must agree (as pycdlib required).
_MAX_PATH_TABLE = 8 * 1024 * 1024
_MAX_DESCRIPTORS = 64  # volume descriptors before the terminator (real images have 2 to 5)
_MAX_DIRECTORY = 16 * 1024 * 1024  # one directory's extent: about 130,000 records
#: Rock Ridge continuation areas followed from one record (a long name or link needs one),
#: and their bytes over the whole image (real images: a few sectors).
_MAX_CONTINUATIONS = 4
_MAX_CONTINUATION_BYTES = 16 * 1024 * 1024
_FLAG_DIRECTORY = 0x02
_FLAG_ASSOCIATED = 0x04
_FLAG_MULTI_EXTENT = 0x80
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")  # UCS-2 levels 1-3 (Joliet specification)


@dataclass(frozen=True)
class SourceEntry:
    """A regular file of the source.

    ``path`` is the disc path as DICOM sees it: POSIX, relative, upper case, ISO version
    stripped (``DICOM/PT000000/IM000000``). ``raw_path`` is the exact name on the medium
    (``DICOM/PT000000/IM000000.;1`` on an ISO, the real case in a folder), for reports.
    """

    path: str
    size: int
    raw_path: str


@dataclass(frozen=True)
class SkippedEntry:
    """Something in the source that is not read: a symbolic link or a special file."""

    raw_path: str
    reason: str


def normalize_request(path: str) -> str:
    """Return the lookup key for a requested disc path, or raise :class:`DiscError`.

    Refuses absolute paths, ``.``/``..``/empty components, backslashes and NUL bytes.
    """
    if not isinstance(path, str) or not path:
        raise DiscError(f"invalid disc path {path!r}")
    if "\x00" in path or "\\" in path or path.startswith("/"):
        raise DiscError(f"refusing disc path {path!r}: absolute or contains '\\' or NUL")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise DiscError(f"refusing disc path {path!r}: empty, '.' or '..' component")
    last = parts[-1]
    if ";" in last:  # accept "DICOMDIR.;1" as well as "DICOMDIR"
        last = last.split(";", 1)[0].rstrip(".")
        if not last:
            raise DiscError(f"refusing disc path {path!r}")
        parts[-1] = last
    return "/".join(parts).upper()


class DiscSource(ABC):
    """A received disc, opened read-only. Use as a context manager."""

    description: str
    path: Path  # what was opened: the image file, the drive or the folder

    def __init__(self, description: str, path: Path) -> None:
        self.description = description
        self.path = Path(path)
        self._entries: list[SourceEntry] = []
        self._skipped: list[SkippedEntry] = []
        self._index: dict[str, SourceEntry] = {}

    def files(self) -> list[SourceEntry]:
        """Every regular file, sorted by path."""
        return list(self._entries)

    def skipped(self) -> list[SkippedEntry]:
        """Symbolic links and special files that were seen but are never read."""
        return list(self._skipped)

    def entry(self, path: str) -> SourceEntry:
        """The entry for ``path`` (case-insensitive); :class:`DiscError` if there is none."""
        key = normalize_request(path)
        found = self._index.get(key)
        if found is None:
            raise DiscError(f"{path!r} is not a file on {self.description}")
        return found

    def read_bytes(self, path: str, *, limit: int) -> bytes:
        """The whole content of ``path``; :class:`DiscError` if it is larger than ``limit``."""
        found = self.entry(path)
        if found.size > limit:
            raise DiscError(
                f"{found.raw_path} on {self.description} is {found.size:,} bytes, "
                f"more than the {limit:,} allowed for it"
            )
        # one byte more than listed: a file grown meanwhile shows (not limit + 1: the read
        # may allocate that much)
        data = self._read_start(path, found.size + 1)
        if len(data) > limit:
            raise DiscError(
                f"{found.raw_path} on {self.description} is larger than the {limit:,} bytes "
                "allowed for it"
            )
        if len(data) != found.size:
            raise DiscError(
                f"{found.raw_path} on {self.description} changed size or is truncated "
                f"(listed {found.size:,} bytes, read {len(data):,})"
            )
        return data

    def _read_start(self, path: str, count: int) -> bytes:
        """The first ``count`` bytes of ``path`` (fewer if it is shorter), as :meth:`open`
        reads them; a source that can read them in one call overrides this."""
        with self.open(path) as fp:
            return fp.read(count)

    @abstractmethod
    def open(self, path: str) -> BinaryIO:
        """A read-only stream of ``path`` (case-insensitive); close it after use."""

    @abstractmethod
    def close(self) -> None:
        """Release the medium."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _add(self, entry: SourceEntry) -> None:
        if len(self._entries) + len(self._skipped) >= MAX_ENTRIES:
            raise DiscError(f"{self.description} holds more than {MAX_ENTRIES:,} entries")
        key = entry.path
        if key in self._index:
            raise DiscError(
                f"{self.description} has two files that differ only in case or version: "
                f"{self._index[key].raw_path} and {entry.raw_path}"
            )
        self._index[key] = entry
        self._entries.append(entry)

    def _skip(self, raw_path: str, reason: str) -> None:
        if len(self._entries) + len(self._skipped) >= MAX_ENTRIES:
            raise DiscError(f"{self.description} holds more than {MAX_ENTRIES:,} entries")
        self._skipped.append(SkippedEntry(raw_path, reason))

    def _finish_listing(self) -> None:
        self._entries.sort(key=lambda e: e.path)
        self._skipped.sort(key=lambda e: e.raw_path)


# --------------------------------------------------------------------------- ISO 9660


class _ExtentReader(io.RawIOBase):
    """Read ``length`` bytes at ``offset`` of a file descriptor with pread (shares no position)."""

    def __init__(self, fd: int, offset: int, length: int, name: str) -> None:
        super().__init__()
        self._fd = fd
        self._offset = offset
        self._length = length
        self._pos = 0
        self._name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        new = base + pos
        if new < 0:
            raise ValueError("negative seek position")
        self._pos = new
        return new

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._length - self._pos)
        if want <= 0:
            return 0
        data = _pread(self._fd, want, self._offset + self._pos, self._name)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _pread(fd: int, count: int, offset: int, name: str) -> bytes:
    """Up to ``count`` (> 0) bytes at ``offset``; :class:`DiscError` if there are none (the
    image ends inside the file) or the read fails."""
    try:
        data = os.pread(fd, count, offset)
    except OSError as exc:
        raise DiscError(f"cannot read {name}: {exc.strerror}") from exc
    if not data:
        raise DiscError(f"{name} is truncated: the image ends inside it")
    return data


def _read_extent(fd: int, offset: int, length: int, count: int, name: str) -> bytes:
    """The first ``count`` bytes of an extent of ``length`` bytes at ``offset``, read as
    :class:`_ExtentReader` reads them, without its buffer: one ``pread`` straight into the
    bytes returned (a whole image in one system call and one copy)."""
    want = min(count, length)
    if want <= 0:
        return b""
    data = _pread(fd, want, offset, name)
    if len(data) == want:
        return data
    parts = [data]  # a short read (a block device, a signal): read on, as a stream would
    done = len(data)
    while done < want:
        part = _pread(fd, want - done, offset + done, name)
        parts.append(part)
        done += len(part)
    return b"".join(parts)


def _check_volume_descriptors(fp: BinaryIO, size: int, what: str) -> tuple[bytes, bytes | None]:
    """Sanity-check the ISO 9660 volume descriptors; (primary, first Joliet one or None)."""
    if size < 17 * SECTOR:
        raise DiscError(f"{what} is not an ISO 9660 image (only {size:,} bytes)")
    fp.seek(16 * SECTOR)
    pvd = fp.read(SECTOR)
    if len(pvd) != SECTOR or pvd[1:6] != b"CD001":
        raise DiscError(f"{what} is not an ISO 9660 image (no CD001 volume descriptor)")
    if pvd[0] != 1:
        raise DiscError(f"{what}: the first volume descriptor is not a primary one")
    (space,) = _both_endian(pvd, 80, 1, "the volume space size", what)
    block = struct.unpack_from("<H", pvd, 128)[0]
    if struct.unpack_from(">H", pvd, 130)[0] != block:
        raise DiscError(f"{what}: the logical block size differs between byte orders")
    (path_table,) = _both_endian(pvd, 132, 1, "the path table size", what)
    if block != SECTOR:
        raise DiscError(f"{what}: logical block size {block} is not supported (only 2048)")
    if space * SECTOR > size:
        raise DiscError(
            f"{what} is truncated: the volume declares {space * SECTOR:,} bytes "
            f"but only {size:,} are present"
        )
    if path_table > min(_MAX_PATH_TABLE, size):
        raise DiscError(f"{what}: implausible path table size {path_table:,}")
    _check_path_tables(fp, pvd, size, what, "")
    joliet: bytes | None = None
    for n in range(17, 16 + _MAX_DESCRIPTORS):
        fp.seek(n * SECTOR)
        desc = fp.read(SECTOR)
        if len(desc) != SECTOR or desc[1:6] != b"CD001":
            raise DiscError(f"{what}: malformed volume descriptor set (sector {n})")
        if desc[0] == 255:
            return pvd, joliet
        if desc[0] == 1 and (desc[80:88], desc[128:132], desc[156:190]) != (
            pvd[80:88],
            pvd[128:132],
            pvd[156:190],
        ):  # a second primary descriptor must describe the same volume (pycdlib's rule)
            raise DiscError(f"{what}: two primary volume descriptors disagree")
        if desc[0] == 2 and joliet is None and desc[88:91] in _JOLIET_ESCAPES:
            if struct.unpack_from("<H", desc, 128)[0] != SECTOR:
                raise DiscError(f"{what}: the Joliet volume's block size is not 2048")
            _check_path_tables(fp, desc, size, what, "Joliet ")
            joliet = desc
    raise DiscError(f"{what}: no volume descriptor set terminator")


def _check_path_tables(fp: BinaryIO, desc: bytes, size: int, what: str, tree: str) -> None:
    """The little- and big-endian path tables of a volume must say the same (systems that read
    the big-endian one would otherwise find other directories); pycdlib refused them too."""
    (length,) = _both_endian(desc, 132, 1, f"the {tree}path table size", what)
    if length > _MAX_PATH_TABLE:
        raise DiscError(f"{what}: implausible {tree}path table size {length:,}")
    little = struct.unpack_from("<I", desc, 140)[0] * SECTOR
    big = struct.unpack_from(">I", desc, 148)[0] * SECTOR
    if max(little, big) + length > size:
        raise DiscError(f"{what} is truncated: its {tree}path table lies beyond the end")
    fp.seek(little)
    lsb = fp.read(length)
    fp.seek(big)
    msb = fp.read(length)
    pos = 0
    while pos + 8 <= length:
        name_len = lsb[pos]
        if name_len == 0:  # no record here (padding): the rest must match as it is
            if lsb[pos:] != msb[pos:]:
                raise DiscError(f"{what}: its little- and big-endian {tree}path tables disagree")
            return
        end = min(pos + 8 + name_len + name_len % 2, length)  # a last pad byte may be cut
        if (
            pos + 8 + name_len > length
            or lsb[pos : pos + 2] != msb[pos : pos + 2]
            or lsb[pos + 2 : pos + 6] != msb[pos + 2 : pos + 6][::-1]
            or lsb[pos + 6 : pos + 8] != msb[pos + 6 : pos + 8][::-1]
            or lsb[pos + 8 : end] != msb[pos + 8 : end]
        ):
            raise DiscError(f"{what}: its little- and big-endian {tree}path tables disagree")
        pos = end


def _iso_component(raw: bytes, *, is_dir: bool, where: str, what: str) -> tuple[str, str]:
    """(raw name, disc name) of one ISO 9660 record, or :class:`DiscError` if unsafe."""
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise DiscError(f"{what}: non-ASCII file name {raw!r} in {where or '/'}") from None
    if any(c in name for c in "/\\\x00") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise DiscError(f"{what}: unsafe file name {name!r} in {where or '/'}")
    clean = name if is_dir else name.split(";", 1)[0].rstrip(".")
    if clean in ("", ".", ".."):
        raise DiscError(f"{what}: unsafe file name {name!r} in {where or '/'}")
    return name, clean.upper()


class _RockRidgeName:
    """A record's Rock Ridge alternate name (pycdlib's ``RockRidge.name()``)."""

    __slots__ = ("_name",)

    def __init__(self, name: bytes) -> None:
        self._name = name

    def name(self) -> bytes:
        return self._name


class _Record:
    """One directory record as read from the image.

    Its methods are the part of pycdlib's ``DirectoryRecord`` that :meth:`IsoSource.view_problems`
    uses; ``children`` is filled for the directories of the Joliet tree only.
    """

    __slots__ = ("children", "extent", "file_flags", "ident", "length", "rock_ridge", "symlink")

    def __init__(
        self,
        ident: bytes,
        flags: int,
        extent: int,
        length: int,
        rr_name: bytes | None = None,
        symlink: bool = False,
    ) -> None:
        self.ident = ident
        self.file_flags = flags
        self.extent = extent
        self.length = length
        self.rock_ridge = _RockRidgeName(rr_name) if rr_name is not None else None
        self.symlink = symlink
        self.children: list[_Record] = []

    def file_identifier(self) -> bytes:
        return self.ident

    def is_dir(self) -> bool:
        return bool(self.file_flags & _FLAG_DIRECTORY)

    def is_dot(self) -> bool:
        return self.ident == b"\x00"

    def is_dotdot(self) -> bool:
        return self.ident == b"\x01"

    def is_symlink(self) -> bool:
        return self.symlink

    def extent_location(self) -> int:
        return self.extent

    def get_data_length(self) -> int:
        return self.length


def _root_record(descriptor: bytes, what: str) -> _Record:
    """The root directory record of a primary or Joliet volume descriptor."""
    raw = descriptor[156:190]
    extent, length = _both_endian(raw, 2, 2, "the root directory record", what)
    if raw[0] != 34 or not raw[25] & _FLAG_DIRECTORY or raw[32] != 1:
        raise DiscError(f"{what}: malformed root directory record")
    return _Record(b"\x00", raw[25], extent, length)


class _TreeReader:
    """Reads the directory extents of one tree (ISO 9660 or Joliet), bounded as it goes.

    Each directory is read at most once (a directory reached twice is a loop, refused), and
    the directories, their bytes and Rock Ridge continuation areas are counted against
    :data:`MAX_DIRECTORIES`, :data:`MAX_TREE_BYTES` and ``_MAX_CONTINUATION_BYTES`` before
    anything is read, so a hostile image costs at most those bounds.
    """

    def __init__(self, fd: int, size: int, what: str, *, xa: bool) -> None:
        self._fd = fd
        self._size = size
        self._what = what
        self._xa = xa
        self._visited: set[int] = set()
        self._bytes = 0
        self._continuation = 0
        self.rock_ridge_skip: int | None = None  # SUSP bytes to skip, once the root says so
        self.directories = 0

    def _read(self, offset: int, length: int, what: str) -> bytes:
        if offset + length > self._size:
            raise DiscError(f"{self._what} is truncated: {what} lies beyond the end of the image")
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise DiscError(f"{self._what} is truncated: {what} cannot be read")
        return data

    def count_directory(self, where: str) -> None:
        self.directories += 1
        if self.directories > MAX_DIRECTORIES:
            raise DiscError(
                f"{self._what}: more than {MAX_DIRECTORIES:,} directories (at {where or '/'})"
            )

    def directory(
        self, record: _Record, where: str, *, rock_ridge: bool, root: bool = False
    ) -> list[_Record]:
        """The records of the directory ``record`` (dot and dotdot included).

        With ``rock_ridge``, each record's System Use area is read for its Rock Ridge name
        and symbolic-link entry, once the root's "." record has shown that SUSP is in use.
        """
        where = where or "/"
        if record.extent in self._visited:
            raise DiscError(f"{self._what}: directory {where} is reached twice (a loop)")
        self._visited.add(record.extent)
        length = record.length
        if length > _MAX_DIRECTORY:
            raise DiscError(f"{self._what}: directory {where} is {length:,} bytes, too large")
        self._bytes += length
        if self._bytes > MAX_TREE_BYTES:
            raise DiscError(
                f"{self._what}: its directories hold more than {MAX_TREE_BYTES:,} bytes"
            )
        data = self._read(record.extent * SECTOR, length, f"directory {where}")
        out: list[_Record] = []
        pos = 0
        while pos < length:
            rec_len = data[pos]
            if rec_len == 0:  # records do not cross sectors: skip to the next one
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            name_len = data[pos + 32] if pos + 33 <= length else 0
            if (
                rec_len < 34
                or name_len == 0
                or 33 + name_len > rec_len
                or pos % SECTOR + rec_len > SECTOR
                or pos + rec_len > length
            ):
                raise DiscError(f"{self._what}: malformed directory record in {where}")
            if data[pos + 1] or data[pos + 26] or data[pos + 27]:
                raise DiscError(
                    f"{self._what}: a record in {where} uses extended attributes or "
                    "interleaving, which a patient disc never holds"
                )
            extent, size = _both_endian(data, pos + 2, 2, f"a record in {where}", self._what)
            flags = data[pos + 25]
            ident = data[pos + 33 : pos + 33 + name_len]
            name: bytes | None = None
            symlink = False
            special = ident in (b"\x00", b"\x01")  # "." and ".."
            if rock_ridge and ((root and not out) or not special):
                use = pos + 33 + name_len + (1 - name_len % 2)
                area = data[use : pos + rec_len]
                if self._xa:
                    area = _skip_xa(area, name_len)
                if root and not out:
                    self._detect_rock_ridge(area)
                elif self.rock_ridge_skip is not None:
                    name, symlink = self._susp(area[self.rock_ridge_skip :], where)
            out.append(_Record(ident, flags, extent, size, name, symlink))
            pos += rec_len
        return out

    def _detect_rock_ridge(self, area: bytes) -> None:
        """SUSP is in use when the root's "." record begins with an SP entry (SUSP 5.3)."""
        if len(area) >= 7 and area[:2] == b"SP" and area[4:6] == b"\xbe\xef":
            self.rock_ridge_skip = area[6]

    def _susp(self, area: bytes, where: str) -> tuple[bytes | None, bool]:
        """(Rock Ridge NM name or None, has an SL entry) from a System Use area and the
        continuation areas it chains to (at most ``_MAX_CONTINUATIONS`` of them)."""
        names: list[bytes] = []
        symlink = False
        for _ in range(_MAX_CONTINUATIONS + 1):
            pos, follow = 0, None
            while len(area) - pos >= 4:
                sig, entry_len = area[pos : pos + 2], area[pos + 2]
                if sig == b"\x00\x00":
                    break  # padding
                if entry_len < 4 or pos + entry_len > len(area):
                    raise DiscError(f"{self._what}: malformed Rock Ridge entry in {where}")
                if sig == b"NM" and entry_len >= 5:
                    names.append(area[pos + 5 : pos + entry_len])
                elif sig == b"SL":
                    symlink = True
                elif sig == b"CE" and entry_len >= 28:
                    block, offset, length = _both_endian(
                        area, pos + 4, 3, f"a Rock Ridge continuation in {where}", self._what
                    )
                    follow = block, offset, length
                elif sig == b"ST":
                    break
                pos += entry_len
            if follow is None:
                return (b"".join(names) if names else None), symlink
            block, offset, length = follow
            if offset + length > SECTOR:
                raise DiscError(f"{self._what}: malformed Rock Ridge continuation in {where}")
            self._continuation += length
            if self._continuation > _MAX_CONTINUATION_BYTES:
                raise DiscError(
                    f"{self._what}: more than {_MAX_CONTINUATION_BYTES:,} bytes of Rock Ridge "
                    "continuation areas"
                )
            area = self._read(block * SECTOR + offset, length, f"a Rock Ridge area in {where}")
        raise DiscError(f"{self._what}: Rock Ridge continuations chained too far in {where}")


def _both_endian(data: bytes, offset: int, count: int, field: str, what: str) -> tuple[int, ...]:
    """``count`` ISO 9660 both-byte-order 32-bit numbers (little endian, then big endian).

    The two copies must agree: Linux reads one, other systems may read the other, so a record
    whose copies differ would show each of them different data.
    """
    values = struct.unpack_from("<" + "I4x" * count, data, offset)
    if values != struct.unpack_from(">" + "4xI" * count, data, offset):
        raise DiscError(
            f"{what}: {field} gives different little- and big-endian values, so systems "
            "would read different data from it"
        )
    return values


def _skip_xa(area: bytes, name_len: int) -> bytes:
    """The System Use area past a CD-XA record (at its start, or after a name-sized pad)."""
    for offset in (0, name_len + name_len % 2):
        if area[offset + 6 : offset + 8] == b"XA" and len(area) >= offset + 14:
            return area[offset + 14 :]
    return area


def _read_joliet(reader: _TreeReader, root: _Record, what: str) -> _Record:
    """The Joliet tree, read whole (bounded like the ISO 9660 one); its root is returned."""
    stack: list[tuple[_Record, int]] = [(root, 1)]
    files = 0
    while stack:
        rec, depth = stack.pop()
        if depth > MAX_WALK_DEPTH:
            raise DiscError(f"{what}: Joliet directories nested deeper than {MAX_WALK_DEPTH}")
        rec.children = reader.directory(rec, "the Joliet tree", rock_ridge=False)
        for child in rec.children:
            if child.is_dot() or child.is_dotdot():
                continue
            if child.is_dir():
                reader.count_directory("the Joliet tree")
                stack.append((child, depth + 1))
            else:
                files += 1
                if files > MAX_ENTRIES:
                    raise DiscError(
                        f"{what}: its Joliet tree lists more than {MAX_ENTRIES:,} files"
                    )
    return root


class _IsoView:
    """The part of pycdlib's reading API that :meth:`IsoSource.view_problems` uses, answered
    from what :class:`IsoSource` read itself, bounded, when it opened the image.

    ``get_record(iso_path=...)`` knows the files of the listing (their Rock Ridge names
    included); ``get_record(joliet_path=...)`` walks the Joliet tree read at open.
    """

    def __init__(
        self,
        locations: dict[str, tuple[int, int]],
        rock_ridge: dict[str, bytes],
        joliet: _Record | None,
    ) -> None:
        self._locations = locations
        self._rock_ridge = rock_ridge
        self._joliet = joliet

    def has_joliet(self) -> bool:
        return self._joliet is not None

    def get_record(self, *, iso_path: str | None = None, joliet_path: str | None = None) -> _Record:
        if iso_path is not None:
            key = normalize_request(iso_path.lstrip("/"))
            if key not in self._locations:
                raise DiscError(f"{iso_path!r} is not a file of the ISO 9660 tree")
            offset, length = self._locations[key]
            ident = iso_path.rsplit("/", 1)[-1].encode("ascii", "replace")
            return _Record(ident, 0, offset // SECTOR, length, self._rock_ridge.get(key))
        if joliet_path is None or self._joliet is None:
            raise DiscError("no such record in the Joliet tree")
        rec = self._joliet
        for part in (p for p in joliet_path.split("/") if p):
            for child in rec.children:
                name = child.ident.decode("utf-16-be", "replace").split(";", 1)[0]
                if name.upper() == part.upper():
                    rec = child
                    break
            else:
                raise DiscError(f"{joliet_path!r} is not in the Joliet tree")
        return rec

    def close(self) -> None:
        self._joliet = None


@dataclass(frozen=True)
class IsoExtents:
    """Where the files of an ISO image lie, as :class:`IsoSource` read and checked them once:
    picklable, so worker processes read files without parsing the image's trees again."""

    path: str
    description: str
    size: int  # bytes of the image (a worker refuses an image that changed size)
    files: tuple[tuple[str, int, str, int], ...]  # (disc path, size, raw path, byte offset)


class ExtentSource(DiscSource):
    """The files of an ISO image listed by another process (:meth:`IsoSource.extents`)."""

    def __init__(self, extents: IsoExtents) -> None:
        super().__init__(extents.description, Path(extents.path))
        self._offsets: dict[str, int] = {}
        try:
            self._fp: BinaryIO | None = open(extents.path, "rb")  # noqa: SIM115 (close())
        except OSError as exc:
            raise DiscError(f"cannot open {self.description}: {exc.strerror}") from exc
        if self._fp.seek(0, io.SEEK_END) != extents.size:
            self.close()
            raise DiscError(f"{self.description} changed size while it was being checked")
        self._size = extents.size
        for path, size, raw_path, offset in extents.files:
            self._add(SourceEntry(path, size, raw_path))
            self._offsets[path] = offset
        self._finish_listing()

    def _extent(self, path: str) -> tuple[int, int, int, str]:
        """(descriptor, offset, length, name for messages) of ``path``'s extent, checked."""
        found = self.entry(path)
        if self._fp is None:
            raise DiscError(f"{self.description} is closed")
        offset = self._offsets[found.path]
        if offset + found.size > self._size:
            raise DiscError(
                f"{found.raw_path} on {self.description} lies beyond the end of the image "
                "(truncated or corrupt)"
            )
        return self._fp.fileno(), offset, found.size, f"{found.raw_path} on {self.description}"

    def open(self, path: str) -> BinaryIO:
        reader = _ExtentReader(*self._extent(path))
        return io.BufferedReader(reader, buffer_size=256 * 1024)

    def _read_start(self, path: str, count: int) -> bytes:
        fd, offset, length, name = self._extent(path)
        return _read_extent(fd, offset, length, count, name)

    def close(self) -> None:
        if self._fp is not None:
            fp, self._fp = self._fp, None
            fp.close()


class IsoSource(DiscSource):
    """An ISO 9660 image file or a block device holding one, read without mounting it."""

    def __init__(self, path: Path, *, kind: str) -> None:
        super().__init__(f"{kind} {path}", path)
        self._fp: BinaryIO | None = None
        # What view_problems reads the other name trees through: an _IsoView (the part of
        # pycdlib's API it uses, answered from the bounded reading below), once open.
        self._iso: Any = None
        self._locations: dict[str, tuple[int, int]] = {}
        self._rock_ridge: dict[str, bytes] = {}  # disc path -> its Rock Ridge name
        try:
            self._fp = open(path, "rb")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise DiscError(f"cannot open {self.description}: {exc.strerror}") from exc
        try:
            self._open()
        except DiscError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise DiscError(
                f"{self.description} is not a readable ISO 9660 image ({type(exc).__name__}: {exc})"
            ) from exc

    def _open(self) -> None:
        assert self._fp is not None
        self._size = self._fp.seek(0, io.SEEK_END)
        pvd, joliet = _check_volume_descriptors(self._fp, self._size, self.description)
        fd = self._fp.fileno()
        xa = pvd[1024:1032] == b"CD-XA001"
        reader = _TreeReader(fd, self._size, self.description, xa=xa)
        reader.count_directory("")
        stack: list[tuple[_Record, str, str, int]] = [
            (_root_record(pvd, self.description), "", "", 1)
        ]
        while stack:
            rec, raw_dir, disc_dir, depth = stack.pop()
            if depth > MAX_WALK_DEPTH:
                raise DiscError(
                    f"{self.description}: directories nested deeper than {MAX_WALK_DEPTH}"
                )
            children = reader.directory(rec, raw_dir, rock_ridge=True, root=depth == 1)
            for child in children:
                if child.is_dot() or child.is_dotdot():
                    continue
                is_dir = child.is_dir()
                raw, clean = _iso_component(
                    child.ident, is_dir=is_dir, where=raw_dir, what=self.description
                )
                raw_path = f"{raw_dir}/{raw}" if raw_dir else raw
                disc_path = f"{disc_dir}/{clean}" if disc_dir else clean
                if is_dir:
                    reader.count_directory(raw_path)
                    stack.append((child, raw_path, disc_path, depth + 1))
                elif child.symlink:
                    self._skip(raw_path, "Rock Ridge symbolic link, not followed")
                elif child.file_flags & _FLAG_ASSOCIATED:
                    self._skip(raw_path, "associated file, ignored")
                elif child.file_flags & _FLAG_MULTI_EXTENT:
                    raise DiscError(
                        f"{self.description}: {raw_path} is a multi-extent file (over 4 GiB), "
                        "which a patient disc never holds"
                    )
                else:
                    # The record's own claim: lengths past the end of the image are refused
                    # when the file is opened, not here.
                    self._add(SourceEntry(disc_path, child.length, raw_path))
                    self._locations[disc_path] = (child.extent * SECTOR, child.length)
                    if child.rock_ridge is not None:
                        self._rock_ridge[disc_path] = child.rock_ridge.name()
        joliet_root = None
        if joliet is not None:
            joliet_reader = _TreeReader(fd, self._size, self.description, xa=False)
            joliet_reader.count_directory("the Joliet tree")
            joliet_root = _read_joliet(
                joliet_reader, _root_record(joliet, self.description), self.description
            )
        self._iso = _IsoView(self._locations, self._rock_ridge, joliet_root)
        self._finish_listing()

    def view_problems(self) -> list[tuple[str, str]]:
        """Where the image's other name trees disagree with the ISO 9660 tree we read.

        Windows and 7-Zip show the Joliet tree, Linux mounts show Rock Ridge names. A forger
        can point a Joliet name at edited bytes while the ISO 9660 tree still holds the signed
        ones, so every Joliet file must be the same extent and length as the ISO 9660 file of
        the same name, and every Rock Ridge name must be its ISO 9660 name (ignoring case).
        Returns (path, problem) pairs; empty when the views agree.
        """
        problems: list[tuple[str, str]] = []
        by_location = {
            (offset // SECTOR, length): path for path, (offset, length) in self._locations.items()
        }
        iso = self._iso
        if iso is None:
            return problems
        # Rock Ridge alternate names in the ISO 9660 tree
        for path, raw in ((e.path, e.raw_path) for e in self._entries):
            try:
                record = iso.get_record(iso_path="/" + raw)
            except Exception:
                problems.append((path, "its directory record cannot be read back"))
                continue
            rock = getattr(record, "rock_ridge", None)
            name = rock.name() if rock is not None else b""
            if name and name.decode("utf-8", "replace").upper() != path.rsplit("/", 1)[-1]:
                problems.append((path, "its Rock Ridge name (what Linux shows) is different"))
        # Joliet tree
        if not iso.has_joliet():
            return problems
        seen: set[str] = set()
        stack: list[tuple[Any, str, int]] = [(iso.get_record(joliet_path="/"), "", 1)]
        while stack:
            rec, prefix, depth = stack.pop()
            if depth > MAX_WALK_DEPTH:
                problems.append((prefix, "Joliet directories nested too deep"))
                continue
            raws: dict[bytes, tuple[int, int]] | None = None
            for child in rec.children:
                if child is None or child.is_dot() or child.is_dotdot():
                    continue
                ident = bytes(child.file_identifier())
                name = ident.decode("utf-16-be", "replace").split(";", 1)[0].upper()
                path = f"{prefix}/{name}" if prefix else name
                if child.is_dir():
                    stack.append((child, path, depth + 1))
                    continue
                if raws is None:
                    raws = self._raw_records(rec)
                location = raws.get(ident)
                seen.add(path)
                if location is None or by_location.get(location) != path:
                    problems.append(
                        (path, "its Joliet entry (what Windows shows) points at other data")
                    )
        for path in sorted(set(self._locations) - seen):
            problems.append((path, "missing from the Joliet tree (what Windows shows)"))
        return problems

    def _raw_records(self, directory: Any) -> dict[bytes, tuple[int, int]]:
        """File identifier -> (extent, data length) as recorded in ``directory``'s extent.

        The records were read, bounded, when the image was opened (``directory.children``);
        the first record of a name counts, as before.
        """
        out: dict[bytes, tuple[int, int]] = {}
        for child in directory.children:
            if child is None:
                continue
            ident = bytes(child.file_identifier())
            out.setdefault(ident, (int(child.extent_location()), int(child.get_data_length())))
        return out

    def _extent(self, path: str) -> tuple[int, int, int, str]:
        """(descriptor, offset, length, name for messages) of ``path``'s extent, checked."""
        found = self.entry(path)
        if self._fp is None:
            raise DiscError(f"{self.description} is closed")
        offset, length = self._locations[found.path]
        if offset + length > self._size:
            raise DiscError(
                f"{found.raw_path} on {self.description} lies beyond the end of the image "
                "(truncated or corrupt)"
            )
        return self._fp.fileno(), offset, length, f"{found.raw_path} on {self.description}"

    def open(self, path: str) -> BinaryIO:
        reader = _ExtentReader(*self._extent(path))
        return io.BufferedReader(reader, buffer_size=256 * 1024)

    def _read_start(self, path: str, count: int) -> bytes:
        fd, offset, length, name = self._extent(path)
        return _read_extent(fd, offset, length, count, name)

    def extents(self) -> IsoExtents:
        """The listing as read and checked here, for :class:`ExtentSource` in a worker."""
        return IsoExtents(
            path=str(self.path),
            description=self.description,
            size=self._size,
            files=tuple(
                (e.path, e.size, e.raw_path, self._locations[e.path][0]) for e in self._entries
            ),
        )

    def close(self) -> None:
        if self._iso is not None:
            iso, self._iso = self._iso, None
            # closing a half-parsed image must not mask the original error
            with contextlib.suppress(Exception):
                iso.close()
        if self._fp is not None:
            fp, self._fp = self._fp, None
            fp.close()


# --------------------------------------------------------------------------- folder


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class FolderSource(DiscSource):
    """A folder (USB stick, mounted disc, copied tree). Links are never followed.

    Every open walks from the root descriptor one component at a time with ``O_NOFOLLOW``,
    so a directory swapped for a symbolic link after listing cannot redirect a read.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(f"folder {path}", path)
        self._root: int | None = None
        try:
            self._root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise DiscError(f"cannot open {self.description}: {exc.strerror}") from exc
        try:
            self._walk()
        except DiscError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise DiscError(f"cannot read {self.description}: {exc.strerror or exc}") from exc

    def _open_dir(self, parts: list[str]) -> int:
        assert self._root is not None
        fd = os.dup(self._root)
        try:
            for part in parts:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _walk(self) -> None:
        stack: list[list[str]] = [[]]
        while stack:
            parts = stack.pop()
            if len(parts) >= MAX_WALK_DEPTH:
                raise DiscError(f"{self.description}: folders nested deeper than {MAX_WALK_DEPTH}")
            fd = self._open_dir(parts)
            try:
                with os.scandir(fd) as it:
                    children = sorted(it, key=lambda e: e.name)
                for child in children:
                    raw_path = "/".join([*parts, child.name])
                    st = child.stat(follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        self._skip(raw_path, "symbolic link, not followed")
                    elif stat.S_ISDIR(st.st_mode):
                        stack.append([*parts, child.name])
                    elif stat.S_ISREG(st.st_mode):
                        self._add(SourceEntry(raw_path.upper(), st.st_size, raw_path))
                    else:
                        self._skip(raw_path, "special file (device, pipe or socket), not read")
            finally:
                os.close(fd)
        self._finish_listing()

    def open(self, path: str) -> BinaryIO:
        found = self.entry(path)
        if self._root is None:
            raise DiscError(f"{self.description} is closed")
        parts = found.raw_path.split("/")
        try:
            dir_fd = self._open_dir(parts[:-1])
            try:
                fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise DiscError(
                f"cannot open {found.raw_path} on {self.description}: {exc.strerror} "
                "(changed since it was listed, or a link)"
            ) from exc
        return _regular_file(fd, f"{found.raw_path} on {self.description}")

    def close(self) -> None:
        if self._root is not None:
            fd, self._root = self._root, None
            os.close(fd)


class FileSource(DiscSource):
    """One DICOM file given on its own (an image sent by e-mail, one file of an export).

    It is the only entry, under its own name; it is opened without following links.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(f"file {path}", path)
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError as exc:
            raise DiscError(f"cannot read {self.description}: {exc.strerror}") from exc
        name = path.name
        if not name or "/" in name or "\\" in name or "\x00" in name:
            raise DiscError(f"cannot read {self.description}: unusable file name")
        self._add(SourceEntry(name.upper(), st.st_size, name))
        self._finish_listing()

    def open(self, path: str) -> BinaryIO:
        self.entry(path)
        try:
            fd = os.open(self.path, _FILE_FLAGS)
        except OSError as exc:
            raise DiscError(f"cannot open {self.description}: {exc.strerror}") from exc
        return _regular_file(fd, self.description)

    def close(self) -> None:
        pass


def _regular_file(fd: int, what: str) -> BinaryIO:
    """``fd`` (opened non-blocking, so a FIFO cannot hang the open) as a blocking binary
    stream; :class:`DiscError` and ``fd`` closed when it is not a regular file."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DiscError(f"{what} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


_VOLUME_MARKS = (b"CD001", b"BEA01", b"NSR02", b"NSR03", b"TEA01", b"BOOT2")


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file ("DICM" after the 128-byte preamble) that is nothing else.

    A file that is also a disc image (an ISO 9660 or UDF volume descriptor in sectors 16-31,
    where a DICOM file's first element can hide one) is refused: which of its two readings
    was meant cannot be told, and each can show other images.
    """
    try:
        with open(path, "rb") as fp:
            head = fp.read(16 * SECTOR + 16 * SECTOR)
    except OSError:
        return False
    if head[128:132] != b"DICM":
        return False
    for sector in range(16, 32):
        if head[sector * SECTOR + 1 : sector * SECTOR + 6] in _VOLUME_MARKS:
            raise DiscError(
                f"{path} is both a DICOM file and a disc image (a volume descriptor in "
                f"sector {sector}): refused, since each reading can show other images. "
                "Ask the sender for the disc or the image on its own"
            )
    return True


# --------------------------------------------------------------------------- entry point


def open_source(path: Path) -> DiscSource:
    """Open a received disc: an ISO image file, a block device (e.g. /dev/sr0) or a folder;
    or one DICOM file on its own (checked as a loose file).

    Raises :class:`DiscError` (``check`` exit 3) if the path is missing, unreadable, not an
    ISO 9660 image, or a malformed one.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DiscError(
            f"{path} does not exist; give an ISO image, a disc drive or a folder"
        ) from None
    except OSError as exc:
        raise DiscError(f"cannot access {path}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        return FolderSource(path)
    if stat.S_ISREG(st.st_mode):
        if _is_dicom_file(path):
            return FileSource(path.resolve())  # a link given by name is the user's choice
        return IsoSource(path, kind="ISO image")
    if stat.S_ISBLK(st.st_mode):
        return IsoSource(path, kind="device")
    raise DiscError(f"{path} is neither an ISO image, a disc drive nor a folder")


__all__ = [
    "MAX_DIRECTORIES",
    "MAX_ENTRIES",
    "MAX_TREE_BYTES",
    "MAX_WALK_DEPTH",
    "DiscSource",
    "ExtentSource",
    "FileSource",
    "FolderSource",
    "IsoExtents",
    "IsoSource",
    "SkippedEntry",
    "SourceEntry",
    "normalize_request",
    "open_source",
]
