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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

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


def text_of(ds: Dataset, keyword: str) -> str:
    """The element ``keyword`` of ``ds`` as canonical text; empty when absent."""
    return element_text(ds.get(keyword))


def identity_attributes(ds: Dataset) -> dict[str, str]:
    """The identity attributes of ``ds`` as canonical text, in canonical order."""
    attrs: dict[str, str] = {}
    for keyword in IDENTITY_KEYWORDS:
        value = ds.get(keyword)
        text = element_text(value)
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
    "FORMAT",
    "IDENTITY_KEYWORDS",
    "IMAGE_KEYWORDS",
    "INSTANCE_KEYWORDS",
    "PATIENT_KEYWORDS",
    "SERIES_KEYWORDS",
    "STUDY_KEYWORDS",
    "WATERMARK_DIGEST_BYTES",
    "Identity",
    "canonical_text",
    "differing_keywords",
    "element_text",
    "identity_attributes",
    "identity_digest",
    "text_of",
    "watermark_digest",
]
