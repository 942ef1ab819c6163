"""Frozen results of checking a disc.

Verdicts are explicit: :attr:`CheckReport.ok` is a property you must ask for, and no result
object has a ``__bool__``, so ``if report:`` cannot be mistaken for "the disc verified".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from discmaker.errors import CHECK_NOT_VERIFIABLE, CHECK_OK, CHECK_TAMPERED

REPORT_FORMAT = "discmaker-check-report"
REPORT_VERSION = 1


class ImageStatus(StrEnum):
    OK = "ok"  # watermark and manifest verified against a trusted signer
    TAMPERED = "tampered"  # something about this image changed since it was signed
    MANIFEST_ONLY = "manifest-only"  # intact per the signed manifest; carries no watermark
    NOT_VERIFIABLE = "not-verifiable"  # no trusted signature covers it


class Verdict(StrEnum):
    VERIFIED = "verified"
    TAMPERED = "tampered"
    NOT_VERIFIABLE = "not-verifiable"


@dataclass(frozen=True)
class Region:
    """A tampered pixel region: frame (0-based) and a half-open row/column box."""

    frame: int
    row0: int
    col0: int
    row1: int
    col1: int


@dataclass(frozen=True)
class ImageVerdict:
    path: str  # disc path (File ID as POSIX path)
    status: ImageStatus
    reasons: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()  # header attributes (keywords) found changed
    regions: tuple[Region, ...] = ()
    sop_instance_uid: str = ""
    series_uid: str = ""
    series_label: str = ""  # "CT 2" for grouping in summaries (no patient data)
    restorable: bool = False  # the original pixels were recovered and verified
    altered: bool = False  # the file's bytes differ from the signed manifest (step 2)


@dataclass(frozen=True)
class Finding:
    """A disc-level finding (not tied to one image): missing, extra or altered files, etc."""

    step: int
    kind: str  # "missing", "extra", "altered", "signature", "structure", "naming", ...
    path: str
    message: str


@dataclass(frozen=True)
class Signer:
    subject: str
    fingerprint: str
    trusted: bool


@dataclass(frozen=True)
class CheckReport:
    source: str
    signed: bool  # the disc carries a discmaker manifest and signature
    signature_valid: bool
    signer: Signer | None
    images: tuple[ImageVerdict, ...]
    findings: tuple[Finding, ...]
    fileset_id: str = ""
    disc_number: int = 1
    disc_count: int = 1
    notes: tuple[str, ...] = field(default=())
    set_id: str = ""
    set_members: tuple[tuple[int, str, int], ...] = ()  # (number, File-set ID, images) per disc
    files: tuple[tuple[str, str], ...] = ()  # (path, ok|altered|missing|extra), non-image files

    @property
    def tampered(self) -> bool:
        return bool(self.findings) or any(i.status is ImageStatus.TAMPERED for i in self.images)

    @property
    def verdict(self) -> Verdict:
        if self.tampered:
            return Verdict.TAMPERED
        trusted = self.signer is not None and self.signer.trusted and self.signature_valid
        if not (self.signed and trusted) or not self.images:
            # An empty disc, or one no trusted sender vouches for, never verifies.
            return Verdict.NOT_VERIFIABLE
        if any(i.status is ImageStatus.NOT_VERIFIABLE for i in self.images):
            return Verdict.NOT_VERIFIABLE
        return Verdict.VERIFIED

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VERIFIED

    @property
    def exit_code(self) -> int:
        return {
            Verdict.VERIFIED: CHECK_OK,
            Verdict.TAMPERED: CHECK_TAMPERED,
            Verdict.NOT_VERIFIABLE: CHECK_NOT_VERIFIABLE,
        }[self.verdict]


@dataclass(frozen=True)
class SetReport:
    """Several discs checked together: each disc's report, and whether the set is whole."""

    discs: tuple[CheckReport, ...]
    findings: tuple[Finding, ...]  # set-level: missing disc, discs of different sets, ...

    @property
    def complete(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        codes = [d.exit_code for d in self.discs]
        if self.findings or CHECK_TAMPERED in codes:
            return CHECK_TAMPERED
        if CHECK_NOT_VERIFIABLE in codes:
            return CHECK_NOT_VERIFIABLE
        return CHECK_OK


@dataclass(frozen=True)
class RestoreResult:
    """What ``discmaker restore`` wrote."""

    report: CheckReport
    out: str
    restored: tuple[str, ...]  # output paths of verified originals
    tampered_written: tuple[str, ...]  # output paths under TAMPERED/ (with --include-tampered)
    refused: tuple[str, ...]  # disc paths not written (tampered or not verifiable)

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    def as_json(self) -> dict[str, object]:
        return {
            "format": "discmaker-restore-result",
            "format_version": 1,
            "out": self.out,
            "verdict": self.report.verdict.value,
            "restored": list(self.restored),
            "tampered_written": list(self.tampered_written),
            "refused": list(self.refused),
        }


__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "CheckReport",
    "Finding",
    "ImageStatus",
    "ImageVerdict",
    "Region",
    "RestoreResult",
    "SetReport",
    "Signer",
    "Verdict",
]
