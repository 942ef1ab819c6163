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

import functools
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

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


def complexity(u: Any, d: Any, lf: Any, rt: Any, fmt: PixelFormat) -> Any:
    """Local complexity of a target: the spread (max - min) of its four neighbours.

    The same function for the embedder, the decoder and the carrier planner, so that all
    three rank targets identically. Capped at T_MAX for 16-bit data (codes must fit).
    """
    hi = np.maximum(u, d)
    np.maximum(hi, lf, out=hi)
    np.maximum(hi, rt, out=hi)
    lo = np.minimum(u, d)
    np.minimum(lo, lf, out=lo)
    np.minimum(lo, rt, out=lo)
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
    rs = _splits(shape[0], grid[0])
    cs = _splits(shape[1], grid[1])
    return [Box(rs[i], cs[j], rs[i + 1], cs[j + 1]) for i in range(grid[0]) for j in range(grid[1])]


# ---------------------------------------------------------------------------------------------
# stored values <-> raw words


def to_stored(raw: RawPlane, fmt: PixelFormat) -> I32:
    """The stored values of raw words (high bits dropped, sign-extended when signed)."""
    v = raw.astype(np.int32) & fmt.mask
    if fmt.signed:
        sb = 1 << (fmt.bits_stored - 1)
        v ^= sb
        v -= sb
    return v


def _write_raw(raw: RawPlane, stored: I32, fmt: PixelFormat) -> None:
    keep = ~fmt.mask & 0xFFFF
    raw[...] = (raw.astype(np.int32) & keep) | (stored & fmt.mask)


def _in_pad(x: I32, fmt: PixelFormat) -> Bool | None:
    if fmt.padding is None:
        return None
    lo, hi = fmt.padding
    if lo == hi:
        eq: Bool = x == lo
        return eq
    rng: Bool = np.subtract(x, lo).view(np.uint32) <= hi - lo  # lo <= x <= hi
    return rng


def _moved_invalid(c: I32, neg: Bool, fmt: PixelFormat) -> Bool:
    """Per target: c + 1 (c - 1 where ``neg``) is out of range or padding (a fresh array)."""
    x = c + 1
    x -= neg
    x -= neg
    if x.size == 0:
        return np.zeros(x.shape, bool)
    xmin, xmax = int(x.min()), int(x.max())
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
    bad = np.zeros(padm.shape, bool)
    inner = bad[1:-1, 1:-1]
    np.logical_or(padm[:-2, 1:-1], padm[2:, 1:-1], out=inner)
    inner |= padm[1:-1, :-2]
    inner |= padm[1:-1, 2:]
    return ~bad


def _calm(a: I32, fmt: PixelFormat) -> bool:
    """True when no value of ``a`` (so no target and no prediction) is within the guard of a
    range end or padding: `_danger` is then None and `_near` False for every sub-grid."""
    if a.size == 0:
        return False
    amin, amax = int(a.min()), int(a.max())
    if amin <= fmt.vmin + _K_GUARD or amax >= fmt.vmax - _K_GUARD:
        return False
    return (
        fmt.padding is None or amin > fmt.padding[1] + _K_GUARD or amax < fmt.padding[0] - _K_GUARD
    )


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


def _pair(x: npt.NDArray[_G], k: int, dr: int, dc: int) -> npt.NDArray[_G]:
    """`_stack` of (dr, dc) and of (-dr, -dc) as one view of shape (2, 2, H, W), (dr, dc) first:
    the up and down (or left and right) neighbours of pass k's targets, copied in one go."""
    h, w = x.shape
    (r0, c0), (r1, c1) = _SUBGRIDS[k]
    it = x.itemsize
    view: npt.NDArray[_G] = np.ndarray(
        (2, 2, (h - 4) // 2, (w - 4) // 2),
        x.dtype,
        buffer=x,
        offset=((r0 + dr) * w + c0 + dc) * it,
        strides=(-2 * (dr * w + dc) * it, ((r1 - r0) * w + c1 - c0) * it, 2 * w * it, 2 * it),
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
) -> list[_Grid]:
    """Pass k's targets; ``nbok`` is `_nb_ok` of the region's padding, ``calm`` `_calm` of
    ``a``, ``roi`` the v4 target rule (None: every target), ``guard`` the `_danger` zone."""
    out: list[_Grid] = []
    oks = None if nbok is None else _parts(nbok, k)
    parts: list[tuple[I32, ...]] = []
    if _stacked(a):
        # contiguous copies of the neighbours: strided arithmetic is several times slower
        ud = np.ascontiguousarray(_pair(a, k, -1, 0))
        lr = np.ascontiguousarray(_pair(a, k, 0, -1))
        parts.append((_stack(a, k, 0, 0), ud[0], ud[1], lr[0], lr[1]))
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
        p = u + d
        p += lf
        p += rt
        p >>= 2
        # `complexity` and the ROI rule (all four neighbours <= / >= the level) from one max
        # and one min of the four neighbours
        hi = np.maximum(u, d)
        np.maximum(hi, lf, out=hi)
        np.maximum(hi, rt, out=hi)
        lo = np.minimum(u, d)
        np.minimum(lo, lf, out=lo)
        np.minimum(lo, rt, out=lo)
        elig: Bool | None = None if oks is None else oks[j]
        if roi is not None:
            inside: Bool = hi <= roi.level if roi.mode == 1 else lo >= roi.level
            elig = inside if elig is None else elig & inside
        hi -= lo
        if fmt.bits_stored >= 16:
            np.minimum(hi, T_MAX, out=hi)
        cx = hi
        danger = None if calm else _danger(p, fmt, guard)
        if danger is not None:
            elig = ~danger if elig is None else elig & ~danger
        out.append(_Grid(view, c, p, cx, elig))
    return out


def _danger(p: I32, fmt: PixelFormat, guard: int = _K_GUARD) -> Bool | None:
    """Targets whose prediction lies next to a forbidden value are not selected.

    Near such values a target is often frozen (its move would leave the range or reach
    padding), and every frozen target would cost a location-map bit. Depends on the prediction
    only, so the decoder derives the same set. None when no prediction is in danger.
    """
    if p.size == 0:
        return None
    pmin, pmax = int(p.min()), int(p.max())
    zones = [(fmt.vmin + 1, fmt.vmin + guard), (fmt.vmax - guard, fmt.vmax)]
    if fmt.padding is not None:
        zones.append((fmt.padding[0] - guard, fmt.padding[1] + guard))
    out: Bool | None = None
    for lo, hi in zones:
        if pmax < lo or pmin > hi:
            continue
        z = np.subtract(p, lo).view(np.uint32) <= hi - lo  # lo <= p <= hi
        out = z if out is None else out | z
    return out


def _near(c: I32, fmt: PixelFormat, calm: bool) -> list[bool]:
    """Per sub-grid of a stack: some target might be frozen or ambiguous (a value within 2 of an
    invalid value). A sub-grid that is not near the edge has no frozen and no ambiguous target:
    it carries no location-map flags."""
    n = c.shape[0]
    if calm or c.size == 0:
        return [False] * n
    mins, maxs = c.min(axis=(1, 2)).tolist(), c.max(axis=(1, 2)).tolist()
    out: list[bool | None] = []
    for cmin, cmax in zip(mins, maxs, strict=True):
        if cmin - 2 < fmt.vmin or cmax + 2 > fmt.vmax:
            out.append(True)
        elif fmt.padding is None or cmin - 2 > fmt.padding[1] or cmax + 2 < fmt.padding[0]:
            out.append(False)
        else:
            out.append(None)
    if None in out:
        # a value >= 3 away from padding ends >= 2 away after its move, and the potential move
        # of that final value (the decoder's test) still cannot reach padding: both sides agree
        assert fmt.padding is not None
        lo, hi = fmt.padding[0] - 2, fmt.padding[1] + 2
        hit: npt.NDArray[np.bool_] = np.any(np.subtract(c, lo).view(np.uint32) <= hi - lo, (1, 2))
        return [bool(h) if o is None else o for o, h in zip(out, hit.tolist(), strict=True)]
    return [bool(o) for o in out]


@dataclass
class _EncGrid:
    g: _Grid
    neg: Bool  # e < 0 (the side a target moves to; moving keeps it)
    active: Bool  # eligible and not frozen (ignoring the threshold)
    carrier: Bool  # active and e in {0, -1}
    frozen: Bool | None  # eligible-but-frozen targets (None: none can be frozen)
    near: list[bool]  # per sub-grid: `_near` (its frozen targets get flags)


def _analyse(
    a: I32,
    k: int,
    fmt: PixelFormat,
    nbok: Bool | None,
    roi: Roi | None = None,
    guard: int = _K_GUARD,
    calm: bool | None = None,
) -> tuple[list[_EncGrid], npt.NDArray[np.int64]]:
    """Pass k's targets of ``a`` analysed for embedding, and the cumulative carrier count per
    complexity; ``calm`` is `_calm` of ``a`` when the caller has it."""
    encs: list[_EncGrid] = []
    cxs: list[I32] = []
    if calm is None:
        calm = _calm(a, fmt)
    for g in _grids(a, k, fmt, nbok, calm, roi, guard):
        e = g.c - g.p
        peak = (e + 1).view(np.uint32) <= 1  # e in {0, -1}
        neg = e < 0
        frozen: Bool | None = None
        near = _near(g.c, fmt, calm)
        if any(near):  # not near: nothing frozen there (values >= 2 from any invalid value)
            pad = _in_pad(g.c, fmt)
            frozen = _moved_invalid(g.c, neg, fmt)
            if pad is not None:
                frozen |= pad
        if frozen is None:
            active = np.ones(e.shape, bool) if g.elig is None else g.elig
            carrier = peak if g.elig is None else active & peak
        else:
            active = ~frozen if g.elig is None else g.elig & ~frozen
            carrier = active & peak
        encs.append(_EncGrid(g, neg, active, carrier, frozen, near))
        cxs.append(g.cx[carrier])
    allcx = cxs[0] if len(cxs) == 1 else np.concatenate(cxs)
    cum = np.cumsum(np.bincount(allcx, minlength=1))
    return encs, cum


def _threshold(cum: npt.NDArray[np.int64], n: int) -> int:
    """T code of the smallest representable threshold whose carriers hold n bits."""
    if n <= 0:
        return _T_UNUSED
    t = int(np.searchsorted(cum, n, side="left"))
    return int(np.searchsorted(THRESHOLDS, t, side="left"))


def _t_of(code: int) -> int:
    """Threshold of a T code (-1: pass unused)."""
    return -1 if code == _T_UNUSED else int(THRESHOLDS[code])


def _carried(cum: npt.NDArray[np.int64], code: int) -> int:
    """Carrier count at a T code (every carrier of a used pass carries a stream bit)."""
    if code == _T_UNUSED:
        return 0
    return int(cum[min(int(THRESHOLDS[code]), cum.size - 1)])


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
        sign = np.subtract(1, eg.neg, dtype=np.int32)
        sign -= eg.neg
        move *= sign
        tc = g.c + move
        view[...] = tc
        if eg.frozen is not None and all(eg.near):
            # every sub-grid near: one pass over the stack (flags in C order, sub-grid by
            # sub-grid, as the loop below gives them)
            flags.append(eg.frozen[_ambiguous(tc, eg.neg, sel, fmt)].astype(np.uint8))
            continue
        for j, near in enumerate(eg.near):
            if near and eg.frozen is not None:
                amb = _ambiguous(tc[j], eg.neg[j], sel[j], fmt)
                flags.append(eg.frozen[j][amb].astype(np.uint8))
            else:
                flags.append(_NOFLAGS)
    return flags


def _ambiguous(c: I32, neg: Bool, sel: Bool, fmt: PixelFormat) -> Bool:
    """Selected targets whose final value could be either frozen or moved there (``neg``:
    final e = c - p < 0)."""
    return _ambiguous_pad(c, neg, sel, fmt)[0]


def _ambiguous_pad(c: I32, neg: Bool, sel: Bool, fmt: PixelFormat) -> tuple[Bool, Bool | None]:
    """`_ambiguous` and `_in_pad` of ``c`` (the decoder needs both)."""
    amb = _moved_invalid(c, neg, fmt)
    amb &= sel
    pad = _in_pad(c, fmt)
    if pad is not None:
        amb &= ~pad
    return amb, pad


def _undo(
    a: I32,
    k: int,
    t: int,
    fmt: PixelFormat,
    *,
    flags: U8,
    fpos: int,
    roi: Roi | None = None,
    guard: int = _K_GUARD,
) -> tuple[list[U8], int] | None:
    """Undo pass k at threshold t; returns (carried bits per sub-grid, flags consumed)."""
    out: list[U8] = []
    if t < 0:
        return out, fpos
    calm = _calm(a, fmt)
    for g in _grids(a, k, fmt, _nb_ok(_pad_map(a, fmt)), calm, roi, guard):
        c = g.c  # a copy, written back to g.view at the end
        sel = g.cx <= t
        if g.elig is not None:
            sel &= g.elig
        e = c - g.p
        neg = e < 0
        act = sel
        nears = _near(c, fmt, calm)
        if all(nears):
            # every sub-grid near: one pass over the stack (its flags are read in C order,
            # sub-grid by sub-grid, as in the loop below)
            act = sel.copy()
            amb, pad = _ambiguous_pad(c, neg, sel, fmt)
            namb = int(np.count_nonzero(amb))
            if fpos + namb > flags.size:
                return None
            act[amb] = flags[fpos : fpos + namb] == 0
            fpos += namb
            if pad is not None:
                act &= ~pad
            nears = []
        for j, near in enumerate(nears):
            if not near:
                continue
            if act is sel:
                act = sel.copy()
            amb, pad = _ambiguous_pad(c[j], neg[j], sel[j], fmt)
            namb = int(np.count_nonzero(amb))
            if fpos + namb > flags.size:
                return None
            actj = act[j]
            actj[amb] = flags[fpos : fpos + namb] == 0
            fpos += namb
            if pad is not None:
                actj &= ~pad
        car = np.add(e, 2).view(np.uint32) <= 3  # -2 <= e <= 1
        car &= act
        ec = e[car]
        out.append(np.where(ec >= 0, ec, -1 - ec).astype(np.uint8))
        move = np.subtract(1, neg, dtype=np.int32)  # a shifted target moves back by 1
        move -= neg
        move *= act
        c -= move
        # a carrier returns to its prediction (e in {0, -1})
        g.view[...] = np.where(car, g.p - neg, c)
    return out, fpos


# ---------------------------------------------------------------------------------------------
# stream framing: [saved ring LSBs][CRC-24][payload byte count, Exp-Golomb][payload][zeros]


def _eg_encode(v: int) -> U8:
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
    for b in bits[pos + z : pos + z + nb]:
        x = (x << 1) | int(b)
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
    also the ROI mode and level and the guard)."""
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
    crc = zlib.crc32(np.packbits(bits).tobytes(), zlib.crc32(ctx)) & 0xFFFFFF
    return np.unpackbits(np.frombuffer(crc.to_bytes(3, "big"), np.uint8))


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
    calm = _calm(s, fmt)  # both passes are analysed on the same values
    enc1, cum1 = _analyse(s, 0, fmt, nbok, roi, guard, calm)
    enc2, cum2 = _analyse(s, 1, fmt, nbok, roi, guard, calm)
    return _Pre(enc1, cum1, _active_cum(enc1, cum1.size), cum2, _active_cum(enc2, cum2.size))


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
    enc1, cum1 = pre.enc1, pre.cum1
    cap1 = int(cum1[-1])
    want = _split(pre, nbits)
    cap2 = 0
    for attempt in range(5):
        a = s.copy()
        c1 = _threshold(cum1, want)
        n1 = _carried(cum1, c1)
        f1 = _apply(enc1, _t_of(c1), stream[:n1], fmt, a, 0)
        n2 = nbits - n1
        if n2 <= 0:
            return a, c1, _T_UNUSED, np.concatenate(f1).astype(np.uint8)
        enc2, cum2 = _analyse(a, 1, fmt, nbok, roi, guard)
        cap2 = int(cum2[-1])
        if cap2 >= n2:
            c2 = _threshold(cum2, n2)
            f2 = _apply(enc2, _t_of(c2), stream[n1:], fmt, a, 1)
            return a, c1, c2, np.concatenate([*f2, *f1]).astype(np.uint8)
        if want >= cap1:
            break
        # pass 2 short: move the rest to pass 1 (which lowers pass 2's capacity a little);
        # the last try fills pass 1 completely
        want = cap1 if attempt >= 3 else min(cap1, n1 + (n2 - cap2) + 16)
    return cap1 + cap2


def _active_cum(encs: list[_EncGrid], size: int) -> npt.NDArray[np.int64]:
    cx = np.concatenate([eg.g.cx[eg.active] for eg in encs])
    return np.cumsum(np.bincount(np.minimum(cx, size - 1), minlength=size))


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
    s = to_stored(raw, fmt)
    h, w = s.shape
    pbits = np.unpackbits(np.frombuffer(payload, np.uint8))
    body = np.concatenate([_eg_encode(len(payload)), pbits])
    head_bits = _side_bits(version, roi)
    if h < 5 or w < 5:
        raise WatermarkCapacityError(0, _overhead(head_bits, len(payload)) + pbits.size)
    ring = header_ring(s, fmt, version, bright=roi is not None and roi.mode == 2)
    flat = s.ravel()
    nbok = _nb_ok(_pad_map(s, fmt))
    pre = _pre(s, fmt, nbok, roi, guard)
    nloc = 0
    for _ in range(6):
        nside = head_bits + (_LOC_LEN_BITS + nloc if nloc else 0)
        if ring.size < nside:
            raise WatermarkCapacityError(0, nside + _CRC_BITS + body.size)
        used = ring[:nside]
        saved = (flat[used] & 1).astype(np.uint8)
        check = _crc(box, fmt, np.concatenate([saved, body]), version, roi, guard)
        stream = np.concatenate([saved, check, body])
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
    head = [(_MAGICS[version] << 1) | (1 if nloc else 0), c1, c2]
    parts = [np.unpackbits(np.array(head, np.uint8))]
    if version != 3:
        mode = 0 if roi is None else roi.mode
        code = _GUARD_CODES.index(guard)
        parts.append(np.array([mode >> 1, mode & 1, code >> 1, code & 1], np.uint8))
        if roi is not None:
            lv = roi.level - fmt.vmin
            parts.append(np.unpackbits(np.frombuffer(lv.to_bytes(2, "big"), np.uint8)))
    if nloc:
        parts += [
            np.unpackbits(np.frombuffer(nloc.to_bytes(2, "big"), np.uint8)),
            flags,
            np.zeros(nloc - flags.size, np.uint8),
        ]
    side = np.concatenate(parts)
    af = a.ravel()
    af[used] = (af[used] & ~1) | side
    _write_raw(raw, a, fmt)


@dataclass(frozen=True)
class _Header:
    used: npt.NDArray[np.intp]  # ring pixels holding side info
    c1: int
    c2: int
    nloc: int
    version: int
    roi: Roi | None
    guard: int


def _ring_value(vals: I32, idx: npt.NDArray[np.intp], start: int, n: int) -> int:
    bits = (vals[idx[start : start + n]] & 1).astype(np.int64)
    return int(bits @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64)))


def _parse_header(
    ring: npt.NDArray[np.intp], vals: I32, fmt: PixelFormat, version: int, bright: bool
) -> _Header | None:
    """The region's side info in format ``version`` (v3 read clockwise, v4 in `header_ring`
    order, dark or ``bright`` first), from its usable ring-0 pixels ``ring`` (`usable_ring`,
    clockwise) and their stored values ``vals`` alone; None without such a header."""
    if ring.size < HEADER_BITS:
        return None
    if version == 3:
        order = np.arange(ring.size)
    else:  # `header_ring`: by s >> 1 (brightest first when ``bright``), clockwise among equals
        half = vals >> 1
        # the magic first, from the order's first 8 pixels: most regions carry no such header
        first = _order_head(half, 8, bright)
        if int(np.packbits((vals[first] & 1).astype(np.uint8))[0]) >> 1 != _MAGICS[version]:
            return None
        order = np.argsort(-half if bright else half, kind="stable")
    hdr = np.packbits((vals[order[:HEADER_BITS]] & 1).astype(np.uint8)).tobytes()
    if hdr[0] >> 1 != _MAGICS[version]:
        return None
    c1, c2 = hdr[1], hdr[2]
    if (c1 >= THRESHOLDS.size and c1 != _T_UNUSED) or (c2 >= THRESHOLDS.size and c2 != _T_UNUSED):
        return None
    nside = HEADER_BITS
    roi: Roi | None = None
    guard = _K_GUARD
    if version != 3:
        if ring.size < nside + _MODE_BITS + _GUARD_BITS:
            return None
        mode = _ring_value(vals, order, nside, _MODE_BITS)
        guard = _GUARD_CODES[_ring_value(vals, order, nside + _MODE_BITS, _GUARD_BITS)]
        nside += _MODE_BITS + _GUARD_BITS
        if mode == 3:
            return None
        if mode:
            if ring.size < nside + _LEVEL_BITS:
                return None
            level = _ring_value(vals, order, nside, _LEVEL_BITS) + fmt.vmin
            nside += _LEVEL_BITS
            if level > fmt.vmax:
                return None
            roi = Roi(mode, level)
    nloc = 0
    if hdr[0] & 1:
        if ring.size < nside + _LOC_LEN_BITS:
            return None
        nloc = _ring_value(vals, order, nside, _LOC_LEN_BITS)
        nside += _LOC_LEN_BITS + nloc
        if nloc == 0 or ring.size < nside:
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


def extract_region(plane: RawPlane, box: Box, fmt: PixelFormat) -> bytes | None:
    """Extract the payload and restore the region's original raw words in place.

    Reads region formats v3 and v4. Returns None, leaving the plane unchanged, when the region
    carries no valid header or its stream fails its check (a damaged carrier).
    """
    raw = _region(plane, box)
    h, w = raw.shape
    if h < 5 or w < 5:
        return None
    # the headers are read from ring 0 alone (gathered once for the three readings); the whole
    # region is converted only when one of them parses
    rr, cc = _ring_rc(h, w)
    rvals = to_stored(raw[rr, cc], fmt)
    idx = _ring_index(h, w)
    if fmt.padding is not None:
        pad = _in_pad(rvals, fmt)
        pad1 = _in_pad(rvals ^ 1, fmt)
        assert pad is not None and pad1 is not None
        keep = ~(pad | pad1)
        idx, rvals = idx[keep], rvals[keep]
    if idx.size < HEADER_BITS:
        return None
    s0: I32 | None = None
    # v3, then v4 with its header on the dark, then on the bright ring pixels: a carrier may
    # pass another reading's magic by chance (and then fail its CRC)
    for version, bright in _READINGS:
        hdr = _parse_header(idx, rvals, fmt, version, bright)
        if hdr is None:
            continue
        if s0 is None:
            s0 = to_stored(raw, fmt)
        s = s0.copy()
        payload = _extract(s, box, fmt, hdr)
        if payload is not None:
            _write_raw(raw, s, fmt)
            return payload
    return None


def _extract(s: I32, box: Box, fmt: PixelFormat, hdr: _Header) -> bytes | None:
    """The payload of a region with header ``hdr``; ``s`` is restored in place on success."""
    used, nloc, roi = hdr.used, hdr.nloc, hdr.roi
    flat = s.ravel()
    flags = (flat[used[used.size - nloc :]] & 1).astype(np.uint8) if nloc else _NOFLAGS
    guard = hdr.guard
    r2 = _undo(s, 1, _t_of(hdr.c2), fmt, flags=flags, fpos=0, roi=roi, guard=guard)
    if r2 is None:
        return None
    b2, fpos = r2
    r1 = _undo(s, 0, _t_of(hdr.c1), fmt, flags=flags, fpos=fpos, roi=roi, guard=guard)
    if r1 is None:
        return None
    stream = np.concatenate([*r1[0], *b2]) if r1[0] or b2 else _NOFLAGS
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
    crc = _crc(box, fmt, check, hdr.version, roi, hdr.guard)
    if not np.array_equal(crc, stream[nside : nside + _CRC_BITS]):
        return None
    flat[used] = (flat[used] & ~1) | saved
    return np.packbits(stream[pos:end]).tobytes()


_NOFLAGS = np.zeros(0, np.uint8)
_NOFLAGS.setflags(write=False)
