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

Pure numpy, no I/O. See docs/WATERMARK.md for the bitstream layout.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from discmaker.errors import InputError

__all__ = [
    "HEADER_BITS",
    "Box",
    "PixelFormat",
    "UnsupportedPixelsError",
    "WatermarkCapacityError",
    "default_grid",
    "embed_region",
    "extract_region",
    "grid_boxes",
    "region_capacity",
]

I32 = npt.NDArray[np.int32]
Bool = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]
RawPlane = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]

_MAGIC = 0xD5C2  # 12-bit magic 0xD5C + 4-bit version 2
HEADER_BYTES = 16  # magic/version 2, T1 2, T2 2, n1 2, n2 2, L 2, crc 4
_N_MAX = 0xFFFF  # n1, n2 and L are 16-bit fields
HEADER_BITS = HEADER_BYTES * 8
_T_MAX = 0xFFFE  # complexity is clipped to this; thresholds are stored as T + 1 (0 = none)
_BOX_TARGET = 128  # default box edge in pixels
_GRID_MAX = 8  # at most 8 x 8 boxes per frame (keeps the signed block small)
_BOX_MIN = 36  # small frames: 2 boxes per axis while boxes keep this many px (ring >= header)
_K_GUARD = 4  # predictions this close to a range end or padding are not selected


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


def _to_stored(raw: RawPlane, fmt: PixelFormat) -> I32:
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
    rng: Bool = (x >= lo) & (x <= hi)
    return rng


def _invalid(x: I32, fmt: PixelFormat) -> Bool:
    bad = (x < fmt.vmin) | (x > fmt.vmax)
    pad = _in_pad(x, fmt)
    return bad if pad is None else bad | pad


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


def _usable_ring(a: I32, fmt: PixelFormat) -> npt.NDArray[np.intp]:
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


# ---------------------------------------------------------------------------------------------
# one pass over the two strided sub-grids of one colour

_SUBGRIDS = (((2, 2), (3, 3)), ((2, 3), (3, 2)))  # pass 1 (black), pass 2 (white)


@dataclass
class _Grid:
    c: I32  # view into the region array: the targets
    p: I32  # prediction
    cx: I32  # complexity (clipped)
    elig: Bool | None  # no neighbour in padding (None: all eligible)


def _grids(a: I32, k: int, fmt: PixelFormat) -> list[_Grid]:
    h, w = a.shape
    out: list[_Grid] = []
    padm = _in_pad(a, fmt)
    if padm is not None and not padm.any():
        padm = None
    for r0, c0 in _SUBGRIDS[k]:
        c = a[r0 : h - 2 : 2, c0 : w - 2 : 2]
        u = a[r0 - 1 : h - 3 : 2, c0 : w - 2 : 2]
        d = a[r0 + 1 : h - 1 : 2, c0 : w - 2 : 2]
        lf = a[r0 : h - 2 : 2, c0 - 1 : w - 3 : 2]
        rt = a[r0 : h - 2 : 2, c0 + 1 : w - 1 : 2]
        ud = u + d
        lr = lf + rt
        p = (ud + lr) >> 2
        hi = np.maximum(np.maximum(u, d), np.maximum(lf, rt))
        lo = np.minimum(np.minimum(u, d), np.minimum(lf, rt))
        cx = hi - lo
        if fmt.bits_stored == 16:
            np.minimum(cx, _T_MAX, out=cx)
        elig: Bool | None = None
        if padm is not None:
            elig = ~(
                padm[r0 - 1 : h - 3 : 2, c0 : w - 2 : 2]
                | padm[r0 + 1 : h - 1 : 2, c0 : w - 2 : 2]
                | padm[r0 : h - 2 : 2, c0 - 1 : w - 3 : 2]
                | padm[r0 : h - 2 : 2, c0 + 1 : w - 1 : 2]
            )
        danger = _danger(p, fmt)
        if danger is not None:
            elig = ~danger if elig is None else elig & ~danger
        out.append(_Grid(c, p, cx, elig))
    return out


def _danger(p: I32, fmt: PixelFormat) -> Bool | None:
    """Targets whose prediction lies next to a forbidden value are not selected.

    Near such values a target is often frozen (its move would leave the range or reach
    padding), and every frozen target would cost a location-map bit. Depends on the prediction
    only, so the decoder derives the same set. None when no prediction is in danger.
    """
    if p.size == 0:
        return None
    pmin, pmax = int(p.min()), int(p.max())
    zones = [(fmt.vmin + 1, fmt.vmin + _K_GUARD), (fmt.vmax - _K_GUARD, fmt.vmax)]
    if fmt.padding is not None:
        zones.append((fmt.padding[0] - _K_GUARD, fmt.padding[1] + _K_GUARD))
    out: Bool | None = None
    for lo, hi in zones:
        if pmax < lo or pmin > hi:
            continue
        z = (p >= lo) & (p <= hi)
        out = z if out is None else out | z
    return out


def _near_edge(c: I32, fmt: PixelFormat) -> bool:
    """True when some target might be frozen or ambiguous (value within 2 of an invalid value)."""
    if c.size == 0:
        return False
    if int(c.min()) - 2 < fmt.vmin or int(c.max()) + 2 > fmt.vmax:
        return True
    if fmt.padding is None:
        return False
    # a value >= 3 away from padding ends >= 2 away after its move, and the potential move of
    # that final value (the decoder's test) still cannot reach padding: both sides agree
    near: bool = np.any((c >= fmt.padding[0] - 2) & (c <= fmt.padding[1] + 2)).item()
    return near


@dataclass
class _EncGrid:
    g: _Grid
    e: I32
    active: Bool  # eligible and not frozen (ignoring the threshold)
    carrier: Bool  # active and e in {0, -1}
    frozen: Bool | None  # eligible-but-frozen targets (None: none can be frozen)


def _analyse(a: I32, k: int, fmt: PixelFormat) -> tuple[list[_EncGrid], npt.NDArray[np.int64]]:
    encs: list[_EncGrid] = []
    cxs: list[I32] = []
    for g in _grids(a, k, fmt):
        e = g.c - g.p
        peak = (e == 0) | (e == -1)
        frozen: Bool | None = None
        if _near_edge(g.c, fmt):
            dirpot = np.where(e >= 0, 1, -1).astype(np.int32)
            pad = _in_pad(g.c, fmt)
            frozen = _invalid(g.c + dirpot, fmt)
            if pad is not None:
                frozen |= pad
        if frozen is None:
            active = np.ones(e.shape, bool) if g.elig is None else g.elig
        else:
            active = ~frozen if g.elig is None else g.elig & ~frozen
        carrier = active & peak
        encs.append(_EncGrid(g, e, active, carrier, frozen))
        cxs.append(g.cx[carrier])
    allcx = np.concatenate(cxs) if cxs else np.zeros(0, np.int32)
    cum = np.cumsum(np.bincount(allcx, minlength=1))
    return encs, cum


def _threshold(cum: npt.NDArray[np.int64], n: int) -> int:
    """Smallest threshold whose carriers hold n bits (-1: select nothing)."""
    if n <= 0:
        return -1
    return int(np.searchsorted(cum, n, side="left"))


def _apply(encs: list[_EncGrid], t: int, bits: U8, fmt: PixelFormat) -> list[U8]:
    """Embed ``bits`` (zero-padded) at threshold t; returns location-map flags per sub-grid."""
    flags: list[U8] = []
    pos = 0
    for eg in encs:
        g = eg.g
        if t < 0:
            flags.append(np.zeros(0, np.uint8))
            continue
        sel = g.cx <= t
        if g.elig is not None:
            sel &= g.elig
        act = eg.active & sel
        car = eg.carrier & sel
        ncar = int(np.count_nonzero(car))
        b = np.zeros(eg.e.shape, np.int32)
        chunk = bits[pos : pos + ncar]
        pos += ncar
        if chunk.size:
            b[car] = np.pad(chunk, (0, ncar - chunk.size)) if chunk.size < ncar else chunk
        e = eg.e
        # shift +1 for e >= 1, -1 for e <= -2; peaks move by their bit towards their side
        move = np.where(e >= 0, 1, -1).astype(np.int32)
        move *= np.where(car, b, act)
        g.c += move
        if eg.frozen is None:
            flags.append(np.zeros(0, np.uint8))
        else:
            amb = _ambiguous(g.c, g.p, sel, fmt)
            flags.append(eg.frozen[amb].astype(np.uint8))
    return flags


def _ambiguous(c: I32, p: I32, sel: Bool, fmt: PixelFormat) -> Bool:
    """Selected targets whose final value could be either frozen or moved there."""
    e = c - p
    amb = sel & _invalid(c + np.where(e >= 0, 1, -1).astype(np.int32), fmt)
    pad = _in_pad(c, fmt)
    if pad is not None:
        amb &= ~pad
    return amb


def _undo(
    a: I32, k: int, t: int, fmt: PixelFormat, *, flags: U8, fpos: int
) -> tuple[list[U8], int] | None:
    """Undo pass k at threshold t; returns (carried bits per sub-grid, flags consumed)."""
    out: list[U8] = []
    if t < 0:
        return out, fpos
    for g in _grids(a, k, fmt):
        c = g.c
        sel = g.cx <= t
        if g.elig is not None:
            sel &= g.elig
        e = c - g.p
        if _near_edge(c, fmt):
            amb = _ambiguous(c, g.p, sel, fmt)
            namb = int(np.count_nonzero(amb))
            if fpos + namb > flags.size:
                return None
            act = sel.copy()
            act[amb] = flags[fpos : fpos + namb] == 0
            fpos += namb
            pad = _in_pad(c, fmt)
            if pad is not None:
                act &= ~pad
        else:
            act = sel
        car = act & (e >= -2) & (e <= 1)
        pos_side = e >= 0
        out.append(np.where(pos_side, e, -1 - e)[car].astype(np.uint8))
        dirp = np.where(pos_side, 1, -1).astype(np.int32)
        c[...] = np.where(car, g.p - (~pos_side).astype(np.int32), c - dirp * act)
    return out, fpos


# ---------------------------------------------------------------------------------------------
# header


def _pack_header(
    box: Box, fmt: PixelFormat, *, t1: int, t2: int, n1: int, n2: int, nloc: int, stream: U8
) -> bytes:
    body = b"".join(x.to_bytes(2, "big") for x in (_MAGIC, t1 + 1, t2 + 1, n1, n2, nloc))
    return body + _crc(box, fmt, body, stream).to_bytes(4, "big")


def _crc(box: Box, fmt: PixelFormat, body: bytes, stream: U8) -> int:
    """CRC-32 over box coordinates, bit depth, signedness, the header fields and the stream."""
    ctx = b"%d,%d,%d,%d,%d,%d,%d|" % (
        box.row0,
        box.col0,
        box.row1,
        box.col1,
        fmt.bits_stored,
        fmt.signed,
        stream.size,
    )
    crc = zlib.crc32(body, zlib.crc32(ctx))
    return zlib.crc32(np.packbits(stream).tobytes(), crc) & 0xFFFFFFFF


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


def _embed_stream(s: I32, fmt: PixelFormat, stream: U8) -> tuple[I32, int, int, int, int, U8] | int:
    """Embed ``stream`` into a copy of ``s`` (ring untouched).

    Returns (array, t1, t2, n1, n2, flags) or the stream capacity in bits when it does not fit.
    """
    nbits = int(stream.size)
    a = s.copy()
    enc1, cum1 = _analyse(a, 0, fmt)
    cap1 = int(cum1[-1])
    n1 = min(cap1, (nbits + 1) // 2)
    cap2 = 0
    for attempt in range(5):
        if attempt:
            a = s.copy()
            enc1, cum1 = _analyse(a, 0, fmt)
        t1 = _threshold(cum1, n1)
        f1 = _apply(enc1, t1, stream[:n1], fmt)
        enc2, cum2 = _analyse(a, 1, fmt)
        cap2 = int(cum2[-1])
        n2 = nbits - n1
        if cap2 >= n2:
            t2 = _threshold(cum2, n2)
            f2 = _apply(enc2, t2, stream[n1:], fmt)
            flags = np.concatenate([*f2, *f1]).astype(np.uint8)
            return a, t1, t2, n1, n2, flags
        if n1 >= cap1:
            break
        n1 = min(cap1, n1 + (n2 - cap2) + 16)
    return cap1 + cap2


def region_capacity(plane: RawPlane, box: Box, fmt: PixelFormat) -> int:
    """Payload bits this region can carry (a close estimate; a multiple of 8)."""
    s = _to_stored(_region(plane, box), fmt)
    h, w = s.shape
    if h < 5 or w < 5:
        return 0
    nring = int(_usable_ring(s, fmt).size)
    if nring < HEADER_BITS:
        return 0
    a = s.copy()
    enc1, cum1 = _analyse(a, 0, fmt)
    cap1 = int(cum1[-1])
    _apply(enc1, _threshold(cum1, cap1), np.zeros(cap1, np.uint8), fmt)
    cap2 = int(_analyse(a, 1, fmt)[1][-1])
    return max(0, min(cap1 + cap2, 2 * _N_MAX) - 2 * HEADER_BITS) // 8 * 8


def embed_region(plane: RawPlane, box: Box, fmt: PixelFormat, payload: bytes) -> None:
    """Embed ``payload`` reversibly into ``plane[box]`` (raw words, in place).

    Raises WatermarkCapacityError(capacity_bits, needed_bits) and leaves the plane unchanged
    when the region cannot carry it.
    """
    raw = _region(plane, box)
    s = _to_stored(raw, fmt)
    h, w = s.shape
    pbits = np.unpackbits(np.frombuffer(payload, np.uint8))
    if h < 5 or w < 5:
        raise WatermarkCapacityError(0, HEADER_BITS + pbits.size)
    ring = _usable_ring(s, fmt)
    flat = s.ravel()
    nloc = 0
    for _ in range(6):
        nside = HEADER_BITS + nloc
        if ring.size < nside:
            raise WatermarkCapacityError(0, nside + pbits.size)
        used = ring[:nside]
        stream = np.concatenate([(flat[used] & 1).astype(np.uint8), pbits])
        res = _embed_stream(s, fmt, stream)
        if isinstance(res, int):
            raise WatermarkCapacityError(max(0, res - nside) // 8 * 8, pbits.size)
        a, t1, t2, n1, n2, flags = res
        if flags.size <= nloc:
            break
        nloc = int(flags.size) + 8 + nloc // 2
    else:  # pragma: no cover - the location map keeps growing (pathological)
        raise WatermarkCapacityError(0, pbits.size)
    if nloc > _N_MAX or n1 > _N_MAX or n2 > _N_MAX:
        raise WatermarkCapacityError(2 * _N_MAX - nside, pbits.size)
    header = _pack_header(box, fmt, t1=t1, t2=t2, n1=n1, n2=n2, nloc=nloc, stream=stream)
    side = np.concatenate(
        [
            np.unpackbits(np.frombuffer(header, np.uint8)),
            flags,
            np.zeros(nloc - flags.size, np.uint8),
        ]
    )
    af = a.ravel()
    af[used] = (af[used] & ~1) | side
    _write_raw(raw, a, fmt)


def _read_header(
    s: I32, fmt: PixelFormat
) -> tuple[npt.NDArray[np.intp], bytes, int, int, int, int, int] | None:
    """(ring pixels used, header body, t1, t2, n1, n2, crc); None without a plausible header."""
    h, w = s.shape
    if h < 5 or w < 5:
        return None
    ring = _usable_ring(s, fmt)
    if ring.size < HEADER_BITS:
        return None
    hdr = np.packbits((s.ravel()[ring[:HEADER_BITS]] & 1).astype(np.uint8)).tobytes()
    if int.from_bytes(hdr[:2], "big") != _MAGIC:
        return None
    t1, t2, n1, n2, nloc = (int.from_bytes(hdr[i : i + 2], "big") for i in range(2, 12, 2))
    crc = int.from_bytes(hdr[12:16], "big")
    nside = HEADER_BITS + nloc
    if ring.size < nside or n1 + n2 < nside or (n1 + n2 - nside) % 8:
        return None
    return ring[:nside], hdr[:12], t1 - 1, t2 - 1, n1, n2, crc


def extract_region(plane: RawPlane, box: Box, fmt: PixelFormat) -> bytes | None:
    """Extract the payload and restore the region's original raw words in place.

    Returns None, leaving the plane unchanged, when the region carries no valid header or its
    stream fails its check (a damaged carrier).
    """
    raw = _region(plane, box)
    s = _to_stored(raw, fmt)
    hdr = _read_header(s, fmt)
    if hdr is None:
        return None
    used, body, t1, t2, n1, n2, crc = hdr
    flat = s.ravel()
    flags = (flat[used[HEADER_BITS:]] & 1).astype(np.uint8)
    r2 = _undo(s, 1, t2, fmt, flags=flags, fpos=0)
    if r2 is None:
        return None
    b2, fpos = r2
    r1 = _undo(s, 0, t1, fmt, flags=flags, fpos=fpos)
    if r1 is None:
        return None
    b1, _ = r1
    bits1 = np.concatenate(b1) if b1 else np.zeros(0, np.uint8)
    bits2 = np.concatenate(b2) if b2 else np.zeros(0, np.uint8)
    if bits1.size < n1 or bits2.size < n2:
        return None
    stream = np.concatenate([bits1[:n1], bits2[:n2]])
    if _crc(box, fmt, body, stream) != crc:
        return None
    flat[used] = (flat[used] & ~1) | stream[: used.size]
    _write_raw(raw, s, fmt)
    return np.packbits(stream[used.size :]).tobytes()
