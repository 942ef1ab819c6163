"""Import reconciliation: the receiving hospital's Patient ID, name and Accession Number.

IHE Import Reconciliation Workflow: before images from outside enter the local PACS, their
patient and order attributes are coerced to the local values. The received values are kept in
the sent copy, in Original Attributes Sequence (0400,0561) (PS3.3 C.12.1.1.9): one item with
the date and time, the modifying system, the reason ``COERCE`` and a Modified Attributes
Sequence holding the received values (an attribute that was absent is listed empty).

Only the copies sent to the PACS are changed; the disc and its verification are not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from discmaker import APP_NAME, __version__
from discmaker.errors import UsageError

UTF8 = "ISO_IR 192"


@dataclass(frozen=True)
class Reconciliation:
    """Local values for the sent copies; ``None`` leaves an attribute as received."""

    patient_id: str | None = None
    patient_name: str | None = None
    accession_number: str | None = None

    def __post_init__(self) -> None:
        _check("--patient-id", self.patient_id, 64)
        _check("--accession", self.accession_number, 16)
        if self.patient_name is not None:
            _check("--patient-name", self.patient_name, 64 * 3 + 2)
            groups = self.patient_name.split("=")
            if len(groups) > 3 or any(len(g) > 64 or g.count("^") > 4 for g in groups):
                raise UsageError(
                    f"--patient-name {self.patient_name!r} is not a DICOM person name. Write "
                    "FAMILY^GIVEN (e.g. DOE^JANE), at most 64 characters."
                )

    @property
    def values(self) -> dict[str, str]:
        """Keyword -> local value, for the attributes to coerce."""
        pairs = {
            "PatientID": self.patient_id,
            "PatientName": self.patient_name,
            "AccessionNumber": self.accession_number,
        }
        return {k: v for k, v in pairs.items() if v is not None}

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(self.values)


def _check(flag: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if not value.strip() or len(value) > limit or "\\" in value:
        raise UsageError(
            f"{flag} must be 1-{limit} characters without a backslash. Copy the value from "
            "the request form or your hospital's patient system."
        )
    if any(ord(c) < 0x20 for c in value):
        raise UsageError(f"{flag} contains a control character (a tab or line break).")


def coerce(ds: Dataset, reconciliation: Reconciliation, *, when: datetime | None = None) -> bool:
    """Coerce ``ds`` to the local values, keeping the received ones; False if nothing changed."""
    wanted = {k: v for k, v in reconciliation.values.items() if str(ds.get(k, "")) != v}
    if not wanted:
        return False
    modified = Dataset()
    needs_utf8 = any(not v.isascii() for v in wanted.values())
    charset = ds.get("SpecificCharacterSet", "")
    if needs_utf8 and charset != UTF8:
        # Decode every text value with the received character set, then write all as UTF-8.
        ds.decode()
        modified.SpecificCharacterSet = charset
    for keyword in wanted:
        if keyword in ds:
            modified[keyword] = copy.deepcopy(ds[keyword])
        else:
            setattr(modified, keyword, "")
    item = Dataset()
    item.SourceOfPreviousValues = ""  # Type 2: the sender is named by the disc, not here
    stamp = (when or datetime.now(UTC)).astimezone(UTC)
    item.AttributeModificationDateTime = stamp.strftime("%Y%m%d%H%M%S.%f") + "+0000"
    item.ModifyingSystem = f"{APP_NAME} {__version__}"[:64]
    item.ReasonForTheAttributeModification = "COERCE"
    item.ModifiedAttributesSequence = Sequence([modified])
    if needs_utf8 and charset != UTF8:
        ds.SpecificCharacterSet = UTF8
    for keyword, value in wanted.items():
        setattr(ds, keyword, value)
    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = Sequence()
    ds.OriginalAttributesSequence.append(item)
    return True


__all__ = ["Reconciliation", "coerce"]
