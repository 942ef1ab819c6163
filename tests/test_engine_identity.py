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
