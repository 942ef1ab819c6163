"""Native Pixel Data <-> raw words, without pydicom's pixel decoder.

Recent pydicom clears unused high bits when it decodes, so a byte-exact restore must work on
the raw words themselves. Only native (uncompressed), little-endian Pixel Data with 8 or 16
bits allocated is handled; anything else raises UnsupportedPixelsError with a reason.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.uid import UID

from discmaker.watermark.engine import PixelFormat, UnsupportedPixelsError

__all__ = ["frames_view", "pixel_bytes", "pixel_format", "write_back"]

RawFrames = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]

_SUBSAMPLED = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420"})


def _transfer_syntax(ds: pydicom.Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    ts = meta.get("TransferSyntaxUID")
    return UID(str(ts)) if ts is not None else None


def _layout(ds: pydicom.Dataset) -> tuple[int, int, int, int, int, int]:
    """(frames, samples, rows, cols, bytes per word, planar configuration); validates.

    A received file may hold anything in these elements (a sequence, several values, text):
    whatever cannot be read is :class:`UnsupportedPixelsError`, never another exception.
    """
    try:
        return _layout_unguarded(ds)
    except UnsupportedPixelsError:
        raise
    except Exception as exc:  # pydicom raises many types on hostile values: all unreadable
        raise UnsupportedPixelsError(
            f"its pixel attributes cannot be read ({type(exc).__name__})"
        ) from exc


def _layout_unguarded(ds: pydicom.Dataset) -> tuple[int, int, int, int, int, int]:
    if "PixelData" not in ds:
        raise UnsupportedPixelsError("the dataset has no Pixel Data")
    ts = _transfer_syntax(ds)
    if ts is not None and ts.is_compressed:
        raise UnsupportedPixelsError(f"encapsulated (compressed) Pixel Data, transfer syntax {ts}")
    if ts is not None and not ts.is_little_endian:
        raise UnsupportedPixelsError("big-endian transfer syntax; convert to little endian first")
    ba = int(ds.get("BitsAllocated", 0))
    if ba not in (8, 16):
        raise UnsupportedPixelsError(f"Bits Allocated {ba} (only 8 and 16 are supported)")
    bs = int(ds.get("BitsStored", ba))
    hb = int(ds.get("HighBit", bs - 1))
    if not 1 <= bs <= ba or hb != bs - 1:
        raise UnsupportedPixelsError(f"Bits Stored {bs} / High Bit {hb} with Bits Allocated {ba}")
    spp = int(ds.get("SamplesPerPixel", 1))
    if spp not in (1, 3):
        raise UnsupportedPixelsError(f"Samples per Pixel {spp}")
    photo = str(ds.get("PhotometricInterpretation", "")).strip()
    if photo in _SUBSAMPLED:
        raise UnsupportedPixelsError(f"chroma-subsampled {photo} native Pixel Data")
    planar = int(ds.get("PlanarConfiguration", 0) or 0) if spp > 1 else 0
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 1 or cols < 1 or frames < 1:
        raise UnsupportedPixelsError(f"empty image ({frames} frames of {rows} x {cols})")
    need = frames * spp * rows * cols * (ba // 8)
    have = len(ds.PixelData)
    if have < need:
        raise UnsupportedPixelsError(f"Pixel Data holds {have} bytes, {need} expected")
    return frames, spp, rows, cols, ba // 8, planar


def pixel_format(ds: pydicom.Dataset) -> PixelFormat:
    """Stored-value format, with Pixel Padding Value (and Range Limit) in the stored domain.

    :class:`UnsupportedPixelsError` when the Pixel Data cannot carry the watermark or its
    attributes cannot be read.
    """
    _layout(ds)
    try:
        return _pixel_format(ds)
    except UnsupportedPixelsError:
        raise
    except Exception as exc:  # as in _layout: a hostile value is unreadable, not a crash
        raise UnsupportedPixelsError(
            f"its pixel attributes cannot be read ({type(exc).__name__})"
        ) from exc


def _pixel_format(ds: pydicom.Dataset) -> PixelFormat:
    bs = int(ds.get("BitsStored", ds.BitsAllocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    fmt = PixelFormat(bs, signed)
    pad = ds.get("PixelPaddingValue")
    if pad is None or int(ds.get("SamplesPerPixel", 1)) != 1:
        return fmt
    lim = ds.get("PixelPaddingRangeLimit")
    vals = [_padding_stored(int(pad), fmt)]
    if lim is not None:
        vals.append(_padding_stored(int(lim), fmt))
    lo, hi = min(vals), max(vals)
    lo, hi = max(lo, fmt.vmin), min(hi, fmt.vmax)
    if lo > hi:  # the padding value cannot occur among the stored values
        return fmt
    return PixelFormat(bs, signed, (lo, hi))


def _padding_stored(v: int, fmt: PixelFormat) -> int:
    """A padding value as a stored value: signed data may carry it as unsigned (63536 = -2000)."""
    if fmt.signed and v > fmt.vmax:
        if v <= fmt.mask:
            return v - (1 << fmt.bits_stored)
        if v <= 0xFFFF:
            return v - 0x10000
    return v


def frames_view(ds: pydicom.Dataset) -> RawFrames:
    """A writable copy of the raw words shaped (frames, planes, rows, cols)."""
    frames, spp, rows, cols, nbytes, planar = _layout(ds)
    dtype = np.dtype("<u2") if nbytes == 2 else np.dtype(np.uint8)
    n = frames * spp * rows * cols
    flat = np.frombuffer(ds.PixelData, dtype=dtype, count=n)
    if spp == 1 or planar == 1:
        arr = flat.reshape(frames, spp, rows, cols)
    else:
        arr = flat.reshape(frames, rows, cols, spp).transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(arr).astype(dtype.newbyteorder("="), copy=True)
    return cast("RawFrames", out)


def pixel_bytes(ds: pydicom.Dataset, arr: RawFrames) -> bytes:
    """The Pixel Data bytes for ``arr`` in the dataset's layout (trailing pad bytes kept)."""
    frames, spp, rows, cols, nbytes, planar = _layout(ds)
    if arr.shape != (frames, spp, rows, cols):
        raise ValueError(f"array shape {arr.shape} does not match the dataset")
    src = arr if spp == 1 or planar == 1 else arr.transpose(0, 2, 3, 1)
    dtype = np.dtype("<u2") if nbytes == 2 else np.dtype(np.uint8)
    body = np.ascontiguousarray(src, dtype=dtype).tobytes()
    old: bytes = ds.PixelData
    return body + old[len(body) :]


def write_back(ds: pydicom.Dataset, arr: RawFrames) -> None:
    """Store ``arr`` (frames, planes, rows, cols) as the dataset's Pixel Data, in place."""
    ds.PixelData = pixel_bytes(ds, arr)
