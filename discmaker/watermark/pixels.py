"""Native Pixel Data <-> raw words, without pydicom's pixel decoder.

Recent pydicom clears unused high bits when it decodes, so a byte-exact restore must work on
the raw words themselves. Only native (uncompressed), little-endian Pixel Data with 8 or 16
bits allocated is handled; anything else raises UnsupportedPixelsError with a reason.

Before any Pixel Data is interpreted, :func:`decoded_size` checks what its attributes imply
(Rows x Columns x Number of Frames x Samples per Pixel x Bits Allocated) against
:data:`MAX_PIXEL_BYTES` and :data:`MAX_FRAMES`, and against the Pixel Data actually present:
a received file cannot make anything allocate or loop for more than its own bytes justify.
"""

from __future__ import annotations

import struct
from typing import cast

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.multival import MultiValue
from pydicom.uid import UID

from discmaker.watermark.engine import PixelFormat, UnsupportedPixelsError

__all__ = [
    "MAX_FRAMES",
    "MAX_PIXEL_BYTES",
    "decoded_size",
    "frames_view",
    "pixel_bytes",
    "pixel_format",
    "write_back",
]

RawFrames = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
Layout = tuple[int, int, int, int, int, int]
"""(frames, samples, rows, cols, bytes per word, planar configuration), validated."""

#: Bytes the Pixel Data of one image may decode to, at most: the checker reads no image file
#: larger than 1 GiB (a native image's pixels are never larger than its file), and the same
#: bound caps what a decoder would allocate for compressed pixels, whose size only the
#: attributes declare.
MAX_PIXEL_BYTES = 1 << 30
#: Frames in one image, at most. The longest cine loops and 4D stacks on patient discs have a
#: few thousand; each frame costs a pass of Python work (watermark, thumbnails), so a file of
#: millions of one-pixel frames is refused instead of looped over.
MAX_FRAMES = 65_536

_SUBSAMPLED = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420"})
_TWO_SAMPLES = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422"})  # chroma shared by pixel pairs
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: one fragment of encapsulated data
_NAMES = {
    "Rows": "Rows",
    "Columns": "Columns",
    "NumberOfFrames": "Number of Frames",
    "SamplesPerPixel": "Samples per Pixel",
    "BitsAllocated": "Bits Allocated",
}


def _positive(
    ds: pydicom.Dataset, keyword: str, default: int | None, *, zero: int | None = None
) -> int:
    """A pixel attribute as one positive integer; UnsupportedPixelsError naming it if not.

    ``default`` stands for an absent or empty value (None: required), ``zero`` for a 0.
    """
    name = _NAMES.get(keyword, keyword)
    try:
        value = ds.get(keyword)
    except Exception as exc:  # a hostile raw value can make the conversion raise anything
        raise UnsupportedPixelsError(f"{name} cannot be read ({type(exc).__name__})") from exc
    if value is None or value == "":
        if default is None:
            raise UnsupportedPixelsError(f"{name} is missing")
        return default
    if isinstance(value, MultiValue | list | tuple | bytes):
        raise UnsupportedPixelsError(f"{name} is not a single number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise UnsupportedPixelsError(f"{name} is not a number") from None
    if number == 0 and zero is not None:
        return zero
    if number < 1:
        raise UnsupportedPixelsError(f"{name} is {number}, not a positive number")
    return number


def decoded_size(ds: pydicom.Dataset, *, limit: int = MAX_PIXEL_BYTES) -> int:
    """Bytes the Pixel Data of ``ds`` holds once decoded; 0 when it has none.

    Rows, Columns, Samples per Pixel and Bits Allocated must be positive integers and Number
    of Frames one too (absent, empty or 0 means one frame, as before); their product, in
    bytes, at most ``limit``, and the frames at most :data:`MAX_FRAMES`. Native Pixel Data
    must hold at least that many bytes; encapsulated Pixel Data at least one fragment per
    frame, so a decoder asked for all frames is never asked for more than the file carries.
    Anything else is :class:`UnsupportedPixelsError` whose reason names the attribute. Call
    it before decoding or interpreting the pixels; it reads nothing but these attributes and
    the Pixel Data's fragment headers.
    """
    try:
        return _decoded_size(ds, limit)
    except UnsupportedPixelsError:
        raise
    except Exception as exc:  # as in _layout: a hostile value is unusable, never a crash
        raise UnsupportedPixelsError(
            f"its pixel attributes cannot be read ({type(exc).__name__})"
        ) from exc


def _decoded_size(ds: pydicom.Dataset, limit: int) -> int:
    if "PixelData" not in ds:
        return 0
    rows = _positive(ds, "Rows", None)
    cols = _positive(ds, "Columns", None)
    frames = _positive(ds, "NumberOfFrames", 1, zero=1)
    spp = _positive(ds, "SamplesPerPixel", 1)
    bits = _positive(ds, "BitsAllocated", None)
    if frames > MAX_FRAMES:
        raise UnsupportedPixelsError(
            f"Number of Frames is {frames:,}, more than the {MAX_FRAMES:,} allowed"
        )
    try:
        photo = str(ds.get("PhotometricInterpretation", "")).strip()
    except Exception as exc:
        raise UnsupportedPixelsError(
            f"Photometric Interpretation cannot be read ({type(exc).__name__})"
        ) from exc
    samples = 2 if photo in _TWO_SAMPLES and spp == 3 else spp
    size = (rows * cols * frames * samples * bits + 7) // 8
    if size > limit:
        raise UnsupportedPixelsError(
            f"Rows x Columns x Number of Frames x Samples per Pixel x Bits Allocated "
            f"({rows} x {cols} x {frames} x {spp} x {bits}) is {size:,} bytes, more than the "
            f"{limit:,} allowed"
        )
    try:
        data = ds.PixelData
    except Exception as exc:
        raise UnsupportedPixelsError(f"Pixel Data cannot be read ({type(exc).__name__})") from exc
    if not isinstance(data, bytes | bytearray):
        raise UnsupportedPixelsError("Pixel Data is not a byte string")
    if _encapsulated(ds):
        found = _fragments(data, frames + 1) - 1  # the first item is the basic offset table
        if found < frames:
            raise UnsupportedPixelsError(
                f"Number of Frames is {frames:,} but the encapsulated Pixel Data holds "
                f"{max(found, 0):,} fragments"
            )
    elif len(data) < size:
        raise UnsupportedPixelsError(
            f"Pixel Data holds {len(data):,} bytes, {size:,} expected from Rows x Columns x "
            "Number of Frames x Samples per Pixel x Bits Allocated"
        )
    return size


def _encapsulated(ds: pydicom.Dataset) -> bool:
    """Whether the Pixel Data is encapsulated: read with an undefined length, or under a
    compressed transfer syntax (a UID that names no transfer syntax says nothing)."""
    if getattr(ds["PixelData"], "is_undefined_length", False):
        return True
    ts = _transfer_syntax(ds)
    return ts is not None and ts.is_transfer_syntax and bool(ts.is_compressed)


def _fragments(data: bytes | bytearray, enough: int) -> int:
    """Items in encapsulated Pixel Data, counted from their headers; stops at ``enough``."""
    count, pos = 0, 0
    while count < enough and pos + 8 <= len(data) and data[pos : pos + 4] == _ITEM:
        (length,) = struct.unpack_from("<I", data, pos + 4)
        if length == 0xFFFFFFFF:
            break
        count += 1
        pos += 8 + length
    return count


def _transfer_syntax(ds: pydicom.Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    ts = meta.get("TransferSyntaxUID")
    return UID(str(ts)) if ts is not None else None


def _layout(ds: pydicom.Dataset) -> Layout:
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


def _layout_unguarded(ds: pydicom.Dataset) -> Layout:
    if "PixelData" not in ds:
        raise UnsupportedPixelsError("the dataset has no Pixel Data")
    ts = _transfer_syntax(ds)
    if ts is not None and ts.is_compressed:
        raise UnsupportedPixelsError(f"encapsulated (compressed) Pixel Data, transfer syntax {ts}")
    if ts is not None and not ts.is_little_endian:
        raise UnsupportedPixelsError("big-endian transfer syntax; convert to little endian first")
    decoded_size(ds)  # every pixel attribute usable, the size capped and present, first
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
    return _format_and_layout(ds)[0]


def _format_and_layout(ds: pydicom.Dataset) -> tuple[PixelFormat, Layout]:
    """:func:`pixel_format` and the validated layout, for `_frames_view` and `_pixel_bytes` of
    the same (unchanged) dataset: validated once instead of three times."""
    layout = _layout(ds)
    try:
        return _pixel_format(ds), layout
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
    return _frames_view(ds, _layout(ds))


def _frames_view(ds: pydicom.Dataset, layout: Layout) -> RawFrames:
    """:func:`frames_view` with the dataset's validated layout."""
    frames, spp, rows, cols, nbytes, planar = layout
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
    return _pixel_bytes(ds, arr, _layout(ds))


def _pixel_bytes(ds: pydicom.Dataset, arr: RawFrames, layout: Layout) -> bytes:
    """:func:`pixel_bytes` with the dataset's validated layout."""
    frames, spp, rows, cols, nbytes, planar = layout
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
