"""The header attributes the watermark seals, in groups, and the block it carries for them.

Format ``discmaker-header-v1`` (watermark format v4). The watermark of every frame carries a
32-byte *header block*: a 16-byte digest over every sealed attribute, then a 2-byte tag per
group (eight groups, in the order of :data:`GROUPS`). The digest decides: any change to a
sealed attribute makes the image tampered, at 128-bit strength. The tags only *name* what
changed: a group whose tag differs is reported by name (an attacker who works for it can make a
change that keeps its group's tag, 1 in 65,536, but never one that keeps the digest).

Sealed are the attributes that decide whose image it is and how it is read: patient, study,
series and instance identity, the pixel description (including palette and ICC data),
geometry (position, orientation, spacing, thickness, laterality, frame of reference, the
functional groups of enhanced images), value mapping (rescale, modality and VOI LUTs, windows,
presentation LUT), acquisition essentials, and overlays, curves and embedded graphics (groups
6000-60FF and 5000-50FF, graphic annotations). Not sealed, because they legitimately change
or are covered otherwise: the File Meta group (0002), Specific Character Set (values are
compared as decoded text), Pixel Data itself (the watermark covers every pixel word), private
elements (including discmaker's own bookkeeping block), and every attribute not listed here.

Canonical text, per group: a first line ``discmaker-header-v1 <group>``, then one line per
listed attribute that is present, in the listed order (overlay and curve groups: every element
by tag), as ``<keyword>=<value>``. Values use the one text rule of
:func:`~discmaker.format.identity.element_text` (DICOM padding removed, multiple values joined
by a backslash), except that ST, LT and UT keep their leading spaces; then "%", line feed and
carriage return are written as %25, %0A and %0D, so a value never reads as the next line.
Binary values (OB, OW, OF, OD, OL, OV, UN) are written as the SHA-256 of their bytes. A
sequence is written item by item: a line ``<keyword>[<item>]``, then each of the item's
elements (all of them, sorted by tag, private ones left out) as
``<keyword>[<item>].<keyword>=<value>``. An absent attribute and an empty one read the same.
The digest is SHA-256 over the eight group texts joined in order, truncated to 16 bytes; a
tag is BLAKE2b-16 of one group's text.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from discmaker.format.identity import BINARY_VRS, TEXT_VRS, element_text, raw_element_text

FORMAT = "discmaker-header-v1"
DIGEST_BYTES = 16
TAG_BYTES = 2


@dataclass(frozen=True)
class Group:
    name: str  # stable, in the JSON and the canonical text
    label: str  # for people
    keywords: tuple[str, ...]
    tag_groups: tuple[int, ...] = ()  # every element of these (repeating) groups, by tag


def _repeating(first: int) -> tuple[int, ...]:
    return tuple(range(first, first + 0x100, 2))


GROUPS: tuple[Group, ...] = (
    Group(
        "patient",
        "patient (name, ID, birth date, sex)",
        (
            "PatientName",
            "PatientID",
            "IssuerOfPatientID",
            "OtherPatientIDsSequence",
            "PatientBirthDate",
            "PatientSex",
            "PatientAge",
            "PatientBirthTime",
            "OtherPatientIDs",
            "MedicalAlerts",
            "Allergies",
            "PregnancyStatus",
            "AdditionalPatientHistory",
            "PatientComments",
        ),
    ),
    Group(
        "study",
        "study (date, time, accession number, description)",
        (
            "StudyInstanceUID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "StudyID",
            "StudyDescription",
            "ReferringPhysicianName",
        ),
    ),
    Group(
        "series",
        "series and instance (modality, body part, numbers, UIDs)",
        (
            "SeriesInstanceUID",
            "SeriesNumber",
            "SeriesDescription",
            "Modality",
            "BodyPartExamined",
            "SOPClassUID",
            "SOPInstanceUID",
            "InstanceNumber",
            "SeriesDate",
            "SeriesTime",
            "ProtocolName",
            "InstitutionName",
            "PerformedProcedureStepDescription",
            "RequestedProcedureDescription",
            "ProcedureCodeSequence",
            "AnatomicRegionSequence",
            "ReferencedImageSequence",
            "PresentationIntentType",
        ),
    ),
    Group(
        "pixels",
        "pixel description (size, bits, photometric interpretation, palette)",
        (
            "Rows",
            "Columns",
            "BitsAllocated",
            "BitsStored",
            "HighBit",
            "PixelRepresentation",
            "SamplesPerPixel",
            "PhotometricInterpretation",
            "PlanarConfiguration",
            "NumberOfFrames",
            "PixelAspectRatio",
            "PixelPaddingValue",
            "PixelPaddingRangeLimit",
            "RedPaletteColorLookupTableDescriptor",
            "GreenPaletteColorLookupTableDescriptor",
            "BluePaletteColorLookupTableDescriptor",
            "RedPaletteColorLookupTableData",
            "GreenPaletteColorLookupTableData",
            "BluePaletteColorLookupTableData",
            "SegmentedRedPaletteColorLookupTableData",
            "SegmentedGreenPaletteColorLookupTableData",
            "SegmentedBluePaletteColorLookupTableData",
            "ICCProfile",
            "SmallestImagePixelValue",
            "LargestImagePixelValue",
            "FloatPixelData",
            "DoubleFloatPixelData",
            "SegmentationType",
            "SegmentSequence",
        ),
    ),
    Group(
        "geometry",
        "geometry (position, orientation, spacing, thickness, laterality)",
        (
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "ImagerPixelSpacing",
            "NominalScannedPixelSpacing",
            "PixelSpacingCalibrationType",
            "SliceThickness",
            "SpacingBetweenSlices",
            "SliceLocation",
            "FrameOfReferenceUID",
            "PositionReferenceIndicator",
            "Laterality",
            "ImageLaterality",
            "FrameLaterality",
            "PatientPosition",
            "PatientOrientation",
            "ViewPosition",
            "SequenceOfUltrasoundRegions",
            "DetectorInformationSequence",
            "ViewCodeSequence",
            "PixelSpacingCalibrationDescription",
            "ImagePlanePixelSpacing",
            "FrameIncrementPointer",
            "GridFrameOffsetVector",
            "TriggerTime",
            "TemporalPositionIdentifier",
            "EstimatedRadiographicMagnificationFactor",
            "DistanceSourceToDetector",
            "DistanceSourceToPatient",
            "EnergyWindowVector",
            "DetectorVector",
            "PhaseVector",
            "RotationVector",
            "RRIntervalVector",
            "TimeSlotVector",
            "SliceVector",
            "AngularViewVector",
            "TimeSliceVector",
            "SharedFunctionalGroupsSequence",
            "PerFrameFunctionalGroupsSequence",
        ),
    ),
    Group(
        "values",
        "value mapping (rescale, window, lookup tables)",
        (
            "RescaleSlope",
            "RescaleIntercept",
            "RescaleType",
            "ModalityLUTSequence",
            "WindowCenter",
            "WindowWidth",
            "VOILUTFunction",
            "VOILUTSequence",
            "PresentationLUTShape",
            "PresentationLUTSequence",
            "RealWorldValueMappingSequence",
            "PixelIntensityRelationship",
            "PixelIntensityRelationshipSign",
            "Units",
            "DecayCorrection",
            "DecayFactor",
            "DoseGridScaling",
            "DoseUnits",
            "DoseCalibrationFactor",
            "FrameReferenceTime",
            "ActualFrameDuration",
            "CorrectedImage",
            "WindowCenterWidthExplanation",
            "RecommendedViewingMode",
            "PixelPresentation",
            "DiffusionBValue",
        ),
    ),
    Group(
        "acquisition",
        "acquisition (image type, dates, exposure, contrast, sequence)",
        (
            "ImageType",
            "AcquisitionDate",
            "AcquisitionTime",
            "AcquisitionDateTime",
            "ContentDate",
            "ContentTime",
            "AcquisitionNumber",
            "KVP",
            "XRayTubeCurrent",
            "Exposure",
            "ExposureTime",
            "ConvolutionKernel",
            "ContrastBolusAgent",
            "ContrastBolusRoute",
            "ContrastBolusVolume",
            "ScanningSequence",
            "SequenceVariant",
            "EchoTime",
            "RepetitionTime",
            "InversionTime",
            "FlipAngle",
            "MagneticFieldStrength",
            "FrameTime",
            "FrameTimeVector",
            "ImageComments",
            "PatientWeight",
            "PatientSize",
            "RadiopharmaceuticalInformationSequence",
            "DerivationDescription",
            "LossyImageCompression",
            "LossyImageCompressionRatio",
            "LossyImageCompressionMethod",
            "BurnedInAnnotation",
        ),
    ),
    Group(
        "overlays",
        "overlays and graphics",
        ("GraphicAnnotationSequence", "IconImageSequence"),
        tag_groups=_repeating(0x6000) + _repeating(0x5000),
    ),
)

GROUP_NAMES = tuple(g.name for g in GROUPS)
BLOCK_BYTES = DIGEST_BYTES + TAG_BYTES * len(GROUPS)
_MAX_DEPTH = 32  # past the checker's own bound (format.reading.MAX_NESTING): never reached there


def _escaped(text: str) -> str:
    # one line per element: a line break in a value can never read as the next element
    return text.replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D")


def _value_text(elem: DataElement) -> str:
    if elem.VR in BINARY_VRS:
        value = elem.value
        data = value if isinstance(value, bytes) else b""
        return "sha256:" + hashlib.sha256(data).hexdigest() if data else ""
    if elem.VR in TEXT_VRS and isinstance(elem.value, str):
        text = elem.value.rstrip(" \x00")
    else:
        text = element_text(elem.value)
    return _escaped(text)


def _lines(prefix: str, elem: DataElement, depth: int) -> Iterator[str]:
    if elem.VR != "SQ":
        yield f"{prefix}={_value_text(elem)}"
        return
    items = elem.value if isinstance(elem.value, Sequence) else []
    if not items:
        yield f"{prefix}="
        return
    for n, item in enumerate(items, 1):
        yield f"{prefix}[{n}]"  # an empty item counts too
        for sub in sorted(item, key=lambda e: e.tag):
            if sub.tag.is_private or sub.tag.group == 0x0002:
                continue
            name = sub.keyword or f"{sub.tag.group:04X}{sub.tag.element:04X}"
            if depth >= _MAX_DEPTH:
                yield f"{prefix}[{n}].{name}=(nested too deep)"
                continue
            yield from _lines(f"{prefix}[{n}].{name}", sub, depth + 1)


@functools.cache
def _tags(group: Group) -> tuple[tuple[str, BaseTag], ...]:
    """(keyword, tag) of the group's keywords, looked up once (a constant of the format)."""
    return tuple((k, Tag(k)) for k in group.keywords)


def group_text(ds: Dataset, group: Group) -> bytes:
    """The canonical text of one group of ``ds`` (see the module documentation).

    Only the elements of the group are converted: absent keywords cost a dictionary lookup.
    """
    lines = [f"{FORMAT} {group.name}"]
    tags = ds.keys()  # the tags only: iterating a Dataset converts every element
    for keyword, tag in _tags(group):
        if tag in tags:  # (a dict lookup; ``tag in ds`` makes a Tag of it first)
            lines.extend(_element_lines(ds, tag, keyword))
    if group.tag_groups:
        wanted = frozenset(group.tag_groups)
        for tag in sorted(t for t in tags if t >> 16 in wanted and (t >> 16) % 2 == 0):
            lines.extend(_element_lines(ds, tag, f"{tag >> 16:04X}{tag & 0xFFFF:04X}"))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _element_lines(ds: Dataset, tag: BaseTag, name: str) -> list[str]:
    """The lines of one element; a value pydicom cannot convert (a received file is hostile:
    an odd length for US, a broken sequence) is the digest of its raw bytes instead, so the
    text is always made and still differs from what was sealed."""
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement):  # not converted yet: read its bytes, if that is exact
        text = raw_element_text(raw, sealed=True)
        if text is not None:
            return [f"{name}={_escaped(text)}"] if text else []
    try:
        elem = ds[tag]
        if elem.VR != "SQ" and _value_text(elem) == "":  # absent, empty or only padding
            return []
        return list(_lines(name, elem, 0))
    except Exception:  # any parser failure on hostile bytes
        raw = ds.get_item(tag)
        value = getattr(raw, "value", b"")
        data = value if isinstance(value, bytes) else repr(value).encode()
        return [f"{name}=unreadable:{hashlib.sha256(data).hexdigest()}"]


def _tag(text: bytes, name: str) -> bytes:
    person = b"DMhdr1" + name[:10].encode()
    return hashlib.blake2b(text, digest_size=TAG_BYTES, person=person).digest()


def header_block(ds: Dataset) -> bytes:
    """The 32-byte block the watermark carries for the header of ``ds``."""
    texts = [group_text(ds, g) for g in GROUPS]
    digest = hashlib.sha256(b"".join(texts)).digest()[:DIGEST_BYTES]
    return digest + b"".join(_tag(t, g.name) for t, g in zip(texts, GROUPS, strict=True))


def changed_groups(sealed: bytes, found: bytes) -> tuple[Group, ...] | None:
    """Groups whose tags differ between a sealed and a freshly computed block.

    None when the blocks agree (nothing changed). An empty tuple when the digest differs but
    no tag does: something sealed changed, and which group could not be told.
    """
    if len(sealed) != BLOCK_BYTES or len(found) != BLOCK_BYTES:
        raise ValueError("a header block is 32 bytes")
    if sealed == found:
        return None
    return tuple(
        g
        for i, g in enumerate(GROUPS)
        if sealed[DIGEST_BYTES + TAG_BYTES * i : DIGEST_BYTES + TAG_BYTES * (i + 1)]
        != found[DIGEST_BYTES + TAG_BYTES * i : DIGEST_BYTES + TAG_BYTES * (i + 1)]
    )


__all__ = [
    "BLOCK_BYTES",
    "FORMAT",
    "GROUPS",
    "GROUP_NAMES",
    "Group",
    "changed_groups",
    "group_text",
    "header_block",
]
