"""Properties of the reversible watermark engine (discmaker.watermark.engine)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Case, cases, stored_to_raw

from discmaker.errors import InputError
from discmaker.watermark.engine import (
    HEADER_BITS,
    Box,
    PixelFormat,
    Roi,
    UnsupportedPixelsError,
    WatermarkCapacityError,
    default_grid,
    embed_region,
    extract_region,
    grid_boxes,
    region_capacity,
)

PROPS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stored(raw: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    v = raw.astype(np.int64) & fmt.mask
    if fmt.signed:
        sb = 1 << (fmt.bits_stored - 1)
        v = (v ^ sb) - sb
    return v


def in_pad(v: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    if fmt.padding is None:
        return np.zeros(v.shape, bool)
    return (v >= fmt.padding[0]) & (v <= fmt.padding[1])


@PROPS
@given(cases())
def test_roundtrip_properties(case: Case) -> None:
    raw, fmt, box = case.raw.copy(), case.fmt, case.box
    orig = raw.copy()
    try:
        embed_region(raw, box, fmt, case.payload)
    except WatermarkCapacityError as exc:
        assert exc.capacity_bits < exc.needed_bits or exc.needed_bits == 0
        assert exc.needed_bits >= 8 * len(case.payload)
        assert np.array_equal(raw, orig), "a failed embed must leave the plane unchanged"
        return
    a, b = stored(orig, fmt), stored(raw, fmt)
    diff = b - a
    assert np.abs(diff).max() <= 1, "every changed value moves by exactly 1"
    high = ~fmt.mask & (0xFF if raw.dtype == np.uint8 else 0xFFFF)
    assert np.array_equal(orig & high, raw & high), "unused high bits preserved"
    assert b.min() >= fmt.vmin and b.max() <= fmt.vmax
    assert not np.any(diff[in_pad(a, fmt)]), "padding untouched"
    outside = np.ones(raw.shape, bool)
    outside[box.slices()] = False
    assert np.array_equal(raw[outside], orig[outside]), "nothing outside the box changes"
    assert extract_region(raw, box, fmt) == case.payload
    assert raw.tobytes() == orig.tobytes(), "byte-exact restore"


@PROPS
@given(cases(max_payload=0))
def test_unmarked_region_is_recognised(case: Case) -> None:
    raw = case.raw.copy()
    assert extract_region(raw, case.box, case.fmt) is None
    assert np.array_equal(raw, case.raw)


def smooth(
    shape: tuple[int, int], fmt: PixelFormat, *, noise: int = 1, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    mid = (fmt.vmin + fmt.vmax) // 2
    img = mid + (yy // 16) - (xx // 23) + rng.integers(-noise, noise + 1, shape)
    return np.clip(img, fmt.vmin, fmt.vmax)


FORMATS = [
    pytest.param(8, 8, False, "mono2", (512, 512), id="u8in8-mono2-512x512"),
    pytest.param(8, 16, True, "mono1", (100, 100), id="s8in16-mono1-100x100"),
    pytest.param(10, 16, False, "mono2", (64, 64), id="u10in16-mono2-64x64"),
    pytest.param(12, 16, False, "mono2", (512, 512), id="u12in16-mono2-512x512"),
    pytest.param(12, 16, True, "mono2", (100, 100), id="s12in16-mono2-100x100"),
    pytest.param(14, 16, True, "mono1", (128, 128), id="s14in16-mono1-128x128"),
    pytest.param(15, 16, False, "mono2", (100, 100), id="u15in16-mono2-100x100"),
    pytest.param(16, 16, True, "mono2", (1955, 1841), id="s16in16-mono2-1955x1841"),
]


@pytest.mark.parametrize(("bs", "alloc", "signed", "_photo", "shape"), FORMATS)
def test_format_matrix_every_box(
    bs: int, alloc: int, signed: bool, _photo: str, shape: tuple[int, int]
) -> None:
    fmt = PixelFormat(bs, signed)
    rng = np.random.default_rng(bs)
    high = rng.integers(0, 1 << alloc, shape) if alloc > bs else None
    raw = stored_to_raw(smooth(shape, fmt), fmt, alloc, high)
    raw[0, :] = stored_to_raw(np.full(shape[1], fmt.vmax), fmt, alloc, None)
    orig = raw.copy()
    boxes = grid_boxes(shape, grid=default_grid(shape))
    assert len(boxes) >= 2
    for i, box in enumerate(boxes[:4]):
        payload = bytes([i]) * 40
        embed_region(raw, box, fmt, payload)
        assert extract_region(raw, box, fmt) == payload
    assert raw.tobytes() == orig.tobytes()


def test_grid_covers_frame() -> None:
    for shape in [(64, 64), (100, 100), (512, 512), (1955, 1841), (3, 3), (300, 484)]:
        boxes = grid_boxes(shape, grid=default_grid(shape))
        cover = np.zeros(shape, int)
        for b in boxes:
            cover[b.slices()] += 1
        assert (cover == 1).all()
    assert default_grid((512, 512)) == (4, 4)
    assert default_grid((64, 64)) in ((2, 1), (1, 2))
    assert max(default_grid((1955, 1841))) <= 8


def test_capacity_error_names_numbers() -> None:
    fmt = PixelFormat(12, False)
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 4096, (16, 16)).astype(np.uint16)
    orig = raw.copy()
    with pytest.raises(WatermarkCapacityError) as info:
        embed_region(raw, Box(0, 0, 16, 16), fmt, bytes(100))
    assert isinstance(info.value, InputError)
    assert info.value.needed_bits >= 800 and info.value.capacity_bits < 800
    assert "bits" in str(info.value)
    assert np.array_equal(raw, orig)


def test_capacity_estimate_is_usable() -> None:
    fmt = PixelFormat(12, True)
    raw = stored_to_raw(smooth((128, 128), fmt, noise=2), fmt, 16, None)
    cap = region_capacity(raw, Box(0, 0, 128, 128), fmt)
    assert cap > HEADER_BITS
    payload = bytes(range(256)) * (cap // 8 // 256 + 1)
    orig = raw.copy()
    embed_region(raw, Box(0, 0, 128, 128), fmt, payload[: cap // 8 - 8])
    assert extract_region(raw, Box(0, 0, 128, 128), fmt) == payload[: cap // 8 - 8]
    assert np.array_equal(raw, orig)
    with pytest.raises(WatermarkCapacityError):
        embed_region(raw, Box(0, 0, 128, 128), fmt, payload[: cap // 8 + 64])


def test_damaged_carrier_gives_none_and_no_change() -> None:
    fmt = PixelFormat(12, False)
    raw = stored_to_raw(smooth((96, 96), fmt), fmt, 16, None)
    box = Box(0, 0, 96, 96)
    embed_region(raw, box, fmt, b"x" * 50)
    raw[40:44, 40:44] ^= 1  # damage the interior
    before = raw.copy()
    assert extract_region(raw, box, fmt) is None
    assert np.array_equal(raw, before)


def test_padding_neighbours_cost_nothing() -> None:
    fmt = PixelFormat(16, True, (-2000, -2000))
    img = np.full((128, 128), -2000, np.int64)
    img[30:100, 30:100] = smooth((70, 70), fmt)
    ring = np.ones((128, 128), bool)
    ring[1:-1, 1:-1] = False
    img[ring] = smooth((128, 128), fmt)[ring]  # side info needs a non-padding ring 0
    raw = stored_to_raw(img, fmt, 16, None)
    orig = raw.copy()
    embed_region(raw, Box(0, 0, 128, 128), fmt, b"p" * 30)
    # targets with a padding neighbour are never selected, so the body's edge is untouched
    assert np.array_equal(raw[30, 30:100], orig[30, 30:100])
    assert np.array_equal(raw[30:100, 30], orig[30:100, 30])
    assert np.array_equal(
        raw[1:-1, 1:-1][img[1:-1, 1:-1] == -2000], orig[1:-1, 1:-1][img[1:-1, 1:-1] == -2000]
    )
    assert extract_region(raw, Box(0, 0, 128, 128), fmt) == b"p" * 30
    assert np.array_equal(raw, orig)


def test_unsupported_format_errors() -> None:
    with pytest.raises(UnsupportedPixelsError):
        PixelFormat(17, False)
    with pytest.raises(UnsupportedPixelsError):
        embed_region(np.zeros((64, 64), np.int32), Box(0, 0, 64, 64), PixelFormat(12, False), b"")


# -- format v4: ROI target rule, header order, v3 still read -------------------------------------


@PROPS
@given(cases(), st.data())
def test_roundtrip_properties_v4_roi_and_v3(case: Case, data: st.DataObject) -> None:
    """The same guarantees with a v4 ROI rule (any mode and level) and with format v3; with a
    ROI only targets whose four neighbours lie on the background side of the level change."""
    raw, fmt, box = case.raw.copy(), case.fmt, case.box
    orig = raw.copy()
    version = data.draw(st.sampled_from([3, 4]), label="version")
    roi = None
    if version == 4 and data.draw(st.booleans(), label="roi"):
        level = data.draw(st.integers(fmt.vmin, fmt.vmax), label="level")
        roi = Roi(data.draw(st.sampled_from([1, 2]), label="mode"), level)
    try:
        embed_region(raw, box, fmt, case.payload, roi, version=version)
    except WatermarkCapacityError as exc:
        assert exc.capacity_bits < exc.needed_bits or exc.needed_bits == 0
        assert np.array_equal(raw, orig), "a failed embed must leave the plane unchanged"
        return
    a, b = stored(orig, fmt), stored(raw, fmt)
    diff = b - a
    assert np.abs(diff).max() <= 1
    assert b.min() >= fmt.vmin and b.max() <= fmt.vmax
    assert not np.any(diff[in_pad(a, fmt)]), "padding untouched"
    if roi is not None:
        # interior changes only where every 4-neighbour is on the background side (they move
        # by at most 1: allow the level + 1 for a neighbour that was itself moved)
        sub = a[box.slices()]
        d = diff[box.slices()][1:-1, 1:-1]
        nb = np.stack([sub[:-2, 1:-1], sub[2:, 1:-1], sub[1:-1, :-2], sub[1:-1, 2:]])
        side = nb.max(0) <= roi.level + 1 if roi.mode == 1 else nb.min(0) >= roi.level - 1
        side[0, :] = side[-1, :] = side[:, 0] = side[:, -1] = True  # ring 0 carries the header
        assert not np.any(d[~side]), "a target outside the ROI changed"
    assert extract_region(raw, box, fmt) == case.payload
    assert raw.tobytes() == orig.tobytes(), "byte-exact restore"


def test_v3_region_still_reads_and_v4_header_is_distinct() -> None:
    fmt = PixelFormat(12, True)
    base = stored_to_raw(smooth((128, 128), fmt, noise=2), fmt, 16, None)
    box = Box(0, 0, 128, 128)
    for version in (3, 4):
        raw = base.copy()
        embed_region(raw, box, fmt, b"v%d payload" % version, version=version)
        assert not np.array_equal(raw, base)
        assert extract_region(raw, box, fmt) == b"v%d payload" % version
        assert np.array_equal(raw, base)
    with pytest.raises(ValueError, match="v3 has no ROI"):
        embed_region(base.copy(), box, fmt, b"x", Roi(1, 0), version=3)


def test_roi_rule_keeps_the_body_untouched() -> None:
    """A dark background (noisy air at -1000) beside a body (soft tissue ~40): with the rule
    "all four neighbours <= -500" nothing of the body changes, the air carries the payload."""
    fmt = PixelFormat(12, True)
    rng = np.random.default_rng(7)
    img = np.full((128, 128), -1000) + rng.integers(-6, 7, (128, 128))
    img[:, 64:] = 40 + rng.integers(-6, 7, (128, 64))
    raw = stored_to_raw(img, fmt, 16, None)
    orig = raw.copy()
    embed_region(raw, Box(0, 0, 128, 128), fmt, bytes(range(40)), Roi(1, -500))
    changed = stored(raw, fmt) != stored(orig, fmt)
    assert changed[:, :63].any() and not changed[1:-1, 63:-1].any()
    assert extract_region(raw, Box(0, 0, 128, 128), fmt) == bytes(range(40))
    assert np.array_equal(raw, orig)
