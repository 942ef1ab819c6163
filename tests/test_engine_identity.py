"""The fast paths of the watermark engine give exactly what the plain ones give.

Seal and unseal batch work over several boxes (decoding all carriers of a plane as one stack,
analysing a plan's carriers together, int16 arithmetic for Bits Stored <= 13) and replace a few
helpers by quicker equivalents. Each test here compares such a path with the straightforward
computation it stands for, bit for bit, on seeded random data.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from discmaker.watermark import background, engine, seal
from discmaker.watermark.engine import (
    Box,
    PixelFormat,
    Roi,
    WatermarkCapacityError,
    embed_region,
    extract_region,
    grid_boxes,
    to_stored,
)

FORMATS = [
    PixelFormat(8, False),
    PixelFormat(10, False, (0, 0)),
    PixelFormat(12, True, (-2000, -2000)),
    PixelFormat(13, True),
    PixelFormat(14, False),
    PixelFormat(16, True, (-2000, -1990)),
    PixelFormat(16, False),
]


def _plane(rng: np.random.Generator, fmt: PixelFormat, shape: tuple[int, int]) -> np.ndarray:
    """Raw words: a dark background with noise, a brighter body, padding in the corners, a few
    values at the range ends, and random unused high bits."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    span = fmt.vmax - fmt.vmin
    r = np.hypot(yy - rows / 2, xx - cols / 2)
    img = np.where(r < min(shape) * 0.3, fmt.vmin + span * 0.6, fmt.vmin + span * 0.1)
    img = img + rng.normal(0, rng.uniform(0.5, 6), shape)
    img = np.clip(np.round(img), fmt.vmin, fmt.vmax).astype(np.int64)
    salt = rng.random(shape)
    img[salt < 0.002] = fmt.vmin
    img[salt > 0.998] = fmt.vmax
    if fmt.padding is not None:
        img[r > min(shape) * 0.48] = fmt.padding[0]
    dtype = np.uint8 if fmt.bits_stored <= 8 and rng.random() < 0.5 else np.uint16
    raw = img & fmt.mask
    if dtype == np.uint16 and fmt.bits_stored < 16:
        raw |= rng.integers(0, 1 << (16 - fmt.bits_stored), shape) << fmt.bits_stored
    return raw.astype(dtype)


def _mark(
    rng: np.random.Generator, plane: np.ndarray, boxes: list[Box], fmt: PixelFormat
) -> list[Box]:
    """Embed random payloads (random rule and version) into some boxes; the boxes marked."""
    marked = []
    for b in boxes:
        if rng.random() < 0.3:
            continue
        version = 3 if rng.random() < 0.2 else 4
        roi = None
        if version == 4 and rng.random() < 0.5:
            roi = Roi(int(rng.integers(1, 3)), int(rng.integers(fmt.vmin, fmt.vmax + 1)))
        payload = bytes(rng.integers(0, 256, int(rng.integers(0, 30)), dtype=np.uint8))
        with contextlib.suppress(WatermarkCapacityError):
            embed_region(plane, b, fmt, payload, roi, version=version)
            marked.append(b)
    return marked


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_extract_regions_matches_one_box_at_a_time(fmt: PixelFormat) -> None:
    rng = np.random.default_rng(fmt.bits_stored * 7 + fmt.signed)
    for shape, grid in (((256, 256), (4, 4)), ((131, 197), (2, 3)), ((90, 77), (2, 2))):
        plane = _plane(rng, fmt, shape)
        boxes = grid_boxes(shape, grid=grid)
        marked = _mark(rng, plane, boxes, fmt)
        for b in marked[:2]:  # damage two carriers: their CRC fails, the others still read
            region = plane[b.slices()]
            region[2 + int(rng.integers(0, b.shape[0] - 4)), 3] ^= 1
        one, together = plane.copy(), plane.copy()
        expected = [extract_region(one, b, fmt) for b in boxes]
        assert engine._extract_regions(together, boxes, fmt) == expected
        assert one.tobytes() == together.tobytes()


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_int16_work_values_change_nothing(
    fmt: PixelFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedding and decoding in int16 (Bits Stored <= 13) and in int32 give the same words."""
    rng = np.random.default_rng(100 + fmt.bits_stored)
    shape = (192, 160)
    boxes = grid_boxes(shape, grid=(2, 2))
    plane = _plane(rng, fmt, shape)
    state = rng.bit_generator.state
    fast = plane.copy()
    _mark(rng, fast, boxes, fmt)
    fast_out = engine._extract_regions(fast.copy(), boxes, fmt)
    monkeypatch.setattr(engine, "_work_values", to_stored)
    rng.bit_generator.state = state
    plain = plane.copy()
    _mark(rng, plain, boxes, fmt)
    assert fast.tobytes() == plain.tobytes()
    assert engine._extract_regions(plain.copy(), boxes, fmt) == fast_out


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_prepared_embed_is_the_same(fmt: PixelFormat) -> None:
    """`prepared` only speeds `embed_region` up: the same words or the same error."""
    rng = np.random.default_rng(200 + fmt.bits_stored)
    shape = (256, 192)
    boxes = grid_boxes(shape, grid=(2, 2))
    plane = _plane(rng, fmt, shape)
    rois: list[Roi | None] = [
        None if rng.random() < 0.5 else Roi(1, int(rng.integers(fmt.vmin, fmt.vmax + 1)))
        for _ in boxes
    ]
    payloads = [bytes(rng.integers(0, 256, 24, dtype=np.uint8)) for _ in boxes]

    def run(ready: bool) -> tuple[bytes, list[str]]:
        words = plane.copy()
        errors = []
        with engine.prepared(words, boxes, fmt, rois) if ready else contextlib.nullcontext():
            for b, payload, roi in zip(boxes, payloads, rois, strict=True):
                try:
                    embed_region(words, b, fmt, payload, roi)
                except WatermarkCapacityError as exc:
                    errors.append(str(exc))
        return words.tobytes(), errors

    assert run(True) == run(False)


def _border_connected_reference(cand: np.ndarray) -> np.ndarray:
    """Iterated 4-neighbour dilation from the border cells, within ``cand``."""
    seed = np.zeros(cand.shape, bool)
    seed[0], seed[-1], seed[:, 0], seed[:, -1] = cand[0], cand[-1], cand[:, 0], cand[:, -1]
    while True:
        grown = seed.copy()
        grown[1:] |= seed[:-1]
        grown[:-1] |= seed[1:]
        grown[:, 1:] |= seed[:, :-1]
        grown[:, :-1] |= seed[:, 1:]
        grown &= cand
        if np.array_equal(grown, seed):
            return seed
        seed = grown


def test_background_helpers_match_their_definitions() -> None:
    rng = np.random.default_rng(5)
    block = background.BLOCK
    for _ in range(400):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        cand = rng.random(shape) < rng.uniform(0.2, 0.9)
        assert np.array_equal(background._border_connected(cand), _border_connected_reference(cand))
        m = rng.integers(0, 8, shape).astype(np.uint8)
        full = (shape[0] * block + int(rng.integers(0, block)), shape[1] * block + 3)
        up = np.broadcast_to(m[:, None, :, None], (*shape[:1], block, shape[1], block))
        up = np.pad(up.reshape(shape[0] * block, -1), ((0, full[0] % block), (0, 3)), "edge")
        assert np.array_equal(background._up(m, full), up)
        mask = rng.random((shape[0] * block + 5, shape[1] * block + 2)) < rng.random()
        br, bc = shape
        sums = mask[: br * block, : bc * block].reshape(br, block, bc, block).sum(axis=(1, 3))
        assert np.array_equal(background._blocks(mask), sums)


def test_count_below_matches_the_broadcast_count() -> None:
    rng = np.random.default_rng(9)
    for _ in range(500):
        rows, size = int(rng.integers(1, 20)), int(rng.integers(1, 200))
        steps = rng.integers(0, int(rng.integers(1, 60)), (rows, size))
        cum = np.cumsum(steps, axis=1).astype(np.int64)
        x = rng.integers(0, int(cum.max()) + 40, (rows, int(rng.integers(1, 30)))).astype(np.int64)
        expected = (cum[:, None, :] < x[..., None]).sum(-1)
        assert np.array_equal(seal._count_below(cum, x), expected)


def test_roundtrip_near_padding_and_range_ends() -> None:
    """Embed and extract restore every word, on small regions whose values come within 2 of
    padding or a range end: there a moved target can become ambiguous (a location-map flag)
    although no target is frozen."""
    rng = np.random.default_rng(440)
    for _ in range(600):
        bits = int(rng.choice([3, 5, 8, 10, 12, 16]))
        signed = bool(rng.integers(0, 2))
        probe = PixelFormat(bits, signed)
        p0 = int(rng.integers(probe.vmin, probe.vmax + 1))
        padding = (
            (p0, min(probe.vmax, p0 + int(rng.integers(0, 3)))) if rng.random() < 0.7 else None
        )
        fmt = PixelFormat(bits, signed, padding)
        h, w = int(rng.integers(5, 70)), int(rng.integers(5, 70))
        centre = p0 + int(rng.integers(-6, 7)) if rng.random() < 0.8 else probe.vmin + 2
        img = np.clip(centre + rng.normal(0, rng.uniform(0.5, 4), (h, w)), fmt.vmin, fmt.vmax)
        raw = (np.round(img).astype(np.int64) & fmt.mask).astype(np.uint16)
        box = Box(0, 0, h, w)
        version = 3 if rng.random() < 0.3 else 4
        payload = bytes(rng.integers(0, 256, int(rng.integers(0, 8)), dtype=np.uint8))
        marked = raw.copy()
        try:
            embed_region(marked, box, fmt, payload, version=version)
        except WatermarkCapacityError:
            continue
        restored = marked.copy()
        assert extract_region(restored, box, fmt) == payload
        assert restored.tobytes() == raw.tobytes()


def _embed_both(
    plane: np.ndarray,
    boxes: list[Box],
    fmt: PixelFormat,
    payloads: list[bytes],
    rois: list[Roi | None],
) -> tuple[int, int]:
    """Embed every box one at a time and through `embed_prepared` (then `embed_region` for the
    boxes it left), assert the same words and errors; (boxes done together, boxes)."""
    plain = plane.copy()
    want = []
    for b, payload, roi in zip(boxes, payloads, rois, strict=True):
        try:
            embed_region(plain, b, fmt, payload, roi)
            want.append("")
        except WatermarkCapacityError as exc:
            want.append(str(exc))
    fast = plane.copy()
    got = []
    with engine.prepared(fast, boxes, fmt, rois):
        done = engine.embed_prepared(fast, boxes, fmt, payloads, rois)
        for b, payload, roi, ok in zip(boxes, payloads, rois, done, strict=True):
            try:
                if not ok:
                    embed_region(fast, b, fmt, payload, roi)
                got.append("")
            except WatermarkCapacityError as exc:
                got.append(str(exc))
    assert fast.tobytes() == plain.tobytes()
    assert got == want
    return sum(done), len(boxes)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_embed_prepared_matches_embed_region(fmt: PixelFormat) -> None:
    """The boxes embedded as one stack get the words `embed_region` writes, the others are left
    to it (with the same errors); boxes of even and odd shapes, with and without rules."""
    rng = np.random.default_rng(300 + fmt.bits_stored + fmt.signed)
    together = 0
    for shape, grid in (((256, 256), (4, 4)), ((131, 197), (2, 3)), ((91, 77), (3, 2))):
        for _ in range(3):
            plane = _plane(rng, fmt, shape)
            boxes = grid_boxes(shape, grid=grid)
            rois: list[Roi | None] = [
                None
                if rng.random() < 0.5
                else Roi(int(rng.integers(1, 3)), int(rng.integers(fmt.vmin, fmt.vmax + 1)))
                for _ in boxes
            ]
            sizes = rng.integers(0, 90, len(boxes))
            payloads = [bytes(rng.integers(0, 256, int(n), dtype=np.uint8)) for n in sizes]
            together += _embed_both(plane, boxes, fmt, payloads, rois)[0]
    # values kept 3 from the range ends and padding (no location map): the stack is taken
    fmt = PixelFormat(fmt.bits_stored, fmt.signed)
    img = to_stored(_plane(rng, fmt, (256, 256)), fmt)
    plane = (np.clip(img, fmt.vmin + 3, fmt.vmax - 3) & fmt.mask).astype(np.uint16)
    boxes = grid_boxes((256, 256), grid=(4, 4))
    together, total = _embed_both(plane, boxes, fmt, [bytes(20)] * 16, [None] * 16)
    assert together == total


def test_embed_prepared_near_padding_and_range_ends() -> None:
    """As above on regions whose values come within 2 of padding or a range end (location-map
    flags: such a box is left to `embed_region`)."""
    rng = np.random.default_rng(441)
    for _ in range(120):
        bits = int(rng.choice([3, 5, 8, 10, 12, 16]))
        signed = bool(rng.integers(0, 2))
        probe = PixelFormat(bits, signed)
        p0 = int(rng.integers(probe.vmin, probe.vmax + 1))
        padding = (
            (p0, min(probe.vmax, p0 + int(rng.integers(0, 3)))) if rng.random() < 0.7 else None
        )
        fmt = PixelFormat(bits, signed, padding)
        shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        centre = p0 + int(rng.integers(-6, 7)) if rng.random() < 0.8 else probe.vmin + 2
        img = np.clip(centre + rng.normal(0, rng.uniform(0.5, 4), shape), fmt.vmin, fmt.vmax)
        plane = (np.round(img).astype(np.int64) & fmt.mask).astype(np.uint16)
        boxes = grid_boxes(shape, grid=(2, 2))
        payloads = [bytes(rng.integers(0, 256, int(rng.integers(0, 8)), dtype=np.uint8))] * 4
        _embed_both(plane, boxes, fmt, payloads, [None] * len(boxes))


def test_split_all_matches_split() -> None:
    """`_split_all` (several regions' curves laid end to end) is `_split` region by region."""
    rng = np.random.default_rng(12)

    def curve(size: int) -> np.ndarray:
        steps = rng.integers(0, int(rng.integers(1, 50)), size) * (rng.random(size) < rng.random())
        return np.cumsum(steps).astype(np.int64)

    for _ in range(1500):
        pres, nbits = [], []
        for _ in range(int(rng.integers(1, 9))):
            s1, s2 = (int(rng.choice([1, 2, 3, 10, 64, 100, 300, 1000])) for _ in range(2))
            cum1, cum2 = curve(s1), curve(s2)
            pres.append(engine._Pre([], cum1, cum1 + curve(s1), cum2, cum2 + curve(s2)))
            nbits.append(int(rng.integers(0, int(cum1[-1] + cum2[-1]) * 2 + 5)))
        expected = [engine._split(p, n) for p, n in zip(pres, nbits, strict=True)]
        assert engine._split_all(pres, nbits) == expected


def _stored_reference(raw: np.ndarray, fmt: PixelFormat, dtype: type) -> np.ndarray:
    """Stored values by masking and sign-extending in ``dtype`` (the plain formula)."""
    v = raw.astype(dtype) & fmt.mask
    if fmt.signed:
        sb = 1 << (fmt.bits_stored - 1)
        v ^= sb
        v -= sb
    return v


def test_stored_values_match_the_masking_formula() -> None:
    """`to_stored` / `_work_values` (shifted in the words' width) over every raw word."""
    for dtype, width in ((np.uint8, 8), (np.uint16, 16)):
        raw = np.arange(1 << width, dtype=dtype)
        for r in (raw, raw.reshape(-1, 4)[:, ::2]):  # contiguous and strided
            for bits in range(1, width + 1):
                for signed in (False, True):
                    fmt = PixelFormat(bits, signed)
                    got = to_stored(r, fmt)
                    assert got.dtype == np.int32 and not np.shares_memory(got, r)
                    assert np.array_equal(got, _stored_reference(r, fmt, np.int32))
                    work = engine._work_values(r, fmt)
                    want = np.int16 if bits <= 13 else np.int32
                    assert work.dtype == want and not np.shares_memory(work, r)
                    assert np.array_equal(work, _stored_reference(r, fmt, want))


def test_write_raw_keeps_the_unused_high_bits() -> None:
    """`_write_raw` (in the words' width) is the masking formula, for every stored value."""
    rng = np.random.default_rng(21)
    for dtype, width in ((np.uint8, 8), (np.uint16, 16)):
        for bits in range(1, width + 1):
            for signed in (False, True):
                fmt = PixelFormat(bits, signed)
                vals = np.arange(fmt.vmin, fmt.vmax + 1)
                vals = np.resize(rng.permutation(vals), max(vals.size, 4096))
                for st in {np.int16, np.int32} if bits <= 13 else {np.int32}:
                    stored = vals.astype(st).reshape(-1, 4)
                    words = rng.integers(0, 1 << width, stored.shape).astype(dtype)
                    keep = ~fmt.mask & 0xFFFF
                    want = ((words.astype(np.int32) & keep) | (stored & fmt.mask)).astype(dtype)
                    got = words.copy()
                    engine._write_raw(got[:, ::2], stored[:, ::2], fmt)  # a strided view
                    engine._write_raw(got[:, 1::2], stored[:, 1::2], fmt)
                    assert np.array_equal(got, want)


def _curves_reference(
    raw: np.ndarray,
    grid: tuple[int, int],
    fmt: PixelFormat,
    levels: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """`seal._slot_curves` counted target by target: per box, colour, kind and code."""
    s = to_stored(raw, fmt).astype(np.int64)
    nb, nc = grid[0] * grid[1], int(engine.THRESHOLDS.size)
    hist = np.zeros((1 if levels is None else 2, nb, 2, 2, nc), np.int64)
    lab = seal._target_labels(s.shape, grid)
    u, d, lf, rt, c = s[:-2, 1:-1], s[2:, 1:-1], s[1:-1, :-2], s[1:-1, 2:], s[1:-1, 1:-1]
    hi = np.maximum(np.maximum(u, d), np.maximum(lf, rt))
    lo = np.minimum(np.minimum(u, d), np.minimum(lf, rt))
    cx = hi - lo if fmt.bits_stored < 16 else np.minimum(hi - lo, engine.T_MAX)
    code = np.searchsorted(engine.THRESHOLDS, cx)
    peak = np.isin(((u + d + lf + rt) >> 2) - c, (0, 1))
    keep = lab >= 0
    if fmt.padding is not None:
        pad = (s >= fmt.padding[0]) & (s <= fmt.padding[1])
        keep &= ~(pad[1:-1, 1:-1] | pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:])
    box, colour = np.where(keep, lab // 2, 0), lab % 2
    kept = [keep]
    if levels is not None:
        dark, bright = (np.asarray(v, np.int64)[box] for v in levels)
        kept.append(keep & (hi <= dark) & (lo >= bright))
    for i, k in enumerate(kept):
        np.add.at(hist[i], (box[k], colour[k], 1, code[k]), 1)
        np.add.at(hist[i], (box[k & peak], colour[k & peak], 0, code[k & peak]), 1)
    cum = np.cumsum(hist, axis=-1)
    return cum[0] if levels is None else cum


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_slot_curves_match_a_target_by_target_count(fmt: PixelFormat) -> None:
    """`_slot_curves` (Bits Stored <= 13: one table lookup per target, `_pad_touched`) counts
    what a direct count over every target gives, with and without rules and padding."""
    rng = np.random.default_rng(300 + fmt.bits_stored)
    for trial in range(12):
        shape = (int(rng.integers(5, 140)), int(rng.integers(5, 140)))
        grid = engine.default_grid(shape)
        nb = grid[0] * grid[1]
        plane = _plane(rng, fmt, shape)
        if fmt.padding is not None and trial % 3 == 1:  # padding above the values, or inside
            plane = np.where(plane == plane.min(), plane.max(), plane).astype(plane.dtype)
        levels = None
        if trial % 2:
            dark = np.full(nb, np.iinfo(np.int32).max, np.int32)
            bright = np.full(nb, np.iinfo(np.int32).min, np.int32)
            for i in range(nb):
                level = int(rng.integers(fmt.vmin - 2, fmt.vmax + 3))
                (dark if rng.random() < 0.5 else bright)[i] = level
            levels = (dark, bright)
        want = _curves_reference(plane, grid, fmt, levels)
        for stored in (None, engine._work_values(plane, fmt), to_stored(plane, fmt)):
            got = seal._slot_curves(plane, grid, fmt, levels, stored)
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_pad_touched_matches_the_shifted_padding_map() -> None:
    """`_pad_touched`'s min/max shortcut (padding below or above every value) and its general
    case give the padding map ORed over the four neighbours."""
    rng = np.random.default_rng(31)
    seen = set()
    for _ in range(600):
        s = rng.integers(-50, 50, (int(rng.integers(3, 12)), int(rng.integers(3, 12))))
        lo_p = int(rng.integers(-55, 55))
        padding = (lo_p, lo_p + int(rng.choice([0, 0, 1, 4])))
        s = np.where(rng.random(s.shape) < 0.2, padding[0], s).astype(np.int16)
        u, d, lf, rt = s[:-2, 1:-1], s[2:, 1:-1], s[1:-1, :-2], s[1:-1, 2:]
        hi = np.maximum(np.maximum(u, d), np.maximum(lf, rt))
        lo = np.minimum(np.minimum(u, d), np.minimum(lf, rt))
        pad = (s >= padding[0]) & (s <= padding[1])
        want = pad[1:-1, 1:-1] | pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]
        got = seal._pad_touched(s, hi, lo, padding)
        seen.add("below" if s.min() >= padding[0] else "above" if s.max() <= padding[1] else "mid")
        if got is None:
            assert not pad.any()
        else:
            assert np.array_equal(got, want)
    assert seen == {"below", "above", "mid"}


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.bits_stored <= 13], ids=str)
def test_background_mask_of_int16_values(fmt: PixelFormat) -> None:
    """`background_mask` of int16 values (`_work_values`) is the mask of the int32 ones."""
    rng = np.random.default_rng(400 + fmt.bits_stored)
    for _ in range(6):
        shape = (int(rng.integers(16, 200)), int(rng.integers(16, 200)))
        plane = _plane(rng, fmt, shape)
        want = background.background_mask(to_stored(plane, fmt), fmt)
        got = background.background_mask(engine._work_values(plane, fmt), fmt)
        assert np.array_equal(got, want)


def test_stacked_border_fill_is_the_fill_of_each_plane() -> None:
    rng = np.random.default_rng(6)
    for _ in range(300):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        cands = rng.random((2, *shape)) < rng.uniform(0.2, 0.9)
        got = background._border_connected(cands)
        for i in range(2):
            assert np.array_equal(got[i], _border_connected_reference(cands[i]))
        grown = background._grow(cands)
        for i in range(2):
            assert np.array_equal(grown[i], background._grow(cands[i]))


def _plan_reference(costs: np.ndarray, grid: tuple[int, int], planes: int) -> seal._Plan | None:
    """`plan_carriers` with each greedy order's sums taken on its own (the plain loop)."""
    nb, (nslots, kmax) = grid[0] * grid[1], costs.shape
    wins = seal._windows(grid)
    nwin = 1 + max(max(w) for w in wins)
    best: seal._Plan | None = None
    rank = seal._rank(costs, min(kmax, 4) - 1)
    by_k: list[list[int]] = []
    for k in seal._K_ORDERS:
        if k <= kmax:
            order = seal._rank(costs[:, k - 1 : k], 0)
            if order and order not in by_k:
                by_k.append(order)
    for m in range(1, min(nslots, 4 * planes) + 1):
        seen: set[tuple[int, ...]] = set()
        for cands in [[first, *rank] for first in rank[: seal._STARTS]] + by_k:
            order = seal._greedy(cands, wins, nb, nwin, m)
            if len(order) <= m or tuple(order) in seen:
                continue
            seen.add(tuple(order))
            tot = np.cumsum(costs[order], axis=0)
            top = min(len(order), m + kmax)
            for j, cost in enumerate(tot[np.arange(m, top), np.arange(top - m)].tolist()):
                if np.isfinite(cost) and (best is None or cost < best.cost):
                    best = seal._Plan(tuple(order[: m + 1 + j]), 1 + j, cost)
    return best


def test_plan_carriers_matches_the_plain_loop() -> None:
    rng = np.random.default_rng(41)
    for _ in range(400):
        grid = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        if grid[0] * grid[1] < 2:
            continue
        planes = int(rng.choice([1, 1, 3]))
        nslots = grid[0] * grid[1] * planes
        costs = rng.choice([rng.uniform(0, 1e6), np.round(rng.uniform(0, 4))], (nslots, 1))
        costs = costs * rng.uniform(0.5, 2, (nslots, max(1, min(nslots - 1, 32))))
        costs[rng.random(costs.shape) < rng.choice([0, 0.3, 0.9])] = np.inf
        assert seal.plan_carriers(costs, grid, planes) == _plan_reference(costs, grid, planes)
        # small whole costs: many plans tie (the first in search order is kept)
        ties = rng.integers(0, 3, costs.shape).astype(np.float64)
        ties[np.isinf(costs)] = np.inf
        assert seal.plan_carriers(ties, grid, planes) == _plan_reference(ties, grid, planes)


def test_costs_with_a_load_row_per_slot() -> None:
    """`_costs` of stacked curve sets with per-row loads is `_costs` of each set."""
    rng = np.random.default_rng(51)
    for _ in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 33))
        curves = rng.integers(0, int(rng.choice([3, 50, 3000])), (2 * n, 2, 2, 224)).cumsum(-1)
        curves[:, :, 1] += curves[:, :, 0]
        loads = np.sort(rng.integers(0, 3000, k)).astype(np.int64)
        rows = np.concatenate([np.broadcast_to(loads, (n, k))] * 2)
        rows[n:] += 16
        want = np.concatenate([seal._costs(curves[:n], loads), seal._costs(curves[n:], loads + 16)])
        assert np.array_equal(seal._costs(curves, rows), want)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_ring_sizes_are_usable_ring_sizes(fmt: PixelFormat) -> None:
    rng = np.random.default_rng(500 + fmt.bits_stored)
    for shape in ((192, 160), (9, 40), (4, 30)):
        s = engine._work_values(_plane(rng, fmt, shape), fmt)
        boxes = grid_boxes(shape, grid=engine.default_grid(shape))
        heads, sizes = engine._ring_heads_sizes(s, boxes, fmt, 44, [False] * len(boxes))
        for b, head, size in zip(boxes, heads, sizes, strict=True):
            assert size == engine.usable_ring(s[b.slices()], fmt).size
            assert np.array_equal(head, engine.header_ring_head(s[b.slices()], fmt, 44))


def test_side_bits_are_the_header_fields() -> None:
    """`_side_bits_of`: magic and map flag, T codes, (v4) mode, guard code, level, map length,
    each most significant bit first."""
    rng = np.random.default_rng(61)
    for _ in range(500):
        fmt = FORMATS[int(rng.integers(0, len(FORMATS)))]
        version = 3 if rng.random() < 0.3 else 4
        roi = None
        if version == 4 and rng.random() < 0.6:
            roi = Roi(int(rng.integers(1, 3)), int(rng.integers(fmt.vmin, fmt.vmax + 1)))
        guard = int(rng.choice(engine._GUARD_CODES))
        c1, c2 = (int(rng.integers(0, 256)) for _ in range(2))
        nloc = int(rng.choice([0, 0, 1, 300, 65535]))
        head = [(engine._MAGICS[version] << 1) | (1 if nloc else 0), c1, c2]
        parts = [np.unpackbits(np.array(head, np.uint8))]
        if version != 3:
            mode, code = 0 if roi is None else roi.mode, engine._GUARD_CODES.index(guard)
            parts.append(np.array([mode >> 1, mode & 1, code >> 1, code & 1], np.uint8))
            if roi is not None:
                level = (roi.level - fmt.vmin).to_bytes(2, "big")
                parts.append(np.unpackbits(np.frombuffer(level, np.uint8)))
        if nloc:
            parts.append(np.unpackbits(np.frombuffer(nloc.to_bytes(2, "big"), np.uint8)))
        got = engine._side_bits_of(c1, c2, nloc, fmt, roi, version, guard)
        assert got.dtype == np.uint8 and np.array_equal(got, np.concatenate(parts))


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_box_rules_match_the_masked_reductions(fmt: PixelFormat) -> None:
    """`seal._box_rules` (int16: body min / max from two plane-wide arrays) is `_box_rule` of
    each box's interior, on planes with bodies of every kind (none, all, mixed, specks)."""
    rng = np.random.default_rng(71)
    tiled = 0
    for trial in range(80):
        shape = (int(rng.integers(3, 90)), int(rng.integers(3, 90)))
        grid = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        if trial % 2:  # equal boxes tiling the plane (`_tiles`), some of them under 3 px
            shape = (grid[0] * int(rng.integers(2, 20)), grid[1] * int(rng.integers(2, 20)))
        grid = (min(grid[0], shape[0]), min(grid[1], shape[1]))
        tiled += seal._tiles(shape, grid_boxes(shape, grid=grid)) is not None
        sv = engine._work_values(_plane(rng, fmt, shape), fmt)
        kind = rng.random()
        if kind < 0.15:
            body = np.zeros(shape, bool)
        elif kind < 0.3:
            body = np.ones(shape, bool)
        elif kind < 0.65:
            body = sv > int(np.median(sv))
        else:
            body = rng.random(shape) < rng.uniform(0.001, 0.999)
        boxes = grid_boxes(shape, grid=grid)
        want = [
            seal._box_rule(sv[b.slices()][1:-1, 1:-1], body[b.slices()][1:-1, 1:-1], fmt)
            for b in boxes
        ]
        assert seal._box_rules(sv, body, boxes, fmt) == want
    assert tiled >= 20


def test_rs_encode_is_the_plain_code() -> None:
    """`seal.rs_encode`: data shards are the padded data's rows, parity the GF(256) product."""
    rng = np.random.default_rng(73)
    for _ in range(200):
        data = bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))
        k = int(rng.integers(1, 33))
        n = int(rng.integers(k, min(256, k + 12) + 1))
        size = -(-len(data) // k)
        d = np.frombuffer(data.ljust(k * size, b"\0"), np.uint8).reshape(k, size).astype(np.int32)
        want = [bytes(r.astype(np.uint8)) for r in d]
        if n > k:
            par = seal._gf_matmul(seal._gf_rows(k, list(range(k, n))), d)
            want += [bytes(r.astype(np.uint8)) for r in par]
        got = seal.rs_encode(data, k, n)
        assert got == want and all(type(s) is bytes for s in got)


def test_grid_boxes_kept_are_the_boxes_made() -> None:
    """`grid_boxes` of plain ints comes from a cache: the same boxes, a new list each time."""
    for shape in [(512, 512), (1, 1), (7, 300), (1955, 1841)]:
        for grid in [(1, 1), (2, 3), (4, 4), (8, 8)]:
            first = grid_boxes(shape, grid=grid)
            assert first == engine._make_grid_boxes(shape, grid)
            again = grid_boxes(shape, grid=grid)
            assert again == first and again is not first
            np_shape = (np.int64(shape[0]), np.int64(shape[1]))
            assert grid_boxes(np_shape, grid=grid) == first  # type: ignore[arg-type]


def test_row_counts_are_count_nonzero_per_row() -> None:
    rng = np.random.default_rng(79)
    for _ in range(200):
        m = rng.random((int(rng.integers(0, 20)), int(rng.integers(0, 600)))) < rng.random()
        assert engine._row_counts(m) == np.count_nonzero(m, 1).tolist()


def test_kept_exp_golomb_codes_are_the_codes() -> None:
    for v in [0, 1, 2, 7, 8, 100, 255, 1000, 65535, 70000]:
        got = engine._eg_encode(v)
        assert not got.flags.writeable and np.array_equal(got, engine._eg_bits(v))
        assert engine._eg_decode(np.concatenate([got, np.zeros(3, np.uint8)]), 0) == (
            v,
            got.size,
        )
