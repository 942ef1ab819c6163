"""Background (air, collimation, padding, flat field outside the body) of one stored plane.

The watermark puts its carriers and changed values here first, so the anatomy stays intact.
The mask is a seal-side aid only: the decoder never needs it (a carrier header names the
level its targets' neighbours must not cross, see docs/WATERMARK.md, format v4).

Rule (deterministic, vectorised, a few passes over the plane):

* padding values are background;
* dark background: values at most ``lo + gap`` where ``lo`` is the 0.1 % point of the
  non-padding values and ``gap`` = max(8 sigma, 3 % of the 0.1..99.9 % spread, 1), sigma a
  robust noise estimate (median absolute horizontal difference); bright background likewise
  at the top end;
* a dark (bright) pixel only counts when its block of 8 x 8 pixels lies within two blocks of a
  block that is >= 80 % dark (bright) or padding and 4-connected to the frame border through
  such blocks; every pixel of a block whose four neighbour blocks are such blocks counts too
  (noise specks in the air). Air inside the body (trachea, bowel gas) stays anatomy;
* a body pixel whose four neighbours are all background becomes background (so no body pixel
  is surrounded by background: the carrier rule "four neighbours background" never selects a
  body pixel).
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from discmaker.watermark.engine import PixelFormat

__all__ = ["BLOCK", "background_mask"]

Bool = npt.NDArray[np.bool_]
BLOCK = 8  # block edge of the connectivity test
_FULL = 0.8  # share of a block's pixels that must be background for the flood fill
_SIGMAS = 8.0
_SPREAD = 0.03


def _in_range(v: npt.NDArray[Any], lo: int, hi: int) -> Bool:
    """lo <= v <= hi, by one comparison (one value: equality; else the unsigned distance, in
    int16 for int16 values of a range that keeps every distance below 2^15). ``v``: int16 or
    int32 values."""
    if lo == hi:
        same: Bool = v == lo
        return same
    if v.dtype == np.int16 and -(1 << 14) <= lo <= hi < 1 << 14:
        near: Bool = np.subtract(v, lo, dtype=np.int16).view(np.uint16) <= hi - lo
        return near
    out: Bool = np.subtract(v, lo, dtype=np.int32).view(np.uint32) <= hi - lo
    return out


def _noise_sigma(s: npt.NDArray[Any]) -> float:
    """Robust noise estimate: 1.4826 x median |horizontal difference| / sqrt(2), on every 8th
    row (a histogram median: a partition is slow on many equal values). int16 values (Bits
    Stored <= 13) differ by less than 2^14: no clip needed, none overflows."""
    d = np.abs(np.diff(s[::8], axis=1)).ravel()
    if d.size == 0:
        return 0.0
    if d.dtype.itemsize > 2:
        d = np.minimum(d, 1 << 16)
    cum = np.cumsum(np.bincount(d))
    med = int(np.searchsorted(cum, (d.size + 1) // 2))
    return float(med * 1.4826 / 2.0**0.5)


def _blocks(m: Bool) -> npt.NDArray[np.uint8]:
    """True count per whole 8 x 8 block (the last partial rows/columns are left out: they
    take their neighbour block's verdict in `_up`)."""
    rows, cols = m.shape
    br, bc = rows // BLOCK, cols // BLOCK
    u = np.ascontiguousarray(m[: br * BLOCK, : bc * BLOCK]).view(np.uint8)
    rowsum = u.reshape(br, BLOCK, bc * BLOCK).sum(axis=1, dtype=np.uint8)
    # the 8 column sums of a block (each <= 8) are the 8 bytes of one uint64: their total
    # (<= 64, no carry between bytes) is the top byte of the product with 0x0101...01
    words = rowsum.view(np.uint64) * np.uint64(0x0101010101010101)
    out: npt.NDArray[np.uint8] = (words >> np.uint64(56)).astype(np.uint8)
    return out


def _grow(m: Bool) -> Bool:
    """4-neighbour dilation (of each plane of a stack (..., rows, cols))."""
    g = m.copy()
    g[..., 1:, :] |= m[..., :-1, :]
    g[..., :-1, :] |= m[..., 1:, :]
    g[..., 1:] |= m[..., :-1]
    g[..., :-1] |= m[..., 1:]
    return g


def _border_connected(cand: Bool) -> Bool:
    """Blocks of ``cand`` 4-connected to the border (the fixed point of an iterated dilation
    from the border blocks, found by filling whole runs of a row or column at a time); of
    each plane of a stack (n, rows, cols) at once: the planes' runs never meet, and a fill of
    a plane already closed changes nothing, so each plane gets its own fixed point."""
    if cand.ndim == 2:
        plane: Bool = _border_connected(cand[None])[0]
        return plane
    n, r, c = cand.shape
    seed: Bool = np.zeros(cand.shape, bool)
    seed[:, 0], seed[:, -1] = cand[:, 0], cand[:, -1]
    seed[:, :, 0], seed[:, :, -1] = cand[:, :, 0], cand[:, :, -1]
    across = cand.transpose(0, 2, 1).reshape(n * c, r)  # (a copy: runs along columns)
    by_cols = False  # seed is closed along columns (the output of a column fill)
    while True:  # until closed both ways: a fill that changes nothing ends it
        rows = _fill_runs(cand.reshape(n * r, c), seed.reshape(n * r, c)).reshape(n, r, c)
        if by_cols and np.array_equal(rows, seed):
            return seed
        filled = _fill_runs(across, rows.transpose(0, 2, 1).reshape(n * c, r))
        cols: Bool = filled.reshape(n, c, r).transpose(0, 2, 1)
        if np.array_equal(cols, rows):
            return rows
        seed, by_cols = cols, True


def _fill_runs(cand: Bool, seed: Bool) -> Bool:
    """Every run of ``cand`` along a row that holds a ``seed`` cell, filled (``seed`` within
    ``cand``)."""
    rows, cols = cand.shape
    flat = np.zeros((rows, cols + 1), bool)  # a False column between rows ends every run
    flat[:, :cols] = cand
    c = flat.ravel()
    starts = c.copy()
    starts[1:] &= ~c[:-1]
    run = np.cumsum(starts).reshape(rows, cols + 1)[:, :cols]  # run number (from 1) in a run
    hit = np.zeros(int(run[-1, -1]) + 2, bool)
    hit[run[seed]] = True  # a seed lies in a run (``seed`` within ``cand``)
    out: Bool = hit[run] & cand
    return out


def _up(m: npt.NDArray[np.uint8], shape: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Block values per pixel (partial edge rows/columns take the last whole block's)."""
    up = np.repeat(np.repeat(m, BLOCK, axis=1), BLOCK, axis=0)
    if up.shape != shape:
        up = np.pad(up, ((0, shape[0] - up.shape[0]), (0, shape[1] - up.shape[1])), "edge")
    return up


def _sides(pixs: tuple[Bool, Bool], pad: Bool | None) -> list[tuple[Bool, Bool] | None]:
    """Per mask of ``pixs`` (dark, bright): blocks next to a border-connected full block of it
    (or padding), and blocks whose four neighbour blocks are such blocks too (noise specks in
    the air); None: no such block. Both masks' block grids in one stack."""
    full = round(_FULL * BLOCK * BLOCK)
    cand = np.stack([_blocks(p if pad is None else p | pad) >= full for p in pixs])
    conn = _border_connected(cand)
    found = cast("list[bool]", conn.reshape(len(pixs), -1).any(axis=1).tolist())
    near, inner = _grow(_grow(conn)), ~_grow(~conn)
    return [(near[i], inner[i]) if found[i] else None for i in range(len(pixs))]


def background_mask(s: npt.NDArray[np.integer], fmt: PixelFormat) -> Bool:
    """Per pixel of a stored plane (``to_stored`` values, or int16 ones of Bits Stored <= 13
    as `_work_values` gives them: the same mask): True where it is background."""
    small = s.dtype == np.int16 and fmt.bits_stored <= 13  # (no difference overflows)
    v: npt.NDArray[Any] = s if small else s.astype(np.int32, copy=False)
    rows, cols = v.shape
    pad: Bool | None = None
    if fmt.padding is not None:
        pad = _in_range(v, *fmt.padding)
        if not pad.any():
            pad = None
    if rows < 2 * BLOCK or cols < 2 * BLOCK:
        return np.zeros((rows, cols), bool) if pad is None else pad
    sample = v[::4, ::4]
    if pad is not None:
        sample = sample[~pad[::4, ::4]]
    if sample.size == 0:
        return np.ones((rows, cols), bool)
    sample = sample.ravel()
    ilo, ihi = sample.size // 1000, sample.size - 1 - sample.size // 1000
    part = np.partition(sample, (ilo, ihi))
    lo, hi = int(part[ilo]), int(part[ihi])
    gap = max(_SIGMAS * _noise_sigma(v), _SPREAD * float(hi - lo), 1.0)
    # v <= lo + gap and v >= hi - gap compared with whole numbers (the same test for integers,
    # without converting the plane to float)
    dark, bright = v <= math.floor(lo + gap), v >= math.ceil(hi - gap)
    sides = _sides((dark, bright), pad)
    code = np.zeros((rows // BLOCK, cols // BLOCK), np.uint8)  # 1/2: near dark/bright, 4: inner
    for bit, side in zip((1, 2), sides, strict=True):
        if side is not None:
            code |= side[0].view(np.uint8) * np.uint8(bit)
            code |= side[1].view(np.uint8) << 2
    up = _up(code, (rows, cols))
    bg = up >= 4
    if sides[0] is not None:
        bg |= dark & (up & 1).view(bool)  # (0 or 1: a valid bool)
    if sides[1] is not None:
        bg |= bright & (up >> 1 & 1).view(bool)
    if pad is not None:
        bg |= pad
    # a body pixel with four background neighbours joins the background (one pass suffices:
    # afterwards every body pixel keeps a body neighbour); bg | (body & four) is bg | four
    four = bg[:-2, 1:-1] & bg[2:, 1:-1]  # (a new array: read before bg changes)
    four &= bg[1:-1, :-2]
    four &= bg[1:-1, 2:]
    bg[1:-1, 1:-1] |= four
    return bg
