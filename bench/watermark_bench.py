"""Watermark benchmark: distortion, capacity and speed on bundled and generated images.

Run with ``python -m bench`` (or ``python -m bench.watermark_bench``). Single process; numpy's
element-wise operations used here run on one core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pydicom
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from discmaker.crypto.signing import key_id
from discmaker.sample import ct_slice, mr_slice
from discmaker.watermark.engine import UnsupportedPixelsError, WatermarkCapacityError
from discmaker.watermark.pixels import frames_view, pixel_format
from discmaker.watermark.seal import SealStats, seal_dataset, unseal_dataset

_KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
_KID = key_id(_KEY.public_key())
_IDENT = bytes(16)


def _dataset(
    img: np.ndarray, *, bs: int, signed: bool, alloc: int = 16, padding: int | None = None
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = alloc, bs, bs - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if padding is not None:
        ds.PixelPaddingValue = padding & 0xFFFF if signed else padding
    raw = img.astype(np.int64) & ((1 << bs) - 1)
    ds.PixelData = raw.astype(np.uint8 if alloc == 8 else "<u2").tobytes()
    return ds


def _smooth(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Low-frequency structure: a few blurred blobs."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    out = np.zeros(shape)
    for _ in range(6):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(0.05, 0.25) * min(shape)
        out += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return out * scale


def synthetic_ct(sigma: float, seed: int = 1) -> Dataset:
    """512x512 CT, 16-bit signed, HU-like body disc, padding -2000 outside the field of view."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:512]
    r = np.hypot(yy - 256, xx - 256)
    body = np.where(r < 200, 40.0, -1000.0) + np.where(r < 60, 600.0, 0.0)
    img = body + _smooth(rng, (512, 512), 80) + rng.normal(0, sigma, (512, 512))
    img = np.where(r < 250, np.clip(np.round(img), -1024, 3071), -2000)
    return _dataset(img.astype(np.int64), bs=16, signed=True, padding=-2000)


def synthetic_mr(seed: int = 2) -> Dataset:
    """256x256 MR, 12 bits unsigned, Rician-like dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256]
    r = np.hypot(yy - 128, xx - 128)
    sig = np.where(r < 100, 900.0, 0.0) + _smooth(rng, (256, 256), 200) * (r < 100)
    img = np.hypot(sig + rng.normal(0, 3, sig.shape), rng.normal(0, 3, sig.shape))
    return _dataset(np.clip(np.round(img), 0, 4095).astype(np.int64), bs=12, signed=False)


def synthetic_cr(seed: int = 3) -> Dataset:
    """1955x1841 CR, 12 bits unsigned, smooth anatomy with mild noise and collimated edges."""
    rng = np.random.default_rng(seed)
    shape = (1955, 1841)
    img = 1800 + _smooth(rng, shape, 900) + rng.normal(0, 1.5, shape)
    img[:60], img[-60:] = 4095, 4095  # collimator blades saturate
    return _dataset(np.clip(np.round(img), 0, 4095).astype(np.int64), bs=12, signed=False)


def synthetic_us(seed: int = 4) -> Dataset:
    """480x640 US, 8 bits, speckle in a sector on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    inside = (np.abs(xx - 320) < (yy * 0.6 + 20)) & (yy > 30)
    speck = rng.rayleigh(12, (480, 640)) + 60 + _smooth(rng, (480, 640), 30)
    img = np.where(inside, np.clip(np.round(speck), 0, 255), 0)
    return _dataset(img.astype(np.int64), bs=8, signed=False, alloc=8)


def _pydicom(name: str) -> Callable[[], Dataset]:
    def load() -> Dataset:
        path = get_testdata_file(name)
        if path is None:
            raise FileNotFoundError(name)
        return pydicom.dcmread(path)

    return load


CASES: list[tuple[str, Callable[[], Dataset]]] = [
    ("CT 512x512 s16 pad, noise-free", lambda: synthetic_ct(0.0)),
    ("CT 512x512 s16 pad, noise 2 HU", lambda: synthetic_ct(2.0)),
    ("CT 512x512 s16 pad, noise 6 HU", lambda: synthetic_ct(6.0)),
    ("sample ct_slice(3) 512 s12 pad, 12 HU", lambda: ct_slice(3)),
    ("sample ct_slice(3) 256 s12 pad, 12 HU", lambda: ct_slice(3, rows=256, cols=256)),
    ("sample mr_slice(3) 256 u12", lambda: mr_slice(3)),
    ("MR 256x256 u12", synthetic_mr),
    ("CR 1955x1841 u12", synthetic_cr),
    ("US 480x640 u8", synthetic_us),
    ("pydicom examples_overlay u12", _pydicom("examples_overlay.dcm")),
    ("pydicom examples_palette u8", _pydicom("examples_palette.dcm")),
    ("pydicom examples_rgb_color", _pydicom("examples_rgb_color.dcm")),
    ("pydicom image_dfl u8 512", _pydicom("image_dfl.dcm")),
    ("pydicom CT_small s16 128", _pydicom("CT_small.dcm")),
    ("pydicom MR_small s16 64", _pydicom("MR_small.dcm")),
]


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(label: str, load: Callable[[], Dataset]) -> str:
    ds = load()
    try:
        fmt = pixel_format(ds)
        before = frames_view(ds)
    except UnsupportedPixelsError as exc:
        return f"| {label} | unsupported: {exc.reason} |||||||"
    nbytes = len(ds.PixelData)
    repeat = 3 if nbytes > 2_000_000 else 7
    sealed: list[Dataset] = []
    t_embed = math.inf
    stats: SealStats | None = None
    try:
        for _ in range(repeat):
            d = load()
            t0 = time.perf_counter()
            stats = seal_dataset(d, identity_digest=_IDENT, signer=_KEY, key_id=_KID)
            t_embed = min(t_embed, time.perf_counter() - t0)
            sealed.append(d)
    except WatermarkCapacityError as exc:
        return (
            f"| {label} | capacity error: weakest needed carrier {exc.capacity_bits} bits "
            f"< {exc.needed_bits} | | | | | | |"
        )
    assert stats is not None
    cap_txt = f"{stats.carriers}/{stats.signed_block_bytes}"
    ds = sealed[-1]
    t_ext = _best(
        lambda: unseal_dataset(ds, identity_digest=_IDENT, public_keys={_KID: _KEY.public_key()}),
        repeat,
    )
    res = unseal_dataset(ds, identity_digest=_IDENT, public_keys={_KID: _KEY.public_key()})
    assert res.status == "ok" and res.restored_pixel_data is not None
    after = frames_view(ds)
    mask = fmt.mask
    a = before.astype(np.int64) & mask
    b = after.astype(np.int64) & mask
    diff = np.abs(a - b)
    if fmt.signed:  # a wrap between the two's-complement ends would show as 2^bs - 1
        diff = np.minimum(diff, (1 << fmt.bits_stored) - diff)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    peak = (1 << fmt.bits_stored) - 1
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    changed = float(np.count_nonzero(diff)) / diff.size
    return (
        f"| {label} | {int(diff.max())} | {psnr:.1f} | {100 * changed:.2f} | {cap_txt} "
        f"| {nbytes / t_embed / 1e6:.0f} | {nbytes / t_ext / 1e6:.0f} |"
    )


HEADER = (
    "| image | max change | PSNR dB | values changed % | carriers / G bytes "
    "| embed MB/s | extract+restore MB/s |\n|---|---|---|---|---|---|---|"
)


def main() -> None:
    print("Watermark benchmark (seal = hash + sign + embed; unseal = extract + restore + verify)")
    print(HEADER)
    for label, load in CASES:
        print(measure(label, load), flush=True)


if __name__ == "__main__":
    main()
