"""Bring one input instance into the form that goes on the disc.

- Every instance is written in Explicit VR Little Endian (the CD profile's only syntax);
  implicit VR and big endian inputs are transcoded.
- Losslessly compressed pixel data is decoded and stored uncompressed, so it can carry the
  watermark and a viewer on any machine can show it.
- Lossy compressed pixel data is carried unchanged: decoding and re-storing it would create a
  new image, and lossy decoders disagree by a few values, so a bit-exact restore could not be
  promised. Such images are protected by the signed manifest only, and say so.
- Pixel data shorter than its header promises is refused (a truncated copy must not be
  passed off as the image).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian

from discmaker import __version__
from discmaker.diagnostics import captured_warnings
from discmaker.errors import StudyError, UnusableFileError
from discmaker.format.layout import IMPLEMENTATION_CLASS_UID

# discmaker's version name (the class UID is in format.layout, which the checker reads too).
IMPLEMENTATION_VERSION_NAME = ("DISCMAKER_" + __version__.replace(".", ""))[:16]

LOSSLESS_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    }
)

Encoding = Literal["native", "decompressed", "lossy-carried"]


@dataclass(frozen=True)
class Normalised:
    dataset: Dataset
    source_syntax: str
    encoding: Encoding
    notes: tuple[str, ...] = ()  # warnings pydicom raised while reading and converting


def _swap_words(ds: Dataset) -> None:
    """Byte-swap raw OW/OL/OF/OD/OV values read from a big endian file (pydicom keeps them raw)."""
    widths = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
    for elem in ds.iterall():
        width = widths.get(str(elem.VR))
        if width and isinstance(elem.value, bytes) and len(elem.value) % width == 0:
            dtype = np.dtype(f">u{width}")
            elem.value = (
                np.frombuffer(elem.value, dtype=dtype).astype(dtype.newbyteorder("<")).tobytes()
            )


def _transcode(ds: Dataset, *, big_endian: bool) -> Dataset:
    """Re-encode as Explicit VR Little Endian through a full write and read.

    Walking every element first makes pydicom decode each raw value with the encoding it
    was read in, before anything is written in the new one.
    """
    for _ in ds.iterall():
        pass
    if big_endian:
        _swap_words(ds)
    ds.file_meta = _fresh_meta(ds, ExplicitVRLittleEndian)
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return dcmread(io.BytesIO(buf.getvalue()))


def _fresh_meta(ds: Dataset, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def expected_pixel_bytes(ds: Dataset) -> int:
    bits = int(ds.BitsAllocated)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if str(ds.get("PhotometricInterpretation", "")).strip() in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        samples = 2  # chroma is shared by each pair of pixels (PS3.5 8.2.3)
    count = int(ds.Rows) * int(ds.Columns) * samples * int(ds.get("NumberOfFrames", 1) or 1)
    return (count * bits + 7) // 8


def _check_native_length(ds: Dataset, path: Path) -> None:
    if "PixelData" not in ds or "BitsAllocated" not in ds:
        return
    expected = expected_pixel_bytes(ds)
    found = len(ds.PixelData)
    if found < expected:
        raise UnusableFileError(
            str(path),
            f"(7FE0,0010) Pixel Data holds {found} bytes but Rows x Columns x Samples x "
            f"Frames x Bits Allocated needs {expected}",
            "The file is truncated: export it again.",
        )


def normalise(path: Path) -> Normalised:
    """Read ``path`` and return the dataset as it will be stored on the disc.

    pydicom's warnings do not reach the host: they are kept in :attr:`Normalised.notes`.
    Values decoded later, from the returned dataset, may still warn; read them inside
    :func:`discmaker.diagnostics.captured_warnings` too.
    """
    with captured_warnings() as notes:
        try:
            done = _normalise(path)
        except StudyError:
            raise
        except Exception as exc:  # pydicom raises many types on odd encodings: all bad input
            raise UnusableFileError(
                str(path),
                f"cannot be converted to Explicit VR Little Endian ({type(exc).__name__}: an "
                "element is encoded in a way discmaker cannot rewrite)",
                "Export it again from the PACS, uncompressed.",
            ) from exc
    return replace(done, notes=tuple(notes)) if notes else done


def _normalise(path: Path) -> Normalised:
    try:
        ds: Dataset = dcmread(path, force=True)
        meta = getattr(ds, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if not syntax:
            implicit, little = ds.original_encoding
            syntax = {
                (True, True): "1.2.840.10008.1.2",
                (False, True): "1.2.840.10008.1.2.1",
                (False, False): "1.2.840.10008.1.2.2",
            }.get((bool(implicit), bool(little)), "1.2.840.10008.1.2")
        uid = UID(syntax)
        _ = ds.get("PixelData")  # force the value to be read now, inside the guard
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as exc:
        raise UnusableFileError(
            str(path),
            f"cannot be read completely: it is truncated or damaged ({type(exc).__name__})",
            "Remove it or export it again.",
        ) from exc

    encoding: Encoding = "native"
    if uid.is_compressed:
        if syntax in LOSSLESS_SYNTAXES:
            try:
                # Never let the decoder mint a new SOP Instance UID behind our back.
                ds.decompress(generate_instance_uid=False)
            except Exception as exc:  # decoders raise many types; all mean "cannot decode"
                raise UnusableFileError(
                    str(path),
                    f"its {uid.name} pixel data cannot be decoded ({type(exc).__name__})",
                    "Export it uncompressed from the PACS.",
                ) from exc
            encoding = "decompressed"
        else:
            ds.file_meta = _fresh_meta(ds, syntax)
            return Normalised(dataset=ds, source_syntax=syntax, encoding="lossy-carried")
    else:
        _check_native_length(ds, path)
        implicit, little = ds.original_encoding
        if implicit or not little:
            ds = _transcode(ds, big_endian=not little)

    ds.file_meta = _fresh_meta(ds, ExplicitVRLittleEndian)
    # Re-encode as explicit VR from here on, whatever the file said.
    ds.set_original_encoding(False, True)
    if "PixelData" in ds:
        elem: DataElement = ds["PixelData"]
        if int(ds.get("BitsAllocated", 16)) > 8 and elem.VR in ("OB or OW", "OB", "UN"):
            elem.VR = "OW"
        elif elem.VR in ("OB or OW", "UN"):
            elem.VR = "OB"
    return Normalised(dataset=ds, source_syntax=syntax, encoding=encoding)


__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "LOSSLESS_SYNTAXES",
    "Normalised",
    "expected_pixel_bytes",
    "normalise",
]
