"""The canonical identity of an image, and its digest.

The identity is the set of header attributes that say *whose* image this is and *what* it is.
It is what the published CD attack edited with a tag editor. The watermark carries a digest of
it inside the pixels, and the manifest lists it in the clear, so a checker can both detect a
change and name the attribute that changed.

Canonical form (format ``discmaker-identity-v1``), one line per attribute in the fixed order
of :data:`IDENTITY_KEYWORDS`::

    discmaker-identity-v1
    PatientName=<value>
    PatientID=<value>
    ...

Each value is the element's value as text with DICOM padding (trailing spaces and NULs,
leading spaces for numbers) removed; multiple values are joined with a backslash; integers
are written in decimal; an absent or empty element is the empty string. The text is UTF-8
(pydicom has already decoded the Specific Character Set). The digest is SHA-256 of that text.

Elements pydicom has not converted yet are read from their bytes where that gives the same text
(:func:`raw_element_text`: ASCII text without escape sequences, which pydicom decodes alike
under every character set, and binary numbers), several times faster than its conversion.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from collections.abc import Iterator, Mapping

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from discmaker.sharing import Shared

FORMAT = "discmaker-identity-v1"

PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID")
SERIES_KEYWORDS = ("SeriesInstanceUID", "SeriesNumber", "Modality")
INSTANCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber")
IMAGE_KEYWORDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
)

IDENTITY_KEYWORDS: tuple[str, ...] = (
    PATIENT_KEYWORDS + STUDY_KEYWORDS + SERIES_KEYWORDS + INSTANCE_KEYWORDS + IMAGE_KEYWORDS
)

_IDENTITY_INDEX = {keyword: n for n, keyword in enumerate(IDENTITY_KEYWORDS)}


class Identity(Mapping[str, str]):
    """An image's identity attributes (every keyword of IDENTITY_KEYWORDS, in that order),
    held as a tuple: the author's main process and the checker keep one per image, and a
    dict of the 23 keywords costs 600 bytes more."""

    __slots__ = ("_values",)

    def __init__(self, values: tuple[str, ...]) -> None:
        if len(values) != len(IDENTITY_KEYWORDS):
            raise ValueError(f"an identity has {len(IDENTITY_KEYWORDS)} values, not {len(values)}")
        self._values = values

    @classmethod
    def of(cls, attrs: Mapping[str, str]) -> Identity:
        """The identity whose values are ``attrs``' (which must hold every keyword)."""
        return cls(tuple(attrs[k] for k in IDENTITY_KEYWORDS))

    def __getitem__(self, keyword: str) -> str:
        return self._values[_IDENTITY_INDEX[keyword]]

    def __iter__(self) -> Iterator[str]:
        return iter(IDENTITY_KEYWORDS)

    def __len__(self) -> int:
        return len(IDENTITY_KEYWORDS)

    def __repr__(self) -> str:
        return f"Identity({dict(self)!r})"

    def shared(self, pool: Shared) -> Identity:
        """The same values, those of the patient, study, series and image geometry as
        ``pool`` holds them; an instance's own are kept as they are."""
        return Identity(
            tuple(
                v if k in INSTANCE_KEYWORDS else pool(v)
                for k, v in zip(IDENTITY_KEYWORDS, self._values, strict=True)
            )
        )


# The watermark carries a truncated digest: 128 bits keep second preimages out of reach while
# leaving room in small frames. The manifest stores the full hex digest.
WATERMARK_DIGEST_BYTES = 16


def element_text(value: object) -> str:
    """An element value as the canonical text every comparison uses (one rule, both sides)."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(element_text(v) for v in value)
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, int):
        return str(value)
    return str(value).rstrip(" \x00").lstrip(" ")


BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
TEXT_VRS = frozenset({"ST", "LT", "UT"})  # one value each, leading spaces kept by pydicom
# backslash-separated values, each stripped of spaces (pydicom, then element_text). Not PN:
# pydicom drops empty trailing component groups ("DOE^JOHN==") and, under some ISO 2022
# character sets, fails on values plain ASCII would give.
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UC", "UI"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
# pydicom adds 65536 to a negative first value of these (its LUT descriptor fix)
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
# control characters: pydicom strips them from the ends of UI, IS, DS and AE values
_CONTROL = re.compile(rb"[\x01-\x1f\x7f]")
# an IS value pydicom keeps as written: a float past it ("1.50" -> 1.5, 2^53 + 1 -> 2^53)
_PLAIN_IS = re.compile(r"[+-]?[0-9]{1,15}")


def raw_element_text(raw: RawDataElement, *, sealed: bool = False) -> str | None:
    """:func:`element_text` of an element pydicom has not converted yet, read straight from
    its bytes (about 5x faster than pydicom's conversion); None wherever only that conversion
    gives the text exactly: sequences, non-ASCII or control characters, person names, IS
    values that are not plain integers, LUT descriptors, ambiguous or unknown VRs. Both ways
    agree (tests compare them on every test file of pydicom and pydicom-data and on crafted
    values of every VR).

    ``sealed``: the rules of the sealed header (:mod:`discmaker.format.sealed`) where they
    differ: binary values are ``sha256:<hex>`` of their bytes (empty when there are none), and
    ST, LT and UT keep their leading spaces. Without it, a binary value is None (element_text
    decodes the bytes pydicom gives: an identity element a file declares binary reads the same
    whichever way it was read).
    """
    vr = raw.VR
    if vr == "UN" or raw.tag in _LUT_DESCRIPTORS:  # (pydicom reads UN as the dictionary VR)
        return None
    if vr is None:
        try:
            vr = str(dictionary_VR(raw.tag))
        except KeyError:
            return None
    data = raw.value if isinstance(raw.value, bytes) else b"" if raw.value is None else None
    if data is None:
        return None
    if vr in BINARY_VRS:
        if not sealed:
            return None
        return "sha256:" + hashlib.sha256(data).hexdigest() if data else ""
    fmt = _NUMBER_FORMATS.get(vr)
    if fmt is not None:
        fmt = ("<" if raw.is_little_endian else ">") + fmt  # standard sizes (UL, SL: 4 bytes)
        size = struct.calcsize(fmt)
        if len(data) % size:
            return None
        return "\\".join(str(v[0]) for v in struct.iter_unpack(fmt, data))
    if not data.isascii() or b"\x1b" in data:
        return None
    text = data.decode("ascii")
    if vr in TEXT_VRS:
        text = text.rstrip(" \x00")
        return text if sealed else text.lstrip(" ")
    if vr not in _STRING_VRS or _CONTROL.search(data):
        return None
    values = [v.rstrip(" \x00").lstrip(" ") for v in text.split("\\")]
    if vr == "IS" and not all(_PLAIN_IS.fullmatch(v) for v in values if v):
        return None
    return "\\".join(values)


@functools.cache
def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


def text_of(ds: Dataset, keyword: str) -> str:
    """The element ``keyword`` of ``ds`` as canonical text; empty when absent.

    An element pydicom has not converted yet is read from its bytes where that gives the
    same text (:func:`raw_element_text`), and left unconverted."""
    tag = _tag(keyword)
    raw = ds.get_item(tag)
    if raw is None:
        return ""
    if isinstance(raw, RawDataElement):
        text = raw_element_text(raw)
        if text is not None:
            return text
    return element_text(ds[tag].value)


def identity_attributes(ds: Dataset) -> dict[str, str]:
    """The identity attributes of ``ds`` as canonical text (:func:`text_of`), in canonical
    order."""
    attrs: dict[str, str] = {}
    for keyword in IDENTITY_KEYWORDS:
        text = text_of(ds, keyword)
        if keyword == "NumberOfFrames" and text == "":
            text = "1"  # absent means one frame (PS3.3 C.7.6.6)
        attrs[keyword] = text
    return attrs


def canonical_text(attrs: Mapping[str, str]) -> bytes:
    lines = [FORMAT]
    for keyword in IDENTITY_KEYWORDS:
        value = attrs.get(keyword, "")
        if "\n" in value:
            value = value.replace("\n", "\\n")
        lines.append(f"{keyword}={value}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def identity_digest(attrs: Mapping[str, str]) -> bytes:
    """Full SHA-256 digest of the canonical identity text."""
    return hashlib.sha256(canonical_text(attrs)).digest()


def watermark_digest(attrs: Mapping[str, str]) -> bytes:
    """The truncated digest carried inside the watermark."""
    return identity_digest(attrs)[:WATERMARK_DIGEST_BYTES]


def differing_keywords(expected: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    """Keywords whose canonical values differ, in canonical order (never the values)."""
    return [k for k in IDENTITY_KEYWORDS if expected.get(k, "") != found.get(k, "")]


__all__ = [
    "BINARY_VRS",
    "FORMAT",
    "IDENTITY_KEYWORDS",
    "IMAGE_KEYWORDS",
    "INSTANCE_KEYWORDS",
    "PATIENT_KEYWORDS",
    "SERIES_KEYWORDS",
    "STUDY_KEYWORDS",
    "TEXT_VRS",
    "WATERMARK_DIGEST_BYTES",
    "Identity",
    "canonical_text",
    "differing_keywords",
    "element_text",
    "identity_attributes",
    "identity_digest",
    "raw_element_text",
    "text_of",
    "watermark_digest",
]
