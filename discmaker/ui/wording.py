"""What a check report says in words: the wording shared by the terminal and the HTML report.

The check is explained with the same numbered steps as ``discmaker check`` and the README:
(1) signature, (2) files agree with the signed list, (3) headers, (4) watermarks, (5) verdict.
:func:`check_steps` decides each step's state and sentence, :func:`verdict_text` the verdict,
its explanation and advice, :func:`patient_blocks` whose disc it is; :mod:`discmaker.ui.render`
and :mod:`discmaker.ui.report_html` only lay them out.

What is said about an input nobody signed (``report.unsigned``: a vendor's disc, loose files,
a path that is not a disc) never speaks of a signature, a signer or a sender: nobody signed
it. Only a removed signature (images discmaker wrote, on a disc without DISCSIG/) is
"tampered", in the words of a signed disc.

Every string that came off a received disc (paths, certificate subjects, reasons) is hostile
input: :func:`plain` replaces terminal control and bidirectional-override characters before
it is shown anywhere.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from discmaker import APP_NAME
from discmaker.models import (
    STATUS_ORDER,
    CheckReport,
    Finding,
    ImageStatus,
    ImageVerdict,
    InputKind,
    PatientsSource,
    Region,
    Signer,
    Verdict,
)
from discmaker.people import person_date, person_name, plain

StepState = Literal["pass", "fail", "warn", "skip"]

STATE_LABEL: dict[StepState, str] = {
    "pass": "OK",
    "fail": "FAILED",
    "warn": "CAUTION",
    "skip": "NOT CHECKED",
}

_EXIT_MEANING = {
    Verdict.VERIFIED: "every image verified",
    Verdict.IMAGES_VERIFIED: "every file verified by its watermark",
    Verdict.TAMPERED: "tampering found",
    Verdict.INCONSISTENT: "inconsistency found",
    Verdict.NOT_VERIFIABLE: "not verifiable",
    Verdict.INCOMPLETE_SET: "incomplete set",
    Verdict.NOT_A_DISC: "not a disc",
}
_VERDICT_STATE: dict[Verdict, StepState] = {
    Verdict.VERIFIED: "pass",
    Verdict.IMAGES_VERIFIED: "pass",
    Verdict.TAMPERED: "fail",
    Verdict.INCONSISTENT: "fail",
    Verdict.NOT_VERIFIABLE: "warn",
    Verdict.INCOMPLETE_SET: "warn",
    Verdict.NOT_A_DISC: "warn",
}
_HEADLINE = {
    Verdict.VERIFIED: "VERIFIED",
    Verdict.IMAGES_VERIFIED: "IMAGES VERIFIED",
    Verdict.TAMPERED: "TAMPERED",
    Verdict.INCONSISTENT: "INCONSISTENT",
    Verdict.NOT_VERIFIABLE: "NOT VERIFIABLE",
    Verdict.INCOMPLETE_SET: "INCOMPLETE SET",
    Verdict.NOT_A_DISC: "NOT A DISC",
}

_SEX = {"F": "female", "M": "male", "O": "other"}


def human_size(n: int) -> str:
    """Bytes as people say them: 14.3 MB."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def region_text(region: Region) -> str:
    """``frame F, rows r0-r1, columns c0-c1`` as a viewer counts: frames from 1 (as the JSON
    does), rows and columns from 0, last row and column included (the JSON box is half
    open)."""
    return (
        f"frame {region.frame_number}, rows {region.row0}-{region.row1 - 1}, "
        f"columns {region.col0}-{region.col1 - 1}"
    )


def person_sex(value: str) -> str:
    """Patient's Sex (M, F, O) in words; anything else as it is."""
    return _SEX.get(value.strip().upper(), plain(value).strip())


def _natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort "CT 2" before "CT 10"."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.casefold())
        for part in re.split(r"(\d+)", text)
        if part
    )


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    state: StepState
    detail: str

    @property
    def label(self) -> str:
        return STATE_LABEL[self.state]


@dataclass(frozen=True)
class SeriesRow:
    label: str
    total: int
    ok: int
    tampered: int
    manifest_only: int
    not_verifiable: int

    @property
    def state(self) -> StepState:
        if self.tampered:
            return "fail"
        if self.not_verifiable:
            return "warn"
        return "pass"


@dataclass(frozen=True)
class StudyLine:
    """One study of the patient block, worded: date for people, contents by modality."""

    date: str  # "2 January 2026", or "" when the disc gives none
    description: str
    accession: str
    contents: str  # "CT 6 images, MR 4 images"
    images: int


@dataclass(frozen=True)
class PatientBlock:
    """Whose images these are, worded for people (raw values are in the JSON)."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    studies: tuple[StudyLine, ...]


@dataclass(frozen=True)
class VerdictText:
    verdict: Verdict
    exit_code: int
    headline: str  # "VERIFIED"
    explanation: tuple[str, ...]
    advice: str

    @property
    def exit_meaning(self) -> str:
        return f"exit code {self.exit_code}: {_EXIT_MEANING[self.verdict]}"


def trusted_signature(report: CheckReport) -> bool:
    return (
        report.signed
        and report.signature_valid
        and report.signer is not None
        and report.signer.trusted
    )


def _findings(report: CheckReport, step: int) -> list[Finding]:
    return [f for f in report.findings if f.step == step]


def tampered_images(report: CheckReport) -> list[ImageVerdict]:
    return sorted(
        (i for i in report.images if i.status is ImageStatus.TAMPERED),
        key=lambda i: (_natural_key(i.series_label), i.path),
    )


def _is_header_change(image: ImageVerdict) -> bool:
    return bool(image.attributes)


def _is_pixel_change(image: ImageVerdict) -> bool:
    # A tampered image with no named attribute and no region failed the image-level checks
    # (its watermark or hash), so it counts under step 4.
    return bool(image.regions) or not image.attributes


def _loose_steps(report: CheckReport) -> tuple[Step, ...]:
    """Loose files with discmaker watermarks: each image is its own proof (no disc, no list)."""
    tampered = tampered_images(report)
    counts = Counter(i.status for i in report.images)
    unverified = counts[ImageStatus.NOT_VERIFIABLE]
    who = f"{plain(report.signer.subject)}, a trusted sender" if report.signer else ""
    if who and not unverified:
        s1 = Step(
            1,
            "Signature",
            "pass",
            f"Loose files, no disc signature: each watermark is sealed by {who}.",
        )
    else:
        s1 = Step(
            1,
            "Signature",
            "warn",
            "Loose files, no disc signature: each image is judged by its watermark alone.",
        )
    s2 = Step(
        2,
        "Files agree with the signed list",
        "skip",
        "Loose files have no signed list: whether other images of the study are missing "
        "cannot be told.",
    )
    title3 = "Headers (patient and study data)"
    header_images = [i for i in tampered if _is_header_change(i)]
    if header_images or _findings(report, 3):
        groups = sorted({g for i in header_images for g in i.groups})
        detail = f"{plural(len(header_images), 'image')} whose header differs from its watermark"
        s3 = Step(3, title3, "fail", detail + (": " + ", ".join(groups) if groups else "") + ".")
    elif unverified:
        s3 = Step(3, title3, "warn", f"{plural(unverified, 'image')} could not be verified.")
    else:
        s3 = Step(3, title3, "pass", "Every header is as its watermark seals it.")
    title4 = "Watermarks (image pixels)"
    pixel_images = [i for i in tampered if _is_pixel_change(i)]
    if pixel_images or _findings(report, 4):
        n_regions = sum(len(i.regions) for i in pixel_images)
        detail = f"{plural(len(pixel_images), 'image')} with changed pixels or watermark"
        if n_regions:
            detail += f" ({plural(n_regions, 'changed area')} located)"
        s4 = Step(4, title4, "fail", detail + ".")
    elif unverified:
        s4 = Step(4, title4, "warn", f"{plural(unverified, 'image')} could not be verified.")
    else:
        s4 = Step(4, title4, "pass", "Every watermark is intact: the pixels are as sealed.")
    return (s1, s2, s3, s4, _verdict_step(report))


def check_steps(report: CheckReport) -> tuple[Step, ...]:
    """The five numbered steps; red only where a finding or a tampered image says so."""
    if report.kind is InputKind.NOT_A_DISC:
        return _not_a_disc_steps(report)
    if report.unsigned:
        return _unsigned_steps(report)
    if report.kind is InputKind.FILES:
        return _loose_steps(report)
    tampered = tampered_images(report)
    covered = trusted_signature(report)
    signer = report.signer

    # (1) signature
    sig_findings = _findings(report, 1)
    if sig_findings:
        s1 = Step(1, "Signature", "fail", plain(sig_findings[0].message))
    elif not report.signed:
        s1 = Step(
            1,
            "Signature",
            "warn",
            "This disc carries no discmaker signature, so nobody vouches for its contents.",
        )
    elif signer is None:
        s1 = Step(1, "Signature", "warn", "The sender's certificate is missing from the disc.")
    elif not report.signature_valid:
        s1 = Step(1, "Signature", "warn", "The sender's signature could not be confirmed.")
    elif not signer.trusted:
        s1 = Step(
            1,
            "Signature",
            "warn",
            f"Signed by {plain(signer.subject)}, a sender you have not trusted yet.",
        )
    else:
        s1 = Step(1, "Signature", "pass", f"Signed by {plain(signer.subject)}, a trusted sender.")

    # (2) files agree with the signed list
    title2 = "Files agree with the signed list"
    file_findings = _findings(report, 2)
    altered_images = [i for i in report.images if i.altered]
    if file_findings or altered_images:
        kinds = Counter(
            "difference in the disc image" if f.kind == "medium" else f.kind for f in file_findings
        )
        if altered_images:
            kinds["image file changed or missing"] += len(altered_images)
        what = ", ".join(f"{n} {plain(kind)}" for kind, n in sorted(kinds.items()))
        medium_only = all(f.kind == "medium" for f in file_findings) and not altered_images
        s2 = Step(
            2,
            title2,
            "fail",
            f"{plural(sum(kinds.values()), 'problem')} ({what}): "
            + (
                "the disc image shows other content than what was signed, to some readers."
                if medium_only
                else "files were added, removed or changed after signing."
            ),
        )
    elif not report.signed:
        s2 = Step(2, title2, "skip", "There is no signed list of files to compare with.")
    else:
        s2 = Step(
            2,
            title2,
            "pass" if covered else "warn",
            "Every file is in the signed list with the same size and contents."
            + ("" if covered else " The list itself is not vouched for by a trusted signature."),
        )

    # (3) headers: patient and study data
    title3 = "Headers (patient and study data)"
    header_images = [i for i in tampered if _is_header_change(i)]
    header_findings = _findings(report, 3)
    if header_images or header_findings:
        keywords = sorted({a for i in header_images for a in i.attributes})
        detail = f"{plural(len(header_images), 'image')} with changed patient or study data"
        if keywords:
            detail += ": " + ", ".join(plain(k) for k in keywords)
        if header_findings:
            detail += f"; {plural(len(header_findings), 'other problem')}"
        s3 = Step(3, title3, "fail", detail + ".")
    elif not covered or not report.images:
        s3 = Step(3, title3, "skip", "Not checked: no trusted signature to compare with.")
    else:
        s3 = Step(
            3,
            title3,
            "pass",
            "Patient and study data match what the sender signed, image by image.",
        )

    # (4) watermarks: the pixels
    title4 = "Watermarks (image pixels)"
    pixel_images = [i for i in tampered if _is_pixel_change(i)]
    pixel_findings = _findings(report, 4)
    counts = Counter(i.status for i in report.images)
    manifest_only = counts[ImageStatus.MANIFEST_ONLY]
    if pixel_images or pixel_findings:
        n_regions = sum(len(i.regions) for i in pixel_images)
        detail = f"{plural(len(pixel_images), 'image')} with changed pixels or watermark"
        if n_regions:
            detail += f" ({plural(n_regions, 'changed area')} located)"
        if pixel_findings:
            detail += f"; {plural(len(pixel_findings), 'other problem')}"
        s4 = Step(4, title4, "fail", detail + ".")
    elif not covered or not report.images:
        s4 = Step(4, title4, "skip", "Not checked: no trusted signature to compare with.")
    elif counts[ImageStatus.NOT_VERIFIABLE]:
        s4 = Step(
            4,
            title4,
            "warn",
            f"{plural(counts[ImageStatus.NOT_VERIFIABLE], 'image')} could not be verified.",
        )
    else:
        marked = len(report.images) - manifest_only
        detail = "Every watermark is intact: the pixels are as the sender signed them."
        if manifest_only and not marked:
            detail = (
                f"None of the {plural(manifest_only, 'image')} carries a watermark; all were "
                "checked against the signed list of files only."
            )
        elif manifest_only:
            detail = (
                f"{marked} of {plural(len(report.images), 'image')} carry a watermark, all "
                f"intact; {manifest_only} {'is' if manifest_only == 1 else 'are'} protected by "
                "the signed list of files only."
            )
        s4 = Step(4, title4, "pass", detail)

    return (s1, s2, s3, s4, _verdict_step(report))


def _verdict_step(report: CheckReport) -> Step:
    v = verdict_text(report)
    return Step(5, "Verdict", _VERDICT_STATE[v.verdict], f"{v.headline} ({v.exit_meaning})")


def _not_a_disc_steps(report: CheckReport) -> tuple[Step, ...]:
    why = (
        "Not checked: this is not the disc's top folder."
        if report.top_folder
        else "Not checked: there is no disc here."
    )
    titles = ("Signature", "Files", "Headers (patient and study data)", "Watermarks (image pixels)")
    steps = [Step(n, title, "skip", why) for n, title in enumerate(titles, 1)]
    return (*steps, _verdict_step(report))


def _in_what(report: CheckReport) -> str:
    return "in these files" if report.kind is InputKind.FILES else "on this disc"


def _unsigned_steps(report: CheckReport) -> tuple[Step, ...]:
    """The steps for an input nobody signed: what its own parts say about each other."""
    files = report.kind is InputKind.FILES
    s1 = Step(
        1,
        "Signature",
        "warn",
        f"None: nothing {_in_what(report)} shows who made {'them' if files else 'it'} or whether "
        f"{'they were' if files else 'it was'} changed.",
    )

    # (2) the files against the DICOMDIR
    title2 = "Files (no DICOMDIR)" if files else "Files agree with the DICOMDIR"
    file_findings = _findings(report, 2)
    unreadable = [i for i in report.images if i.altered]
    if file_findings or unreadable:
        kinds = Counter(
            "difference between views of the disc" if f.kind == "medium" else f.kind
            for f in file_findings
        )
        if unreadable:
            kinds["file that cannot be read"] += len(unreadable)
        listed = ", ".join(f"{n} {plain(kind)}" for kind, n in sorted(kinds.items()))
        medium_only = all(f.kind == "medium" for f in file_findings) and not unreadable
        s2 = Step(
            2,
            title2,
            "fail",
            f"{plural(sum(kinds.values()), 'problem')} ({listed}): "
            + (
                "some readers would see other contents on this disc than others."
                if medium_only
                else "some files cannot be read as they are."
                if files
                else "the DICOMDIR and the files on the disc disagree."
            ),
        )
    elif files:
        s2 = Step(2, title2, "skip", "There is no DICOMDIR (the index of a disc) to compare with.")
    else:
        s2 = Step(2, title2, "pass", "The DICOMDIR and the files on the disc agree.")

    # (3) patient and study data: each image against its record, the disc as a whole
    title3 = "Headers (patient and study data)"
    header_images = [i for i in tampered_images(report) if _is_header_change(i)]
    header_findings = _findings(report, 3)
    if header_images or header_findings:
        parts = []
        if header_images:
            keywords = sorted({a for i in header_images for a in i.attributes})
            parts.append(
                f"{plural(len(header_images), 'image')} whose header disagrees with its "
                "DICOMDIR record: " + ", ".join(plain(k) for k in keywords)
            )
        parts.extend(plain(f.message) for f in header_findings[:2])
        if len(header_findings) > 2:
            parts.append(plural(len(header_findings) - 2, "other problem"))
        s3 = Step(3, title3, "fail", "; ".join(parts) + ".")
    elif not report.images:
        s3 = Step(3, title3, "skip", "There are no images to compare.")
    elif files:
        s3 = Step(
            3,
            title3,
            "pass",
            "Consistent: the files belong to one patient, and each study to one Patient ID.",
        )
    else:
        s3 = Step(
            3,
            title3,
            "pass",
            "Consistent: each image matches its DICOMDIR record, and the disc holds one "
            "patient's images.",
        )

    # (4) the pixels: a disc nobody signed carries no watermark to check them by
    title4 = "Watermarks (image pixels)"
    broken = [i for i in tampered_images(report) if not i.attributes]
    if broken:
        s4 = Step(
            4,
            title4,
            "fail",
            f"{plural(len(broken), 'image')} could not be read as a DICOM image (listed below).",
        )
    else:
        s4 = Step(
            4,
            title4,
            "skip",
            f"No discmaker watermark {_in_what(report)}, so the pixels cannot be checked.",
        )
    return (s1, s2, s3, s4, _verdict_step(report))


def _discs_text(discs: tuple[tuple[int, str], ...]) -> str:
    """``disc 2 (SPAN_2OF3)`` / ``discs 2 (SPAN_2OF3) and 3 (SPAN_3OF3)``."""
    named = [f"{n} ({plain(label)})" if label else str(n) for n, label in discs]
    if len(named) == 1:
        return f"disc {named[0]}"
    return f"discs {', '.join(named[:-1])} and {named[-1]}"


def _set_line(report: CheckReport) -> str:
    missing = report.missing_discs
    verb = "was" if len(missing) == 1 else "were"
    return (
        f"This is disc {report.disc_number} of {report.disc_count}; "
        f"{_discs_text(missing)} of the set {verb} not checked with it."
    )


def _not_a_disc_text(report: CheckReport, code: int) -> VerdictText:
    top = plain(report.top_folder)
    source = plain(report.source)
    if top:
        inside = Path(report.top_folder).is_relative_to(Path(report.source))
        lines = (
            (f"The disc is in a folder inside this one: {top}.",)
            if inside
            else (
                f"This folder is inside a disc; the disc's top folder (the one with its "
                f"DICOMDIR) is {top}.",
            )
        )
        advice = f"Check the disc's top folder instead: {APP_NAME} check {top}"
    else:
        lines = (
            f"There is no patient disc in {source}: no DICOMDIR (the index of a disc), "
            "no DISCSIG folder and no DICOM image.",
        )
        advice = (
            "Choose the disc's top folder (the one with DICOMDIR in it), the ISO image or "
            "the disc drive, and check again."
        )
    return VerdictText(Verdict.NOT_A_DISC, code, _HEADLINE[Verdict.NOT_A_DISC], lines, advice)


def _inconsistent_text(report: CheckReport, code: int) -> VerdictText:
    files = report.kind is InputKind.FILES
    tampered = tampered_images(report)
    headers = [i for i in tampered if i.attributes]
    broken = [i for i in tampered if not i.attributes]
    parts = []
    if any(f.kind == "patients" and "different patients" in f.message for f in report.findings):
        parts.append("the images belong to more than one patient")
    if headers:
        parts.append(f"{plural(len(headers), 'image')} whose header disagrees with the DICOMDIR")
    if broken:
        parts.append(f"{plural(len(broken), 'file')} that cannot be read as a DICOM image")
    others = [
        f
        for f in report.findings
        if not (f.kind == "patients" and "different patients" in f.message)
    ]
    if others:
        parts.append(f"{plural(len(others), 'problem')} listed below")
    subject = "These files are" if files else "The disc is"
    lines = (
        f"{subject} inconsistent: " + "; ".join(parts) + ".",
        f"Nothing {_in_what(report)} shows who made {'them' if files else 'it'}, so nobody can "
        "tell which part is right.",
    )
    advice = (
        "Do not import "
        + ("them" if files else "it")
        + " as "
        + ("they are" if files else "it is")
        + ". Ask whoever sent "
        + ("them" if files else "it")
        + " for a new copy, or confirm the listed images with them before use."
    )
    return VerdictText(Verdict.INCONSISTENT, code, _HEADLINE[Verdict.INCONSISTENT], lines, advice)


def _unsigned_not_verifiable_text(report: CheckReport, code: int) -> VerdictText:
    if report.kind is InputKind.FILES:
        lines = [
            "These are loose DICOM files, not a disc: there is no DICOMDIR, and nothing "
            "shows who made them or whether they were changed.",
            "The files agree with each other: one patient, each study under one Patient ID.",
        ]
        advice = (
            "If they came from a disc, check the disc's top folder (the one with DICOMDIR in "
            "it) instead. Otherwise confirm them with whoever sent them before use."
        )
    else:
        lines = [
            "This disc was not made with discmaker: nothing on it shows who made it or "
            "whether it was changed since.",
        ]
        if report.images:
            lines.append(
                "Its structure is consistent: the DICOMDIR, the files and the patient and "
                "study data agree."
            )
        advice = (
            "Confirm the images with whoever sent the disc before use, or ask them for a "
            "disc made with discmaker."
        )
    if not report.images:
        lines.append("There are no images, so there is nothing to verify.")
    return VerdictText(
        Verdict.NOT_VERIFIABLE, code, _HEADLINE[Verdict.NOT_VERIFIABLE], tuple(lines), advice
    )


def verdict_text(report: CheckReport) -> VerdictText:
    verdict = report.verdict
    code = report.exit_code
    counts = Counter(i.status for i in report.images)
    if verdict is Verdict.NOT_A_DISC:
        return _not_a_disc_text(report, code)
    if verdict is Verdict.INCONSISTENT:
        return _inconsistent_text(report, code)
    if verdict is Verdict.NOT_VERIFIABLE and report.unsigned:
        return _unsigned_not_verifiable_text(report, code)
    subject = plain(report.signer.subject) if report.signer else "the sender"
    if verdict is Verdict.VERIFIED:
        return VerdictText(
            verdict,
            code,
            _HEADLINE[verdict],
            (f"Every image on this disc is exactly as {subject} signed it.",),
            "You can import these images.",
        )
    if verdict is Verdict.NOT_VERIFIABLE and report.kind is InputKind.FILES:
        ok = counts[ImageStatus.OK]
        lines_ = [
            (
                f"{ok} of {plural(len(report.images), 'image')} carry an intact watermark of a "
                "sender you trust; the others could not be verified."
                if ok
                else "No image here carries an intact watermark of a sender you trust."
            ),
            "They are loose files, so nothing shows whether other images of the study are missing.",
        ]
        return VerdictText(
            verdict,
            code,
            _HEADLINE[verdict],
            tuple(lines_),
            "Confirm the other images with the sender before use. A watermark of a sender "
            "you have not trusted yet verifies once you trust their certificate "
            f"({APP_NAME} trust add, after confirming its fingerprint by telephone).",
        )
    if verdict is Verdict.IMAGES_VERIFIED:
        return VerdictText(
            verdict,
            code,
            _HEADLINE[verdict],
            (
                (
                    f"This image is exactly as {subject} sealed it in its watermark: header "
                    "and pixels unchanged."
                    if len(report.images) == 1
                    else f"Each of these {len(report.images)} images is exactly as {subject} "
                    "sealed it in its watermark: header and pixels unchanged."
                ),
                "They are loose files, so nothing shows whether other images of the study "
                "are missing.",
            ),
            "You can use these images. For the whole study, ask the sender for the disc.",
        )
    if verdict is Verdict.INCOMPLETE_SET:
        return VerdictText(
            verdict,
            code,
            _HEADLINE[verdict],
            (
                f"Every image on this disc is exactly as {subject} signed it, but it is one "
                "disc of a set.",
                _set_line(report),
                "A series that continues on another disc is incomplete on this one.",
            ),
            f"Check all {report.disc_count} discs of the set together ({APP_NAME} check "
            "DISC1 DISC2 ...) and import the images once the whole set is verified.",
        )
    if verdict is Verdict.TAMPERED:
        n = counts[ImageStatus.TAMPERED]
        lines = ["Something on this disc was changed after the sender signed it."]
        signer = report.signer
        if signer is not None and signer.valid_at_signing is False and not n:
            lines = [
                "The sender's certificate was not valid at the time this disc says it was "
                f"signed ({certificate_validity(signer)}): the signature cannot be relied on."
            ]
        if n:
            lines.append(f"{plural(n, 'image')} changed; the list below says what changed.")
        if report.findings:
            lines.append(f"{plural(len(report.findings), 'problem')} with the disc as a whole.")
        if report.missing_discs:
            lines.append(_set_line(report))
        return VerdictText(
            verdict,
            code,
            _HEADLINE[verdict],
            tuple(lines),
            "Do not import the changed images. Keep the disc and this report, and ask the "
            "sender for a new disc.",
        )
    lines = []
    signer = report.signer
    if not report.signed:
        lines.append(
            "This disc has no discmaker signature, so nothing shows whether it was changed."
        )
        advice = (
            "Ask the sender for a signed disc, or confirm the images with them another way "
            "before use."
        )
    elif signer is not None and report.signature_valid and not signer.trusted:
        lines.append("The disc is signed, but by a sender you have not trusted yet.")
        advice = (
            "Confirm the fingerprint below with the sender by telephone, trust them, "
            "then check the disc again."
        )
    elif not trusted_signature(report):
        lines.append("The sender's signature could not be confirmed.")
        advice = "Ask the sender for a new disc."
    else:
        advice = "Ask the sender about the images that could not be verified."
    if not report.images:
        lines.append("The disc holds no images, so there is nothing to verify.")
    elif counts[ImageStatus.NOT_VERIFIABLE] and trusted_signature(report):
        lines.append(
            f"{plural(counts[ImageStatus.NOT_VERIFIABLE], 'image')} not covered by the "
            "sender's signature."
        )
    if report.missing_discs:
        lines.append(_set_line(report))
    return VerdictText(verdict, code, _HEADLINE[verdict], tuple(lines), advice)


def patient_blocks(report: CheckReport) -> list[PatientBlock]:
    """The patient block, worded: names and dates as people write them, sex in words, each
    study's contents by modality. Every value came off the disc: made :func:`plain`."""
    blocks = []
    for patient in report.patients:
        studies = []
        for study in patient.studies:
            by_modality: Counter[str] = Counter()
            for series in study.series:
                by_modality[plain(series.modality) or "?"] += series.images
            contents = ", ".join(
                f"{modality} {plural(n, 'image')}" for modality, n in sorted(by_modality.items())
            )
            studies.append(
                StudyLine(
                    date=person_date(study.date),
                    description=plain(study.description).strip(),
                    accession=plain(study.accession).strip(),
                    contents=contents,
                    images=study.images,
                )
            )
        blocks.append(
            PatientBlock(
                name=person_name(patient.name) or "(no name)",
                patient_id=plain(patient.patient_id).strip(),
                birth_date=person_date(patient.birth_date),
                sex=person_sex(patient.sex),
                studies=tuple(studies),
            )
        )
    return blocks


def patients_source_text(report: CheckReport) -> str:
    """Where the patient block comes from, and who (if anyone) vouches for it."""
    source = report.patients_source
    if source is PatientsSource.MANIFEST:
        if trusted_signature(report):
            return "as the sender signed them in the disc's manifest"
        return "as the disc's manifest lists them; not vouched for (see the verdict)"
    if source is PatientsSource.DICOMDIR:
        return "as the disc's DICOMDIR lists them; nothing vouches for them"
    if source is PatientsSource.HEADERS:
        if report.verdict is Verdict.IMAGES_VERIFIED:
            return "as the files' headers give them, each sealed in its image's watermark"
        return "as the files' headers give them; nothing vouches for them"
    return ""


def series_rows(report: CheckReport) -> list[SeriesRow]:
    groups: dict[str, Counter[ImageStatus]] = {}
    for image in report.images:
        label = plain(image.series_label) or "(no series)"
        groups.setdefault(label, Counter())[image.status] += 1
    return [
        SeriesRow(
            label=label,
            total=sum(c.values()),
            ok=c[ImageStatus.OK],
            tampered=c[ImageStatus.TAMPERED],
            manifest_only=c[ImageStatus.MANIFEST_ONLY],
            not_verifiable=c[ImageStatus.NOT_VERIFIABLE],
        )
        for label, c in sorted(groups.items(), key=lambda kv: _natural_key(kv[0]))
    ]


def certificate_validity(signer: Signer) -> str:
    """The signer certificate's validity in a few words, e.g. ``valid 2026-01-02 to
    2036-01-02; expired since the disc was made (its signature stays valid)``; empty when
    the dates are unknown."""
    if not signer.not_before or not signer.not_after:
        return ""
    text = f"valid {plain(signer.not_before[:10])} to {plain(signer.not_after[:10])}"
    if signer.valid_at_signing is False:
        return text + "; NOT valid when the disc was made"
    if signer.valid_now is False:
        if signer.valid_at_signing:
            return text + "; expired since the disc was made (its signature stays valid)"
        return text + "; not valid today"
    return text


def untrusted_advice(source: str = "") -> str:
    """How to trust the sender of the disc at ``source``: ``trust add`` reads the certificate
    from the disc itself and asks for the telephone confirmation before trusting."""
    target = shlex.quote(source) if source else "<the disc, ISO or drive>"
    return (
        f"To trust this sender, run: {APP_NAME} trust add {target} (or give it the cert.pem "
        "they sent you). It shows the fingerprint and asks you to confirm it with the sender "
        "by telephone first."
    )


__all__ = [
    "STATE_LABEL",
    "STATUS_ORDER",
    "PatientBlock",
    "SeriesRow",
    "Step",
    "StepState",
    "StudyLine",
    "VerdictText",
    "certificate_validity",
    "check_steps",
    "patient_blocks",
    "patients_source_text",
    "person_date",
    "person_name",
    "person_sex",
    "plain",
    "plural",
    "region_text",
    "series_rows",
    "tampered_images",
    "trusted_signature",
    "untrusted_advice",
    "verdict_text",
]
