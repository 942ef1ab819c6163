"""Medium capacities and the "does it fit" check.

Capacities are user-data bytes of recordable media in 2048-byte sectors (what an ISO 9660
image may occupy), not the marketing figure:

* CD-R 80 min: 360,000 sectors = 737,280,000 bytes ("700 MB").
* DVD-R single layer: 2,295,104 sectors = 4,700,372,992 bytes ("4.7 GB").
* BD-R single layer: 12,219,392 sectors = 25,025,314,816 bytes ("25 GB").
* USB: no fixed limit; pass the free space of the stick as ``capacity`` to check it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from discmaker.errors import TooLargeError, UsageError

SECTOR = 2048


class Medium(enum.Enum):
    """A target medium; ``capacity`` is its user-data size in bytes, None if unbounded."""

    CD = ("CD", 737_280_000)
    DVD = ("DVD", 4_700_372_992)
    BD = ("BD", 25_025_314_816)
    USB = ("USB", None)

    def __init__(self, label: str, capacity: int | None) -> None:
        self.label = label
        self.capacity = capacity


_ORDER = (Medium.CD, Medium.DVD, Medium.BD)

# Fixed part of an image: 16 system-area sectors, PVD, Joliet SVD, terminator, pycdlib's
# version descriptor, and generous slack for Rock Ridge ER/CE areas at the root.
_FIXED_SECTORS = 16 + 4 + 8
# Upper bounds per directory record (ISO 9660 records are at most 255 bytes, Rock Ridge
# entries included; Joliet records hold a UCS-2 name of at most 64 characters).
_ISO_RECORD = 255
_JOLIET_RECORD = 33 + 2 * 64 + 1
# Path table entry upper bound (8 bytes + name up to 8 in ISO, up to 128 bytes in Joliet).
_PT_ENTRY = 8 + 128


def _sectors(n: int) -> int:
    return -(-n // SECTOR)


def estimate_iso_size(file_sizes: Iterable[int], n_dirs: int) -> int:
    """Upper bound, in bytes (a multiple of 2048), of the ISO image pycdlib will write.

    ``n_dirs`` counts directories other than the root. Conservative on purpose: every file
    rounds up to whole sectors (an empty file counts one), every directory holds at least one
    sector in each of the ISO and Joliet trees, records are taken at their maximum size and
    a sector may waste up to one record of space, and each directory gets a Rock Ridge
    continuation sector.
    """
    if n_dirs < 0:
        raise UsageError("number of directories cannot be negative")
    n_files = 0
    data = 0
    for size in file_sizes:
        if size < 0:
            raise UsageError("file size cannot be negative")
        n_files += 1
        data += max(1, _sectors(size))
    dirs = n_dirs + 1  # the root
    # Each directory: '.' and '..' records plus one record per child, in each tree.
    records = n_files + n_dirs + 2 * dirs
    iso_dir = 2 * dirs + _sectors(records * _ISO_RECORD * SECTOR // (SECTOR - _ISO_RECORD))
    joliet_dir = 2 * dirs + _sectors(records * _JOLIET_RECORD * SECTOR // (SECTOR - _JOLIET_RECORD))
    ce = dirs + 1
    # Four path tables (L and M for ISO and Joliet), each padded to whole sectors.
    path_tables = 4 * (_sectors(dirs * _PT_ENTRY) + 1)
    total = _FIXED_SECTORS + data + iso_dir + joliet_dir + ce + path_tables
    return total * SECTOR


def _human(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"


def check_fits(estimated: int, medium: Medium, *, capacity: int | None = None) -> None:
    """Raise :class:`TooLargeError` if ``estimated`` bytes exceed the medium.

    ``capacity`` overrides the medium's size (e.g. a USB stick's free space, a smaller disc).
    """
    limit = capacity if capacity is not None else medium.capacity
    if limit is None or estimated <= limit:
        return
    bigger = [m.label for m in _ORDER if m.capacity is not None and m.capacity >= estimated]
    if medium is Medium.USB:
        hint = "use a larger USB stick or split the studies over several"
    elif bigger and bigger[0] != medium.label:
        hint = f"use a {bigger[0]} instead, or split the studies over several discs"
    else:
        hint = "split the studies over several discs or use a USB stick"
    raise TooLargeError(
        f"the disc needs about {_human(estimated)} ({estimated:,} bytes) but a {medium.label} "
        f"holds {_human(limit)} ({limit:,} bytes); {hint}"
    )


__all__ = ["SECTOR", "Medium", "check_fits", "estimate_iso_size"]
