"""Frame-level watermark seal: signed block, erasure-coded spread, verification and restore.

Per frame a signed block G (see docs/WATERMARK.md) holding a keyed hash of every grid box's
original raw words is cut into k data shards and extended by m parity shards of a systematic
Reed-Solomon code over GF(256). Only the carrier slots of the cheapest plan (fewest estimated
changed values) hold a shard; m is the most carriers in any 2 x 2 block of boxes, so damage to
any one such block leaves G decodable, the signature verifies and the damage is localised.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pydicom
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from discmaker.watermark.background import background_mask

# The one key-id function; the old name stays for existing callers (tests, bench).
from discmaker.watermark.engine import (
    HEADER_BITS,
    HEADER_BITS_V4,
    ROI_BITS,
    T_MAX,
    THRESHOLDS,
    Box,
    PixelFormat,
    Roi,
    UnsupportedPixelsError,
    WatermarkCapacityError,
    _extract_regions,
    _iinfo,
    _ring_heads_sizes,
    _work_values,
    complexity,
    default_grid,
    embed_prepared,
    embed_region,
    grid_boxes,
    neighbour_range,
    prepared,
    region_capacity,
)
from discmaker.watermark.pixels import (
    RawFrames,
    _format_and_layout,
    _frames_view,
    _pixel_bytes,
)

__all__ = [
    "SIGNED_BLOCK_VERSION",
    "SealStats",
    "TamperedRegion",
    "UnsealResult",
    "plan_carriers",
    "rs_decode",
    "rs_encode",
    "seal_dataset",
    "signed_block_size",
    "unseal_dataset",
]

SIGNED_BLOCK_VERSION = 4
_DOMAINS = {3: b"discmaker/watermark/v3\x00", 4: b"discmaker/watermark/v4\x00"}
# version, key id, header: v3 the 16-byte identity digest, v4 the 32-byte header block
_HEADS = {3: struct.Struct(">B8s16s"), 4: struct.Struct(">B8s32s")}
_WHERE = struct.Struct(">IHH")  # frame, grid rows, grid cols: signed, not carried
_SHARD = struct.Struct(">BBB")  # k, shard index, tag (BLAKE2b-8 of G: groups the shards)
_HASH3 = 8  # v3: BLAKE2b-64 per box
_FRAME_DIGEST = 16  # v4: BLAKE2b-128 over every word of the frame (detection)
_BOX_TAG = 2  # v4: BLAKE2b-16 per box (localisation only; the frame digest detects)
_SIG = 64
_SEARCH_BUDGET = 256  # decode attempts when some CRC-valid shards are inconsistent
_STARTS = 6  # carrier plans: greedy runs per parity, each from another cheap first carrier
_K_MAX = 32  # data shards at most (more only adds per-carrier overhead)
_K_ORDERS = (6, 8, 11, 16, 23, 32)  # planner: k past 4 whose slot order is searched as well
_SIDE_BITS = HEADER_BITS + 24  # per carrier: ring header + its saved LSBs + CRC-24 (+ length)

Status = Literal[
    "ok", "tampered", "no-watermark", "unknown-signer", "bad-signature", "identity-mismatch"
]


@dataclass(frozen=True)
class SealStats:
    frames: int
    values_changed: int
    values_total: int
    carriers: int  # carrier regions written, all frames
    signed_block_bytes: int  # size of G per frame
    # values (samples) inside the body mask (discmaker.watermark.background: everything that is
    # not background), all frames, and how many of them the seal changed
    values_in_body: int = 0
    values_changed_in_body: int = 0
    # per frame: (values changed inside the body mask, values changed outside it)
    frame_changes: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class TamperedRegion:
    frame: int  # 0-based
    row0: int
    col0: int
    row1: int
    col1: int


@dataclass(frozen=True)
class UnsealResult:
    status: Status
    key_id: bytes | None
    regions: tuple[TamperedRegion, ...]
    reasons: tuple[str, ...]
    restored_pixel_data: bytes | None
    version: int | None = None  # of the first verified frame's G
    sealed_header: bytes | None = None  # the header block that frame carries
    # frames (0-based) whose G carries another header than the first verified frame's: their
    # pixels were sealed for another image (frames spliced in from it)
    foreign_frames: tuple[int, ...] = ()


def signed_block_size(nboxes: int, version: int = SIGNED_BLOCK_VERSION) -> int:
    """Bytes of G for a frame of ``nboxes`` boxes: v4 121 + 2 x boxes, v3 89 + 8 x boxes."""
    if version == 3:
        return _HEADS[3].size + _HASH3 * nboxes + _SIG
    return _HEADS[4].size + _FRAME_DIGEST + _BOX_TAG * nboxes + _SIG


def _tag(block: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(block, digest_size=1, person=b"DMwmtag3").digest(), "big")


# ---------------------------------------------------------------------------------------------
# Reed-Solomon erasure code over GF(256) (polynomial 0x11D), systematic: shards 0..k-1 are the
# data, shard k + j is row j of a Cauchy matrix 1 / ((k + j) xor i) times the data. Every
# k x k submatrix of [I; C] is invertible, so any k shards give the data back.


def _gf_tables() -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    exp = np.zeros(512, np.int32)
    log = np.zeros(256, np.int32)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= 0x11D
    exp[255:510] = exp[:255]
    exp.setflags(write=False)  # module-wide tables, shared by every thread: never written
    log.setflags(write=False)
    return exp, log


_EXP, _LOG = _gf_tables()


def _gf_matmul(m: npt.NDArray[np.int32], d: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """(r x k) times (k x L) over GF(256)."""
    prod = _EXP[_LOG[m][:, :, None] + _LOG[d][None, :, :]]
    prod[(m == 0)[:, :, None] | (d == 0)[None, :, :]] = 0
    out: npt.NDArray[np.int32] = np.bitwise_xor.reduce(prod, axis=1)
    return out


def _gf_rows(k: int, idx: list[int]) -> npt.NDArray[np.int32]:
    """Generator rows of the shards ``idx``."""
    m = np.zeros((len(idx), k), np.int32)
    cols = np.arange(k)
    for r, i in enumerate(idx):
        if i < k:
            m[r, i] = 1
        else:
            m[r] = _EXP[255 - _LOG[i ^ cols]]
    return m


def _gf_invert(m: npt.NDArray[np.int32]) -> npt.NDArray[np.int32] | None:
    n = m.shape[0]
    a = np.concatenate([m, np.eye(n, dtype=np.int32)], axis=1)
    for c in range(n):
        nz = np.flatnonzero(a[c:, c])
        if nz.size == 0:
            return None
        p = c + int(nz[0])
        if p != c:
            a[[c, p]] = a[[p, c]]
        row = a[c]
        inv = _EXP[255 - _LOG[row[c]]]
        a[c] = np.where(row != 0, _EXP[_LOG[row] + _LOG[inv]], 0)
        f = a[:, c].copy()
        f[c] = 0
        a ^= _gf_matmul(f[:, None], a[c][None, :])
    return a[:, n:]


def rs_encode(data: bytes, k: int, n: int) -> list[bytes]:
    """n shards of ceil(len(data) / k) bytes; any k of them give ``data`` back."""
    if not 1 <= k <= n <= 256:
        raise ValueError(f"bad code ({n}, {k})")
    size = -(-len(data) // k)
    padded = data.ljust(k * size, b"\0")
    shards = [padded[i * size : (i + 1) * size] for i in range(k)]  # (the data rows' bytes)
    if n > k:
        d = np.frombuffer(padded, np.uint8).reshape(k, size).astype(np.int32)
        par = _gf_matmul(_gf_rows(k, list(range(k, n))), d).astype(np.uint8)
        shards += [par[j].tobytes() for j in range(n - k)]
    return shards


def rs_decode(shards: Mapping[int, bytes], k: int, length: int) -> bytes | None:
    """``length`` data bytes from any k shards (index -> bytes); None when that is impossible."""
    idx = sorted(shards)[:k]
    if len(idx) < k or len({len(shards[i]) for i in idx}) != 1:
        return None
    if idx == list(range(k)):
        return b"".join(shards[i] for i in idx)[:length]
    inv = _gf_invert(_gf_rows(k, idx))
    if inv is None:  # pragma: no cover - [I; C] has no singular k x k submatrix
        return None
    s = np.stack([np.frombuffer(shards[i], np.uint8) for i in idx]).astype(np.int32)
    return bytes(_gf_matmul(inv, s).astype(np.uint8).ravel())[:length]


def _box_hash(arr: RawFrames, frame: int, box: Box, size: int = _HASH3) -> bytes:
    """BLAKE2b over the box's raw words in every plane: v3 8 bytes, v4 box tags 2 bytes."""
    person = b"DMwm" + struct.pack(">IHHHH", frame, box.row0, box.col0, box.row1, box.col1)
    h = hashlib.blake2b(digest_size=size, person=person)
    words = arr[frame, :, box.row0 : box.row1, box.col0 : box.col1]
    h.update(np.ascontiguousarray(words, dtype=words.dtype.newbyteorder("<")).data)  # no copy
    return h.digest()


def _frame_digest(arr: RawFrames, frame: int) -> bytes:
    """v4: BLAKE2b-128 over every raw word of the frame, all planes (detection)."""
    h = hashlib.blake2b(digest_size=_FRAME_DIGEST, person=b"DMwmF4" + struct.pack(">I", frame))
    words = arr[frame]
    h.update(np.ascontiguousarray(words, dtype=words.dtype.newbyteorder("<")).data)
    return h.digest()


def _pixel_block(arr: RawFrames, frame: int, boxes: list[Box]) -> bytes:
    """v4: what G says of the pixels: the frame digest, then one tag per box (row-major)."""
    tags = b"".join(_box_hash(arr, frame, b, _BOX_TAG) for b in boxes)
    return _frame_digest(arr, frame) + tags


def _context(arr: RawFrames, fmt: PixelFormat) -> bytes:
    """Parameters bound into the signature without being carried."""
    _, planes, rows, cols = arr.shape
    pad = fmt.padding or (0, -1)
    return struct.pack(
        ">HHBBB?ii", rows, cols, planes, arr.dtype.itemsize, fmt.bits_stored, fmt.signed, *pad
    )


def _windows(grid: tuple[int, int]) -> list[list[int]]:
    """Per box, the damage windows holding it: 2 x 2 blocks of boxes (1 x 2 / 2 x 1 on a thin
    grid); single boxes when one block would cover the whole grid (2 x 2 and smaller)."""
    gr, gc = grid
    out: list[list[int]] = [[] for _ in range(gr * gc)]
    if gr <= 2 and gc <= 2:
        return [[i] for i in range(gr * gc)]
    wr, wc = min(2, gr), min(2, gc)
    w = 0
    for r in range(gr - wr + 1):
        for c in range(gc - wc + 1):
            for i in range(r, r + wr):
                for j in range(c, c + wc):
                    out[i * gc + j].append(w)
            w += 1
    return out


@functools.lru_cache(maxsize=16)
def _target_labels(shape: tuple[int, int], grid: tuple[int, int]) -> npt.NDArray[np.int32]:
    """Per interior pixel (rows/cols 1..-2): 2 x box + colour (0 black, pass 1) of the target
    it is in its box, or -1 for ring 0/1 pixels."""
    rows, cols = shape
    lab = np.full((rows, cols), -1, np.int32)
    for i, b in enumerate(grid_boxes(shape, grid=grid)):
        h, w = b.shape
        if h < 5 or w < 5:
            continue
        yy, xx = np.mgrid[0 : h - 4, 0 : w - 4]
        lab[b.row0 + 2 : b.row1 - 2, b.col0 + 2 : b.col1 - 2] = 2 * i + ((yy + xx) & 1)
    out = np.ascontiguousarray(lab[1:-1, 1:-1])
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=16)
def _target_keys(
    shape: tuple[int, int], grid: tuple[int, int], scale: int = 1
) -> npt.NDArray[np.int32]:
    """Per interior pixel: the base bin (box, colour) of `_slot_curves`' histogram, or the first
    dump bin (past every real bin) for ring 0/1 pixels; times ``scale`` (2: the bins of the
    curves with a ROI rule, one more bit per key)."""
    nb = grid[0] * grid[1]
    nc = int(THRESHOLDS.size)
    lab = _target_labels(shape, grid)
    out = (np.where(lab >= 0, lab * (2 * nc), nb * 4 * nc) * scale).astype(np.int32)
    out.setflags(write=False)
    return out


def _code_lut() -> npt.NDArray[np.int32]:
    lut = np.searchsorted(THRESHOLDS, np.arange(T_MAX + 1)).astype(np.int32)
    lut.setflags(write=False)
    return lut


_LUT = _code_lut()
_LUT2 = 2 * _LUT  # 2 x threshold code per complexity (histogram bin offset)
_LUT2.setflags(write=False)
_LUT2_16 = _LUT2.astype(np.int16)  # the same (codes < 2^14)
_LUT2_16.setflags(write=False)


_STRIP_PIXELS = 65536  # per slice of `_slot_curves`: temporaries stay cached (and off mmap)

# `_slot_curves` on values of Bits Stored <= 13 (int16, complexity < 2^13): per target one
# 16-bit index, the complexity with three flag bits above it, looked up in one table
_OFF_BIT, _DUMP_BIT, _PEAK_BIT = 13, 14, 15


@functools.lru_cache(maxsize=16)
def _flag_table(total: int, rule: bool) -> npt.NDArray[np.int32]:
    """Bin offset (added to the `_target_keys` base) of each 16-bit index complexity | outside
    the rule << 13 | dump << 14 | peak << 15: 2 x code + peak (with ``rule``: twice that plus
    the outside bit, the bins `_slot_curves` makes with ``key <<= 1; key += off``); a dump
    index gives ``total`` (with ``rule`` 2 x ``total``), so its key lies past every real bin."""
    i = np.arange(1 << 16)
    val = _LUT2[i & ((1 << _OFF_BIT) - 1)] + (i >> _PEAK_BIT)
    if rule:
        val = 2 * val + ((i >> _OFF_BIT) & 1)
    out = np.where((i >> _DUMP_BIT) & 1, 2 * total if rule else total, val).astype(np.int32)
    out.setflags(write=False)
    return out


def _set_bit(idx: npt.NDArray[np.uint16], flag: npt.NDArray[np.bool_], bit: int) -> None:
    """idx |= flag << bit (in place)."""
    idx |= np.left_shift(flag, bit, dtype=np.uint16)


def _slot_curves(
    plane: npt.NDArray[np.uint8] | npt.NDArray[np.uint16],
    grid: tuple[int, int],
    fmt: PixelFormat,
    levels: tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]] | None = None,
    stored: npt.NDArray[np.int32] | npt.NDArray[np.int16] | None = None,
) -> npt.NDArray[np.int64]:
    """Cumulative counts per box, colour, kind (carrier, active) and threshold code.

    One vectorised pass over the original plane (both colours predicted from original values,
    padding neighbours excluded), in strips of rows: shape (boxes, 2, 2, codes). With
    ``levels`` (per box: the highest value a dark-ROI target's neighbours may have, the lowest
    a bright-ROI target's may have) a second set of curves counts only the targets such a
    `Roi` keeps: shape (2, boxes, 2, 2, codes), full curves first. ``stored``: `to_stored` or
    `_work_values` of the plane when the caller has it (not converted again).
    """
    rows, cols = plane.shape
    nb = grid[0] * grid[1]
    nc = int(THRESHOLDS.size)
    nout = 1 if levels is None else 2
    if rows < 5 or cols < 5:
        out = np.zeros((nout, nb, 2, 2, nc), np.int64)
        return out[0] if levels is None else out
    out = np.empty((nout, nb, 2, 2, nc), np.int64)  # (every value written below)
    base = _target_keys((rows, cols), grid)
    gc = grid[1]
    boxes = grid_boxes((rows, cols), grid=grid)
    band_cols = [(max(b.col0 - 1, 0), min(b.col1 - 1, cols - 2)) for b in boxes[:gc]]
    total = nb * 2 * nc * 2  # bins past this one are the dump (ring pixels, padding neighbours)
    # the keys of every strip, counted by one bincount at the end (per strip, allocating and
    # adding up the whole histogram cost more than the count itself)
    keys = np.empty((rows - 2) * (cols - 2), np.int32)
    # per box the rule's levels, clipped to the plane's value type (a level outside the values'
    # range compares like the type's own limit, and none means that limit)
    vt = _iinfo(np.int16 if fmt.bits_stored <= 13 else np.int32)
    lv: list[tuple[int, int]] = []
    if levels is not None:
        vlo, vhi = int(vt.min), int(vt.max)  # (as np.clip, on a few Python ints)
        dark_l, bright_l = ([min(max(x, vlo), vhi) for x in v.tolist()] for v in levels)
        lv = list(zip(dark_l, bright_l, strict=True))
    strip = max(8, _STRIP_PIXELS // cols)
    # strips of interior rows r0 .. r1 - 1 that never cross a row of boxes: each box's rule is
    # then one comparison on its columns of the strip
    spans = [
        (i, r0, min(r0 + strip, end))
        for i, b in enumerate(boxes[::gc])
        for end in (min(b.row1, rows - 1),)
        for r0 in range(max(b.row0, 1), end, strip)
    ]
    narrow = fmt.bits_stored <= 13  # int16 values: `_strip_keys16`
    table = _flag_table(total, levels is not None) if narrow else None
    base2 = _target_keys((rows, cols), grid, 2) if narrow and levels is not None else base
    for i, r0, r1 in spans:
        if stored is None:
            s = _work_values(plane[r0 - 1 : r1 + 1], fmt)
        elif fmt.bits_stored > 13:  # `_work_values` is `to_stored` here
            s = stored[r0 - 1 : r1 + 1]  # only read
        else:  # (only read)
            s = stored[r0 - 1 : r1 + 1].astype(np.int16, copy=False)
        key = keys[(r0 - 1) * (cols - 2) : (r1 - 1) * (cols - 2)].reshape(r1 - r0, cols - 2)
        if table is not None:
            strip_lv = lv[i * gc : (i + 1) * gc] if lv else None
            _strip_keys16(s, key, fmt, table, base2[r0 - 1 : r1 - 1], band_cols, strip_lv)
            continue
        u, d = s[:-2, 1:-1], s[2:, 1:-1]
        lf, rt = s[1:-1, :-2], s[1:-1, 2:]
        c = s[1:-1, 1:-1]
        q = u + d
        q += lf
        q += rt
        q >>= 2
        q -= c  # -e: a peak (e in {0, -1}) is q in {0, 1}
        peak: npt.NDArray[np.bool_] = q.view(q.dtype.str.replace("i", "u")) <= 1
        if levels is None:
            cx = complexity(u, d, lf, rt, fmt)
        else:  # the same as `complexity`, keeping the neighbours' max and min for the rule
            lo, hi = neighbour_range(u, d, lf, rt)
            cx = hi - lo
            if fmt.bits_stored >= 16:
                np.minimum(cx, T_MAX, out=cx)
        # written straight into this strip's part of ``keys`` (cx is always a valid index)
        key[...] = np.take(_LUT2_16, cx, mode="clip")  # (a small table gathers faster)
        key += base[r0 - 1 : r1 - 1]
        key += peak
        if fmt.padding is not None:
            plo, phi = fmt.padding
            pad = s == plo if plo == phi else (s >= plo) & (s <= phi)
            if pad.any():
                bad = pad[:-2, 1:-1] | pad[2:, 1:-1]
                bad |= pad[1:-1, :-2]
                bad |= pad[1:-1, 2:]
                bad |= pad[1:-1, 1:-1]
                np.putmask(key, bad, total)
        if lv:
            # outside the rule: a neighbour above the dark level or below the bright one (ring
            # pixels take their box's levels too; they are counted in the dump bins)
            off = np.zeros(hi.shape, bool)
            for j, (c0, c1) in enumerate(band_cols):
                dark, bright = lv[i * gc + j]
                if dark < vt.max:
                    np.greater(hi[:, c0:c1], dark, out=off[:, c0:c1])
                if bright > vt.min:
                    off[:, c0:c1] |= lo[:, c0:c1] < bright
            key <<= 1  # one bincount for both: bin 2 x key + (outside the rule)
            key += off
    nbins = total + 2 * nc
    # the real bins (`_strip_keys16` puts its dump keys further out than the others) summed
    # along the codes first: the curves are sums of these sums (integers: exactly the same)
    if levels is None:
        hist = np.bincount(keys, minlength=nbins)[:total].reshape(nb, 2, nc, 2)
        cum = np.cumsum(hist, axis=2)  # box, colour, code, peak
        np.copyto(out[0, :, :, 0], cum[..., 1])  # carriers
        np.add(cum[..., 0], cum[..., 1], out=out[0, :, :, 1])  # active (selected) targets
        one: npt.NDArray[np.int64] = out[0]
        return one
    both = np.bincount(keys, minlength=2 * nbins)[: 2 * total].reshape(nb, 2, nc, 2, 2)
    cum = np.cumsum(both, axis=2)  # box, colour, code, peak, outside the rule
    inside = cum[..., 0]
    every = cum[..., 0] + cum[..., 1]
    for i, c in enumerate((every, inside)):
        np.copyto(out[i, :, :, 0], c[..., 1])  # carriers
        np.add(c[..., 0], c[..., 1], out=out[i, :, :, 1])  # active (selected) targets
    return out


def _pad_touched(
    s: npt.NDArray[np.int16],
    hi: npt.NDArray[np.int16],
    lo: npt.NDArray[np.int16],
    padding: tuple[int, int],
) -> npt.NDArray[np.bool_] | None:
    """Targets (rows/cols 1..-2 of ``s``) that are padding or have a padding neighbour; None
    when there is none. ``hi``/``lo``: their neighbours' max/min. When no value of ``s`` lies
    below the padding range (above it), a target or neighbour is padding exactly when the
    lowest (highest) of them is at most (at least) the range's other end: two passes instead
    of a padding map and its four shifts."""
    plo, phi = padding
    smin, smax = int(s.min()), int(s.max())
    if smin > phi or smax < plo:
        return None  # (no padding value at all)
    c = s[1:-1, 1:-1]
    if smin >= plo:
        touched: npt.NDArray[np.bool_] = np.minimum(lo, c) <= phi
        return touched
    if smax <= phi:
        touched = np.maximum(hi, c) >= plo
        return touched
    pad = s == plo if plo == phi else (s >= plo) & (s <= phi)
    if not pad.any():
        return None
    bad = pad[:-2, 1:-1] | pad[2:, 1:-1]
    bad |= pad[1:-1, :-2]
    bad |= pad[1:-1, 2:]
    bad |= pad[1:-1, 1:-1]
    return bad


def _strip_keys16(
    s: npt.NDArray[np.int16],
    key: npt.NDArray[np.int32],
    fmt: PixelFormat,
    table: npt.NDArray[np.int32],
    base: npt.NDArray[np.int32],
    band_cols: list[tuple[int, int]],
    lv: list[tuple[int, int]] | None,
) -> None:
    """`_slot_curves`' keys of one strip (rows 1..-2 of ``s``, int16 values of Bits Stored <=
    13) into ``key``: the key the general loop makes for each real bin, from one lookup of
    complexity | flags (`_flag_table`) instead of a code lookup, a peak add, a dump `putmask`
    and a shift (a dump key lands past every real bin, not in the first dump bin).
    ``lv``: the levels of this strip's boxes (left to right), None without a rule."""
    u, d = s[:-2, 1:-1], s[2:, 1:-1]
    lf, rt = s[1:-1, :-2], s[1:-1, 2:]
    q = u + d
    q += lf
    q += rt
    q >>= 2
    q -= s[1:-1, 1:-1]  # -e: a peak (e in {0, -1}) is q in {0, 1}
    lo, hi = neighbour_range(u, d, lf, rt)
    idx = np.subtract(hi, lo).view(np.uint16)  # `complexity` (< 2^13: no clip below 16 bits)
    peak = q.view(np.uint16)
    np.less_equal(peak, 1, out=peak)  # (0 or 1, in place)
    peak <<= _PEAK_BIT
    idx |= peak
    if fmt.padding is not None:
        bad = _pad_touched(s, hi, lo, fmt.padding)
        if bad is not None:
            _set_bit(idx, bad, _DUMP_BIT)
    if lv is not None:
        # outside the rule: a neighbour above the dark level or below the bright one (levels
        # clipped to int16 by the caller), each box's levels over its columns (the bands tile
        # the strip's columns); no neighbour is above int16's max or below its min, so a box
        # without a dark (bright) level adds nothing there
        vt = _iinfo(np.int16)
        widths = [c1 - c0 for c0, c1 in band_cols]
        darks = [d for d, _ in lv]
        brights = [b for _, b in lv]
        off: npt.NDArray[np.bool_] | None = None
        if min(darks) < vt.max:
            off = np.greater(hi, np.repeat(np.array(darks, np.int16), widths))
        if max(brights) > vt.min:
            below = np.less(lo, np.repeat(np.array(brights, np.int16), widths))
            off = below if off is None else np.logical_or(off, below, out=off)
        if off is not None:
            _set_bit(idx, off, _OFF_BIT)
    np.take(table, idx, out=key, mode="wrap")  # (a 2^16 table: every index is in range)
    key += base


def _load_bits(gsize: int, k: int) -> int:
    """Stream bits of one carrier of a k-shard code (region format v4 without a ROI rule)."""
    nbytes = _SHARD.size - (-gsize // k)
    v4 = HEADER_BITS_V4 - HEADER_BITS  # the v4 header's mode and guard fields
    return _SIDE_BITS + v4 + 8 * nbytes + (2 * (nbytes + 16).bit_length() - 5)


def _count_below(cum: npt.NDArray[np.int64], x: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Per row r and column l: how many of cum[r] (non-decreasing, >= 0) are < x[r, l] (>= 0), i.e.
    ``(cum[:, None, :] < x[..., None]).sum(-1)``, by one search of the rows laid end to end
    (row r lifted by r x a bound above every value)."""
    rows, size = cum.shape
    big = int(max(int(cum.max(initial=0)), int(x.max(initial=0)))) + 1
    lift = np.arange(rows, dtype=np.int64)[:, None] * big
    found = np.searchsorted((cum + lift).ravel(), x + lift, side="left")
    out: npt.NDArray[np.intp] = found - np.arange(rows)[:, None] * size
    return out


def _costs(curves: npt.NDArray[np.int64], loads: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Estimated values changed per slot (rows) for each load (columns): pass 1 filled at the
    threshold holding half the load, pass 2 the rest; inf when the slot cannot hold it.
    ``loads``: one row for every slot, or a row per slot (element-wise: the same figures)."""
    c1, a1, c2, a2 = curves[:, 0, 0], curves[:, 0, 1], curves[:, 1, 0], curves[:, 1, 1]
    last = c1.shape[1] - 1
    ld = loads[None, :] if loads.ndim == 1 else loads
    half = np.broadcast_to((ld + 1) // 2, (c1.shape[0], ld.shape[1]))
    i1 = np.minimum(_count_below(c1, half), last)
    r = np.arange(c1.shape[0])[:, None]
    n1 = np.minimum(c1[r, i1], ld)
    cost = (a1[r, i1] - c1[r, i1]) + n1 / 2
    n2 = ld - n1
    i2 = np.minimum(_count_below(c2, n2), last)
    cost = cost + np.where(n2 > 0, a2[r, i2] - c2[r, i2] + n2 / 2, 0)
    # pass 2 short at the half split: pass 1 takes more (upper bound: every target moves)
    cost = np.where(c2[r, i2] < n2, a1[:, -1:] + a2[:, -1:], cost)
    cost = np.where((c1[:, -1:] + c2[:, -1:]) * 15 < ld * 16 + 160, np.inf, cost)
    return cost + HEADER_BITS / 2


def _rank(costs: npt.NDArray[np.float64], ref: int) -> list[int]:
    """Slots in planning order: those that can hold the smallest shards (a k at or below
    column ``ref``) first, by their cost there; a slot finite only for larger k (a noisy box
    that holds only small shards) after them, by the first k it can hold. Never-finite slots
    are left out. (Ranking by column ``ref`` alone dropped every slot of a frame whose boxes
    only hold shards of k > 4: no plan at all.)"""
    n, kmax = costs.shape
    fin = np.isfinite(costs)
    ok = np.any(fin, axis=1)
    first = np.maximum(np.where(ok, np.argmax(fin, axis=1), kmax - 1), ref)
    val = costs[np.arange(n), first]
    val = np.where(np.isfinite(val), val, np.inf)
    order = np.lexsort((np.arange(n), val, first))
    return [int(i) for i in order if ok[i]]


def _greedy(cands: list[int], wins: list[list[int]], nb: int, nwin: int, m: int) -> list[int]:
    """Slots of ``cands`` in order, each taken when no damage window would hold more than m."""
    count = [0] * nwin
    order: list[int] = []
    taken: set[int] = set()
    for slot in cands:
        if slot in taken:
            continue
        ws = wins[slot % nb]
        for w in ws:
            if count[w] >= m:
                break
        else:
            for w in ws:
                count[w] += 1
            order.append(slot)
            taken.add(slot)
    return order


@dataclass(frozen=True)
class _Plan:
    carriers: tuple[int, ...]  # slot indices (plane x boxes + box), shard i -> carriers[i]
    k: int
    cost: float


def plan_carriers(
    costs: npt.NDArray[np.float64], grid: tuple[int, int], planes: int
) -> _Plan | None:
    """Carrier slots and data-shard count k minimising the estimated values changed.

    ``costs[slot, k - 1]`` is the cost of one shard of a k-shard code in that slot. The parity
    m = n - k is the largest number of carriers in any damage window (2 x 2 boxes, all planes),
    so any one window of damaged boxes leaves k intact shards.
    """
    nb = grid[0] * grid[1]
    nslots = costs.shape[0]
    kmax = costs.shape[1]
    wins = _windows(grid)
    nwin = 1 + max(max(w) for w in wins)
    rank = _rank(costs, min(kmax, 4) - 1)
    # and the slots by their cost at a few larger k: a slot that holds only a larger k's shards
    # cheaply (a ROI carrier in a narrow band of air) is near the front of that k's order,
    # where `rank` put it behind every slot holding k = 4 at any cost (a whole box of anatomy)
    by_k = [_rank(costs[:, k - 1 : k], 0) for k in _K_ORDERS if k <= kmax]
    by_k = [list(o) for o in dict.fromkeys(tuple(o) for o in by_k if o)]  # (often the same)
    tried: list[tuple[int, list[int]]] = []  # (m, carriers in order), as the search meets them
    for m in range(1, min(nslots, 4 * planes) + 1):
        seen: set[tuple[int, ...]] = set()
        starts = [[first, *rank] for first in rank[:_STARTS]]  # a few different first carriers
        starts += by_k
        for cands in starts:
            order = _greedy(cands, wins, nb, nwin, m)
            if len(order) <= m:
                continue
            key = tuple(order)
            if key in seen:  # the same carriers in the same order: the same plans again
                continue
            seen.add(key)
            tried.append((m, order))
    if not tried:
        return None
    # the first plan (in search order) of the lowest finite cost: the plan a loop over
    # the values keeps (a later one only when strictly cheaper), found by one argmin
    vals, rows, ks = _plan_values(costs, tried)
    vals = np.where(np.isfinite(vals), vals, np.inf)
    at = int(np.argmin(vals))
    if not vals[at] < np.inf:
        return None
    m, order = tried[rows[at]]
    k = ks[at] + 1
    return _Plan(tuple(order[: m + k]), k, float(vals[at]))


def _plan_values(
    costs: npt.NDArray[np.float64], tried: list[tuple[int, list[int]]]
) -> tuple[npt.NDArray[np.float64], list[int], list[int]]:
    """Per (m, order) of `plan_carriers`: the cost of its first n carriers at k = n - m, for
    n = m + 1 .. min(len(order), m + kmax), i.e. ``np.cumsum(costs[order], axis=0)[n - 1,
    n - m - 1]``, laid end to end (orders in turn, n rising), with each value's row of
    ``tried`` and its k - 1; all orders in one pass (padded to one length: padding only
    follows the sums read, and a cumulative sum adds in order along its axis, so the sums
    are the same)."""
    kmax = costs.shape[1]
    width = max(len(order) for _, order in tried)
    idx = np.array([order + [0] * (width - len(order)) for _, order in tried], np.intp)
    tot = np.cumsum(costs[idx], axis=1)
    rows: list[int] = []
    ns: list[int] = []
    ks: list[int] = []
    for r, (m, order) in enumerate(tried):
        top = min(len(order), m + kmax)
        rows += [r] * (top - m)
        ns += range(m, top)
        ks += range(top - m)
    vals: npt.NDArray[np.float64] = tot[rows, ns, ks]
    return vals, rows, ks


_BODY_WEIGHT = 1000.0  # planner: one changed body value costs as much as this many elsewhere


@dataclass(frozen=True)
class _FrameRoi:
    """Seal-side view of a frame's background (the decoder needs none of it)."""

    body: list[npt.NDArray[np.bool_]]  # per plane: True where anatomy (not background)
    rois: list[Roi | None]  # per slot: the target rule keeping the carrier off the body
    share: npt.NDArray[np.float64]  # per slot: body share of the box's interior
    ring: npt.NDArray[np.float64]  # per slot: body pixels among the ring's header pixels
    # per plane: the frame plane's stored values (`_work_values`: int16 below 14 bits)
    stored: list[npt.NDArray[np.int32] | npt.NDArray[np.int16]]
    usable: list[int]  # per slot: `usable_ring` size of the box


def _box_roi(
    sv: npt.NDArray[np.int32], body: npt.NDArray[np.bool_], fmt: PixelFormat
) -> Roi | None:
    """The rule for one box (its interior rows/cols 1..-2: the targets' neighbours): a level
    below every body value (dark background) or above it (bright), whichever keeps more
    background; None when the box has no body or no background on either side."""
    return _box_rule(sv, body, fmt)[0]


def _box_rule(
    sv: npt.NDArray[np.int32] | npt.NDArray[np.int16],
    body: npt.NDArray[np.bool_],
    fmt: PixelFormat,
) -> tuple[Roi | None, int]:
    """`_box_roi` and the body pixels it counted."""
    nbody = int(np.count_nonzero(body))
    if nbody in (0, body.size):
        return None, nbody
    dark = int(np.min(sv, where=body, initial=fmt.vmax)) - 1  # (no temporary array)
    bright = int(np.max(sv, where=body, initial=fmt.vmin)) + 1
    return _rule_of(sv, dark, bright, fmt), nbody


def _rule_of(
    sv: npt.NDArray[np.int32] | npt.NDArray[np.int16],
    dark: int,
    bright: int,
    fmt: PixelFormat,
    nbg: int | None = None,
) -> Roi | None:
    """`_box_rule`'s choice from the levels just below and above the body's values. ``nbg``:
    the background pixels among ``sv``, if known."""
    # the background pixels at or below the dark level (at or above the bright one): every
    # body value is above it (below it), so counting all pixels counts only background ones
    ndark = int(np.count_nonzero(sv <= dark)) if dark >= fmt.vmin else 0
    if nbg is not None and 0 < nbg <= 2 * ndark:
        # the bright ones are other background pixels (dark < bright): at most nbg - ndark,
        # so no more than ndark, and the dark rule is chosen without counting them
        return Roi(1, dark)
    nbright = int(np.count_nonzero(sv >= bright)) if bright <= fmt.vmax else 0
    if max(ndark, nbright) == 0:
        return None
    return Roi(1, dark) if ndark >= nbright else Roi(2, bright)


def _box_rules(
    sv: npt.NDArray[np.int32] | npt.NDArray[np.int16],
    body: npt.NDArray[np.bool_],
    boxes: list[Box],
    fmt: PixelFormat,
) -> list[tuple[Roi | None, int]]:
    """`_box_rule` of each box's interior (rows/cols 1..-2) of the plane ``sv``, ``body``.

    int16 values: the body's lowest and highest value per box from two plane-wide arrays
    instead of two masked reductions per box: the values as order-keeping uint16 (sign bit
    flipped), background set to 0xFFFF (for the lowest) and to 0 (for the highest), so a
    plain min / max of a box's part finds its body's (every box here has body pixels)."""
    inner = [(slice(b.row0 + 1, b.row1 - 1), slice(b.col0 + 1, b.col1 - 1)) for b in boxes]
    if sv.dtype != np.int16 or sv.ndim != 2 or body.shape != sv.shape:
        return [_box_rule(sv[i], body[i], fmt) for i in inner]
    nbody = [int(np.count_nonzero(body[i])) for i in inner]
    mixed = [0 < n < body[i].size for n, i in zip(nbody, inner, strict=True)]
    if not any(mixed):
        return [(None, n) for n in nbody]
    u = sv.view(np.uint16) ^ np.uint16(0x8000)  # (a new array: the order of int16 kept)
    mask = np.subtract(body.view(np.uint8), 1, dtype=np.uint16)  # 0 body, 0xFFFF background
    lows = u | mask
    np.invert(mask, out=mask)
    highs = np.bitwise_and(u, mask, out=u)
    tiles = _tiles(sv.shape, boxes)
    if tiles is not None:  # equal boxes tiling the plane: every box's min / max in two steps
        gr, bh, gc, bw = tiles
        lo4 = lows.reshape(gr, bh, gc, bw)[:, 1:-1].min(axis=1)[:, :, 1:-1].min(axis=2)
        hi4 = highs.reshape(gr, bh, gc, bw)[:, 1:-1].max(axis=1)[:, :, 1:-1].max(axis=2)
        mins, maxs = lo4.ravel().tolist(), hi4.ravel().tolist()
    else:
        mins = [int(lows[i].min()) if mix else 0 for i, mix in zip(inner, mixed, strict=True)]
        maxs = [int(highs[i].max()) if mix else 0 for i, mix in zip(inner, mixed, strict=True)]
    out: list[tuple[Roi | None, int]] = []
    for j, (i, n, mix) in enumerate(zip(inner, nbody, mixed, strict=True)):
        if not mix:
            out.append((None, n))
            continue
        dark = mins[j] - 0x8000 - 1
        bright = maxs[j] - 0x8000 + 1
        out.append((_rule_of(sv[i], dark, bright, fmt, body[i].size - n), n))
    return out


def _tiles(shape: tuple[int, ...], boxes: list[Box]) -> tuple[int, int, int, int] | None:
    """(grid rows, box rows, grid cols, box cols) when ``boxes`` are the row-major boxes of
    equal shape (at least 3 x 3) that tile a plane of ``shape`` exactly, else None."""
    rows, cols = shape
    if not boxes:
        return None
    bh, bw = boxes[0].shape
    if bh < 3 or bw < 3 or rows % bh or cols % bw:
        return None
    gr, gc = rows // bh, cols // bw
    if len(boxes) != gr * gc:
        return None
    for k, b in enumerate(boxes):
        r, c = divmod(k, gc)
        if (b.row0, b.col0, b.row1, b.col1) != (r * bh, c * bw, (r + 1) * bh, (c + 1) * bw):
            return None
    return gr, bh, gc, bw


def _frame_roi(arr: RawFrames, f: int, boxes: list[Box], fmt: PixelFormat) -> _FrameRoi:
    bodies: list[npt.NDArray[np.bool_]] = []
    planes: list[npt.NDArray[np.int32] | npt.NDArray[np.int16]] = []
    rois: list[Roi | None] = []
    share: list[float] = []
    ring: list[float] = []
    usable: list[int] = []
    nside = HEADER_BITS_V4 + ROI_BITS
    for q in range(arr.shape[1]):
        sv = _work_values(arr[f, q], fmt)  # (the same values; int16 below 14 bits: faster)
        planes.append(sv)
        body = ~background_mask(sv, fmt)
        bodies.append(body)
        rules = _box_rules(sv, body, boxes, fmt)
        heads, sizes = _ring_heads_sizes(
            sv, boxes, fmt, nside, [r is not None and r.mode == 2 for r, _ in rules]
        )
        usable += sizes
        for b, (r, nbody), head in zip(boxes, rules, heads, strict=True):
            bb = body[b.slices()]
            inner = bb[1:-1, 1:-1]
            rois.append(r)
            share.append(float(nbody) / max(1, inner.size))
            if not nbody and not bb.any():  # no body: no header pixel in it
                ring.append(0.0)
                continue
            ring.append(float(np.count_nonzero(bb.ravel()[head])))
    return _FrameRoi(bodies, rois, np.array(share), np.array(ring), planes, usable)


def _plan_costs(
    arr: RawFrames,
    f: int,
    boxes: list[Box],
    grid: tuple[int, int],
    fmt: PixelFormat,
    loads: npt.NDArray[np.int64],
    froi: _FrameRoi,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weighted estimated costs per slot and k: without a ROI rule, and with the slot's rule
    (inf where it has none). A changed body value counts `_BODY_WEIGHT` times."""
    planes = arr.shape[1]
    nb = len(boxes)
    use = any(r is not None for r in froi.rois)
    full_c: list[npt.NDArray[np.int64]] = []
    roi_c: list[npt.NDArray[np.int64]] = []
    for q in range(planes):
        if not use:
            full_c.append(_slot_curves(arr[f, q], grid, fmt, stored=froi.stored[q]))
            continue
        dark = np.full(nb, _iinfo(np.int32).max, np.int32)
        bright = np.full(nb, _iinfo(np.int32).min, np.int32)
        for i in range(nb):
            r = froi.rois[q * nb + i]
            if r is not None:
                (dark if r.mode == 1 else bright)[i] = r.level
        both = _slot_curves(arr[f, q], grid, fmt, (dark, bright), froi.stored[q])
        full_c.append(both[0])
        roi_c.append(both[1])
    ring = (_BODY_WEIGHT / 2) * froi.ring[:, None]
    weight = 1 + _BODY_WEIGHT * froi.share[:, None]
    if not use:
        full = _costs(np.concatenate(full_c), loads) * weight + ring
        return full, np.full(full.shape, np.inf)
    # both sets of curves in one `_costs` (rows: slots without the rule, then with it)
    nslots = planes * nb
    rows = np.concatenate([np.broadcast_to(loads, (nslots, loads.size))] * 2)
    rows[nslots:] += ROI_BITS
    costs = _costs(np.concatenate(full_c + roi_c), rows)
    full = costs[:nslots] * weight + ring
    roi = costs[nslots:] + ROI_BITS / 2 + ring
    has = np.array([r is not None for r in froi.rois])
    roi[~has] = np.inf
    return full, roi


def _embed_plan(
    arr: RawFrames,
    f: int,
    boxes: list[Box],
    fmt: PixelFormat,
    block: bytes,
    plan: _Plan,
    rois: list[Roi | None],
    body: list[npt.NDArray[np.bool_]],
    together: bool = True,
) -> tuple[int, int, int] | tuple[int, WatermarkCapacityError]:
    """Embed one plan: (values changed, carriers, changed in the body), or (failed slot, its
    error) with the frame left unchanged. ``together``: first try the carriers of each plane
    as one stack (`embed_prepared`; the same words, faster unless a carrier fails, which the
    one-by-one order notices at that carrier)."""
    nb = len(boxes)
    tag = _tag(block)
    shards = rs_encode(block, plan.k, len(plan.carriers))
    saved: list[tuple[RawFrames, RawFrames, npt.NDArray[np.bool_]]] = []
    with contextlib.ExitStack() as ready:
        for q in range(arr.shape[1]):  # the carriers of each plane analysed together
            slots = [slot for slot in plan.carriers if slot // nb == q]
            if slots:
                carriers = [boxes[slot % nb] for slot in slots]
                ready.enter_context(prepared(arr[f, q], carriers, fmt, [rois[t] for t in slots]))
        payloads = [_SHARD.pack(plan.k, idx, tag) + shards[idx] for idx in range(len(shards))]

        def save(slot: int) -> None:  # a carrier's words before its embed
            q, i = divmod(slot, nb)
            region = arr[f, q][boxes[i].slices()]
            saved.append((region, region.copy(), body[q][boxes[i].slices()]))

        done = [False] * len(plan.carriers)
        if together:  # (all saved first: any of them may be written)
            for slot in plan.carriers:
                save(slot)
            done = _embed_together(arr[f], boxes, fmt, plan.carriers, payloads, rois)
        for idx, slot in enumerate(plan.carriers):
            if done[idx]:
                continue
            if not together:  # (saved as embedded: a failed plan copies no more)
                save(slot)
            q, i = divmod(slot, nb)
            try:
                embed_region(arr[f, q], boxes[i], fmt, payloads[idx], rois[slot])
            except WatermarkCapacityError as exc:
                for reg, words, _ in saved:
                    reg[...] = words
                return slot, exc
    changed = inside = 0
    for reg, words, bb in saved:  # only carrier regions change
        diff = reg != words
        changed += int(np.count_nonzero(diff))
        inside += int(np.count_nonzero(np.logical_and(diff, bb, out=diff)))
    return changed, len(plan.carriers), inside


def _embed_together(
    frame: RawFrames,
    boxes: list[Box],
    fmt: PixelFormat,
    carriers: Sequence[int],
    payloads: list[bytes],
    rois: list[Roi | None],
) -> list[bool]:
    """`embed_prepared` of each plane's carriers (within `prepared`): which carriers are
    embedded, as `embed_region` embeds them (the others are left for it, in plan order)."""
    nb = len(boxes)
    done = [False] * len(carriers)
    for q in range(frame.shape[0]):
        idx = [j for j, slot in enumerate(carriers) if slot // nb == q]
        if idx:
            got = embed_prepared(
                frame[q],
                [boxes[carriers[j] % nb] for j in idx],
                fmt,
                [payloads[j] for j in idx],
                [rois[carriers[j]] for j in idx],
            )
            for j, ok in zip(idx, got, strict=True):
                done[j] = ok
    return done


def _capacity_plan(
    caps: list[int], grid: tuple[int, int], planes: int, gsize: int
) -> _Plan | tuple[int, int]:
    """From measured payload capacities per slot: the feasible plan carrying the fewest bits,
    else (capacity, need) of the closest miss (the weakest carrier a plan needs vs its shard),
    always capacity < need. Carriers are taken by capacity under the damage-window limit m."""
    nslots = len(caps)
    nb = grid[0] * grid[1]
    wins = _windows(grid)
    nwin = 1 + max(max(w) for w in wins)
    kmax = max(1, min(nslots - 1, _K_MAX))
    order = sorted(range(nslots), key=lambda i: (-caps[i], i))
    best: _Plan | None = None
    short = (0, 8 * (_SHARD.size + gsize))
    for m in range(1, min(nslots, 4 * planes) + 1):
        chosen = _greedy(order, wins, nb, nwin, m)
        for k in range(1, min(kmax, len(chosen) - m) + 1):
            need = 8 * (_SHARD.size - (-gsize // k))
            weakest = caps[chosen[k + m - 1]]
            if weakest >= need:
                if best is None or (k + m) * need < best.cost:
                    best = _Plan(tuple(chosen[: k + m]), k, float((k + m) * need))
            elif need - weakest < short[1] - short[0]:
                short = (weakest, need)
    return best if best is not None else short


def _frame_error(rows: int, cols: int, f: int, cap: int, need: int) -> WatermarkCapacityError:
    where = f"frame {f + 1} ({rows} x {cols} pixels, weakest carrier needed)"
    return WatermarkCapacityError(cap, need, where=where)


def _spread(
    arr: RawFrames, f: int, boxes: list[Box], grid: tuple[int, int], fmt: PixelFormat, block: bytes
) -> tuple[int, int, int, int]:
    """Embed G's shards into the cheapest carrier plan; a slot whose embed fails is excluded
    and the plan redone. When the estimates find no plan, one is made from measured region
    capacities. Returns (values changed, carriers, values changed in the body, values in the
    body). Raises WatermarkCapacityError (capacity < need, the closest plan's weakest carrier)
    and leaves the frame unchanged when no plan fits."""
    planes, rows, cols = arr.shape[1:]
    nb = len(boxes)
    nslots = planes * nb
    kmax = max(1, min(nslots - 1, _K_MAX))
    loads = np.array([_load_bits(len(block), k) for k in range(1, kmax + 1)], np.int64)
    froi = _frame_roi(arr, f, boxes, fmt)
    body_total = sum(int(np.count_nonzero(b)) for b in froi.body)
    full, roi = _plan_costs(arr, f, boxes, grid, fmt, loads, froi)
    if fmt.padding is not None:  # the ring header needs usable ring-0 pixels
        finite = (np.isfinite(full[:, 0]) | np.isfinite(roi[:, 0])).tolist()
        for slot in range(nslots):
            if finite[slot] and froi.usable[slot] < HEADER_BITS_V4 + ROI_BITS + 16:
                full[slot] = roi[slot] = np.inf
    together = True  # until a plan fails (then the next ones often fail too: one by one)
    for _ in range(2 * nslots + 1):
        plan = plan_carriers(np.minimum(full, roi), grid, planes)
        if plan is None:
            break
        use_roi = roi[:, plan.k - 1] < full[:, plan.k - 1]
        rois = [r if use_roi[i] else None for i, r in enumerate(froi.rois)]
        res = _embed_plan(arr, f, boxes, fmt, block, plan, rois, froi.body, together)
        if len(res) == 3:
            return res[0], res[1], res[2], body_total
        together = False
        slot = res[0]
        if rois[slot] is not None:
            roi[slot] = np.inf  # the rule left too little: the slot may still carry without it
        else:
            full[slot] = roi[slot] = np.inf
    # estimates found nothing: measured capacities (no ROI rule), then the consistent error
    caps = [region_capacity(arr[f, q], b, fmt) for q in range(planes) for b in boxes]
    norois: list[Roi | None] = [None] * nslots
    for _ in range(4 * nslots + 1):
        got = _capacity_plan(caps, grid, planes, len(block))
        if not isinstance(got, _Plan):
            raise _frame_error(rows, cols, f, *got)
        res = _embed_plan(arr, f, boxes, fmt, block, got, norois, froi.body, False)
        if len(res) == 3:
            return res[0], res[1], res[2], body_total
        # the embed's own figure (< this load, e.g. when a location map fills the ring)
        slot, exc = res
        caps[slot] = min(caps[slot], exc.capacity_bits)
    raise _frame_error(rows, cols, f, 0, 8 * (_SHARD.size + len(block)))  # pragma: no cover


def seal_dataset(
    ds: pydicom.Dataset, *, header: bytes, signer: Ed25519PrivateKey, key_id: bytes
) -> SealStats:
    """Watermark every frame of ``ds`` in place (replaces ds.PixelData).

    ``header`` is the 32-byte block of :func:`discmaker.format.sealed.header_block` (opaque
    here: it is carried and signed). Raises UnsupportedPixelsError for Pixel Data that cannot
    carry the watermark and WatermarkCapacityError (capacity and need in bits) when a frame is
    too small or flat.
    """
    head = _HEADS[SIGNED_BLOCK_VERSION]
    if len(header) != head.size - 9 or len(key_id) != 8:
        raise ValueError(f"header must be {head.size - 9} bytes and key_id 8 bytes")
    fmt, layout = _format_and_layout(ds)
    arr = _frames_view(ds, layout)
    nframes, _, rows, cols = arr.shape
    grid = default_grid((rows, cols))
    boxes = grid_boxes((rows, cols), grid=grid)
    gsize = signed_block_size(len(boxes))
    if len(boxes) < 2:
        raise WatermarkCapacityError(0, gsize * 8, where=f"frame of {rows} x {cols} pixels")
    ctx = _context(arr, fmt)
    changed = carriers = inside = in_body = 0
    per_frame: list[tuple[int, int]] = []
    for f in range(nframes):
        body = head.pack(SIGNED_BLOCK_VERSION, key_id, header) + _pixel_block(arr, f, boxes)
        where = _WHERE.pack(f, *grid)
        block = body + signer.sign(_DOMAINS[SIGNED_BLOCK_VERSION] + ctx + where + body)
        frame_changed, frame_carriers, frame_inside, frame_body = _spread(
            arr, f, boxes, grid, fmt, block
        )  # raises WatermarkCapacityError (capacity and need) when no plan fits
        changed += frame_changed
        carriers += frame_carriers
        inside += frame_inside
        in_body += frame_body
        per_frame.append((frame_inside, frame_changed - frame_inside))
    ds.PixelData = _pixel_bytes(ds, arr, layout)  # `write_back`
    return SealStats(
        nframes, changed, int(arr.size), carriers, gsize, in_body, inside, tuple(per_frame)
    )


@dataclass
class _Frame:
    kind: Literal["missing", "damaged", "unknown", "badsig", "verified"]
    key_id: bytes | None = None
    header: bytes | None = None  # as carried: v3 identity digest, v4 header block
    pixels: bytes = b""  # v3 box hashes; v4 frame digest and box tags
    version: int = SIGNED_BLOCK_VERSION


def _subsets(idx: list[int], k: int) -> Iterator[list[int]]:
    """k-subsets of ``idx``: the first k, then leaving out 1, 2, ... shards (bounded)."""
    seen: set[tuple[int, ...]] = set()
    for drop in range(len(idx) - k + 1):
        for gone in itertools.combinations(idx, drop):
            keep = tuple(i for i in idx if i not in gone)[:k]
            if keep in seen:
                continue
            seen.add(keep)
            yield list(keep)
            if len(seen) >= _SEARCH_BUDGET:
                return


def _read_frame(
    arr: RawFrames,
    f: int,
    *,
    boxes: list[Box],
    grid: tuple[int, int],
    fmt: PixelFormat,
    ctx: bytes,
    public_keys: Mapping[bytes, Ed25519PublicKey],
) -> _Frame:
    planes = arr.shape[1]
    sizes = {v: signed_block_size(len(boxes), v) for v in _HEADS}  # G of each version read
    groups: dict[tuple[int, int, int], dict[int, bytes]] = {}
    for q in range(planes):
        # restores the carriers in place (as `extract_region` per box, all boxes together)
        for payload in _extract_regions(arr[f, q], boxes, fmt):
            if payload is None or len(payload) <= _SHARD.size:
                continue
            k, idx, tag = _SHARD.unpack_from(payload)
            shard = payload[_SHARD.size :]
            if k < 1 or all(len(shard) != -(-g // k) for g in sizes.values()):
                continue
            groups.setdefault((k, tag, len(shard)), {}).setdefault(idx, shard)
    # CRC-valid shards that do not give G: a watermark was there, too many carriers are damaged
    result = _Frame("damaged" if groups else "missing")
    where = _WHERE.pack(f, *grid)
    for (k, tag, length), shards in sorted(groups.items(), key=lambda g: -len(g[1])):
        if len(shards) < k:
            continue
        for ver, gsize in sizes.items():
            if -(-gsize // k) != length:
                continue
            for keep in _subsets(sorted(shards), k):
                block = rs_decode({i: shards[i] for i in keep}, k, gsize)
                if block is None or _tag(block) != tag or block[0] != ver:
                    continue
                body, sig = block[:-_SIG], block[-_SIG:]
                head = _HEADS[ver]
                _, kid, header = head.unpack_from(body)
                key = public_keys.get(kid)
                if key is None:
                    if result.kind in ("missing", "damaged"):
                        result = _Frame("unknown", kid)
                    break
                try:
                    key.verify(sig, _DOMAINS[ver] + ctx + where + body)
                except InvalidSignature:
                    if result.kind in ("missing", "damaged", "unknown"):
                        result = _Frame("badsig", kid)
                    continue
                return _Frame("verified", kid, header, body[head.size :], ver)
    return result


def _changed_boxes(arr: RawFrames, f: int, boxes: list[Box], fr: _Frame) -> list[Box] | None:
    """Boxes whose restored words differ from what G says; None when the frame is intact.

    v4 detects with the frame digest and locates with 2-byte box tags: a change whose boxes
    all keep their tags (an attacker's 1 in 65,536 per box) is the whole frame.
    """
    if fr.version == 3:
        bad = [
            b
            for i, b in enumerate(boxes)
            if _box_hash(arr, f, b) != fr.pixels[i * _HASH3 : (i + 1) * _HASH3]
        ]
        return bad or None
    if _frame_digest(arr, f) == fr.pixels[:_FRAME_DIGEST]:
        return None
    tags = fr.pixels[_FRAME_DIGEST:]
    return [
        b
        for i, b in enumerate(boxes)
        if _box_hash(arr, f, b, _BOX_TAG) != tags[i * _BOX_TAG : (i + 1) * _BOX_TAG]
    ]


def unseal_dataset(
    ds: pydicom.Dataset,
    *,
    headers: Mapping[int, bytes],
    public_keys: Mapping[bytes, Ed25519PublicKey],
    restore: bool = True,
) -> UnsealResult:
    """Verify and restore the watermark of ``ds`` without modifying it.

    ``restore``: also give the restored Pixel Data bytes (when the status is "ok" or
    "identity-mismatch"); a check that writes no originals spares that copy of the pixels.

    ``headers`` maps each watermark version to the header the image should carry as that
    version seals it (v3: the identity digest, v4: the header block); a frame sealed for
    another one gives "identity-mismatch", with the carried block in the result.
    """
    try:
        fmt, layout = _format_and_layout(ds)
        arr = _frames_view(ds, layout)
    except UnsupportedPixelsError as exc:
        return UnsealResult("no-watermark", None, (), (exc.reason,), None)
    nframes, _, rows, cols = arr.shape
    grid = default_grid((rows, cols))
    boxes = grid_boxes((rows, cols), grid=grid)
    ctx = _context(arr, fmt)
    frames = [
        _read_frame(arr, f, boxes=boxes, grid=grid, fmt=fmt, ctx=ctx, public_keys=public_keys)
        for f in range(nframes)
    ]
    if all(fr.kind == "missing" for fr in frames):
        return UnsealResult("no-watermark", None, (), ("no watermark found in any frame",), None)
    key_id = next((fr.key_id for fr in frames if fr.key_id is not None), None)
    reasons: list[str] = []
    regions: list[TamperedRegion] = []
    identity_bad = False
    sealed: _Frame | None = None
    for f, fr in enumerate(frames):
        if fr.kind == "unknown":
            kid = fr.key_id.hex() if fr.key_id is not None else "?"
            reasons.append(f"frame {f + 1}: signed by unknown key id {kid}")
        elif fr.kind == "badsig":
            reasons.append(f"frame {f + 1}: signature does not verify")
        elif fr.kind in ("missing", "damaged"):
            reasons.append(
                f"frame {f + 1}: watermark carriers found but too many damaged to verify"
                if fr.kind == "damaged"
                else f"frame {f + 1}: no watermark found (too many carriers damaged or removed)"
            )
            regions.append(TamperedRegion(f, 0, 0, rows, cols))
        else:
            sealed = sealed or fr
            if fr.header != headers.get(fr.version):
                identity_bad = True
                reasons.append(f"frame {f + 1}: sealed for a different header")
            bad = _changed_boxes(arr, f, boxes, fr)
            if bad == []:
                regions.append(TamperedRegion(f, 0, 0, rows, cols))
                reasons.append(
                    f"frame {f + 1}: pixels differ from the sealed digest "
                    "(where in the frame could not be narrowed down)"
                )
            for b in bad or ():
                regions.append(TamperedRegion(f, b.row0, b.col0, b.row1, b.col1))
                reasons.append(
                    f"frame {f + 1}: pixels in rows {b.row0}-{b.row1 - 1}, "
                    f"columns {b.col0}-{b.col1 - 1} differ from the sealed hash"
                )
    kinds = {fr.kind for fr in frames}
    status: Status
    if "unknown" in kinds:
        status = "unknown-signer"
    elif "badsig" in kinds:
        status = "bad-signature"
    elif regions:
        status = "tampered"
    elif identity_bad:
        status = "identity-mismatch"
    else:
        status = "ok"
    restored = None
    if restore and status in ("ok", "identity-mismatch"):
        restored = _pixel_bytes(ds, arr, layout)
    foreign = tuple(
        f
        for f, fr in enumerate(frames)
        if sealed is not None and fr.kind == "verified" and fr.header != sealed.header
    )
    return UnsealResult(
        status,
        key_id,
        tuple(regions),
        tuple(reasons),
        restored,
        version=sealed.version if sealed else None,
        sealed_header=sealed.header if sealed else None,
        foreign_frames=foreign,
    )
