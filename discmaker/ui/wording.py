"""What a check report says in words: the wording shared by the terminal and the HTML report.

The check is explained with the same numbered steps as ``discmaker check`` and the README:
(1) signature, (2) files agree with the signed list, (3) headers, (4) watermarks, (5) verdict.
:func:`check_steps` decides each step's state and sentence, :func:`verdict_text` the verdict,
its explanation and advice; :mod:`discmaker.ui.render` and :mod:`discmaker.ui.report_html` only lay
them out.

Every string that came off a received disc (paths, certificate subjects, reasons) is hostile
input: :func:`plain` replaces terminal control and bidirectional-override characters before
it is shown anywhere.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from discmaker import APP_NAME
from discmaker.format.manifest import SIGNER_PATH
from discmaker.models import (
    STATUS_ORDER,
    CheckReport,
    Finding,
    ImageStatus,
    ImageVerdict,
    Region,
    Signer,
    Verdict,
)

StepState = Literal["pass", "fail", "warn", "skip"]

STATE_LABEL: dict[StepState, str] = {
    "pass": "OK",
    "fail": "FAILED",
    "warn": "CAUTION",
    "skip": "NOT CHECKED",
}

_EXIT_MEANING = {
    Verdict.VERIFIED: "every image verified",
    Verdict.TAMPERED: "tampering or inconsistency found",
    Verdict.NOT_VERIFIABLE: "not verifiable",
}
_VERDICT_STATE: dict[Verdict, StepState] = {
    Verdict.VERIFIED: "pass",
    Verdict.TAMPERED: "fail",
    Verdict.NOT_VERIFIABLE: "warn",
}


def plain(text: object) -> str:
    """``text`` made safe to show: control, format (bidi override) and line characters -> '?'."""
    out = []
    for ch in str(text):
        if ch in "\n\t":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def human_size(n: int) -> str:
    """Bytes as people say them: 14.3 MB."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def region_text(region: Region) -> str:
    """``frame F, rows r0-r1, columns c0-c1`` as a viewer counts: frames from 1, last row and
    column included. (The JSON keeps the 0-based frame and the half-open box.)"""
    return (
        f"frame {region.frame + 1}, rows {region.row0}-{region.row1 - 1}, "
        f"columns {region.col0}-{region.col1 - 1}"
    )


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


def check_steps(report: CheckReport) -> tuple[Step, ...]:
    """The five numbered steps; red only where a finding or a tampered image says so."""
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
        detail = "Every watermark is intact: the pixels are as the sender signed them."
        if manifest_only:
            detail = (
                f"Watermarks intact. {plural(manifest_only, 'image')} carry no watermark "
                "and were checked against the signed list only."
            )
        s4 = Step(4, title4, "pass", detail)

    # (5) verdict
    v = verdict_text(report)
    s5 = Step(5, "Verdict", _VERDICT_STATE[v.verdict], f"{v.headline} ({v.exit_meaning})")
    return (s1, s2, s3, s4, s5)


def verdict_text(report: CheckReport) -> VerdictText:
    verdict = report.verdict
    code = report.exit_code
    counts = Counter(i.status for i in report.images)
    if verdict is Verdict.VERIFIED:
        subject = plain(report.signer.subject) if report.signer else "the sender"
        return VerdictText(
            verdict,
            code,
            "VERIFIED",
            (f"Every image on this disc is exactly as {subject} signed it.",),
            "You can import these images.",
        )
    if verdict is Verdict.TAMPERED:
        n = counts[ImageStatus.TAMPERED]
        lines = ["Something on this disc was changed after the sender signed it."]
        if n:
            lines.append(f"{plural(n, 'image')} changed; the list below says what changed.")
        if report.findings:
            lines.append(f"{plural(len(report.findings), 'problem')} with the disc as a whole.")
        return VerdictText(
            verdict,
            code,
            "TAMPERED",
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
    return VerdictText(verdict, code, "NOT VERIFIABLE", tuple(lines), advice)


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


def _trust_command() -> str:
    return f"{APP_NAME} trust add {SIGNER_PATH}"


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


def untrusted_advice() -> str:
    return (
        "Confirm this fingerprint with the sender by telephone, then: "
        f"{_trust_command()} (the certificate in the disc's {SIGNER_PATH.split('/')[0]} "
        "folder, or the cert.pem the sender gave you)."
    )


__all__ = [
    "STATE_LABEL",
    "STATUS_ORDER",
    "SeriesRow",
    "Step",
    "StepState",
    "VerdictText",
    "certificate_validity",
    "check_steps",
    "plain",
    "plural",
    "region_text",
    "series_rows",
    "tampered_images",
    "trusted_signature",
    "untrusted_advice",
    "verdict_text",
]
