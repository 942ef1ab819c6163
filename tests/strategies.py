"""Hypothesis strategies for the reversible watermark engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from discmaker.watermark.engine import Box, PixelFormat

# (bits stored, bits allocated)
LAYOUTS = [(8, 8), (8, 16), (10, 16), (12, 16), (14, 16), (15, 16), (16, 16)]


@dataclass(frozen=True)
class Case:
    raw: np.ndarray  # raw words (uint8/uint16), 2-D
    fmt: PixelFormat
    box: Box
    payload: bytes

    def __repr__(self) -> str:  # keep falsifying examples readable
        n = len(self.payload)
        return f"Case(fmt={self.fmt}, shape={self.raw.shape}, box={self.box}, payload={n} B)"


def stored_to_raw(
    stored: np.ndarray, fmt: PixelFormat, alloc: int, high: np.ndarray | None
) -> np.ndarray:
    dtype = np.uint8 if alloc == 8 else np.uint16
    raw = stored.astype(np.int64) & fmt.mask
    if high is not None:
        raw |= high.astype(np.int64) & (~fmt.mask & ((1 << alloc) - 1))
    return raw.astype(dtype)


@st.composite
def cases(draw: st.DrawFn, *, max_payload: int = 24) -> Case:
    bs, alloc = draw(st.sampled_from(LAYOUTS))
    signed = draw(st.booleans())
    probe = PixelFormat(bs, signed)
    lo, hi = probe.vmin, probe.vmax
    h = draw(st.integers(52, 96))
    w = draw(st.integers(52, 96))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["low", "high", "mid", "edges", "checker"]))
    base = {"low": lo, "high": hi, "mid": (lo + hi) // 2, "edges": lo, "checker": lo}[kind]
    yy, xx = np.mgrid[0:h, 0:w]
    img = base + (yy // 9 - xx // 13) * draw(st.integers(-2, 2)) + rng.integers(-1, 2, (h, w))
    if kind == "edges":
        img = np.where(
            (yy + xx) % 7 < 3, lo + rng.integers(0, 2, (h, w)), hi - rng.integers(0, 2, (h, w))
        )
    if kind == "checker":
        img = lo + ((yy + xx) % 2) + rng.integers(0, 2, (h, w))
    img = np.clip(img, lo, hi)
    # sprinkle range extremes
    salt = rng.random((h, w))
    img = np.where(salt < 0.005, lo, np.where(salt > 0.995, hi, img))
    padding = None
    if draw(st.booleans()):
        pv = draw(st.sampled_from([lo, hi, (lo + hi) // 2, lo + 1]))
        pw = draw(st.integers(0, 2))
        padding = (pv, min(hi, pv + pw))
        r0, c0 = rng.integers(10, h // 2), rng.integers(10, w // 2)
        img[r0 : r0 + h // 3, c0 : c0 + w // 3] = pv
        img = np.where(rng.random((h, w)) < 0.01, pv, img)
        if kind == "mid":  # values right next to the padding range
            img = np.where(rng.random((h, w)) < 0.05, np.clip(pv - 1, lo, hi), img)
    fmt = PixelFormat(bs, signed, padding)
    high = None
    if alloc > bs and draw(st.booleans()):
        high = rng.integers(0, 1 << alloc, (h, w))
    raw = stored_to_raw(img, fmt, alloc, high)
    if draw(st.booleans()):
        box = Box(0, 0, h, w)
    else:
        r0, c0 = draw(st.integers(0, 8)), draw(st.integers(0, 8))
        box = Box(r0, c0, h - draw(st.integers(0, 8)), w - draw(st.integers(0, 8)))
    payload = draw(st.binary(min_size=0, max_size=max_payload))
    return Case(raw, fmt, box, payload)
