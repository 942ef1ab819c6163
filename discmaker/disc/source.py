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

ISO images are read with pycdlib from a read-only file object; nothing is mounted. Names are
the ISO 9660 ones (what DICOM File IDs map to) with the ``;1`` version and a trailing ``.``
stripped; the Joliet and Rock Ridge names are not used.
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

import pycdlib

from discmaker.errors import DiscError

SECTOR = 2048
#: Deeper trees than this are refused (DICOM allows 8 levels; this only bounds the work).
MAX_WALK_DEPTH = 64
#: More entries than this are refused (bounds memory on a hostile image).
MAX_ENTRIES = 1_000_000
_MAX_PATH_TABLE = 64 * 1024 * 1024
_MAX_DESCRIPTORS = 64
_MAX_DIRECTORY = 16 * 1024 * 1024
_FLAG_MULTI_EXTENT = 0x80
_FLAG_ASSOCIATED = 0x04


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

    def __init__(self, description: str) -> None:
        self.description = description
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
        with self.open(path) as fp:
            data = fp.read(limit + 1)
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
        try:
            data = os.pread(self._fd, want, self._offset + self._pos)
        except OSError as exc:
            raise DiscError(f"cannot read {self._name}: {exc.strerror}") from exc
        if not data:
            raise DiscError(f"{self._name} is truncated: the image ends inside it")
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _check_volume_descriptors(fp: BinaryIO, size: int, what: str) -> None:
    """Sanity-check the ISO 9660 descriptors before pycdlib sees them."""
    if size < 17 * SECTOR:
        raise DiscError(f"{what} is not an ISO 9660 image (only {size:,} bytes)")
    fp.seek(16 * SECTOR)
    pvd = fp.read(SECTOR)
    if len(pvd) != SECTOR or pvd[1:6] != b"CD001":
        raise DiscError(f"{what} is not an ISO 9660 image (no CD001 volume descriptor)")
    if pvd[0] != 1:
        raise DiscError(f"{what}: the first volume descriptor is not a primary one")
    space = struct.unpack_from("<I", pvd, 80)[0]
    block = struct.unpack_from("<H", pvd, 128)[0]
    path_table = struct.unpack_from("<I", pvd, 132)[0]
    if block != SECTOR:
        raise DiscError(f"{what}: logical block size {block} is not supported (only 2048)")
    if space * SECTOR > size:
        raise DiscError(
            f"{what} is truncated: the volume declares {space * SECTOR:,} bytes "
            f"but only {size:,} are present"
        )
    if path_table > min(_MAX_PATH_TABLE, size):
        raise DiscError(f"{what}: implausible path table size {path_table:,}")
    for n in range(17, 16 + _MAX_DESCRIPTORS):
        fp.seek(n * SECTOR)
        desc = fp.read(7)
        if len(desc) != 7 or desc[1:6] != b"CD001":
            raise DiscError(f"{what}: malformed volume descriptor set (sector {n})")
        if desc[0] == 255:
            return
    raise DiscError(f"{what}: no volume descriptor set terminator")


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


class IsoSource(DiscSource):
    """An ISO 9660 image file or a block device holding one, read with pycdlib (no mount)."""

    def __init__(self, path: Path, *, kind: str) -> None:
        super().__init__(f"{kind} {path}")
        self._fp: BinaryIO | None = None
        self._iso: Any = None
        self._locations: dict[str, tuple[int, int]] = {}
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
        _check_volume_descriptors(self._fp, self._size, self.description)
        self._fp.seek(0)
        iso = pycdlib.PyCdlib()
        iso.open_fp(self._fp)
        self._iso = iso
        root = iso.get_record(iso_path="/")
        stack: list[tuple[Any, str, str, int]] = [(root, "", "", 1)]
        while stack:
            rec, raw_dir, disc_dir, depth = stack.pop()
            if depth > MAX_WALK_DEPTH:
                raise DiscError(
                    f"{self.description}: directories nested deeper than {MAX_WALK_DEPTH}"
                )
            raws: dict[bytes, tuple[int, int]] | None = None
            for child in rec.children:
                if child is None or child.is_dot() or child.is_dotdot():
                    continue
                is_dir = bool(child.is_dir())
                raw, clean = _iso_component(
                    child.file_identifier(), is_dir=is_dir, where=raw_dir, what=self.description
                )
                raw_path = f"{raw_dir}/{raw}" if raw_dir else raw
                disc_path = f"{disc_dir}/{clean}" if disc_dir else clean
                if is_dir:
                    stack.append((child, raw_path, disc_path, depth + 1))
                elif child.is_symlink():
                    self._skip(raw_path, "Rock Ridge symbolic link, not followed")
                elif child.file_flags & _FLAG_ASSOCIATED:
                    self._skip(raw_path, "associated file, ignored")
                elif child.file_flags & _FLAG_MULTI_EXTENT:
                    raise DiscError(
                        f"{self.description}: {raw_path} is a multi-extent file (over 4 GiB), "
                        "which a patient disc never holds"
                    )
                else:
                    # The record's own claim, read from the image: pycdlib quietly clamps
                    # lengths that run past the end of the image to the image size.
                    if raws is None:
                        raws = self._raw_records(rec)
                    extent, length = raws.get(child.file_identifier(), (-1, -1))
                    if extent < 0:
                        raise DiscError(f"{self.description}: inconsistent record for {raw_path}")
                    offset = extent * SECTOR
                    self._add(SourceEntry(disc_path, length, raw_path))
                    self._locations[disc_path] = (offset, length)
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
        """File identifier -> (extent, data length) as recorded in ``directory``'s extent."""
        assert self._fp is not None
        start = int(directory.extent_location()) * SECTOR
        length = min(int(directory.get_data_length()), _MAX_DIRECTORY, self._size - start)
        data = os.pread(self._fp.fileno(), max(length, 0), start)
        out: dict[bytes, tuple[int, int]] = {}
        pos = 0
        while pos + 33 < len(data):
            rec_len = data[pos]
            if rec_len == 0:  # records do not cross sectors: skip to the next one
                pos = (pos // SECTOR + 1) * SECTOR
                continue
            if rec_len < 34 or pos + rec_len > len(data):
                raise DiscError(f"{self.description}: malformed directory record")
            extent, size = struct.unpack_from("<I4xI", data, pos + 2)
            name_len = data[pos + 32]
            out.setdefault(bytes(data[pos + 33 : pos + 33 + name_len]), (extent, size))
            pos += rec_len
        return out

    def open(self, path: str) -> BinaryIO:
        found = self.entry(path)
        if self._fp is None:
            raise DiscError(f"{self.description} is closed")
        offset, length = self._locations[found.path]
        if offset + length > self._size:
            raise DiscError(
                f"{found.raw_path} on {self.description} lies beyond the end of the image "
                "(truncated or corrupt)"
            )
        name = f"{found.raw_path} on {self.description}"
        reader = _ExtentReader(self._fp.fileno(), offset, length, name)
        return io.BufferedReader(reader, buffer_size=256 * 1024)

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
        super().__init__(f"folder {path}")
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
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DiscError(f"{found.raw_path} on {self.description} is not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def close(self) -> None:
        if self._root is not None:
            fd, self._root = self._root, None
            os.close(fd)


# --------------------------------------------------------------------------- entry point


def open_source(path: Path) -> DiscSource:
    """Open a received disc: an ISO image file, a block device (e.g. /dev/sr0) or a folder.

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
        return IsoSource(path, kind="ISO image")
    if stat.S_ISBLK(st.st_mode):
        return IsoSource(path, kind="device")
    raise DiscError(f"{path} is neither an ISO image, a disc drive nor a folder")


__all__ = [
    "MAX_ENTRIES",
    "MAX_WALK_DEPTH",
    "DiscSource",
    "FolderSource",
    "IsoSource",
    "SkippedEntry",
    "SourceEntry",
    "normalize_request",
    "open_source",
]
