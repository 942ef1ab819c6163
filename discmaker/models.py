"""Frozen results of checking a disc, and the versioned JSON documents made from them.

Verdicts are explicit: :attr:`CheckReport.ok` is a property you must ask for, and no result
object has a ``__bool__``, so ``if report:`` cannot be mistaken for "the disc verified".

Every JSON document discmaker writes (``check --json``, a set of discs, ``restore --json``,
``author --json``) is built here, by the result's ``to_json()`` (for an author result,
:func:`author_result_to_json`): plain types only (str, int, bool, None, lists, dicts), lists
in a deterministic order, and a ``format`` / ``format_version`` pair naming the JSON Schema it
follows (``docs/schemas/<name>.v<version>.json``). A new key is added without a new version;
a key removed, renamed or changed in meaning bumps ``format_version``.

Numbering, one rule everywhere people or programs read it: frames are counted from 1 (the
terminal, the HTML report and the JSON ``regions[].frame``); rows and columns from 0 at the top
left (the JSON box is half open, the text gives first and last). Only :attr:`Region.frame`,
the Python index into a frame array, counts from 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePath
from typing import Any, Protocol

from discmaker.errors import CHECK_NOT_VERIFIABLE, CHECK_OK, CHECK_TAMPERED, CHECK_UNREADABLE

Json = dict[str, Any]

CHECK_REPORT_FORMAT = "discmaker-check-report"
SET_REPORT_FORMAT = "discmaker-check-set-report"
RESTORE_RESULT_FORMAT = "discmaker-restore-result"
AUTHOR_RESULT_FORMAT = "discmaker-author-result"
REPORT_VERSION = 1  # format_version of every document above


class ImageStatus(StrEnum):
    OK = "ok"  # watermark and manifest verified against a trusted signer
    TAMPERED = "tampered"  # something about this image changed since it was signed
    MANIFEST_ONLY = "manifest-only"  # intact per the signed manifest; carries no watermark
    NOT_VERIFIABLE = "not-verifiable"  # no trusted signature covers it


class Verdict(StrEnum):
    """The verdict on one input (or a set of discs), each with its ``check`` exit code."""

    VERIFIED = "verified"  # 0: every image as a trusted sender signed it (the whole set)
    TAMPERED = "tampered"  # 1: changed after signing, or the signature was removed
    INCONSISTENT = "inconsistent"  # 1: nobody signed it, and its parts disagree
    NOT_VERIFIABLE = "not-verifiable"  # 2: unsigned (a disc, or loose files), or untrusted
    INCOMPLETE_SET = "incomplete-set"  # 2: disc k of n, verified, checked without the others
    # 2: loose files (no disc around them), each image's header and pixels as a trusted sender
    # sealed them in its watermark; whether other images of the study are missing is unknown,
    # so a script's "exit 0: import" never takes them for a whole study
    IMAGES_VERIFIED = "images-verified"
    NOT_A_DISC = "not-a-disc"  # 3: nothing to check here, or a folder inside a disc


class InputKind(StrEnum):
    """What the checked path turned out to be."""

    DISC = "disc"  # a DICOMDIR or a discmaker signature at its top
    FILES = "files"  # loose DICOM files: no DICOMDIR, no signature
    NOT_A_DISC = "not-a-disc"  # no DICOM image at all, or a folder below a disc's top folder


# The order of image statuses in summaries (terminal, HTML, the JSON "summary").
STATUS_ORDER = (
    ImageStatus.OK,
    ImageStatus.TAMPERED,
    ImageStatus.MANIFEST_ONLY,
    ImageStatus.NOT_VERIFIABLE,
)

# The `check` exit-code contract, verdict by verdict (errors are in discmaker.errors).
VERDICT_EXIT_CODES: dict[Verdict, int] = {
    Verdict.VERIFIED: CHECK_OK,
    Verdict.IMAGES_VERIFIED: CHECK_NOT_VERIFIABLE,  # each image, never the whole study
    Verdict.TAMPERED: CHECK_TAMPERED,
    Verdict.INCONSISTENT: CHECK_TAMPERED,
    Verdict.NOT_VERIFIABLE: CHECK_NOT_VERIFIABLE,
    Verdict.INCOMPLETE_SET: CHECK_NOT_VERIFIABLE,
    Verdict.NOT_A_DISC: CHECK_UNREADABLE,
}

# Set-level finding kinds (SetReport.findings): a disc of the set not given, a set that does
# not hang together (a disc twice, discs of different sets, a disc and its set table
# disagreeing), a disc that is part of no discmaker set (checked on its own).
SET_MISSING = "missing-disc"
SET_INCONSISTENT = "set"
SET_NONE = "not-in-set"

# Which verdict wins when several discs are checked together (most urgent first).
_SET_PRECEDENCE = (
    Verdict.TAMPERED,
    Verdict.INCONSISTENT,
    Verdict.NOT_A_DISC,
    Verdict.NOT_VERIFIABLE,
    Verdict.INCOMPLETE_SET,
    Verdict.IMAGES_VERIFIED,
    Verdict.VERIFIED,
)


@dataclass(frozen=True, slots=True)
class Region:
    """A tampered pixel region: ``frame``, the 0-based index of the frame in the pixel data,
    and a half-open row/column box (0-based). People, and the JSON, count frames from 1:
    :attr:`frame_number`."""

    frame: int
    row0: int
    col0: int
    row1: int
    col1: int

    @property
    def frame_number(self) -> int:
        """The frame as the terminal, the HTML report and the JSON number it: from 1."""
        return self.frame + 1

    def to_json(self) -> Json:
        return {
            "frame": self.frame_number,
            "row0": self.row0,
            "col0": self.col0,
            "row1": self.row1,
            "col1": self.col1,
        }

    def _order(self) -> tuple[int, int, int, int, int]:
        return (self.frame, self.row0, self.col0, self.row1, self.col1)


@dataclass(frozen=True, slots=True)
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
    notes: tuple[str, ...] = ()  # parser warnings about the file (may quote header values)
    groups: tuple[str, ...] = ()  # sealed header groups the watermark says changed (v4)

    def to_json(self) -> Json:
        return {
            "path": self.path,
            "status": self.status.value,
            "reasons": list(self.reasons),
            "attributes": sorted(self.attributes),
            "groups": list(self.groups),
            "regions": [r.to_json() for r in sorted(self.regions, key=Region._order)],
            "sop_instance_uid": self.sop_instance_uid,
            "series": self.series_label,
            "series_uid": self.series_uid,
            "restorable": self.restorable,
            "altered": self.altered,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Finding:
    """A disc-level finding (not tied to one image): missing, extra or altered files, etc."""

    step: int
    kind: str  # "missing", "extra", "altered", "signature", "structure", "naming", ...
    path: str
    message: str

    def to_json(self) -> Json:
        return {"step": self.step, "kind": self.kind, "path": self.path, "message": self.message}

    def _order(self) -> tuple[int, str, str, str]:
        return (self.step, self.path, self.kind, self.message)


@dataclass(frozen=True)
class Signer:
    """The certificate that signed the manifest. ``trusted``: its public key is pinned (a
    certificate renewed over the same key is the same signer)."""

    subject: str
    fingerprint: str  # SHA-256 of the certificate
    trusted: bool
    key_fingerprint: str = ""  # SHA-256 of the public key: the same across renewals
    not_before: str = ""  # the certificate's validity, ISO 8601 UTC ("2026-01-02T09:00:00Z")
    not_after: str = ""
    valid_at_signing: bool | None = None  # at the manifest's "created"; None: time unknown
    valid_now: bool | None = None  # at the time of the check

    def to_json(self) -> Json:
        return {
            "subject": self.subject,
            "fingerprint": self.fingerprint,
            "trusted": self.trusted,
            "key_fingerprint": self.key_fingerprint,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "valid_at_signing": self.valid_at_signing,
            "valid_now": self.valid_now,
        }


@dataclass(frozen=True)
class SeriesSummary:
    """One series of a study in the patient block: raw DICOM values."""

    series_uid: str
    number: str  # Series Number as text ("2"); may be empty
    modality: str  # "CT"
    images: int

    def to_json(self) -> Json:
        return {
            "series_instance_uid": self.series_uid,
            "number": self.number,
            "modality": self.modality,
            "images": self.images,
        }


@dataclass(frozen=True)
class StudySummary:
    """One study in the patient block. Values are the DICOM ones (``date`` is a DA such as
    ``20260102``); :mod:`discmaker.ui.wording` words them for people."""

    study_uid: str
    date: str
    time: str = ""
    description: str = ""  # Study Description: from image headers only (unsigned inputs)
    accession: str = ""
    study_id: str = ""
    series: tuple[SeriesSummary, ...] = ()

    @property
    def images(self) -> int:
        return sum(s.images for s in self.series)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({s.modality for s in self.series if s.modality}))

    def to_json(self) -> Json:
        return {
            "study_instance_uid": self.study_uid,
            "date": self.date,
            "time": self.time,
            "description": self.description,
            "accession_number": self.accession,
            "study_id": self.study_id,
            "modalities": list(self.modalities),
            "images": self.images,
            "series": [s.to_json() for s in self.series],
        }


@dataclass(frozen=True)
class PatientSummary:
    """Whose images these are: one patient and their studies, as the input describes them
    (:attr:`CheckReport.patients_source` says from where)."""

    name: str  # Patient's Name as DICOM writes it ("DOE^JANE")
    patient_id: str
    birth_date: str  # DA ("19700101") or empty
    sex: str  # M, F, O or empty
    studies: tuple[StudySummary, ...] = ()

    @property
    def images(self) -> int:
        return sum(s.images for s in self.studies)

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "id": self.patient_id,
            "birth_date": self.birth_date,
            "sex": self.sex,
            "studies": [s.to_json() for s in self.studies],
        }


class PatientsSource(StrEnum):
    """Where the patient block comes from."""

    NONE = ""  # nothing to read it from (not a disc)
    MANIFEST = "manifest"  # the disc's signed manifest (a discmaker disc)
    DICOMDIR = "dicomdir"  # the DICOMDIR's records (a disc nobody signed)
    HEADERS = "headers"  # the image headers (loose files)


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
    kind: InputKind = InputKind.DISC
    top_folder: str = ""  # not a disc: the disc's top folder found above or inside the path
    patients: tuple[PatientSummary, ...] = ()
    patients_source: PatientsSource = PatientsSource.NONE
    set_present: tuple[int, ...] = ()  # discs of this set checked together with it (check_set)
    watermarked: bool = False  # loose files: some image carries a discmaker watermark
    unchecked_files: int = 0  # loose files: files beside the images that are not DICOM files

    @property
    def tampered(self) -> bool:
        return bool(self.findings) or any(i.status is ImageStatus.TAMPERED for i in self.images)

    @property
    def unsigned(self) -> bool:
        """Nothing here claims a signature: no discmaker manifest, and no watermark saying
        one was removed. What is said about such an input never mentions a signer."""
        return (
            not self.signed
            and not self.watermarked
            and not any(f.kind == "signature" for f in self.findings)
        )

    @property
    def missing_discs(self) -> tuple[tuple[int, str], ...]:
        """(number, File-set ID) of every disc of this disc's set that was not checked with
        it, from the signed set table; empty for a single disc or a complete set."""
        if self.disc_count <= 1:
            return ()
        present = {self.disc_number, *self.set_present}
        labels = {number: label for number, label, _ in self.set_members}
        return tuple(
            (n, labels.get(n, "")) for n in range(1, self.disc_count + 1) if n not in present
        )

    @property
    def verdict(self) -> Verdict:
        if self.kind is InputKind.NOT_A_DISC:
            return Verdict.NOT_A_DISC
        if self.tampered:
            return Verdict.INCONSISTENT if self.unsigned else Verdict.TAMPERED
        if self.kind is InputKind.FILES:
            sealer = self.signer  # the one trusted sender who sealed them, if one did
            if (
                self.watermarked
                and self.images
                and not self.unchecked_files
                and sealer is not None
                and sealer.valid_now is not False  # a watermark carries no time of sealing
                and all(i.status is ImageStatus.OK for i in self.images)
            ):
                return Verdict.IMAGES_VERIFIED
            return Verdict.NOT_VERIFIABLE
        trusted = self.signer is not None and self.signer.trusted and self.signature_valid
        if not (self.signed and trusted) or not self.images:
            # An empty disc, or one no trusted sender vouches for, never verifies.
            return Verdict.NOT_VERIFIABLE
        if any(i.status is ImageStatus.NOT_VERIFIABLE for i in self.images):
            return Verdict.NOT_VERIFIABLE
        if self.missing_discs:
            return Verdict.INCOMPLETE_SET
        return Verdict.VERIFIED

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VERIFIED

    @property
    def exit_code(self) -> int:
        return VERDICT_EXIT_CODES[self.verdict]

    def to_json(self) -> Json:
        """The ``check --json`` document (schema ``docs/schemas/check-report.v1.json``)."""
        counts = Counter(i.status for i in self.images)
        images = sorted(self.images, key=lambda i: (i.path, i.sop_instance_uid))
        return {
            "format": CHECK_REPORT_FORMAT,
            "format_version": REPORT_VERSION,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "source": self.source,
            "input": self.kind.value,
            "top_folder": self.top_folder,
            "signed": self.signed,
            "signature_valid": self.signature_valid,
            "signer": None if self.signer is None else self.signer.to_json(),
            "disc": {
                "fileset_id": self.fileset_id,
                "number": self.disc_number,
                "count": self.disc_count,
                "missing": [{"number": n, "fileset_id": f} for n, f in self.missing_discs],
            },
            "patients_source": self.patients_source.value,
            "patients": [p.to_json() for p in self.patients],
            "summary": {status.value: counts[status] for status in STATUS_ORDER},
            "images": [i.to_json() for i in images],
            # Every other file of the disc (DICOMDIR, README.TXT, ...): ok, altered, missing, extra.
            "files": [{"path": path, "status": status} for path, status in self.files],
            "findings": [f.to_json() for f in sorted(self.findings, key=Finding._order)],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class SetReport:
    """Several discs checked together: each disc's report, and whether the set is whole."""

    discs: tuple[CheckReport, ...]
    findings: tuple[Finding, ...]  # set-level: missing disc, discs of different sets, ...

    @property
    def complete(self) -> bool:
        return not self.findings

    @property
    def verdict(self) -> Verdict:
        """The most urgent of the discs' verdicts (each judged knowing which discs of its set
        were given with it), and the set's own: inconsistent when the discs do not form one
        set, an incomplete set when one is missing."""
        found = {d.verdict for d in self.discs}
        if any(f.kind == SET_INCONSISTENT for f in self.findings):
            found.add(Verdict.INCONSISTENT)
        if any(f.kind == SET_MISSING for f in self.findings):
            found.add(Verdict.INCOMPLETE_SET)
        if not self.discs:
            found.add(Verdict.NOT_A_DISC)
        return next(v for v in _SET_PRECEDENCE if v in found or v is Verdict.VERIFIED)

    @property
    def exit_code(self) -> int:
        return VERDICT_EXIT_CODES[self.verdict]

    def to_json(self) -> Json:
        """The document of several discs checked together (``set-report.v1.json``)."""
        return {
            "format": SET_REPORT_FORMAT,
            "format_version": REPORT_VERSION,
            "complete": self.complete,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "set_findings": [f.to_json() for f in self.findings],
            "discs": [d.to_json() for d in self.discs],
        }


@dataclass(frozen=True)
class RestoreResult:
    """What ``discmaker restore`` wrote."""

    report: CheckReport
    out: str
    restored: tuple[str, ...]  # output paths of verified originals
    tampered_written: tuple[str, ...]  # output paths of altered images (with --tampered-to)
    refused: tuple[str, ...]  # disc paths not written for import (held back ones included)
    held_back: tuple[str, ...] = ()  # verified, but of a series with an unverified image

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    def to_json(self) -> Json:
        """The ``restore --json`` document (``restore-result.v1.json``), with the check that
        gated the restore under ``report``."""
        return {
            "format": RESTORE_RESULT_FORMAT,
            "format_version": REPORT_VERSION,
            "out": self.out,
            "verdict": self.report.verdict.value,
            "exit_code": self.exit_code,
            "restored": list(self.restored),
            "tampered_written": list(self.tampered_written),
            "refused": list(self.refused),
            "held_back": list(self.held_back),
            "report": self.report.to_json(),
        }


# -- the author result ---------------------------------------------------------------------
#
# AuthorResult lives in discmaker.author.create, which this shared module must not import (the
# layer contract); its document is built from any object with the same fields.


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Omission(Protocol):
    @property
    def file(self) -> str: ...
    @property
    def reason(self) -> str: ...


class AuthorResultFields(Protocol):
    """The fields of :class:`discmaker.author.create.AuthorResult` the JSON document uses."""

    @property
    def out(self) -> PurePath: ...
    @property
    def outputs(self) -> tuple[PurePath, ...]: ...
    @property
    def format(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def medium(self) -> _Named: ...
    @property
    def images(self) -> int: ...
    @property
    def watermarked(self) -> int: ...
    @property
    def manifest_only(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def non_dicom_skipped(self) -> int: ...
    @property
    def duplicates_skipped(self) -> int: ...
    @property
    def dicomdirs_skipped(self) -> int: ...
    @property
    def notes(self) -> tuple[str, ...]: ...
    @property
    def omitted(self) -> Sequence[_Omission]: ...
    @property
    def label_pdf(self) -> PurePath | None: ...


def author_result_to_json(result: AuthorResultFields) -> Json:
    """The ``author --json`` document (``author-result.v1.json``). No patient data: the
    patient/study summary the terminal shows is left out on purpose."""
    return {
        "format": AUTHOR_RESULT_FORMAT,
        "format_version": REPORT_VERSION,
        "out": str(result.out),
        "outputs": [str(p) for p in result.outputs],
        "disc_format": result.format,
        "label": result.label,
        "medium": result.medium.name.lower(),
        "images": result.images,
        "watermarked": result.watermarked,
        "manifest_only": [{"file": f, "reason": r} for f, r in result.manifest_only],
        "bytes": result.bytes_written,
        "signer_fingerprint": result.fingerprint,
        "skipped": {
            "non_dicom": result.non_dicom_skipped,
            "identical_duplicates": result.duplicates_skipped,
            "dicomdir": result.dicomdirs_skipped,
        },
        "notes": list(result.notes),
        "omitted": [{"file": o.file, "reason": o.reason} for o in result.omitted],
        "label_pdf": None if result.label_pdf is None else str(result.label_pdf),
    }


__all__ = [
    "AUTHOR_RESULT_FORMAT",
    "CHECK_REPORT_FORMAT",
    "REPORT_VERSION",
    "RESTORE_RESULT_FORMAT",
    "SET_INCONSISTENT",
    "SET_MISSING",
    "SET_NONE",
    "SET_REPORT_FORMAT",
    "STATUS_ORDER",
    "VERDICT_EXIT_CODES",
    "AuthorResultFields",
    "CheckReport",
    "Finding",
    "ImageStatus",
    "ImageVerdict",
    "InputKind",
    "PatientSummary",
    "PatientsSource",
    "Region",
    "RestoreResult",
    "SeriesSummary",
    "SetReport",
    "Signer",
    "StudySummary",
    "Verdict",
    "author_result_to_json",
]
