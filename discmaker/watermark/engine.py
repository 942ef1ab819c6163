"""Reversible watermark engine on one 2-D plane of stored pixel values.

Two-pass rhombus (checkerboard) prediction-error histogram shifting with complexity
selection (Sachnev et al. 2009 family). Every changed stored value moves by exactly 1, unused
high bits of each raw word are preserved, padding values are never touched and no value
leaves the stored range. Each region (a grid box) is an independent sub-image:

* ring 0 (the box's outer 1-pixel border) carries a side-info header and a location map in
  the LSBs of its usable pixels; their original LSBs ride at the front of the embedded stream;
* ring 1 is predictor-only;
* targets are the interior (rows/cols 2..h-3). Pass 1 embeds into "black" cells ((i+j) even,
  box-relative) predicted from the four white neighbours (floor of the mean); pass 2 embeds
  into white cells predicted from the already modified black cells. The decoder undoes pass 2
  and then pass 1.

Region format v4 (written by default) adds a ROI rule to the header (a target is selected only
when its four neighbours lie on the background side of a level the header carries), fills the
ring-0 header into the ring's darkest (or brightest) pixels first and guards only predictions
next to a range end; format v3 regions are still read (and written with ``version=3``).

Pure numpy, no I/O. See docs/WATERMARK.md for the bitstream layout.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from discmaker.errors import InputError

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BITS",
    "HEADER_BITS_V4",
    "ROI_BITS",
    "THRESHOLDS",
    "T_MAX",
    "Box",
    "PixelFormat",
    "Roi",
    "UnsupportedPixelsError",
    "WatermarkCapacityError",
    "default_grid",
    "embed_region",
    "extract_region",
    "grid_boxes",
    "header_ring",
    "header_ring_head",
    "region_capacity",
    "to_stored",
    "usable_ring",
]

I32 = npt.NDArray[np.int32]
Bool = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]
RawPlane = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
_G = TypeVar("_G", bound=np.generic)

_MAGIC = 0x69  # 7-bit magic of format v3; the 8th bit of the first byte flags a location map
_MAGIC4 = 0x16  # format v4 (all 7 bits differ from v3's)
_MAGICS = {3: _MAGIC, 4: _MAGIC4}
_READINGS = ((3, False), (4, False), (4, True))  # (format, header on the bright ring pixels)
FORMAT_VERSION = 4
"""Region format written by default (v3 is still read, and written on request)."""
HEADER_BITS = 24  # ring-0 LSBs: magic 7 + location-map flag 1, T1 code 8, T2 code 8
_MODE_BITS = 2  # v4: ROI mode after the T codes (0 all targets, 1 dark, 2 bright)
_GUARD_BITS = 2  # v4: then the guard code (guard = `_GUARD_CODES`[code])
_LEVEL_BITS = 16  # v4, modes 1 and 2: then the level, as (level - vmin)
HEADER_BITS_V4 = HEADER_BITS + _MODE_BITS + _GUARD_BITS
"""Fixed ring-0 header bits of a v4 region without a ROI rule."""
ROI_BITS = _LEVEL_BITS
"""Header bits a ROI rule (its level) adds to a v4 region's header."""
_LOC_LEN_BITS = 16  # location-map length, present only when the flag is set
_CRC_BITS = 24  # CRC at the front of the embedded stream (after the saved ring LSBs)
_EG_K = 4  # payload byte count: order-4 Exp-Golomb code (7 bits for 16..47 bytes)
_N_MAX = 0xFFFF  # location-map length limit
THRESHOLDS = np.array(
    [*range(64), *((16 + m) << e for e in range(2, 12) for m in range(16))], np.int32
)
"""Representable thresholds (read-only): 0..63 exactly, then 16 steps per octave to 31 << 11."""
THRESHOLDS.setflags(write=False)
_THRESHOLD_LIST: list[int] = THRESHOLDS.tolist()  # (for Python-level lookups)
T_MAX = int(THRESHOLDS[-1])
"""Complexity is clipped to this (a threshold that selects everything)."""
_T_UNUSED = 0xFF  # T code of an unused pass
_BOX_TARGET = 128  # default box edge in pixels
_GRID_MAX = 8  # at most 8 x 8 boxes per frame (keeps the signed block small)
_BOX_MIN = 36  # small frames: 2 boxes per axis while boxes keep this many px
_K_GUARD = 4  # predictions this close to a range end or padding are not selected (v3)
_GUARD_CODES = (1, 4, 16, 64)  # v4: the guard each region's header names
_V4_GUARDS = _GUARD_CODES  # tried in this order: 1 lets flat dark backgrounds (MR/US/NM near
# 0) carry; the larger ones avoid the long location map of a noisy background saturated at a
# range end (every target there that would move out of range is frozen and needs a flag)


class WatermarkCapacityError(InputError):
    """The region or frame is too small or too flat to carry the watermark."""

    def __init__(self, capacity_bits: int, needed_bits: int, where: str = "region") -> None:
        self.capacity_bits = int(capacity_bits)
        self.needed_bits = int(needed_bits)
        self.shortfall_bits = max(0, self.needed_bits - self.capacity_bits)
        super().__init__(
            f"{where} too small or too flat for the watermark: capacity {self.capacity_bits} "
            f"bits, needs {self.needed_bits} bits (short by {self.shortfall_bits} bits)"
        )


class UnsupportedPixelsError(InputError):
    """The Pixel Data cannot carry the reversible watermark (layout or encoding)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Pixel Data (7FE0,0010) cannot be watermarked: {reason}")


@dataclass(frozen=True)
class PixelFormat:
    bits_stored: int
    signed: bool
    padding: tuple[int, int] | None = None  # inclusive range of stored values never touched

    def __post_init__(self) -> None:
        if not 1 <= self.bits_stored <= 16:
            raise UnsupportedPixelsError(f"Bits Stored {self.bits_stored} is not in 1..16")

    @property
    def mask(self) -> int:
        return (1 << self.bits_stored) - 1

    @property
    def vmin(self) -> int:
        return -(1 << (self.bits_stored - 1)) if self.signed else 0

    @property
    def vmax(self) -> int:
        return (1 << (self.bits_stored - 1)) - 1 if self.signed else self.mask


@dataclass(frozen=True)
class Roi:
    """v4 target rule: a target is selected only when all four neighbours are ``<= level``
    (``mode`` 1, dark background) or ``>= level`` (``mode`` 2, bright background).

    A rule on the neighbours, like the complexity: the decoder sees them as the encoder did
    (pass 1's neighbours are restored before pass 1 is undone), so it needs only the header.
    """

    mode: int
    level: int

    def __post_init__(self) -> None:
        if self.mode not in (1, 2):
            raise ValueError(f"ROI mode {self.mode} is not 1 (dark) or 2 (bright)")


def _side_bits(version: int, roi: Roi | None) -> int:
    """Fixed ring-0 header bits of a region (without the location map)."""
    if version == 3:
        return HEADER_BITS
    return HEADER_BITS_V4 + (ROI_BITS if roi is not None else 0)


@dataclass(frozen=True)
class Box:
    row0: int
    col0: int
    row1: int
    col1: int  # half-open

    @property
    def shape(self) -> tuple[int, int]:
        return (self.row1 - self.row0, self.col1 - self.col0)

    def slices(self) -> tuple[slice, slice]:
        return (slice(self.row0, self.row1), slice(self.col0, self.col1))


def neighbour_range(u: Any, d: Any, lf: Any, rt: Any) -> tuple[Any, Any]:
    """The lowest and highest of each target's four neighbours (new arrays)."""
    lo = np.minimum(u, d)
    np.minimum(lo, lf, out=lo)
    np.minimum(lo, rt, out=lo)
    hi = np.maximum(u, d)
    np.maximum(hi, lf, out=hi)
    np.maximum(hi, rt, out=hi)
    return lo, hi


def complexity(u: Any, d: Any, lf: Any, rt: Any, fmt: PixelFormat) -> Any:
    """Local complexity of a target: the spread (max - min) of its four neighbours.

    The same function for the embedder, the decoder and the carrier planner, so that all
    three rank targets identically. Capped at T_MAX for 16-bit data (codes must fit).
    """
    lo, hi = neighbour_range(u, d, lf, rt)
    hi -= lo
    if fmt.bits_stored >= 16:
        np.minimum(hi, T_MAX, out=hi)
    return hi


def _splits(n: int, parts: int) -> list[int]:
    return [n * i // parts for i in range(parts + 1)]


def default_grid(shape: tuple[int, int]) -> tuple[int, int]:
    """Boxes of about 128 px, at most 8 per axis.

    Small frames get 2 boxes per axis while the boxes keep >= 36 px (128 x 128: 2 x 2 boxes of
    64 px; a smaller ring could not hold the 128-bit header), and at least 2 boxes in all when
    the frame has >= 32 px on a side (64 x 64: 2 x 1).
    """
    rows, cols = shape
    gr = min(_GRID_MAX, max(1, round(rows / _BOX_TARGET)))
    gc = min(_GRID_MAX, max(1, round(cols / _BOX_TARGET)))
    if gr == 1 and rows >= 2 * _BOX_MIN:
        gr = 2
    if gc == 1 and cols >= 2 * _BOX_MIN:
        gc = 2
    if gr * gc < 2:
        if rows >= cols and rows >= 32:
            gr = 2
        elif cols >= 32:
            gc = 2
    return (gr, gc)


def grid_boxes(shape: tuple[int, int], *, grid: tuple[int, int]) -> list[Box]:
    """Row-major boxes of a ``grid`` over a frame of ``shape``; edges differ by at most 1 px."""
    key = (*shape, *grid)
    if len(key) == 4 and all(type(v) is int for v in key):  # (plain ints: made once, shared)
        return list(_grid_boxes(*key))
    return _make_grid_boxes(shape, grid)


@functools.lru_cache(maxsize=64)
def _grid_boxes(rows: int, cols: int, gr: int, gc: int) -> tuple[Box, ...]:
    """`grid_boxes` of plain ints, kept (boxes are frozen: sharing them is safe)."""
    return tuple(_make_grid_boxes((rows, cols), (gr, gc)))


def _make_grid_boxes(shape: tuple[int, int], grid: tuple[int, int]) -> list[Box]:
    rs = _splits(shape[0], grid[0])
    cs = _splits(shape[1], grid[1])
    return [Box(rs[i], cs[j], rs[i + 1], cs[j + 1]) for i in range(grid[0]) for j in range(grid[1])]


# ---------------------------------------------------------------------------------------------
# stored values <-> raw words


@functools.lru_cache(maxsize=16)
def _iinfo(dtype: Any) -> np.iinfo[Any]:
    """`np.iinfo`, made once per type (asked for many times per frame)."""
    return np.iinfo(dtype)


def to_stored(raw: RawPlane, fmt: PixelFormat) -> I32:
    """The stored values of raw words (high bits dropped, sign-extended when signed)."""
    v: I32 = _stored_as(raw, fmt, np.int32)
    return v


def _stored_as(raw: RawPlane, fmt: PixelFormat, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """`to_stored` in ``dtype`` (a new array), computed in the raw words' width: the high bits
    shifted out at the top, and for signed values shifted back arithmetically (sign-extended)
    in the signed type of that width; fewer and narrower passes than masking in ``dtype``."""
    width = 8 * raw.dtype.itemsize
    bits = fmt.bits_stored
    if raw.dtype not in (np.uint8, np.uint16) or bits > width:  # (not raw words: as before)
        v = raw.astype(dtype) & fmt.mask
        if fmt.signed:
            sb = 1 << (bits - 1)
            v ^= sb
            v -= sb
        return v
    signed = np.dtype(f"i{raw.dtype.itemsize}")
    if not fmt.signed:
        low = raw & fmt.mask  # (a new array)
        if bits < width and np.dtype(dtype) == signed:
            return low.view(signed)  # (values below the signed type's max)
        return low.astype(dtype)
    up = np.left_shift(raw, width - bits).view(signed)  # (a new array)
    up >>= width - bits
    return up if np.dtype(dtype) == signed else up.astype(dtype)


def _write_raw(raw: RawPlane, stored: I32, fmt: PixelFormat) -> None:
    """Put ``stored`` values into the raw words (in place), keeping their unused high bits.

    In the words' own width: a value cast to it keeps its low bits (two's complement, modulo
    the width), which are the bits a word stores."""
    if raw.dtype not in (np.uint8, np.uint16):  # (not raw words: as before)
        keep = ~fmt.mask & 0xFFFF
        raw[...] = (raw.astype(np.int32) & keep) | (stored & fmt.mask)
        return
    words: npt.NDArray[Any] = raw
    low: npt.NDArray[Any] = stored.astype(raw.dtype)
    if fmt.bits_stored >= 8 * raw.dtype.itemsize:
        words[...] = low
        return
    low &= fmt.mask
    words &= ~fmt.mask & _iinfo(raw.dtype).max
    words |= low


def _in_pad(x: I32, fmt: PixelFormat) -> Bool | None:
    if fmt.padding is None:
        return None
    lo, hi = fmt.padding
    if lo == hi:
        eq: Bool = x == lo
        return eq
    rng: Bool = _unsigned(np.subtract(x, lo)) <= hi - lo  # lo <= x <= hi
    return rng


def _sign(e: I32) -> I32:
    """+1 where e >= 0, -1 where e < 0: the side a target moves to."""
    sign = e >> (8 * e.itemsize - 1)
    sign |= 1
    return sign


def _unsigned(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``x`` (int16 or int32) viewed as the unsigned type of its size: lo <= x <= hi is then
    one compare, (x - lo) as unsigned <= hi - lo."""
    return x.view(np.uint16 if x.dtype.itemsize == 2 else np.uint32)


def _moved_invalid(
    c: I32, sign: I32, fmt: PixelFormat, span: tuple[int, int] | None = None
) -> Bool:
    """Per target: c + ``sign`` (`_sign`) is out of range or padding (a fresh array).
    ``span``: bounds of ``c`` when the caller knows them (else found)."""
    x = c + sign
    if x.size == 0:
        return np.zeros(x.shape, bool)
    if span is None:
        xmin, xmax = int(x.min()), int(x.max())
    else:
        xmin, xmax = span[0] - 1, span[1] + 1
    bad: Bool | None = None
    if xmin < fmt.vmin:
        bad = x < fmt.vmin
    if xmax > fmt.vmax:
        hi = x > fmt.vmax
        bad = hi if bad is None else bad | hi
    if fmt.padding is not None and xmax >= fmt.padding[0] and xmin <= fmt.padding[1]:
        pad = _in_pad(x, fmt)
        assert pad is not None
        bad = pad if bad is None else bad | pad
    return np.zeros(x.shape, bool) if bad is None else bad


# ---------------------------------------------------------------------------------------------
# ring 0


@functools.lru_cache(maxsize=64)
def _ring_index(h: int, w: int) -> npt.NDArray[np.intp]:
    """Flat indices of ring 0 in a fixed clockwise order starting at the top-left corner."""
    top = np.arange(w)
    right = np.arange(1, h) * w + (w - 1)
    bottom = (h - 1) * w + np.arange(w - 2, -1, -1)
    left = np.arange(h - 2, 0, -1) * w
    idx = np.concatenate([top, right, bottom, left]).astype(np.intp)
    idx.setflags(write=False)
    return idx


def usable_ring(a: I32, fmt: PixelFormat) -> npt.NDArray[np.intp]:
    """Ring-0 pixels whose LSB may carry side info (neither s nor s^1 is padding)."""
    h, w = a.shape
    idx = _ring_index(h, w)
    if fmt.padding is None:
        return idx
    v = a.ravel()[idx]
    pad = _in_pad(v, fmt)
    pad1 = _in_pad(v ^ 1, fmt)
    assert pad is not None and pad1 is not None
    return idx[~(pad | pad1)]


def header_ring(
    a: I32, fmt: PixelFormat, version: int = FORMAT_VERSION, *, bright: bool = False
) -> npt.NDArray[np.intp]:
    """Usable ring-0 pixels in the order the side info fills them.

    v3: clockwise from the top-left corner. v4: the ring's darkest values first (``bright``:
    its brightest; by s >> 1, clockwise among equals), so the header lands on the background
    (air, collimation) of a box that also holds anatomy. s >> 1 does not change when the
    header replaces an LSB: the decoder finds the same order (it tries both).
    """
    ring = usable_ring(a, fmt)
    if version == 3 or ring.size == 0:
        return ring
    half = a.ravel()[ring] >> 1
    order = np.argsort(-half if bright else half, kind="stable")
    out: npt.NDArray[np.intp] = ring[order]
    return out


def _order_head(half: I32, n: int, bright: bool) -> npt.NDArray[np.intp]:
    """``np.argsort(-half if bright else half, kind="stable")[:n]`` without sorting it all: the
    keys (value, position) are unique, so the n smallest, sorted, are the stable order's head."""
    size = half.size
    if n >= size or size < 1024:  # below ~1000 pixels sorting them all is as fast
        return np.argsort(-half if bright else half, kind="stable")[:n]
    key = (-half if bright else half).astype(np.int64)
    key *= size
    key += np.arange(size)
    part = np.argpartition(key, n - 1)[:n]
    head: npt.NDArray[np.intp] = part[np.argsort(key[part])]
    return head


def header_ring_head(
    a: I32, fmt: PixelFormat, n: int, *, bright: bool = False
) -> npt.NDArray[np.intp]:
    """``header_ring(a, fmt, bright=bright)[:n]`` (format v4), without sorting the whole ring
    and reading only ring 0 of ``a`` (which may be a strided view)."""
    h, w = a.shape
    ring = _ring_index(h, w)
    rr, cc = _ring_rc(h, w)
    v = a[rr, cc]
    if fmt.padding is not None:  # `usable_ring`
        pad = _in_pad(v, fmt)
        pad1 = _in_pad(v ^ 1, fmt)
        assert pad is not None and pad1 is not None
        keep = ~(pad | pad1)
        ring, v = ring[keep], v[keep]
    if ring.size == 0:
        return ring
    out: npt.NDArray[np.intp] = ring[_order_head(v >> 1, n, bright)]
    return out


def _row_counts(m: Bool) -> list[int]:
    """``np.count_nonzero(m, 1).tolist()`` of a 2-D bool array (one reduction: quicker)."""
    counts: list[int] = np.add.reduce(m, axis=1, dtype=np.intp).tolist()
    return counts


def _ring_keys(vals: I32, usable: Bool | None, fmt: PixelFormat, order: int) -> npt.NDArray[Any]:
    """Per ring pixel of a stack of rings (boxes, ring), a unique key whose ascending order is a
    reading's: ``order`` 0 clockwise (v3), 1 darkest first, 2 brightest first (`header_ring`,
    stable: clockwise among equals); pixels that are not usable (`usable_ring`) come last."""
    size = vals.shape[1]
    # ranks < 2^15, unusable 2^16: int32 keys unless the ring is longer than 32767 pixels
    dtype = np.int32 if size < 1 << 15 else np.int64
    if order == 0:
        rank = np.zeros(vals.shape, dtype)
    elif order == 2:
        rank = ((fmt.vmax >> 1) - (vals >> 1)).astype(dtype)
    else:
        rank = ((vals >> 1) - (fmt.vmin >> 1)).astype(dtype)
    if usable is not None:
        rank[~usable] = 1 << 16  # past every rank
    rank *= size
    rank += np.arange(size, dtype=dtype)
    key: npt.NDArray[Any] = rank
    return key


@functools.lru_cache(maxsize=16)
def _ring_flat(cols: int, boxes: tuple[Box, ...]) -> npt.NDArray[np.intp]:
    """Flat indices (boxes, ring) of ring 0 of boxes of one shape in a plane of ``cols``
    columns, clockwise (`_ring_index`)."""
    rr, cc = _ring_rc(*boxes[0].shape)
    rows = np.array([b.row0 for b in boxes])[:, None] + rr
    flat: npt.NDArray[np.intp] = rows * cols + np.array([b.col0 for b in boxes])[:, None] + cc
    flat.setflags(write=False)
    return flat


def _ring_stack(
    plane: npt.NDArray[Any], boxes: list[Box], fmt: PixelFormat, stored: bool
) -> tuple[I32, Bool | None]:
    """Ring 0 of every box (all of one shape, at least 5 x 5) of a plane, clockwise: stored
    values (boxes, ring) and which of them are usable (`usable_ring`; None: all).
    ``stored``: the plane holds stored values already (else raw words)."""
    if plane.flags.c_contiguous:  # a 1-D gather is several times faster
        vals = plane.reshape(-1)[_ring_flat(plane.shape[1], tuple(boxes))]
    else:
        h, w = boxes[0].shape
        rr, cc = _ring_rc(h, w)
        rows = np.array([b.row0 for b in boxes])[:, None] + rr
        vals = plane[rows, np.array([b.col0 for b in boxes])[:, None] + cc]
    vals = vals.astype(np.int32) if stored else to_stored(vals, fmt)
    if fmt.padding is None:
        return vals, None
    pad = _in_pad(vals, fmt)
    pad1 = _in_pad(vals ^ 1, fmt)
    assert pad is not None and pad1 is not None
    usable: Bool = ~(pad | pad1)
    return vals, usable


def _ring_heads_sizes(
    plane: I32, boxes: list[Box], fmt: PixelFormat, n: int, bright: list[bool]
) -> tuple[list[npt.NDArray[np.intp]], list[int]]:
    """`header_ring_head` of every box of a plane of stored values (``bright`` per box), and
    the box's `usable_ring` size (read from the same rings)."""
    out: list[npt.NDArray[np.intp]] = [np.zeros(0, np.intp)] * len(boxes)
    sizes = [0] * len(boxes)
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(boxes):
        shapes.setdefault(b.shape, []).append(i)
    for (h, w), idx in shapes.items():
        if h < 5 or w < 5:  # `_ring_index` of smaller boxes: one at a time
            for i in idx:
                b = boxes[i]
                out[i] = header_ring_head(plane[b.slices()], fmt, n, bright=bright[i])
                sizes[i] = int(usable_ring(plane[b.slices()], fmt).size)
            continue
        vals, usable = _ring_stack(plane, [boxes[i] for i in idx], fmt, stored=True)
        size = vals.shape[1]
        counts = [size] * len(idx) if usable is None else _row_counts(usable)
        for i, c in zip(idx, counts, strict=True):
            sizes[i] = c
        ring = _ring_index(h, w)
        m = min(n, size)
        for order in (1, 2):
            rows = [j for j, i in enumerate(idx) if bright[i] == (order == 2)]
            if not rows:
                continue
            key = _ring_keys(vals[rows], None if usable is None else usable[rows], fmt, order)
            part = key if m >= size else np.partition(key, m - 1, axis=1)[:, :m]
            head = np.sort(part, axis=1)[:, :m] % size
            for r, j in enumerate(rows):
                out[idx[j]] = ring[head[r, : min(m, counts[j])]]
    return out, sizes


# ---------------------------------------------------------------------------------------------
# one pass over the two strided sub-grids of one colour

_SUBGRIDS = (((2, 2), (3, 3)), ((2, 3), (3, 2)))  # pass 1 (black), pass 2 (white)


@dataclass
class _Grid:
    """The targets of one colour as a stack of sub-grids, shape (n, H, W): both sub-grids in
    one (n = 2) when their shapes agree, else one part per sub-grid (n = 1). C order of the
    stack is the sub-grid order of the bitstream."""

    view: I32  # view into the region array: the targets
    c: I32  # their values (a contiguous copy: strided arithmetic is several times slower)
    p: I32  # prediction
    cx: I32  # complexity (clipped)
    elig: Bool | None  # no neighbour in padding (None: all eligible)


def _pad_map(a: I32, fmt: PixelFormat) -> Bool | None:
    """Padding pixels of a region; None when it has none. Embedding never moves a value into or
    out of padding, so the map of the original region holds for every pass."""
    padm = _in_pad(a, fmt)
    if padm is not None and not padm.any():
        return None
    return padm


def _nb_ok(padm: Bool | None) -> Bool | None:
    """Per pixel of the region: no 4-neighbour in padding (valid on rows/cols 1..-2)."""
    if padm is None:
        return None
    ok = _nb_ok_stack(np.ascontiguousarray(padm)[None])
    assert ok is not None
    out: Bool = ok[0]
    return out


def _calm(a: I32, fmt: PixelFormat) -> bool:
    """True when no value of ``a`` (so no target and no prediction) is within the guard of a
    range end or padding: `_danger` is then None and no target is frozen or ambiguous."""
    if a.size == 0:
        return False
    return _calm_range(*_span(a), fmt)


def _span(a: I32) -> tuple[int, int]:
    """(min, max) of a non-empty array."""
    return int(a.min()), int(a.max())


def _stacked(x: npt.NDArray[np.generic]) -> bool:
    """Both sub-grids of a pass have one shape (and can be viewed as one stack)."""
    h, w = x.shape
    return (h - 4) % 2 == 0 and (w - 4) % 2 == 0 and x.flags.c_contiguous


def _stack(x: npt.NDArray[_G], k: int, dr: int, dc: int) -> npt.NDArray[_G]:
    """Both sub-grids of pass k of a `_stacked` region array shifted by (dr, dc) as one view of
    shape (2, H, W)."""
    h, w = x.shape
    (r0, c0), (r1, c1) = _SUBGRIDS[k]
    it = x.itemsize
    view: npt.NDArray[_G] = np.ndarray(
        (2, (h - 4) // 2, (w - 4) // 2),
        x.dtype,
        buffer=x,
        offset=((r0 + dr) * w + c0 + dc) * it,
        strides=(((r1 - r0) * w + c1 - c0) * it, 2 * w * it, 2 * it),
    )
    return view


def _parts(x: npt.NDArray[_G], k: int) -> list[npt.NDArray[_G]]:
    """The targets of pass k in a region array, as in `_Grid`."""
    if _stacked(x):
        return [_stack(x, k, 0, 0)]
    h, w = x.shape
    return [x[r : h - 2 : 2, c : w - 2 : 2][None] for r, c in _SUBGRIDS[k]]


def _grids(
    a: I32,
    k: int,
    fmt: PixelFormat,
    nbok: Bool | None,
    calm: bool,
    roi: Roi | None = None,
    guard: int = _K_GUARD,
    span: tuple[int, int] | None = None,
) -> list[_Grid]:
    """Pass k's targets; ``nbok`` is `_nb_ok` of the region's padding, ``calm`` `_calm` of
    ``a``, ``roi`` the v4 target rule (None: every target), ``guard`` the `_danger` zone,
    ``span`` `_span` of ``a`` if known."""
    out: list[_Grid] = []
    oks = None if nbok is None else _parts(nbok, k)
    parts: list[tuple[I32, ...]] = []
    if _stacked(a):
        # contiguous copies of the neighbours: strided arithmetic is several times slower
        u, d, lf, rt = _neighbours(a[None], k, 0)
        parts.append((_stack(a, k, 0, 0), u[0], d[0], lf[0], rt[0]))
    else:
        h, w = a.shape
        for r0, c0 in _SUBGRIDS[k]:
            parts.append(
                tuple(
                    np.ascontiguousarray(v[None]) if i else v[None]
                    for i, v in enumerate(
                        (
                            a[r0 : h - 2 : 2, c0 : w - 2 : 2],
                            a[r0 - 1 : h - 3 : 2, c0 : w - 2 : 2],
                            a[r0 + 1 : h - 1 : 2, c0 : w - 2 : 2],
                            a[r0 : h - 2 : 2, c0 - 1 : w - 3 : 2],
                            a[r0 : h - 2 : 2, c0 + 1 : w - 1 : 2],
                        )
                    )
                )
            )
    for j, (view, u, d, lf, rt) in enumerate(parts):
        c = np.ascontiguousarray(view)
        # `complexity` and the ROI rule (all four neighbours <= / >= the level) from one max
        # and one min of the four neighbours
        p, lo, hi = _predicted(u, d, lf, rt)
        elig: Bool | None = None if oks is None else oks[j]
        if roi is not None:
            inside: Bool = hi <= roi.level if roi.mode == 1 else lo >= roi.level
            elig = inside if elig is None else elig & inside
        hi -= lo
        if fmt.bits_stored >= 16:
            np.minimum(hi, T_MAX, out=hi)
        cx = hi
        danger = None if calm else _danger(p, fmt, guard, span)
        if danger is not None:
            elig = ~danger if elig is None else elig & ~danger
        out.append(_Grid(view, c, p, cx, elig))
    return out


def _danger(
    p: I32, fmt: PixelFormat, guard: int = _K_GUARD, span: tuple[int, int] | None = None
) -> Bool | None:
    """Targets whose prediction lies next to a forbidden value are not selected.

    Near such values a target is often frozen (its move would leave the range or reach
    padding), and every frozen target would cost a location-map bit. Depends on the prediction
    only, so the decoder derives the same set. None when no prediction is in danger.
    ``span``: bounds of the region values (so of the predictions), when the caller has them.
    """
    if p.size == 0:
        return None
    pmin, pmax = (int(p.min()), int(p.max())) if span is None else span
    zones = [(fmt.vmin + 1, fmt.vmin + guard), (fmt.vmax - guard, fmt.vmax)]
    if fmt.padding is not None:
        zones.append((fmt.padding[0] - guard, fmt.padding[1] + guard))
    out: Bool | None = None
    for lo, hi in zones:
        if pmax < lo or pmin > hi:
            continue
        z = _unsigned(np.subtract(p, lo)) <= hi - lo  # lo <= p <= hi
        out = z if out is None else out | z
    return out


@dataclass
class _EncGrid:
    g: _Grid
    sign: I32  # `_sign` of e (the side a target moves to; moving keeps it)
    active: Bool  # eligible and not frozen (ignoring the threshold)
    carrier: Bool  # active and e in {0, -1}
    # eligible-but-frozen targets (None: none is frozen and none can become ambiguous, its
    # location-map flag: every value is >= 3 from an invalid one, see `_may_freeze`)
    frozen: Bool | None
    span: tuple[int, int]  # (min, max) of the region values analysed
    # (`_analyse_stack`: the stack this sub-grid part is row r of, for `_apply_stack`)
    row: tuple[_EncStack, int] | None = None


@dataclass
class _EncStack:
    """One part of `_analyse_stack` for every region of its stack (rows): the arrays the
    regions' `_EncGrid` fields are views of (as `_apply_stack` reads them)."""

    c: I32
    cx: I32
    elig: Bool | None
    sign: I32
    active: Bool
    carrier: Bool


def _analyse(
    a: I32,
    k: int,
    fmt: PixelFormat,
    nbok: Bool | None,
    roi: Roi | None = None,
    guard: int = _K_GUARD,
    span: tuple[int, int] | None = None,
) -> tuple[list[_EncGrid], npt.NDArray[np.int64]]:
    """Pass k's targets of ``a`` analysed for embedding, and the cumulative carrier count per
    complexity; ``span`` is `_span` of ``a`` when the caller has it."""
    encs: list[_EncGrid] = []
    cxs: list[I32] = []
    if span is None:
        span = _span(a)
    calm = _calm_range(*span, fmt)
    # frozen targets (their move would leave the range or reach padding) and ambiguous ones
    # (flagged: a moved value next to an invalid one) need a value within 2 of an invalid one;
    # `_may_freeze` finds sub-grids without any (`frozen` None: no flags)
    check = not calm and _maybe_near(*span, fmt)
    for g in _grids(a, k, fmt, nbok, calm, roi, guard, span):
        e = g.c - g.p
        peak = _unsigned(e + 1) <= 1  # e in {0, -1}
        sign = _sign(e)
        frozen: Bool | None = None
        if check and _may_freeze(g.c, span, fmt):
            pad = _in_pad(g.c, fmt)
            frozen = _moved_invalid(g.c, sign, fmt, span)
            if pad is not None:
                frozen |= pad
        if frozen is None:
            active = np.ones(e.shape, bool) if g.elig is None else g.elig
            carrier = peak if g.elig is None else active & peak
        else:
            active = ~frozen if g.elig is None else g.elig & ~frozen
            carrier = active & peak
        encs.append(_EncGrid(g, sign, active, carrier, frozen, span))
        cxs.append(g.cx[carrier])
    allcx = cxs[0] if len(cxs) == 1 else np.concatenate(cxs)
    cum = np.cumsum(np.bincount(allcx, minlength=1))
    return encs, cum


def _may_freeze(c: I32, span: tuple[int, int], fmt: PixelFormat) -> bool:
    """Some value of ``c`` (values of a region of ``span``) may be within 2 of an invalid value:
    else no target is frozen, and none is ambiguous after its move by 1, so no location-map
    flag comes from ``c`` (flags are read per ambiguous target, frozen or not)."""
    amin, amax = span
    if amin - 2 < fmt.vmin or amax + 2 > fmt.vmax or fmt.padding is None:
        return True
    lo, hi = fmt.padding
    return bool(np.any(_unsigned(np.subtract(c, lo - 2)) <= hi - lo + 4))


def _threshold(cum: npt.NDArray[np.int64], n: int) -> int:
    """T code of the smallest representable threshold whose carriers hold n bits."""
    if n <= 0:
        return _T_UNUSED
    t = int(np.searchsorted(cum, n, side="left"))
    return bisect.bisect_left(_THRESHOLD_LIST, t)  # (`np.searchsorted` of THRESHOLDS)


def _t_of(code: int) -> int:
    """Threshold of a T code (-1: pass unused)."""
    return -1 if code == _T_UNUSED else _THRESHOLD_LIST[code]


def _carried(cum: npt.NDArray[np.int64], code: int) -> int:
    """Carrier count at a T code (every carrier of a used pass carries a stream bit)."""
    if code == _T_UNUSED:
        return 0
    return int(cum[min(_THRESHOLD_LIST[code], cum.size - 1)])


def _apply(encs: list[_EncGrid], t: int, bits: U8, fmt: PixelFormat, a: I32, k: int) -> list[U8]:
    """Embed ``bits`` (zero-padded) at threshold t into ``a``, which holds the values ``encs``
    (pass k) were analysed on at the targets; returns location-map flags per sub-grid."""
    flags: list[U8] = []
    pos = 0
    for eg, view in zip(encs, _parts(a, k), strict=True):
        g = eg.g
        if t < 0:
            flags.append(_NOFLAGS)
            continue
        sel = g.cx <= t
        if g.elig is not None:
            sel &= g.elig
        act = eg.active & sel
        car = eg.carrier & sel
        ncar = int(np.count_nonzero(car))
        # shift +1 for e >= 1, -1 for e <= -2; peaks move by their bit towards their side
        move = act.astype(np.int32)  # carriers are active: their bit replaces the 1
        chunk = bits[pos : pos + ncar]
        pos += ncar
        if chunk.size < ncar:  # zero-padded (the stream ends in this sub-grid)
            full = np.zeros(ncar, np.uint8)
            full[: chunk.size] = chunk
            chunk = full
        move[car] = chunk
        move *= eg.sign
        tc = g.c + move
        view[...] = tc
        if eg.frozen is None:
            flags.extend([_NOFLAGS] * tc.shape[0])
        else:
            # one pass over the stack: flags in C order, sub-grid by sub-grid (a sub-grid with
            # no value within 2 of an invalid one has no frozen target and gives none)
            # (tc: the analysed values moved by at most 1)
            span = (eg.span[0] - 1, eg.span[1] + 1)
            flags.append(eg.frozen[_ambiguous(tc, eg.sign, sel, fmt, span)].astype(np.uint8))
    return flags


def _ambiguous(
    c: I32, sign: I32, sel: Bool, fmt: PixelFormat, span: tuple[int, int] | None = None
) -> Bool:
    """Selected targets whose final value could be either frozen or moved there (``sign``:
    `_sign` of the final e = c - p; ``span``: bounds of ``c`` if known)."""
    return _ambiguous_pad(c, sign, sel, fmt, span)[0]


def _ambiguous_pad(
    c: I32, sign: I32, sel: Bool, fmt: PixelFormat, span: tuple[int, int] | None = None
) -> tuple[Bool, Bool | None]:
    """`_ambiguous` and `_in_pad` of ``c`` (the decoder needs both)."""
    amb = _moved_invalid(c, sign, fmt, span)
    amb &= sel
    pad = _in_pad(c, fmt)
    if pad is not None:
        amb &= ~pad
    return amb, pad


# ---------------------------------------------------------------------------------------------
# stream framing: [saved ring LSBs][CRC-24][payload byte count, Exp-Golomb][payload][zeros]


@functools.lru_cache(maxsize=1024)
def _eg_encode(v: int) -> U8:
    """Exp-Golomb code of ``v`` (kept per value: read-only, only read or copied by callers)."""
    out = _eg_bits(v)
    out.setflags(write=False)
    return out


def _eg_bits(v: int) -> U8:
    x = v + (1 << _EG_K)
    nb = x.bit_length()
    bits = [0] * (nb - 1 - _EG_K) + [(x >> i) & 1 for i in range(nb - 1, -1, -1)]
    return np.array(bits, np.uint8)


def _eg_decode(bits: U8, pos: int) -> tuple[int, int] | None:
    """(value, next position) of the code at ``pos``; None when the bits run out."""
    ones = np.flatnonzero(bits[pos : pos + 24])
    if ones.size == 0:
        return None
    z = int(ones[0])
    nb = z + 1 + _EG_K
    if pos + z + nb > bits.size:
        return None
    x = 0
    for b in bits[pos + z : pos + z + nb].tolist():
        x = (x << 1) | b
    return x - (1 << _EG_K), pos + z + nb


def _crc(
    box: Box,
    fmt: PixelFormat,
    bits: U8,
    version: int = 3,
    roi: Roi | None = None,
    guard: int = _K_GUARD,
) -> U8:
    """CRC-24 (CRC-32, truncated) of box coordinates, bit depth, signedness and ``bits`` (v4:
    also the ROI mode and level and the guard), as 24 bits."""
    crc = _crc_value(box, fmt, bits, version, roi, guard)
    return np.unpackbits(np.frombuffer(crc.to_bytes(3, "big"), np.uint8))


def _crc_value(
    box: Box, fmt: PixelFormat, bits: U8, version: int, roi: Roi | None, guard: int
) -> int:
    """`_crc` as a number."""
    ctx = b"DMwm%d|%d,%d,%d,%d,%d,%d,%d|" % (
        version,
        box.row0,
        box.col0,
        box.row1,
        box.col1,
        fmt.bits_stored,
        fmt.signed,
        bits.size,
    )
    if version != 3:
        mode, level = (roi.mode, roi.level) if roi is not None else (0, 0)
        ctx += b"%d,%d,%d|" % (mode, level, guard)
    return zlib.crc32(np.packbits(bits).tobytes(), zlib.crc32(ctx)) & 0xFFFFFF


# ---------------------------------------------------------------------------------------------
# public API


def _region(plane: RawPlane, box: Box) -> RawPlane:
    if plane.ndim != 2 or plane.dtype not in (np.uint8, np.uint16):
        raise UnsupportedPixelsError("plane must be a 2-D uint8 or uint16 array of raw words")
    if not (
        0 <= box.row0 < box.row1 <= plane.shape[0] and 0 <= box.col0 < box.col1 <= plane.shape[1]
    ):
        raise ValueError(f"box {box} outside plane of shape {plane.shape}")
    return plane[box.slices()]


@dataclass
class _Pre:
    """Per region, independent of the stream: pass 1 analysed on the original values and the
    estimate of pass 2 on them (for `_split`)."""

    enc1: list[_EncGrid]
    cum1: npt.NDArray[np.int64]
    act1: npt.NDArray[np.int64]
    cum2: npt.NDArray[np.int64]
    act2: npt.NDArray[np.int64]


def _pre(s: I32, fmt: PixelFormat, nbok: Bool | None, roi: Roi | None, guard: int) -> _Pre:
    span = _span(s)  # both passes are analysed on the same values
    enc1, cum1 = _analyse(s, 0, fmt, nbok, roi, guard, span)
    enc2, cum2 = _analyse(s, 1, fmt, nbok, roi, guard, span)
    return _Pre(enc1, cum1, _active_cum(enc1, cum1.size), cum2, _active_cum(enc2, cum2.size))


def _pre_stack(
    s: I32, fmt: PixelFormat, rois: list[Roi | None], guard: int, nbok: Bool | None
) -> list[_Pre]:
    """`_pre` of every region of a stack (n, h, w) of stored values, each with its own ROI rule
    and its own padding (``nbok``: `_nb_ok_stack` of the stack's `_pad_map`): both passes
    analysed for all regions at once."""
    flat = s.reshape(s.shape[0], -1)
    spans = list(zip(flat.min(1).tolist(), flat.max(1).tolist(), strict=True))
    passes = [_analyse_stack(s, k, fmt, nbok, rois, guard, spans) for k in (0, 1)]
    out: list[_Pre] = []
    for (enc1, cum1), (enc2, cum2) in zip(*passes, strict=True):
        act1, act2 = _active_cum(enc1, cum1.size), _active_cum(enc2, cum2.size)
        out.append(_Pre(enc1, cum1, act1, cum2, act2))
    return out


def _analyse_stack(
    s: I32,
    k: int,
    fmt: PixelFormat,
    nbok: Bool | None,
    rois: list[Roi | None],
    guard: int,
    spans: list[tuple[int, int]],
) -> list[tuple[list[_EncGrid], npt.NDArray[np.int64]]]:
    """`_analyse` of pass k of every region of a stack (n, h, w): the same targets, flags and
    counts, region j with rule rois[j], the stack's padding map ``nbok`` (`_nb_ok_stack`) and
    its `_span` spans[j]. The regions' arrays are views of the stack's."""
    n = s.shape[0]
    calm = [_calm_range(*sp, fmt) for sp in spans]
    check = [not cm and _maybe_near(*sp, fmt) for cm, sp in zip(calm, spans, strict=True)]
    span = (min(sp[0] for sp in spans), max(sp[1] for sp in spans))
    vt = _iinfo(s.dtype)
    dark = [r.level if r is not None and r.mode == 1 else vt.max for r in rois]
    bright = [r.level if r is not None and r.mode == 2 else vt.min for r in rois]
    oks = None if nbok is None else _stack_parts(nbok, k, 0, 0)
    encs: list[list[_EncGrid]] = [[] for _ in range(n)]
    for j, view in enumerate(_stack_parts(s, k, 0, 0)):
        c = np.ascontiguousarray(view)
        p, lo, hi = _predicted(*_neighbours(s, k, j))
        ok = None if oks is None else oks[j]  # (a view: copied below only if kept as it is)
        elig = ok
        if any(r is not None for r in rois):
            inside = _selected(hi, lo, fmt, dark, bright)
            elig = inside if elig is None else elig & inside
        cx = _complexity_of(hi, lo, fmt)
        danger = _stack_danger(p, fmt, [guard] * n, calm)
        if danger is not None:
            elig = ~danger if elig is None else elig & ~danger
        if elig is not None and elig is ok:
            elig = np.ascontiguousarray(elig)
        e = c - p
        peak = _unsigned(e + 1) <= 1  # e in {0, -1}
        sign = _sign(e)
        frozen: Bool | None = None
        if any(check[r] and _may_freeze(c[r], spans[r], fmt) for r in range(n)):
            frozen = _moved_invalid(c, sign, fmt, span)
            pad = _in_pad(c, fmt)
            if pad is not None:
                frozen |= pad
        active = np.ones(e.shape, bool) if elig is None else elig
        if frozen is not None:
            active = active & ~frozen
        carrier = active & peak
        whole = _EncStack(c, cx, elig, sign, active, carrier)
        for r in range(n):
            g = _Grid(view[r], c[r], p[r], cx[r], None if elig is None else elig[r])
            fr = None if frozen is None else frozen[r]
            eg = _EncGrid(g, sign[r], active[r], carrier[r], fr, spans[r], (whole, r))
            encs[r].append(eg)
    out = []
    for r in range(n):
        cxs = [eg.g.cx[eg.carrier] for eg in encs[r]]
        allcx = cxs[0] if len(cxs) == 1 else np.concatenate(cxs)
        out.append((encs[r], np.cumsum(np.bincount(allcx, minlength=1))))
    return out


@dataclass(frozen=True)
class _Ready:
    """What `_embed` finds of a region before its stream: `header_ring`, `_nb_ok` of its
    `_pad_map` and `_pre`, all of the region's original stored values."""

    ring: npt.NDArray[np.intp]
    nbok: Bool | None
    pre: _Pre
    words: RawPlane  # the region's raw words (a copy) the values were taken from


class _Prepared(threading.local):
    """`_Ready` of the regions a caller is about to embed (`prepared`), per thread."""

    def __init__(self) -> None:
        # (box, format, rule, version, guard) -> [(the region's stored values, their `_Ready`)]
        self.pres: dict[tuple[Box, PixelFormat, Roi | None, int, int], list[tuple[I32, _Ready]]]
        self.pres = {}


_PREPARED = _Prepared()


@contextlib.contextmanager
def prepared(
    plane: RawPlane, boxes: list[Box], fmt: PixelFormat, rois: list[Roi | None]
) -> Iterator[None]:
    """Within the block, `embed_region` of these boxes (format v4, rule rois[i] for boxes[i])
    finds its first guard's analysis of the region ready: found for all boxes of one shape in
    one pass. Only a speed-up: a region whose values differ from those analysed here (or any
    other call) is analysed as usual."""
    guard = _V4_GUARDS[0]
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(boxes):
        if b.shape[0] >= 5 and b.shape[1] >= 5:
            shapes.setdefault(b.shape, []).append(i)
    pres = _PREPARED.pres
    for idx in shapes.values():
        words = cast("RawPlane", np.stack([_region(plane, boxes[i]) for i in idx]))
        s = _work_values(words, fmt)
        padm = _pad_map(s, fmt)
        nbok = _nb_ok_stack(padm)
        some: list[bool] = [False] * len(idx)
        if padm is not None:  # which regions hold padding (`_pad_map` of the region)
            held: Bool = np.any(padm.reshape(len(idx), -1), axis=1)
            some = [bool(x) for x in held]
        group = [rois[i] for i in idx]
        got = _pre_stack(s, fmt, group, guard, nbok)
        rings = _header_rings(s, fmt, [r is not None and r.mode == 2 for r in group])
        for j, (i, pre) in enumerate(zip(idx, got, strict=True)):
            ok = nbok[j] if nbok is not None and some[j] else None
            entry = (s[j], _Ready(rings[j], ok, pre, words[j]))
            pres.setdefault((boxes[i], fmt, rois[i], FORMAT_VERSION, guard), []).append(entry)
    try:
        yield
    finally:
        pres.clear()


def _prepared_pre(
    s: I32, box: Box, fmt: PixelFormat, roi: Roi | None, version: int, guard: int
) -> _Ready | None:
    """The `prepared` analysis of this region, if it was analysed on these very values."""
    for values, ready in _PREPARED.pres.get((box, fmt, roi, version, guard), ()):
        if np.array_equal(values, s):
            return ready
    return None


def _prepared_words(
    raw: RawPlane, box: Box, fmt: PixelFormat, roi: Roi | None, version: int, guard: int
) -> tuple[I32, _Ready] | None:
    """The `prepared` values and analysis of this region, if they were taken from these very
    raw words (so they are `_work_values` of them: found without converting the words again;
    a region whose words differ but whose values do not is left to `embed_region`)."""
    for values, ready in _PREPARED.pres.get((box, fmt, roi, version, guard), ()):
        if np.array_equal(ready.words, raw):
            return values, ready
    return None


def _header_rings(s: I32, fmt: PixelFormat, bright: list[bool]) -> list[npt.NDArray[np.intp]]:
    """`header_ring` (format v4, ``bright`` per region) of every region of a stack (n, h, w)."""
    n, h, w = s.shape
    ring = _ring_index(h, w)
    vals = s.reshape(n, -1)[:, ring]
    usable: Bool | None = None
    if fmt.padding is not None:  # `usable_ring`
        pad = _in_pad(vals, fmt)
        pad1 = _in_pad(vals ^ 1, fmt)
        assert pad is not None and pad1 is not None
        usable = ~(pad | pad1)
    counts = [ring.size] * n if usable is None else _row_counts(usable)
    out: list[npt.NDArray[np.intp]] = [ring] * n
    for kind in (1, 2):
        rows = [j for j in range(n) if bright[j] == (kind == 2)]
        if rows:
            key = _ring_keys(vals[rows], None if usable is None else usable[rows], fmt, kind)
            order = np.sort(key, axis=1) % ring.size
            for r, j in enumerate(rows):
                out[j] = ring[order[r, : counts[j]]]
    return out


def _embed_stream(
    s: I32,
    fmt: PixelFormat,
    stream: U8,
    nbok: Bool | None,
    pre: _Pre,
    roi: Roi | None,
    guard: int,
) -> tuple[I32, int, int, U8] | int:
    """Embed ``stream`` into a copy of ``s`` (ring untouched); ``pre`` is `_pre` of ``s``.

    Pass 1 is filled completely at its threshold (the decoder reads all of its carriers), pass 2
    takes the rest. Returns (array, T1 code, T2 code, flags) or the capacity in bits.
    """
    nbits = int(stream.size)
    cap1 = int(pre.cum1[-1])
    want = _split(pre, nbits)
    cap2 = 0
    for attempt in range(5):
        a, c1, n1, f1 = _pass1(s, fmt, stream, pre, want)
        n2 = nbits - n1
        if n2 <= 0:
            return a, c1, _T_UNUSED, np.concatenate(f1).astype(np.uint8)
        enc2, cum2 = _analyse(a, 1, fmt, nbok, roi, guard)
        cap2 = int(cum2[-1])
        if cap2 >= n2:
            return _pass2(a, c1, f1, enc2, cum2, stream[n1:], fmt)
        if want >= cap1:
            break
        # pass 2 short: move the rest to pass 1 (which lowers pass 2's capacity a little);
        # the last try fills pass 1 completely
        want = cap1 if attempt >= 3 else min(cap1, n1 + (n2 - cap2) + 16)
    return cap1 + cap2


def _pass1(
    s: I32, fmt: PixelFormat, stream: U8, pre: _Pre, want: int
) -> tuple[I32, int, int, list[U8]]:
    """Pass 1 of `_embed_stream` loaded with ``want`` bits: (copy of ``s`` with pass 1 embedded,
    T1 code, stream bits it carries, its flags per sub-grid)."""
    a = s.copy()
    c1 = _threshold(pre.cum1, want)
    n1 = _carried(pre.cum1, c1)
    f1 = _apply(pre.enc1, _t_of(c1), stream[:n1], fmt, a, 0)
    return a, c1, n1, f1


def _pass2(
    a: I32,
    c1: int,
    f1: list[U8],
    enc2: list[_EncGrid],
    cum2: npt.NDArray[np.int64],
    rest: U8,
    fmt: PixelFormat,
) -> tuple[I32, int, int, U8]:
    """Pass 2 of `_embed_stream` (``enc2``, ``cum2``: `_analyse` of pass 2 of ``a``, which can
    carry ``rest``) embedded into ``a``: (array, T1 code, T2 code, flags of both passes)."""
    c2 = _threshold(cum2, int(rest.size))
    f2 = _apply(enc2, _t_of(c2), rest, fmt, a, 1)
    return a, c1, c2, np.concatenate([*f2, *f1]).astype(np.uint8)


_GROUP_MIN = 3  # `embed_prepared` stacks at least this many regions (fewer: no faster)


def embed_prepared(
    plane: RawPlane,
    boxes: list[Box],
    fmt: PixelFormat,
    payloads: list[bytes],
    rois: list[Roi | None],
) -> list[bool]:
    """Embed payloads[i] into boxes[i] (format v4, rule rois[i]; disjoint boxes) for the boxes
    whose `embed_region` ends in its first try: `prepared` analysis found, first guard, no
    location map, pass 1 loaded as `_split` estimates and pass 2 holding the rest. The boxes
    of one shape are embedded as one stack (one numpy pass per step, not one per box); the
    words written are those `embed_region` writes. Returns which boxes were written; the
    others are unchanged (for `embed_region`)."""
    done = [False] * len(boxes)
    try:
        for roi in rois:
            _check_roi(roi, fmt, FORMAT_VERSION)
        raws = [_region(plane, b) for b in boxes]
    except ValueError:  # `embed_region` raises it
        return done
    guard = _V4_GUARDS[0]
    shapes: dict[tuple[int, int], list[tuple[int, I32, _Ready]]] = {}
    for i, (box, raw, roi) in enumerate(zip(boxes, raws, rois, strict=True)):
        found = None
        if raw.shape[0] >= 5 and raw.shape[1] >= 5:
            found = _prepared_words(raw, box, fmt, roi, FORMAT_VERSION, guard)
        if found is not None and found[1].ring.size >= _side_bits(FORMAT_VERSION, roi):
            shapes.setdefault(raw.shape, []).append((i, *found))
    for group in shapes.values():
        if len(group) < _GROUP_MIN:
            continue
        idx = [i for i, _, _ in group]
        got = _embed_group(
            [raws[i] for i in idx],
            [boxes[i] for i in idx],
            fmt,
            [payloads[i] for i in idx],
            [rois[i] for i in idx],
            [(s, ready) for _, s, ready in group],
            guard,
        )
        for i, ok in zip(idx, got, strict=True):
            done[i] = ok
    return done


def _embed_group(
    raws: list[RawPlane],
    boxes: list[Box],
    fmt: PixelFormat,
    payloads: list[bytes],
    rois: list[Roi | None],
    found: list[tuple[I32, _Ready]],
    guard: int,
) -> list[bool]:
    """`embed_prepared` of regions of one shape (found[j]: region j's stored values and their
    `prepared` analysis): the first try of `_embed` of every region, both passes applied to
    the stack; writes (and returns True for) the regions for which that try is final."""
    version = FORMAT_VERSION
    n = len(raws)
    s = np.stack([v for v, _ in found])  # the copy `_embed_stream` embeds into
    pres = [ready.pre for _, ready in found]
    useds: list[npt.NDArray[np.intp]] = []
    streams: list[U8] = []
    c1s: list[int] = []
    n1s: list[int] = []
    for j in range(n):
        body = _payload_bits(payloads[j])[1]
        ring = found[j][1].ring[: _side_bits(version, rois[j])]
        used, stream = _stream(s[j].ravel(), ring, boxes[j], fmt, body, version, rois[j], guard)
        useds.append(used)
        streams.append(stream)
    for pre, want in zip(pres, _split_all(pres, [b.size for b in streams]), strict=True):
        c1s.append(_threshold(pre.cum1, want))
        n1s.append(_carried(pre.cum1, c1s[-1]))
    flags = _apply_stack(
        [p.enc1 for p in pres],
        [_t_of(c) for c in c1s],
        [b[:k] for b, k in zip(streams, n1s, strict=True)],
        fmt,
        s,
        0,
    )
    ok = [True] * n
    c2s = [_T_UNUSED] * n
    rests = [b[k:] for b, k in zip(streams, n1s, strict=True)]
    two = [j for j in range(n) if rests[j].size > 0]  # the regions with a pass 2
    if two:
        sub = s if len(two) == n else s[two]  # (a copy: written back below)
        nbok = _nb_ok_of([found[j] for j in two])
        passes = _analyse_stack(sub, 1, fmt, nbok, [rois[j] for j in two], guard, _spans(sub))
        ts: list[int] = []
        for j, (_, cum2) in zip(two, passes, strict=True):
            ok[j] = int(cum2[-1]) >= rests[j].size
            if ok[j]:
                c2s[j] = _threshold(cum2, int(rests[j].size))
            ts.append(_t_of(c2s[j]) if ok[j] else -1)
        got = _apply_stack([e for e, _ in passes], ts, [rests[j] for j in two], fmt, sub, 1)
        flags[two] += got
        if sub is not s:
            s[two] = sub
    for j in range(n):
        ok[j] = ok[j] and not flags[j]  # a location map: `_embed` tries again
        if ok[j]:
            res = (c1s[j], c2s[j], _NOFLAGS)
            _finish(raws[j], s[j], useds[j], fmt, res, 0, rois[j], version, guard)
    return ok


def _nb_ok_of(found: list[tuple[I32, _Ready]]) -> Bool | None:
    """The regions' `prepared` `_nb_ok` as one stack (a region without padding: every target
    eligible, as with None)."""
    if all(ready.nbok is None for _, ready in found):
        return None
    shape = found[0][0].shape
    return np.stack([np.ones(shape, bool) if r.nbok is None else r.nbok for _, r in found])


def _apply_stack(
    encs: list[list[_EncGrid]], ts: list[int], bits: list[U8], fmt: PixelFormat, s: I32, k: int
) -> npt.NDArray[np.intp]:
    """`_apply` (pass k) of every region j of the stack ``s`` (n, h, w): its analysis encs[j],
    threshold ts[j] (-1: unused, nothing moves), stream bits[j]; one numpy pass per step over
    the stack. Returns per region the number of location-map flags `_apply` returns."""
    n = s.shape[0]
    pos = [0] * n
    nflags = np.zeros(n, np.intp)
    for j, view in enumerate(_stack_parts(s, k, 0, 0)):
        egs = [e[j] for e in encs]
        st = _enc_stack(egs)
        c = st.c
        # (a complexity is never above its type's max: a higher threshold selects as that max)
        top = int(_iinfo(st.cx.dtype).max)
        sel = st.cx <= np.array([min(t, top) for t in ts], st.cx.dtype).reshape(n, 1, 1, 1)
        if st.elig is not None:
            sel &= st.elig
        act = st.active & sel
        car = st.carrier & sel
        ncar = [int(np.count_nonzero(x)) for x in car]  # (faster than along an axis)
        chunks: list[U8] = []
        for r in range(n):
            chunk = bits[r][pos[r] : pos[r] + ncar[r]]
            pos[r] += ncar[r]
            if chunk.size < ncar[r]:  # zero-padded (the stream ends in this sub-grid)
                chunk = np.concatenate([chunk, np.zeros(ncar[r] - chunk.size, np.uint8)])
            chunks.append(chunk)
        # in the values' type (int16 below 14 bits: every moved value, c +- 1, still fits)
        move = act.astype(c.dtype)
        move[car] = np.concatenate(chunks)
        sign = st.sign
        move *= sign
        held = [eg.frozen is not None for eg in egs]  # flags come from these regions only
        if not any(held):  # (the moved values only written: straight into the stack)
            np.add(c, move, out=view)
            continue
        tc = c + move
        view[...] = tc
        lo = min(eg.span[0] for eg in egs) - 1
        hi = max(eg.span[1] for eg in egs) + 1
        amb = _ambiguous(tc, sign, sel, fmt, (lo, hi))
        nflags += [int(np.count_nonzero(x)) if h else 0 for x, h in zip(amb, held, strict=True)]
    return nflags


def _enc_stack(egs: list[_EncGrid]) -> _EncStack:
    """The sub-grid parts ``egs`` (one per region, one shape) as one stack: the stack they are
    the rows of when they are all of one `_analyse_stack`'s part, in order, else a copy."""
    first = egs[0].row
    if (
        first is not None
        and first[0].c.shape[0] == len(egs)
        and all(
            eg.row is not None and eg.row[0] is first[0] and eg.row[1] == r
            for r, eg in enumerate(egs)
        )
    ):
        return first[0]
    elig: Bool | None = None
    if any(eg.g.elig is not None for eg in egs):
        shape = egs[0].g.c.shape
        elig = np.stack([np.ones(shape, bool) if eg.g.elig is None else eg.g.elig for eg in egs])
    return _EncStack(
        np.stack([eg.g.c for eg in egs]),
        np.stack([eg.g.cx for eg in egs]),
        elig,
        np.stack([eg.sign for eg in egs]),
        np.stack([eg.active for eg in egs]),
        np.stack([eg.carrier for eg in egs]),
    )


def _active_cum(encs: list[_EncGrid], size: int) -> npt.NDArray[np.int64]:
    """Cumulative count of the active targets per complexity, the last bin holding all from
    ``size - 1`` up (the carriers' curve length)."""
    parts = [eg.g.cx[eg.active] for eg in encs]  # (new arrays: clipped in place)
    cx = parts[0] if len(parts) == 1 else np.concatenate(parts)
    top = min(size - 1, int(_iinfo(cx.dtype).max))  # (a complexity is never above its type)
    np.minimum(cx, top, out=cx)
    return np.cumsum(np.bincount(cx, minlength=size))


def _split(pre: _Pre, nbits: int) -> int:
    """Pass-1 load with the fewest estimated changes (pass 2 estimated on the original values).

    A pass at threshold T changes its active targets that are not carriers (shifted) and about
    half of the carriers that carry a stream bit.
    """
    cum1, cum2, act1, act2 = pre.cum1, pre.cum2, pre.act1, pre.act2
    half = min(int(cum1[-1]), (nbits + 1) // 2)
    if cum1.size < 2 or cum2.size < 2:
        return half
    t1 = np.minimum(THRESHOLDS, cum1.size - 1)
    n1 = np.concatenate([[0], np.minimum(cum1[t1], nbits)])
    n2 = nbits - n1
    code2 = np.searchsorted(THRESHOLDS, np.searchsorted(cum2, np.maximum(n2, 1)))
    t2 = np.minimum(THRESHOLDS[np.minimum(code2, THRESHOLDS.size - 1)], cum2.size - 1)
    cost = n1 / 2 + np.where(n2 > 0, act2[t2] - cum2[t2] + n2 / 2, 0)
    cost[1:] += act1[t1] - cum1[t1]
    cost[(n2 > 0) & (cum2[t2] < n2)] = np.inf
    best = int(np.argmin(cost))
    return half if not np.isfinite(cost[best]) else int(n1[best])


def _split_all(pres: list[_Pre], nbits: list[int]) -> list[int]:
    """`_split` of several regions (pres[j] loaded with nbits[j]) in one numpy pass over their
    curves laid end to end (an index into a curve offset by its start; its searches in one
    searchsorted, each curve shifted above the one before)."""
    if len(pres) <= 2:  # (one pass costs more than two `_split`s)
        return [_split(p, b) for p, b in zip(pres, nbits, strict=True)]
    out = [min(int(p.cum1[-1]), (b + 1) // 2) for p, b in zip(pres, nbits, strict=True)]
    rows = [j for j, p in enumerate(pres) if p.cum1.size >= 2 and p.cum2.size >= 2]
    if not rows:
        return out
    m = len(rows)
    col = np.arange(m)
    cum1, at1 = _laid([pres[j].cum1 for j in rows])
    cum2, at2 = _laid([pres[j].cum2 for j in rows])
    act1 = np.concatenate([pres[j].act1 for j in rows])
    act2 = np.concatenate([pres[j].act2 for j in rows])
    nb = np.array([nbits[j] for j in rows], np.int64)[:, None]
    # pass-1 thresholds up to the first at or above every curve's last index: a higher one
    # reads each curve where that one does (the same load, the same cost), so the first
    # lowest cost is never past it
    last1 = at1[1:] - at1[:-1] - 1
    ncol = min(int(np.searchsorted(THRESHOLDS, int(last1.max()))) + 1, THRESHOLDS.size)
    i1 = np.minimum(THRESHOLDS[:ncol], last1[:, None]) + at1[:-1, None]
    n1 = np.zeros((m, ncol + 1), np.int64)
    np.minimum(cum1[i1], nb, out=n1[:, 1:])
    n2 = nb - n1
    step = int(cum2.max()) + int(np.abs(n2).max()) + 2  # above every curve value and load
    shift = col.astype(np.int64) * step
    laid = cum2 + np.repeat(shift, at2[1:] - at2[:-1])
    found = np.searchsorted(laid, np.maximum(n2, 1) + shift[:, None]) - at2[:-1, None]
    code2 = np.searchsorted(THRESHOLDS, found)
    size2 = (at2[1:] - at2[:-1] - 1)[:, None]
    i2 = np.minimum(THRESHOLDS[np.minimum(code2, THRESHOLDS.size - 1)], size2) + at2[:-1, None]
    c2t2 = cum2[i2]
    cost = n1 / 2 + np.where(n2 > 0, act2[i2] - c2t2 + n2 / 2, 0)
    cost[:, 1:] += act1[i1] - cum1[i1]
    cost[(n2 > 0) & (c2t2 < n2)] = np.inf
    best = np.argmin(cost, axis=1)
    fine = np.isfinite(cost[col, best]).tolist()
    for j, ok, v in zip(rows, fine, n1[col, best].tolist(), strict=True):
        if ok:
            out[j] = v
    return out


def _laid(
    curves: list[npt.NDArray[np.int64]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """Curves laid end to end, and where each starts (with the total length at the end)."""
    at = np.zeros(len(curves) + 1, np.intp)
    np.cumsum([c.size for c in curves], out=at[1:])
    return np.concatenate(curves), at


def _overhead(nside: int, nbytes: int) -> int:
    """Stream bits besides the payload: saved ring LSBs, CRC and byte count."""
    return nside + _CRC_BITS + int(_eg_encode(nbytes).size)


def region_capacity(
    plane: RawPlane,
    box: Box,
    fmt: PixelFormat,
    roi: Roi | None = None,
    *,
    version: int = FORMAT_VERSION,
) -> int:
    """Payload bits this region can carry (a close estimate; a multiple of 8)."""
    s = to_stored(_region(plane, box), fmt)
    h, w = s.shape
    if h < 5 or w < 5:
        return 0
    nring = int(usable_ring(s, fmt).size)
    nside = _side_bits(version, roi)
    if nring < nside:
        return 0
    nbok = _nb_ok(_pad_map(s, fmt))
    best = 0
    for guard in _V4_GUARDS if version != 3 else (_K_GUARD,):
        a = s.copy()
        enc1, cum1 = _analyse(a, 0, fmt, nbok, roi, guard)
        cap1 = int(cum1[-1])
        _apply(enc1, _t_of(_threshold(cum1, cap1)), np.zeros(cap1, np.uint8), fmt, a, 0)
        cap2 = int(_analyse(a, 1, fmt, nbok, roi, guard)[1][-1])
        best = max(best, cap1 + cap2 - _overhead(nside, (cap1 + cap2) // 8))
    return best // 8 * 8


def _check_roi(roi: Roi | None, fmt: PixelFormat, version: int) -> None:
    if version not in _MAGICS:
        raise ValueError(f"region format v{version} is not 3 or 4")
    if roi is None:
        return
    if version == 3:
        raise ValueError("region format v3 has no ROI rule")
    if not fmt.vmin <= roi.level <= fmt.vmax:
        raise ValueError(f"ROI level {roi.level} outside the stored range")


def embed_region(
    plane: RawPlane,
    box: Box,
    fmt: PixelFormat,
    payload: bytes,
    roi: Roi | None = None,
    *,
    version: int = FORMAT_VERSION,
) -> None:
    """Embed ``payload`` reversibly into ``plane[box]`` (raw words, in place).

    ``roi`` (format v4) restricts the targets to those whose four neighbours lie on the
    background side of its level; ``version`` 3 writes the older region format (no ROI).
    v4 tries the guards `_V4_GUARDS` in turn (the header names the one used).
    Raises WatermarkCapacityError(capacity_bits, needed_bits) and leaves the plane unchanged
    when the region cannot carry it.
    """
    _check_roi(roi, fmt, version)
    raw = _region(plane, box)
    err: WatermarkCapacityError | None = None
    for guard in _V4_GUARDS if version != 3 else (_K_GUARD,):
        try:
            _embed(raw, box, fmt, payload, roi, version, guard)
            return
        except WatermarkCapacityError as exc:
            if err is None or exc.capacity_bits > err.capacity_bits:
                err = exc
    assert err is not None
    raise err


def _embed(
    raw: RawPlane,
    box: Box,
    fmt: PixelFormat,
    payload: bytes,
    roi: Roi | None,
    version: int,
    guard: int,
) -> None:
    """`embed_region` with one guard (raw: the region's words, written only on success)."""
    s = _work_values(raw, fmt)
    h, w = s.shape
    pbits, body = _payload_bits(payload)
    head_bits = _side_bits(version, roi)
    if h < 5 or w < 5:
        raise WatermarkCapacityError(0, _overhead(head_bits, len(payload)) + pbits.size)
    ready = _prepared_pre(s, box, fmt, roi, version, guard)
    if ready is None:
        ring = header_ring(s, fmt, version, bright=roi is not None and roi.mode == 2)
        nbok = _nb_ok(_pad_map(s, fmt))
        pre = _pre(s, fmt, nbok, roi, guard)
    else:
        ring, nbok, pre = ready.ring, ready.nbok, ready.pre
    flat = s.ravel()
    nloc = 0
    for _ in range(6):
        nside = head_bits + (_LOC_LEN_BITS + nloc if nloc else 0)
        if ring.size < nside:
            raise WatermarkCapacityError(0, nside + _CRC_BITS + body.size)
        used, stream = _stream(flat, ring[:nside], box, fmt, body, version, roi, guard)
        res = _embed_stream(s, fmt, stream, nbok, pre, roi, guard)
        if isinstance(res, int):
            cap = max(0, res - _overhead(nside, len(payload))) // 8 * 8
            raise WatermarkCapacityError(min(cap, max(0, pbits.size - 8)), pbits.size)
        a, c1, c2, flags = res
        if flags.size <= nloc:
            break
        nloc = int(flags.size) + 8 + nloc // 2
    else:  # pragma: no cover - the location map keeps growing (pathological)
        raise WatermarkCapacityError(0, pbits.size)
    if nloc > _N_MAX:  # pragma: no cover - needs > 65535 ambiguous targets
        raise WatermarkCapacityError(0, pbits.size)
    _finish(raw, a, used, fmt, (c1, c2, flags), nloc, roi, version, guard)


def _payload_bits(payload: bytes) -> tuple[U8, U8]:
    """The payload's bits and the stream body (its byte count, Exp-Golomb, then its bits)."""
    pbits = np.unpackbits(np.frombuffer(payload, np.uint8))
    return pbits, np.concatenate([_eg_encode(len(payload)), pbits])


def _stream(
    flat: I32,
    used: npt.NDArray[np.intp],
    box: Box,
    fmt: PixelFormat,
    body: U8,
    version: int,
    roi: Roi | None,
    guard: int,
) -> tuple[npt.NDArray[np.intp], U8]:
    """(``used``, the stream): the LSBs the side information will replace at the ring pixels
    ``used`` of the region's values ``flat``, the CRC, then ``body``."""
    saved = (flat[used] & 1).astype(np.uint8)
    check = _crc(box, fmt, np.concatenate([saved, body]), version, roi, guard)
    return used, np.concatenate([saved, check, body])


def _finish(
    raw: RawPlane,
    a: I32,
    used: npt.NDArray[np.intp],
    fmt: PixelFormat,
    res: tuple[int, int, U8],
    nloc: int,
    roi: Roi | None,
    version: int,
    guard: int,
) -> None:
    """Write the embedded values ``a`` (``res``: T1 code, T2 code and flags of `_embed_stream`)
    and the side information (header, location map of ``nloc`` bits) at the ring pixels
    ``used`` into the region's raw words."""
    c1, c2, flags = res
    side = _side_bits_of(c1, c2, nloc, fmt, roi, version, guard)
    if nloc:
        side = np.concatenate([side, flags, np.zeros(nloc - flags.size, np.uint8)])
    af = a.ravel()
    af[used] = (af[used] & ~1) | side
    _write_raw(raw, a, fmt)


def _side_bits_of(
    c1: int, c2: int, nloc: int, fmt: PixelFormat, roi: Roi | None, version: int, guard: int
) -> U8:
    """The header fields of `_finish` as bits, most significant first (magic and map flag,
    T1 code, T2 code; v4: mode, guard code, the level with a rule; the map length when there
    is one): one array from a list of Python bits (cheaper than an array per field)."""
    fields = [((_MAGICS[version] << 1) | (1 if nloc else 0), 8), (c1, 8), (c2, 8)]
    if version != 3:
        mode = 0 if roi is None else roi.mode
        fields += [(mode, _MODE_BITS), (_GUARD_CODES.index(guard), _GUARD_BITS)]
        if roi is not None:
            lv = roi.level - fmt.vmin
            lv.to_bytes(2, "big")  # (raises for a level that does not fit, as before)
            fields.append((lv, _LEVEL_BITS))
    if nloc:
        nloc.to_bytes(2, "big")
        fields.append((nloc, _LOC_LEN_BITS))
    total = 0
    word = 0  # the fields' low bits, one after the other (what the bits of each field are)
    for v, n in fields:
        word = (word << n) | (v & ((1 << n) - 1))
        total += n
    bits = np.unpackbits(np.frombuffer(word.to_bytes(-(-total // 8), "big"), np.uint8))
    out: U8 = bits[bits.size - total :]
    return out


_NOFLAGS = np.zeros(0, np.uint8)
_NOFLAGS.setflags(write=False)


# ---------------------------------------------------------------------------------------------
# decoding: ring-0 headers, then the carriers of one shape undone together


@dataclass(frozen=True)
class _Header:
    used: npt.NDArray[np.intp]  # ring pixels holding side info
    c1: int
    c2: int
    nloc: int
    version: int
    roi: Roi | None
    guard: int


def _bits_value(bits: list[int], start: int, n: int) -> int:
    """The big-endian number in ``bits[start : start + n]``."""
    v = 0
    for b in bits[start : start + n]:
        v = (v << 1) | b
    return v


_FIELD_BITS = HEADER_BITS + _MODE_BITS + _GUARD_BITS + _LEVEL_BITS + _LOC_LEN_BITS
"""Header bits before the location map's flags, at most."""


def _parse_ordered(
    ring: npt.NDArray[np.intp],
    vals: I32,
    order: npt.NDArray[np.intp],
    fmt: PixelFormat,
    version: int,
) -> _Header | None:
    """The region's side info in format ``version`` from ring 0: ``ring`` its flat indices and
    ``vals`` their stored values (clockwise), ``order`` the usable ones (`usable_ring`) in the
    order the reading fills them (v3 clockwise, v4 `header_ring`); None without such a header."""
    size = order.size
    if size < HEADER_BITS:
        return None
    # the LSBs of every field before the location map's flags, read at once
    field = (vals[order[:_FIELD_BITS]] & 1).tolist()
    flag_magic = _bits_value(field, 0, 8)
    if flag_magic >> 1 != _MAGICS[version]:
        return None
    c1, c2 = _bits_value(field, 8, 8), _bits_value(field, 16, 8)
    if (c1 >= THRESHOLDS.size and c1 != _T_UNUSED) or (c2 >= THRESHOLDS.size and c2 != _T_UNUSED):
        return None
    nside = HEADER_BITS
    roi: Roi | None = None
    guard = _K_GUARD
    if version != 3:
        if size < nside + _MODE_BITS + _GUARD_BITS:
            return None
        mode = _bits_value(field, nside, _MODE_BITS)
        guard = _GUARD_CODES[_bits_value(field, nside + _MODE_BITS, _GUARD_BITS)]
        nside += _MODE_BITS + _GUARD_BITS
        if mode == 3:
            return None
        if mode:
            if size < nside + _LEVEL_BITS:
                return None
            level = _bits_value(field, nside, _LEVEL_BITS) + fmt.vmin
            nside += _LEVEL_BITS
            if level > fmt.vmax:
                return None
            roi = Roi(mode, level)
    nloc = 0
    if flag_magic & 1:
        if size < nside + _LOC_LEN_BITS:
            return None
        nloc = _bits_value(field, nside, _LOC_LEN_BITS)
        nside += _LOC_LEN_BITS + nloc
        if nloc == 0 or size < nside:
            return None
    used: npt.NDArray[np.intp] = ring[order[:nside]]
    return _Header(used, c1, c2, nloc, version, roi, guard)


@functools.lru_cache(maxsize=64)
def _ring_rc(h: int, w: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Rows and columns of `_ring_index` (to gather ring 0 from a strided region)."""
    rr, cc = np.divmod(_ring_index(h, w), w)
    rr.setflags(write=False)
    cc.setflags(write=False)
    return rr, cc


def _ring_headers(plane: RawPlane, boxes: list[Box], fmt: PixelFormat) -> list[list[_Header]]:
    """Per box (all of one shape), the headers its ring 0 parses as, in reading order.

    v3, then v4 with its header on the dark, then on the bright ring pixels: a carrier may pass
    another reading's magic by chance (and then fail its CRC). The rings of all boxes are read
    together; a reading's order is found in full only for a box whose first 8 pixels in that
    order hold its magic (most boxes carry no header)."""
    h, w = boxes[0].shape
    if h < 5 or w < 5 or 2 * (h + w) - 4 < HEADER_BITS:
        return [[] for _ in boxes]
    vals, usable = _ring_stack(plane, boxes, fmt, stored=False)
    size = vals.shape[1]
    counts = [size] * len(boxes) if usable is None else _row_counts(usable)
    lsb = (vals & 1).astype(np.uint8)
    ring = _ring_index(h, w)
    out: list[list[_Header]] = [[] for _ in boxes]
    for version, bright in _READINGS:
        kind = 0 if version == 3 else 2 if bright else 1
        if version == 3:  # clockwise: the first 8 pixels, unless some of them are not usable
            byte0 = np.packbits(lsb[:, :8], axis=1)[:, 0]
            odd = [] if usable is None else np.flatnonzero(~usable[:, :8].all(axis=1)).tolist()
            if odd:
                assert usable is not None
                byte0[odd] = _head_byte(vals[odd], usable[odd], lsb[odd], fmt, kind)
        else:
            key = _ring_keys(vals, usable, fmt, kind)
            byte0 = _head_byte(vals, usable, lsb, fmt, kind, key)
        for j in np.flatnonzero(byte0 >> 1 == _MAGICS[version]).tolist():
            if counts[j] < HEADER_BITS:
                continue
            if version == 3:
                order = np.arange(size) if usable is None else np.flatnonzero(usable[j])
            else:
                order = (np.sort(key[j]) % size)[: counts[j]]
            hdr = _parse_ordered(ring, vals[j], order, fmt, version)
            if hdr is not None:
                out[j].append(hdr)
    return out


def _head_byte(
    vals: I32,
    usable: Bool | None,
    lsb: U8,
    fmt: PixelFormat,
    kind: int,
    key: npt.NDArray[Any] | None = None,
) -> U8:
    """Per ring of a stack: the LSBs of its first 8 usable pixels in reading order ``kind``
    (`_ring_keys`, whose result ``key`` is when the caller has it) as one byte."""
    if key is None:
        key = _ring_keys(vals, usable, fmt, kind)
    head = np.sort(np.partition(key, 7, axis=1)[:, :8], axis=1) % vals.shape[1]
    out: U8 = np.packbits(np.take_along_axis(lsb, head, axis=1), axis=1)[:, 0]
    return out


def extract_region(plane: RawPlane, box: Box, fmt: PixelFormat) -> bytes | None:
    """Extract the payload and restore the region's original raw words in place.

    Reads region formats v3 and v4. Returns None, leaving the plane unchanged, when the region
    carries no valid header or its stream fails its check (a damaged carrier).
    """
    return _extract_regions(plane, [box], fmt)[0]


def _extract_regions(plane: RawPlane, boxes: list[Box], fmt: PixelFormat) -> list[bytes | None]:
    """`extract_region` of every box (disjoint boxes of one plane), in place.

    The same results as one call per box, faster: every box's headers are parsed from its ring
    first, then the carriers of one shape are undone together, one numpy pass per step for the
    whole stack (a carrier whose stream fails its check tries its next header the same way).
    All boxes are validated before any is read.
    """
    raws = [_region(plane, b) for b in boxes]
    out: list[bytes | None] = [None] * len(boxes)
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(boxes):
        shapes.setdefault(b.shape, []).append(i)
    readings: list[list[_Header]] = [[] for _ in boxes]
    for idx in shapes.values():
        for i, hdrs in zip(idx, _ring_headers(plane, [boxes[i] for i in idx], fmt), strict=True):
            readings[i] = hdrs
    for attempt in range(len(_READINGS)):
        for idx in shapes.values():
            group = [i for i in idx if out[i] is None and len(readings[i]) > attempt]
            if not group:
                continue
            words = cast("RawPlane", np.stack([raws[i] for i in group]))
            s = _work_values(words, fmt)
            hdrs = [readings[i][attempt] for i in group]
            payloads = _extract_stack(s, [boxes[i] for i in group], fmt, hdrs)
            if all(p is None for p in payloads):
                continue
            _write_raw(words, s, fmt)
            for j, (i, payload) in enumerate(zip(group, payloads, strict=True)):
                if payload is not None:
                    raws[i][...] = words[j]
                    out[i] = payload
    return out


def _work_values(raw: RawPlane, fmt: PixelFormat) -> npt.NDArray[Any]:
    """`to_stored` of raw words for embedding and decoding: in int16 when a sum of four values
    (a prediction) still fits (Bits Stored <= 13), which halves the memory every step reads;
    every step computes the same values in either type."""
    if fmt.bits_stored > 13:
        return to_stored(raw, fmt)
    return _stored_as(raw, fmt, np.int16)


def _extract_stack(
    s: I32, boxes: list[Box], fmt: PixelFormat, hdrs: list[_Header]
) -> list[bytes | None]:
    """The payloads of a stack of regions (n, h, w) with headers ``hdrs``; region j of ``s`` is
    restored in place where its payload is not None (else it holds garbage)."""
    n = len(hdrs)
    flat = s.reshape(n, -1)
    flags = [
        (flat[j, h.used[h.used.size - h.nloc :]] & 1).astype(np.uint8) if h.nloc else _NOFLAGS
        for j, h in enumerate(hdrs)
    ]
    ok = [True] * n
    fpos = [0] * n
    padm = _pad_map(s, fmt)
    nbok = _nb_ok_stack(padm)
    spans = _spans(s)
    t2 = [_t_of(h.c2) for h in hdrs]
    bits2, quiet = _undo_stack(s, 1, t2, fmt, hdrs, nbok, flags, fpos, ok, spans)
    if not quiet:
        # pass 1 sees the values pass 2 restored: its padding map is the same unless a damaged
        # region moved a value into or out of padding
        padm1 = _pad_map(s, fmt)
        same = padm1 is None if padm is None else padm1 is not None and np.array_equal(padm, padm1)
        if not same:
            nbok = _nb_ok_stack(padm1)
    moved = any(t >= 0 for t in t2)
    t1 = [_t_of(h.c1) for h in hdrs]
    bits1 = _undo_stack(s, 0, t1, fmt, hdrs, nbok, flags, fpos, ok, spans, moved)[0]
    out: list[bytes | None] = []
    for j, hdr in enumerate(hdrs):
        if not ok[j]:
            out.append(None)
            continue
        parts = [*bits1[j], *bits2[j]]
        stream = np.concatenate(parts) if parts else _NOFLAGS
        out.append(_check_stream(flat[j], stream, boxes[j], fmt, hdr))
    return out


def _check_stream(flat: I32, stream: U8, box: Box, fmt: PixelFormat, hdr: _Header) -> bytes | None:
    """The payload of a region's extracted ``stream`` when its CRC holds (the saved ring LSBs
    are then put back into ``flat``, the region's values); None otherwise."""
    used = hdr.used
    nside = used.size
    eg = _eg_decode(stream, nside + _CRC_BITS)
    if eg is None:
        return None
    nbytes, pos = eg
    end = pos + 8 * nbytes
    if end > stream.size:
        return None
    saved = stream[:nside]
    check = np.concatenate([saved, stream[nside + _CRC_BITS : end]])
    crc = _crc_value(box, fmt, check, hdr.version, hdr.roi, hdr.guard)
    if int.from_bytes(np.packbits(stream[nside : nside + _CRC_BITS]).tobytes(), "big") != crc:
        return None
    flat[used] = (flat[used] & ~1) | saved
    return np.packbits(stream[pos:end]).tobytes()


def _stack_parts(x: npt.NDArray[_G], k: int, dr: int, dc: int) -> list[npt.NDArray[_G]]:
    """Pass k's targets of a contiguous stack of regions (n, h, w) shifted by (dr, dc): one view
    (n, 2, H, W) when both sub-grids have one shape (`_stack` per region), else one view
    (n, 1, H, W) per sub-grid; C order of a region's part(s) is its bitstream order."""
    n, h, w = x.shape
    if (h - 4) % 2 == 0 and (w - 4) % 2 == 0:
        (r0, c0), (r1, c1) = _SUBGRIDS[k]
        it = x.itemsize
        view: npt.NDArray[_G] = np.ndarray(
            (n, 2, (h - 4) // 2, (w - 4) // 2),
            x.dtype,
            buffer=x,
            offset=((r0 + dr) * w + c0 + dc) * it,
            strides=(h * w * it, ((r1 - r0) * w + c1 - c0) * it, 2 * w * it, 2 * it),
        )
        return [view]
    return [
        x[:, r0 + dr : h - 2 + dr : 2, c0 + dc : w - 2 + dc : 2][:, None] for r0, c0 in _SUBGRIDS[k]
    ]


def _predicted(u: I32, d: I32, lf: I32, rt: I32) -> tuple[I32, I32, I32]:
    """From the four neighbours of each target: the prediction (floor of their mean) and
    their lowest and highest value (the complexity and the ROI rule)."""
    p = u + d
    p += lf
    p += rt
    p >>= 2
    lo, hi = neighbour_range(u, d, lf, rt)
    return p, lo, hi


def _neighbours(s: I32, k: int, j: int) -> tuple[I32, I32, I32, I32]:
    """Up, down, left and right neighbours of part j of pass k's targets in a stack of regions
    (`_stack_parts`), as contiguous copies (strided arithmetic is several times slower).

    Stacked sub-grids share their up and down rows: one copy of rows r0 - 1 .. r0 + 2 H - 1
    gives both (as views whose H x W planes are contiguous)."""
    n, h, w = s.shape
    if (h - 4) % 2 or (w - 4) % 2:
        u, d, lf, rt = (
            np.ascontiguousarray(_stack_parts(s, k, dr, dc)[j])
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
        )
        return u, d, lf, rt
    (r0, c0), (r1, c1) = _SUBGRIDS[k]
    it = s.itemsize
    rows: I32 = np.ndarray(
        (n, 2, (h - 4) // 2 + 1, (w - 4) // 2),
        s.dtype,
        buffer=s,
        offset=((r0 - 1) * w + c0) * it,
        strides=(h * w * it, ((r1 - r0) * w + c1 - c0) * it, 2 * w * it, 2 * it),
    )
    ud = np.ascontiguousarray(rows)
    lf = np.ascontiguousarray(_stack_parts(s, k, 0, -1)[0])
    rt = np.ascontiguousarray(_stack_parts(s, k, 0, 1)[0])
    return ud[:, :, :-1], ud[:, :, 1:], lf, rt


def _column(values: Sequence[int], dtype: type[np.generic] = np.int32) -> npt.NDArray[Any]:
    """Per-region parameters as an array broadcasting over (n, parts, H, W)."""
    return np.array(values, dtype).reshape(-1, 1, 1, 1)


def _stack_danger(
    p: I32,
    fmt: PixelFormat,
    guards: list[int],
    calm: list[bool],
    span: tuple[int, int] | None = None,
) -> Bool | None:
    """`_danger` of every region's predictions with its own guard (none where it is calm);
    ``span``: bounds of the stack's values, if known."""
    if p.size == 0 or all(calm):
        return None
    out: Bool | None = None
    if len(set(guards)) == 1:
        out = _danger(p, fmt, guards[0], span)
    else:
        pmin, pmax = int(p.min()), int(p.max())
        zones = [([fmt.vmin + 1] * len(guards), [fmt.vmin + g for g in guards])]
        zones.append(([fmt.vmax - g for g in guards], [fmt.vmax] * len(guards)))
        if fmt.padding is not None:
            plo, phi = fmt.padding
            zones.append(([plo - g for g in guards], [phi + g for g in guards]))
        for los, his in zones:
            if pmax < min(los) or pmin > max(his):
                continue
            lo = _column(los)
            width = _column([b - a for a, b in zip(los, his, strict=True)], np.uint32)
            z = _unsigned(np.subtract(p, lo)) <= width  # lo <= p <= hi
            out = z if out is None else out | z
    if out is not None and any(calm):
        out &= ~_column(calm, np.bool_)
    return out


def _undo_stack(
    s: I32,
    k: int,
    ts: list[int],
    fmt: PixelFormat,
    hdrs: list[_Header],
    nbok: Bool | None,
    flags: list[U8],
    fpos: list[int],
    ok: list[bool],
    spans: list[tuple[int, int]],
    moved: bool = False,
) -> tuple[list[list[U8]], bool]:
    """Undo pass k of a stack of regions (n, h, w) in place, region j at threshold ts[j] (-1:
    pass unused) with its header's ROI rule and guard; returns the carried bits per region
    and part, and whether surely no value moved into or out of padding (False: maybe).

    Reads each region's location-map flags from fpos[j] on (advanced); a region whose flags
    run out gets ok[j] = False (its values are then garbage). ``nbok``: `_nb_ok_stack` of the
    stack's padding; ``spans``: each region's `_span`, or (``moved``) its span before the
    values moved by at most 1 (the other pass undone)."""
    n = len(ts)
    if all(t < 0 for t in ts):
        return [[] for _ in range(n)], True
    calm = _calm_regions(s, fmt, spans, moved)
    oks = None if nbok is None else _stack_parts(nbok, k, 0, 0)
    rois = [h.roi for h in hdrs]
    vt = _iinfo(s.dtype)  # levels and thresholds in the values' type (a threshold above its
    # range selects every complexity, as its limit does)
    dark = [r.level if r is not None and r.mode == 1 else vt.max for r in rois]
    bright = [r.level if r is not None and r.mode == 2 else vt.min for r in rois]
    use_roi = any(r is not None for r in rois)
    tcol = _column([min(t, vt.max) for t in ts], s.dtype.type)
    # a target may be frozen or ambiguous only within 2 of an invalid value: where no region
    # comes that close, no flags are read and nothing is excluded
    span = (min(lo for lo, _ in spans) - moved, max(hi for _, hi in spans) + moved)
    near = _maybe_near(*span, fmt) and not all(calm)
    out: list[list[U8]] = [[] for _ in range(n)]
    guards = [h.guard for h in hdrs]
    quiet = True
    for j, view in enumerate(_stack_parts(s, k, 0, 0)):
        c = np.ascontiguousarray(view)
        p, lo, hi = _predicted(*_neighbours(s, k, j))
        sel = _selected(hi, lo, fmt, dark, bright) if use_roi else None
        cx = _complexity_of(hi, lo, fmt)
        sel = cx <= tcol if sel is None else sel & (cx <= tcol)
        if oks is not None:
            sel &= oks[j]
        danger = _stack_danger(p, fmt, guards, calm, span)
        if danger is not None:
            sel &= ~danger
        e = c - p
        act = sel
        if near:
            act, calm_part = _flagged(c, e, sel, fmt, flags, fpos, ok, span)
            quiet &= calm_part
        car = _unsigned(np.add(e, 2)) <= 3  # -2 <= e <= 1
        car &= act
        where = np.flatnonzero(car)
        ec = e.ravel()[where]
        # C order: region by region (each region's part is e.size // n targets)
        ends = np.searchsorted(where, np.arange(1, n + 1) * (e.size // n)).tolist()
        bits = (ec ^ (ec >> (8 * ec.itemsize - 1))).astype(np.uint8)  # e >= 0: e, else -1 - e
        for r, (a, b) in enumerate(zip([0, *ends], ends, strict=False)):
            out[r].append(bits[a:b])
        # back by 1 towards the prediction: +1 for e >= 1, -1 for e <= -2 (a shifted target or
        # a carrier of bit 1); a carrier of bit 0 (e in {0, -1}) stays
        np.clip(e, -2, 1, out=e)
        e += 1
        e >>= 1
        e *= act
        c -= e
        view[...] = c
    return out, quiet


def _spans(s: I32) -> list[tuple[int, int]]:
    """`_span` of every region of a stack (n, h, w)."""
    flat = s.reshape(s.shape[0], -1)
    return list(zip(flat.min(axis=1).tolist(), flat.max(axis=1).tolist(), strict=True))


def _calm_regions(
    s: I32, fmt: PixelFormat, spans: list[tuple[int, int]], moved: bool
) -> list[bool]:
    """`_calm` of every region of a stack, from its span, or (``moved``) from its span before
    its values moved by at most 1: `_calm_range` only gains when the range shrinks, so it is
    decided unless the range widened by 1 is not calm and the one narrowed by 1 is (then the
    region is measured again)."""
    if not moved:
        return [_calm_range(lo, hi, fmt) for lo, hi in spans]
    out: list[bool] = []
    for j, (lo, hi) in enumerate(spans):
        if _calm_range(lo - 1, hi + 1, fmt):
            out.append(True)
        elif not _calm_range(lo + 1, hi - 1, fmt):
            out.append(False)
        else:
            out.append(_calm_range(*_span(s[j]), fmt))
    return out


def _nb_ok_stack(padm: Bool | None) -> Bool | None:
    """`_nb_ok` of every region of a contiguous stack (n, h, w) of padding maps, valid at the
    targets (rows/cols 2..-3; found on the flat stack: a neighbour of a pixel on rows/cols
    1..-2 never lies in another row or region)."""
    if padm is None:
        return None
    f = padm.reshape(-1)
    w = padm.shape[-1]
    bad = np.zeros(f.shape, bool)
    mid = bad[w:-w]
    np.logical_or(f[: -2 * w], f[2 * w :], out=mid)
    mid |= f[w - 1 : -w - 1]
    mid |= f[w + 1 : -w + 1]
    ok: Bool = ~bad.reshape(padm.shape)
    return ok


def _calm_range(amin: int, amax: int, fmt: PixelFormat) -> bool:
    """`_calm` of values between ``amin`` and ``amax``."""
    if amin <= fmt.vmin + _K_GUARD or amax >= fmt.vmax - _K_GUARD:
        return False
    return (
        fmt.padding is None or amin > fmt.padding[1] + _K_GUARD or amax < fmt.padding[0] - _K_GUARD
    )


def _maybe_near(amin: int, amax: int, fmt: PixelFormat) -> bool:
    """Some value between ``amin`` and ``amax`` may be within 2 of an invalid value."""
    if amin - 2 < fmt.vmin or amax + 2 > fmt.vmax:
        return True
    return fmt.padding is not None and amin - 2 <= fmt.padding[1] and amax + 2 >= fmt.padding[0]


def _complexity_of(hi: I32, lo: I32, fmt: PixelFormat) -> I32:
    """`complexity` from the neighbours' max ``hi`` and min ``lo`` (``hi`` is overwritten)."""
    hi -= lo
    if fmt.bits_stored >= 16:
        np.minimum(hi, T_MAX, out=hi)
    return hi


def _selected(hi: I32, lo: I32, fmt: PixelFormat, dark: list[int], bright: list[int]) -> Bool:
    """Per target of a stack: inside its region's ROI rule (all four neighbours <= the dark
    level or >= the bright one; the limits of the values' type where a region has no such
    rule)."""
    vt = _iinfo(hi.dtype)
    inside: Bool = hi <= _column(dark, hi.dtype.type)
    if max(bright) > vt.min:
        inside &= lo >= _column(bright, hi.dtype.type)
    return inside


def _flagged(
    c: I32,
    e: I32,
    sel: Bool,
    fmt: PixelFormat,
    flags: list[U8],
    fpos: list[int],
    ok: list[bool],
    span: tuple[int, int],
) -> tuple[Bool, bool]:
    """The active targets of a stack's part: selected, padding excluded, and each ambiguous
    one (its final value could be frozen or moved) decided by its region's next flag; and
    whether no selected target is within 1 of padding (none can move into or out of it).

    The flags of a region are read in the C order of its part, as the encoder wrote them;
    ambiguous targets and padding occur only in sub-grids with a value within 2 of an invalid
    one (the encoder's flags come from those alone), so reading them over the whole part reads
    the same flags. ``span``: bounds of the stack's values."""
    n = c.shape[0]
    if span[0] - 1 >= fmt.vmin and span[1] + 1 <= fmt.vmax and fmt.padding is not None:
        # away from the range ends only padding makes a target frozen or ambiguous, and both
        # need a value within 1 of padding among the selected targets (usually none)
        lo, hi = fmt.padding
        close = _unsigned(np.subtract(c, lo - 1)) <= hi - lo + 2
        close &= sel
        if not close.any():
            return sel, True
    amb, pad = _ambiguous_pad(c, _sign(e), sel, fmt, span)
    counts = np.count_nonzero(amb.reshape(n, -1), axis=1).tolist()
    act = sel
    if any(counts):
        act = sel.copy()
        for r, m in enumerate(counts):
            if not m or not ok[r]:
                continue
            if fpos[r] + m > flags[r].size:
                ok[r] = False
                continue
            act[r][amb[r]] = flags[r][fpos[r] : fpos[r] + m] == 0
            fpos[r] += m
    if pad is not None:
        act = act & ~pad
    return act, False
