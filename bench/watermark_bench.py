"""Watermark benchmark: distortion, capacity and speed on a varied real and generated corpus.

Run with ``python -m bench`` (or ``python -m bench.watermark_bench``). Single process; numpy's
element-wise operations used here run on one core. The corpus: generated CT/MR/CR/US, then every
pixel-bearing file of pydicom and pydicom-data of 256 x 256 or more (compressed ones are
decompressed first when a decoder is installed). Each image gets a time budget: the seal and
the unseal are repeated (best time kept) only while they stay within it.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pydicom
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from discmaker.crypto.signing import key_id
from discmaker.sample import ct_slice, mr_slice
from discmaker.watermark.background import background_mask
from discmaker.watermark.engine import (
    PixelFormat,
    UnsupportedPixelsError,
    WatermarkCapacityError,
    to_stored,
)
from discmaker.watermark.pixels import frames_view, pixel_format
from discmaker.watermark.seal import SealStats, UnsealResult, seal_dataset, unseal_dataset

_KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
_KID = key_id(_KEY.public_key())
_IDENT = bytes(32)
_BUDGET = 1.5  # seconds of repeated seal / unseal per image (after the first of each)
_REPEAT = 5  # at most this many runs of each


def _seal(ds: Dataset) -> SealStats:
    """The one seal call (keyword names of the seal API in one place)."""
    return seal_dataset(ds, header=_IDENT, signer=_KEY, key_id=_KID)


def _unseal(ds: Dataset) -> UnsealResult:
    return unseal_dataset(ds, headers={4: _IDENT}, public_keys={_KID: _KEY.public_key()})


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


def synthetic_cr15(sigma: float = 100.0, seed: int = 5) -> Dataset:
    """1955x1841 CR, 15 bits unsigned, MONOCHROME1, noisy plate-like content, no flat field."""
    rng = np.random.default_rng(seed)
    shape = (1955, 1841)
    img = 16000 + _smooth(rng, shape, 8000) + rng.normal(0, sigma, shape)
    img = img + rng.poisson(np.clip(img / 50, 1, None))  # signal-dependent quantum noise
    ds = _dataset(np.clip(np.round(img), 0, 32767).astype(np.int64), bs=15, signed=False)
    ds.PhotometricInterpretation = "MONOCHROME1"
    return ds


def synthetic_us(seed: int = 4) -> Dataset:
    """480x640 US, 8 bits, speckle in a sector on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    inside = (np.abs(xx - 320) < (yy * 0.6 + 20)) & (yy > 30)
    speck = rng.rayleigh(12, (480, 640)) + 60 + _smooth(rng, (480, 640), 30)
    img = np.where(inside, np.clip(np.round(speck), 0, 255), 0)
    return _dataset(img.astype(np.int64), bs=8, signed=False, alloc=8)


GENERATED: list[tuple[str, Callable[[], Dataset]]] = [
    ("gen CT 512 s16 pad, noise-free", lambda: synthetic_ct(0.0)),
    ("gen CT 512 s16 pad, noise 2 HU", lambda: synthetic_ct(2.0)),
    ("gen CT 512 s16 pad, noise 6 HU", lambda: synthetic_ct(6.0)),
    ("sample ct_slice(0) 512 s12 pad, 12 HU", lambda: ct_slice(0)),
    ("sample ct_slice(3) 512 s12 pad, 12 HU", lambda: ct_slice(3)),
    ("sample ct_slice(3) 256 s12 pad, 12 HU", lambda: ct_slice(3, rows=256, cols=256)),
    ("sample mr_slice(3) 256 u12", lambda: mr_slice(3)),
    ("gen MR 256 u12", synthetic_mr),
    ("gen CR 1955x1841 u12", synthetic_cr),
    ("gen CR 1955x1841 u15 MONO1 noise 100", synthetic_cr15),
    ("gen CR 1955x1841 u15 MONO1 noise 200", lambda: synthetic_cr15(200.0)),
    ("gen US 480x640 u8", synthetic_us),
]


def _read(path: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        if "TransferSyntaxUID" not in ds.file_meta:  # no meta: pydicom read it as implicit LE
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()  # raises when no decoder is installed for it
    return ds


def _image_size(path: str) -> tuple[int, int] | None:
    """(rows, columns) of a DICOM file with Pixel Data; None for anything else."""
    if not os.path.isfile(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, specific_tags=["Rows", "Columns", "PixelData"])
        if "PixelData" not in ds:
            return None
        return int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except Exception:  # not a DICOM image (JSON, ICC profile, dumps): not in the corpus
        return None


def corpus() -> Iterator[tuple[str, Callable[[], Dataset] | str]]:
    """(label, loader or the reason it is skipped) for every image of the benchmark."""
    yield from GENERATED
    for path in sorted(get_testdata_files(), key=os.path.basename):
        size = _image_size(path)
        if size is None or min(size) < 256:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdr = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        name = os.path.basename(path)
        label = (
            f"{name} {hdr.get('Modality', '?')} {size[0]}x{size[1]} b{hdr.get('BitsStored', '?')}"
        )
        yield label, (lambda p=path: _read(p))  # type: ignore[misc]


def _timed(fn: Callable[[Dataset], object], make: Callable[[], Dataset], first: float) -> float:
    """Best time of ``fn`` on fresh ``make()`` datasets over the repeats the budget allows
    (``first``: the first run's time)."""
    best = first
    n = min(_REPEAT - 1, int(_BUDGET / max(first, 1e-6)))
    for _ in range(n):
        d = make()
        t = time.perf_counter()
        fn(d)
        best = min(best, time.perf_counter() - t)
    return best


def _body(arr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Per value: inside the body mask (not background)."""
    return np.stack(
        [
            np.stack(
                [~background_mask(to_stored(arr[f, q], fmt), fmt) for q in range(arr.shape[1])]
            )
            for f in range(arr.shape[0])
        ]
    )


def measure(label: str, load: Callable[[], Dataset] | str) -> str:
    if isinstance(load, str):
        return f"| {label} | skipped: {load} |||||||"
    try:
        ds = load()
    except Exception as exc:  # no decoder, broken file: reported
        return f"| {label} | skipped: cannot decode ({type(exc).__name__}: {str(exc)[:60]}) |||||||"
    try:
        fmt = pixel_format(ds)
        before = frames_view(ds).copy()
    except UnsupportedPixelsError as exc:
        return f"| {label} | unsupported: {exc.reason} |||||||"
    nbytes = len(ds.PixelData)
    work = copy_ds(ds)
    t0 = time.perf_counter()
    try:
        stats = _seal(work)
    except WatermarkCapacityError as exc:
        return f"| {label} | NOT carried: {exc} |||||||"
    first = time.perf_counter() - t0
    t_embed = _timed(_seal, lambda: copy_ds(ds), first)
    t0 = time.perf_counter()
    res = _unseal(work)
    t_ext = _timed(_unseal, lambda: work, time.perf_counter() - t0)
    ok = res.status == "ok" and res.restored_pixel_data == ds.PixelData
    after = frames_view(work)
    a = before.astype(np.int64) & fmt.mask
    b = after.astype(np.int64) & fmt.mask
    diff = np.abs(a - b)
    if fmt.signed:  # a wrap between the two's-complement ends would show as 2^bs - 1
        diff = np.minimum(diff, (1 << fmt.bits_stored) - diff)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    peak = (1 << fmt.bits_stored) - 1
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    changed = diff != 0
    body = _body(before, fmt)
    nchanged = int(np.count_nonzero(changed))
    inside = int(np.count_nonzero(changed & body))
    bg = 1 - float(np.mean(body))
    verdict = "carried" if ok else f"BROKEN ({res.status})"
    return (
        f"| {label} | {verdict} | {psnr:.1f} | {100 * nchanged / diff.size:.2f} "
        f"| {100 * bg:.0f} | {100 * inside / max(1, nchanged):.1f} "
        f"| {stats.carriers}/{stats.signed_block_bytes} "
        f"| {nbytes / t_embed / 1e6:.0f} | {nbytes / t_ext / 1e6:.0f} |"
    )


def copy_ds(ds: Dataset) -> Dataset:
    """A copy whose Pixel Data the seal may replace without touching ``ds``."""
    return copy.deepcopy(ds)


HEADER = (
    "| image | carried | PSNR dB | values changed % | background % | changes inside body % "
    "| carriers / G bytes | embed MB/s | extract+restore MB/s |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    print("Watermark benchmark (seal = hash + sign + plan + embed; unseal = extract + restore +")
    print("verify; PSNR peak 2^BitsStored - 1; body = not background (watermark.background))")
    print(HEADER)
    started = time.perf_counter()
    for label, load in corpus():
        print(measure(label, load), flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
