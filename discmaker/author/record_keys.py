"""Make the DICOMDIR record keys of a header copy conform, whatever the image holds.

Real images carry values their own IOD forbids: a two-valued Accession Number, a 70-character
Study Description, Modality ``us``, a Study Time written ``10:20:30``. The image goes on the
disc as it came, but pydicom's FileSet copies such values into the DICOMDIR's records as they
are, and a DICOMDIR that breaks PS3.5 is what a viewer or dciodvfy rejects. So, in the
header-only copy the records are made from (and only there), every record key is given the
value multiplicity of its dictionary entry, the length its VR allows and its VR's character
repertoire. The caller lists the keywords changed, so the manifest says which record values
are not the image's own (as it does for placeholders) and the checker does not call them
tampering.

UIDs are left as they are: a record's UIDs are what links it to the file and to the other
records of its study and series, and a changed one would point at nothing. Specific Character
Set is not changed either: it says which characters the other keys may hold.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from types import MappingProxyType
from typing import Any

from pydicom.datadict import dictionary_VM
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from discmaker.format.identity import element_text

# Type 1 in DICOMDIR records but type 2 (may be empty) in images. When an image leaves them
# empty, the DICOMDIR record alone gets a documented placeholder (as `dcmmkdir +I` does); the
# image itself is never changed, and the manifest lists what was invented. See README.
INVENTED_DEFAULTS = MappingProxyType(
    {
        "StudyDate": "19000101",
        "StudyTime": "000000",
        "StudyID": "0",
        "SeriesNumber": "0",
        "InstanceNumber": "0",
    }
)

# Every key, other than a sequence, that pydicom's FileSet (3.0, ``fileset._define_*``) copies
# from an instance into one of its records (PATIENT, STUDY, SERIES, then the leaf record
# types). Specific Character Set is copied too, but it says how the others are
# encoded and is not changed. tests/test_record_keys.py checks that pydicom copies no others.
RECORD_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "StudyInstanceUID",
    "StudyID",
    "AccessionNumber",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "DoseSummationType",
    "StructureSetLabel",
    "StructureSetDate",
    "StructureSetTime",
    "RTPlanLabel",
    "RTPlanDate",
    "RTPlanTime",
    "TreatmentDate",
    "TreatmentTime",
    "PresentationCreationDate",
    "PresentationCreationTime",
    "ContentLabel",
    "ContentDescription",
    "ContentCreatorName",
    "CompletionFlag",
    "VerificationFlag",
    "ContentDate",
    "ContentTime",
    "VerificationDateTime",
    "ImageType",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "DataPointRows",
    "DataPointColumns",
    "HangingProtocolCreator",
    "HangingProtocolCreationDateTime",
    "NumberOfPriorsReferenced",
    "DocumentTitle",
    "HL7InstanceIdentifier",
    "MIMETypeOfEncapsulatedDocument",
    "Manufacturer",
    "ImplantName",
    "ImplantSize",
    "ImplantPartNumber",
    "ImplantAssemblyTemplateName",
    "ImplantTemplateGroupName",
    "ImplantTemplateGroupIssuer",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "UserContentLabel",
    "UserContentLongLabel",
)

# Maximum value length in characters (PS3.5 table 6.2-1) of the VRs of record keys that have
# one; DA, DT and TM are limited by their forms below (TM: 14 bytes outside queries, and
# HHMMSS.FFFFFF never needs more).
MAX_LENGTH = {"CS": 16, "IS": 12, "LO": 64, "PN": 64, "SH": 16, "ST": 1024}  # PN: per group

# When a date, time or number cannot be read as one at all, the record still gets a value
# where the image had one: some record types require it (type 1), and an empty value there
# would stop pydicom from making the record. These are the placeholders of
# :data:`INVENTED_DEFAULTS`, by VR.
UNREADABLE = {
    "DA": INVENTED_DEFAULTS["StudyDate"],
    "TM": INVENTED_DEFAULTS["StudyTime"],
    "DT": INVENTED_DEFAULTS["StudyDate"] + INVENTED_DEFAULTS["StudyTime"],
    "IS": INVENTED_DEFAULTS["InstanceNumber"],
}

# Binary numbers can only break their value multiplicity; their values are kept as they are.
_BINARY = frozenset({"US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"})
_DEFAULT_REPERTOIRE = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_FORMAT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # ST keeps TAB LF FF CR
_NOT_CS = re.compile(r"[^A-Z0-9 _]")
_TIME = re.compile(r"(\d\d)(?:(\d\d)(?:(\d\d)(?:\.\d{1,6})?)?)?")
_DATETIME = re.compile(r"\d{4}(?:\d\d(?:\d\d(?:\d\d(?:\d\d(?:\d\d(?:\.\d{1,6})?)?)?)?)?)?")
_DT_OFFSET = re.compile(r"[+-]\d\d:?\d\d$")
_IS_RANGE = range(-(2**31), 2**31)


Rule = Callable[[str, bool], str]  # (one value as text, default repertoire only) -> conformed


def conform_record_keys(hdr: Dataset) -> tuple[str, ...]:
    """Conform every record key of ``hdr`` in place; return the keywords whose value changed,
    in the header's order.

    ``hdr`` must be a copy: a changed element is replaced by a new one, so a dataset sharing
    its elements with ``hdr`` is not touched. A value that differs only in padding is rewritten
    but not reported: image and record read the same (:func:`element_text`). A key that this
    instance's own record types do not carry (Manufacturer, for an IMAGE record) is conformed
    and reported all the same: which record types an instance gets is pydicom's choice, and a
    key listed in vain only tells the checker not to insist on it.
    """
    ascii_only = _default_repertoire(hdr)
    changed: list[str] = []
    # Tags, as iterating a Dataset yields elements; listed first, as the loop replaces some.
    present = [tag for tag in hdr.keys() if tag in _RECORD_TAGS]  # noqa: SIM118
    for tag in present:
        keyword, max_vm = _RECORD_TAGS[tag]
        elem = hdr[tag]
        values = _values(elem.value)
        rule = _RULES.get(elem.VR)
        if rule is not None and not isinstance(elem.value, bytes):
            texts = _texts(values)
            new: list[Any] = [rule(text, ascii_only) for text in texts[:max_vm]]
            if new == texts:
                continue
        elif elem.VR in _BINARY and max_vm is not None and len(values) > max_vm:
            new = values[:max_vm]
        else:
            continue  # UIDs (see above), values pydicom could not decode, conforming numbers
        replacement = DataElement(elem.tag, elem.VR, new[0] if len(new) == 1 else new)
        hdr.add(replacement)
        if element_text(replacement.value) != element_text(elem.value):
            changed.append(keyword)
    return tuple(changed)


def _default_repertoire(hdr: Dataset) -> bool:
    """Whether the records are in the default repertoire (no Specific Character Set), which
    holds ASCII only: pydicom would otherwise write other characters as Latin-1 bytes."""
    terms = _values(hdr.get("SpecificCharacterSet"))
    return all(str(term).strip() in _DEFAULT_REPERTOIRE for term in terms)


def _values(value: object) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _texts(values: list[Any]) -> list[str]:
    """Each value as pydicom would write it: a number as it was read (``1.0``), not as the
    number it was read as (``1``)."""
    return [_written(v) for v in values]


def _written(value: Any) -> str:
    original = getattr(value, "original_string", None)  # IS, DS; PersonName's is bytes
    return original if isinstance(original, str) and original else str(value)


def _ascii(text: str) -> str:
    """``text`` in the default repertoire: accents dropped (é -> e), anything else ``?``."""
    return text if text.isascii() else "".join(c if c.isascii() else _fold(c) for c in text)


def _fold(char: str) -> str:
    return unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode() or "?"


def _clean(text: str, ascii_only: bool, control: re.Pattern[str] = _CONTROL) -> str:
    """No control characters, and only ASCII in the default repertoire."""
    text = control.sub(" ", text)
    return _ascii(text) if ascii_only else text


def _text(limit: int) -> Rule:
    """LO, SH: clean and within ``limit`` characters. A multi-valued element reaches a rule
    value by value, so no value keeps a backslash."""

    def rule(text: str, ascii_only: bool) -> str:
        return _clean(text, ascii_only)[:limit].rstrip(" ")

    return rule


def _short_text(text: str, ascii_only: bool) -> str:
    """ST: clean but for its formatting characters, within 1024 characters."""
    return _clean(text, ascii_only, _CONTROL_BUT_FORMAT)[: MAX_LENGTH["ST"]].rstrip(" ")


def _code_string(text: str, ascii_only: bool) -> str:
    """CS: upper case letters, digits, space and underscore; anything else becomes ``_``."""
    return _NOT_CS.sub("_", text.strip(" ").upper())[: MAX_LENGTH["CS"]].rstrip(" ")


def _person_name(text: str, ascii_only: bool) -> str:
    """PN: up to three component groups of up to five components, 64 characters each."""
    groups = ("^".join(g.split("^")[:5]) for g in text.split("=")[:3])
    return "=".join(_clean(g, ascii_only)[: MAX_LENGTH["PN"]] for g in groups).rstrip(" ")


def _date(text: str, ascii_only: bool) -> str:
    """DA: YYYYMMDD; the separators of other notations (2020-01-02, 2020.01.02) dropped."""
    digits = re.sub(r"\D", "", text)
    if len(digits) == 8 and _is_calendar_date(digits):
        return digits
    return UNREADABLE["DA"] if text.strip() else ""


def _is_calendar_date(digits: str) -> bool:
    try:
        datetime.strptime(digits, "%Y%m%d")
    except ValueError:  # 20260231
        return False
    return True


def _time(text: str, ascii_only: bool) -> str:
    """TM: HH[MM[SS[.F{1,6}]]]; colons (10:20:30) dropped, a longer fraction cut."""
    found = _TIME.match(text.strip(" ").replace(":", ""))
    if found and int(found[1]) < 24 and int(found[2] or 0) < 60 and int(found[3] or 0) < 61:
        return found[0]
    return UNREADABLE["TM"] if text.strip() else ""


def _datetime(text: str, ascii_only: bool) -> str:
    """DT: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]; ISO 8601 separators (2026-01-02T10:15,
    +01:00) dropped, anything after the longest valid start cut."""
    text = text.strip(" ")
    offset = _DT_OFFSET.search(text)
    found = _DATETIME.match(re.sub(r"[-:T ]", "", text[: offset.start()] if offset else text))
    if not found:
        return UNREADABLE["DT"] if text else ""
    return found[0] + (offset[0].replace(":", "") if offset else "")


def _integer(text: str, ascii_only: bool) -> str:
    """IS: a whole number of 32 bits (so at most 12 characters); a fraction is cut."""
    if not text.strip():
        return ""
    try:
        number = float(text)
    except ValueError:
        return UNREADABLE["IS"]
    if math.isfinite(number) and int(number) in _IS_RANGE:
        return str(int(number))
    return UNREADABLE["IS"]


def _max_vm(keyword: str) -> int | None:
    """The largest value multiplicity the dictionary allows ("1", "1-3": 1, 3; "2-n": none)."""
    last = dictionary_VM(keyword).split("-")[-1]
    return int(last) if last.isdigit() else None


# tag -> (keyword, largest VM), looked up for each element of a header
_RECORD_TAGS = {int(Tag(kw)): (kw, _max_vm(kw)) for kw in RECORD_KEYWORDS}

_RULES: dict[str, Rule] = {
    "CS": _code_string,
    "DA": _date,
    "DT": _datetime,
    "IS": _integer,
    "LO": _text(MAX_LENGTH["LO"]),
    "PN": _person_name,
    "SH": _text(MAX_LENGTH["SH"]),
    "ST": _short_text,
    "TM": _time,
}


__all__ = [
    "INVENTED_DEFAULTS",
    "MAX_LENGTH",
    "RECORD_KEYWORDS",
    "UNREADABLE",
    "conform_record_keys",
]
