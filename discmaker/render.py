"""What people read: terminal summaries (rich renderables), the JSON report and the HTML report.

Nothing here prints: the CLI prints what these functions return. Every string that came off a
received disc (paths, certificate subjects, reasons) is hostile input, so it is shown as plain
text: never as rich markup, never as raw HTML (the template autoescapes), with terminal control
and bidirectional-override characters replaced.

The check is explained with the same numbered steps as ``discmaker check`` and the README:
(1) signature, (2) files agree with the signed list, (3) headers, (4) watermarks, (5) verdict.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
import re
import shlex
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from discmaker import APP_NAME, __version__, templating
from discmaker.errors import InternalError, OutputError
from discmaker.manifest import SIGNER_PATH
from discmaker.models import (
    REPORT_FORMAT,
    REPORT_VERSION,
    CheckReport,
    Finding,
    ImageStatus,
    ImageVerdict,
    Region,
    RestoreResult,
    Verdict,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    from discmaker.author import AuthorResult

REPORT_TEMPLATE = "REPORT.HTM.j2"
THUMBNAIL_MAX = 256  # px, longest side of a preview in the HTML report
_THUMBNAIL_MIN = 128  # tiny images are enlarged (nearest neighbour) so the boxes stay visible
_TERMINAL_IMAGES = 20  # tampered images listed in the terminal; the rest are in --json/--report
_TERMINAL_REGIONS = 5  # regions listed per image in the terminal
_REPORT_MODE = 0o644

StepState = Literal["pass", "fail", "warn", "skip"]

_STATE_LABEL: dict[StepState, str] = {
    "pass": "OK",
    "fail": "FAILED",
    "warn": "CAUTION",
    "skip": "NOT CHECKED",
}
_STATE_STYLE: dict[StepState, str] = {
    "pass": "bold green",
    "fail": "bold red",
    "warn": "bold yellow",
    "skip": "bold yellow",
}

_EXIT_MEANING = {
    Verdict.VERIFIED: "every image verified",
    Verdict.TAMPERED: "tampering or inconsistency found",
    Verdict.NOT_VERIFIABLE: "not verifiable",
}
_VERDICT_STYLE = {
    Verdict.VERIFIED: "bold green",
    Verdict.TAMPERED: "bold red",
    Verdict.NOT_VERIFIABLE: "bold yellow",
}
_VERDICT_STATE: dict[Verdict, StepState] = {
    Verdict.VERIFIED: "pass",
    Verdict.TAMPERED: "fail",
    Verdict.NOT_VERIFIABLE: "warn",
}
_STATUS_ORDER = (
    ImageStatus.OK,
    ImageStatus.TAMPERED,
    ImageStatus.MANIFEST_ONLY,
    ImageStatus.NOT_VERIFIABLE,
)


# -- shared wording -----------------------------------------------------------------------


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


def _plural(n: int, word: str, words: str | None = None) -> str:
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
class _Step:
    number: int
    title: str
    state: StepState
    detail: str

    @property
    def label(self) -> str:
        return _STATE_LABEL[self.state]


@dataclass(frozen=True)
class _SeriesRow:
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
class _VerdictText:
    verdict: Verdict
    exit_code: int
    headline: str  # "VERIFIED"
    explanation: tuple[str, ...]
    advice: str

    @property
    def exit_meaning(self) -> str:
        return f"exit code {self.exit_code}: {_EXIT_MEANING[self.verdict]}"


def _trusted_signature(report: CheckReport) -> bool:
    return (
        report.signed
        and report.signature_valid
        and report.signer is not None
        and report.signer.trusted
    )


def _findings(report: CheckReport, step: int) -> list[Finding]:
    return [f for f in report.findings if f.step == step]


def _tampered(report: CheckReport) -> list[ImageVerdict]:
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


def _steps(report: CheckReport) -> tuple[_Step, ...]:
    """The five numbered steps; red only where a finding or a tampered image says so."""
    tampered = _tampered(report)
    covered = _trusted_signature(report)
    signer = report.signer

    # (1) signature
    sig_findings = _findings(report, 1)
    if sig_findings:
        s1 = _Step(1, "Signature", "fail", plain(sig_findings[0].message))
    elif not report.signed:
        s1 = _Step(
            1,
            "Signature",
            "warn",
            "This disc carries no discmaker signature, so nobody vouches for its contents.",
        )
    elif signer is None:
        s1 = _Step(1, "Signature", "warn", "The sender's certificate is missing from the disc.")
    elif not report.signature_valid:
        s1 = _Step(1, "Signature", "warn", "The sender's signature could not be confirmed.")
    elif not signer.trusted:
        s1 = _Step(
            1,
            "Signature",
            "warn",
            f"Signed by {plain(signer.subject)}, a sender you have not trusted yet.",
        )
    else:
        s1 = _Step(1, "Signature", "pass", f"Signed by {plain(signer.subject)}, a trusted sender.")

    # (2) files agree with the signed list
    title2 = "Files agree with the signed list"
    file_findings = _findings(report, 2)
    altered_images = [i for i in report.images if i.altered]
    if file_findings or altered_images:
        kinds = Counter(f.kind for f in file_findings)
        if altered_images:
            kinds["image file changed or missing"] += len(altered_images)
        what = ", ".join(f"{n} {plain(kind)}" for kind, n in sorted(kinds.items()))
        s2 = _Step(
            2,
            title2,
            "fail",
            f"{_plural(sum(kinds.values()), 'file problem')} ({what}): files were added, "
            "removed or changed after signing.",
        )
    elif not report.signed:
        s2 = _Step(2, title2, "skip", "There is no signed list of files to compare with.")
    else:
        s2 = _Step(
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
        detail = f"{_plural(len(header_images), 'image')} with changed patient or study data"
        if keywords:
            detail += ": " + ", ".join(plain(k) for k in keywords)
        if header_findings:
            detail += f"; {_plural(len(header_findings), 'other problem')}"
        s3 = _Step(3, title3, "fail", detail + ".")
    elif not covered or not report.images:
        s3 = _Step(3, title3, "skip", "Not checked: no trusted signature to compare with.")
    else:
        s3 = _Step(
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
        detail = f"{_plural(len(pixel_images), 'image')} with changed pixels or watermark"
        if n_regions:
            detail += f" ({_plural(n_regions, 'changed area')} located)"
        if pixel_findings:
            detail += f"; {_plural(len(pixel_findings), 'other problem')}"
        s4 = _Step(4, title4, "fail", detail + ".")
    elif not covered or not report.images:
        s4 = _Step(4, title4, "skip", "Not checked: no trusted signature to compare with.")
    elif counts[ImageStatus.NOT_VERIFIABLE]:
        s4 = _Step(
            4,
            title4,
            "warn",
            f"{_plural(counts[ImageStatus.NOT_VERIFIABLE], 'image')} could not be verified.",
        )
    else:
        detail = "Every watermark is intact: the pixels are as the sender signed them."
        if manifest_only:
            detail = (
                f"Watermarks intact. {_plural(manifest_only, 'image')} carry no watermark "
                "and were checked against the signed list only."
            )
        s4 = _Step(4, title4, "pass", detail)

    # (5) verdict
    v = _verdict_text(report)
    s5 = _Step(5, "Verdict", _VERDICT_STATE[v.verdict], f"{v.headline} ({v.exit_meaning})")
    return (s1, s2, s3, s4, s5)


def _verdict_text(report: CheckReport) -> _VerdictText:
    verdict = report.verdict
    code = report.exit_code
    counts = Counter(i.status for i in report.images)
    if verdict is Verdict.VERIFIED:
        subject = plain(report.signer.subject) if report.signer else "the sender"
        return _VerdictText(
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
            lines.append(f"{_plural(n, 'image')} changed; the list below says what changed.")
        if report.findings:
            lines.append(f"{_plural(len(report.findings), 'problem')} with the disc as a whole.")
        return _VerdictText(
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
    elif not _trusted_signature(report):
        lines.append("The sender's signature could not be confirmed.")
        advice = "Ask the sender for a new disc."
    else:
        advice = "Ask the sender about the images that could not be verified."
    if not report.images:
        lines.append("The disc holds no images, so there is nothing to verify.")
    elif counts[ImageStatus.NOT_VERIFIABLE] and _trusted_signature(report):
        lines.append(
            f"{_plural(counts[ImageStatus.NOT_VERIFIABLE], 'image')} not covered by the "
            "sender's signature."
        )
    return _VerdictText(verdict, code, "NOT VERIFIABLE", tuple(lines), advice)


def _series_rows(report: CheckReport) -> list[_SeriesRow]:
    groups: dict[str, Counter[ImageStatus]] = {}
    for image in report.images:
        label = plain(image.series_label) or "(no series)"
        groups.setdefault(label, Counter())[image.status] += 1
    return [
        _SeriesRow(
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


def _untrusted_advice() -> str:
    return (
        "Confirm this fingerprint with the sender by telephone, then: "
        f"{_trust_command()} (the certificate in the disc's {SIGNER_PATH.split('/')[0]} "
        "folder, or the cert.pem the sender gave you)."
    )


# -- JSON ----------------------------------------------------------------------------------


ProgressFn = Callable[[str, int, int], None]

PROGRESS_LABELS = {
    "scan": "Reading study",
    "prepare": "Watermarking",
    "write": "Writing disc (MB)",
    "burn": "Burning (MB)",
    "read": "Reading disc",
    "verify": "Verifying images",
}
_BYTE_STAGES = frozenset({"write"})


@contextmanager
def progress_bars(console: Console, *, enabled: bool = True) -> Iterator[ProgressFn]:
    """Progress bars for the library's ``progress(stage, done, total)`` callbacks.

    Byte counts (writing the disc) are shown in megabytes.
    """
    if not enabled:
        yield lambda stage, done, total: None
        return
    with Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage in _BYTE_STAGES:
                done, total = done // 1_000_000, max(1, total // 1_000_000)
            if stage not in tasks:
                tasks[stage] = bar.add_task(PROGRESS_LABELS.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def check_json(report: CheckReport) -> dict[str, object]:
    """The versioned ``check --json`` document: plain types only, in a deterministic order."""
    counts = Counter(i.status for i in report.images)
    signer = report.signer
    images = sorted(report.images, key=lambda i: (i.path, i.sop_instance_uid))
    findings = sorted(report.findings, key=lambda f: (f.step, f.path, f.kind, f.message))
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "verdict": report.verdict.value,
        "exit_code": report.exit_code,
        "source": report.source,
        "signed": report.signed,
        "signature_valid": report.signature_valid,
        "signer": None
        if signer is None
        else {
            "subject": signer.subject,
            "fingerprint": signer.fingerprint,
            "trusted": signer.trusted,
        },
        "disc": {
            "fileset_id": report.fileset_id,
            "number": report.disc_number,
            "count": report.disc_count,
        },
        "summary": {status.value: counts[status] for status in _STATUS_ORDER},
        "images": [
            {
                "path": i.path,
                "status": i.status.value,
                "reasons": list(i.reasons),
                "attributes": sorted(i.attributes),
                "regions": [
                    {
                        "frame": r.frame,
                        "row0": r.row0,
                        "col0": r.col0,
                        "row1": r.row1,
                        "col1": r.col1,
                    }
                    for r in sorted(
                        i.regions, key=lambda r: (r.frame, r.row0, r.col0, r.row1, r.col1)
                    )
                ],
                "sop_instance_uid": i.sop_instance_uid,
                "series": i.series_label,
                "series_uid": i.series_uid,
                "restorable": i.restorable,
            }
            for i in images
        ],
        "findings": [
            {"step": f.step, "kind": f.kind, "path": f.path, "message": f.message} for f in findings
        ],
        "notes": list(report.notes),
    }


# -- terminal ------------------------------------------------------------------------------


def _mark(state: StepState) -> Text:
    return Text(f"{_STATE_LABEL[state]:<11}", style=_STATE_STYLE[state])


def _steps_table(steps: Sequence[_Step]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right")
    table.add_column()
    table.add_column(no_wrap=True)
    table.add_column()
    for step in steps:
        table.add_row(
            Text(f"({step.number})"), _mark(step.state), Text(step.title), Text(step.detail)
        )
    return table


def _series_table(rows: Sequence[_SeriesRow]) -> Table:
    table = Table(title="Images by series", title_justify="left", show_lines=False)
    table.add_column("Series")
    table.add_column("Images", justify="right")
    table.add_column("OK", justify="right")
    table.add_column("Tampered", justify="right")
    table.add_column("Manifest only", justify="right")
    table.add_column("Not verifiable", justify="right")
    for row in rows:
        style = {"pass": "green", "fail": "red", "warn": "yellow", "skip": "yellow"}[row.state]
        table.add_row(
            Text(row.label),
            Text(str(row.total)),
            Text(str(row.ok)),
            Text(str(row.tampered), style="bold red" if row.tampered else ""),
            Text(str(row.manifest_only)),
            Text(str(row.not_verifiable)),
            style=style,
        )
    return table


def _image_lines(image: ImageVerdict, *, max_regions: int | None) -> list[Text]:
    lines = [Text.assemble(("  ", ""), (plain(image.path), "bold"))]
    if image.series_label:
        lines[0].append(f"  (series {plain(image.series_label)})")
    if image.attributes:
        changed = ", ".join(plain(a) for a in sorted(image.attributes))
        lines.append(Text(f"    header changed: {changed}"))
    regions = sorted(image.regions, key=lambda r: (r.frame, r.row0, r.col0))
    shown = regions if max_regions is None else regions[:max_regions]
    for region in shown:
        lines.append(Text(f"    pixels changed: {region_text(region)}"))
    if len(regions) > len(shown):
        lines.append(Text(f"    ... and {_plural(len(regions) - len(shown), 'more area')}"))
    for reason in image.reasons:
        lines.append(Text(f"    {plain(reason)}"))
    if len(lines) == 1:
        lines.append(Text("    changed after signing"))
    return lines


def _signer_lines(report: CheckReport) -> list[Text]:
    signer = report.signer
    if signer is None:
        text = "no signer" if not report.signed else "signer certificate missing"
        return [Text.assemble(("Signer       ", "bold"), text)]
    trusted = Text("yes", style="green") if signer.trusted else Text("NO", style="bold yellow")
    lines = [
        Text.assemble(("Signer       ", "bold"), plain(signer.subject)),
        Text.assemble(("Fingerprint  ", "bold"), _fingerprint_lines(plain(signer.fingerprint))),
        Text.assemble(("Trusted      ", "bold"), trusted),
    ]
    if not signer.trusted:
        lines.append(Text(_untrusted_advice(), style="yellow"))
    return lines


def check_summary(report: CheckReport) -> RenderableType:
    """The terminal summary of a check: steps, series table, what changed, verdict, signer."""
    steps = _steps(report)
    verdict = _verdict_text(report)
    parts: list[RenderableType] = []
    where = Text.assemble(("Checked ", "bold"), plain(report.source))
    if report.fileset_id or report.disc_count > 1:
        where.append(f"  (disc {plain(report.fileset_id) or '?'}")
        if report.disc_count > 1:
            where.append(f", {report.disc_number} of {report.disc_count}")
        where.append(")")
    parts.append(where)
    parts.append(_steps_table(steps))
    rows = _series_rows(report)
    if rows:
        parts.append(_series_table(rows))
    else:
        parts.append(Text("No images were found on the disc.", style="yellow"))

    tampered = _tampered(report)
    if tampered:
        parts.append(Text(f"Changed images ({len(tampered)})", style="bold red"))
        for image in tampered[:_TERMINAL_IMAGES]:
            parts.extend(_image_lines(image, max_regions=_TERMINAL_REGIONS))
        if len(tampered) > _TERMINAL_IMAGES:
            parts.append(
                Text(
                    f"  ... and {_plural(len(tampered) - _TERMINAL_IMAGES, 'more image')}; "
                    "the full list is in the --json and --report output."
                )
            )
    if report.findings:
        parts.append(Text(f"Problems with the disc ({len(report.findings)})", style="bold red"))
        for f in sorted(report.findings, key=lambda f: (f.step, f.path, f.kind)):
            parts.append(
                Text(
                    f"  ({f.step}) {plain(f.kind)}: {plain(f.path) or '(disc)'}: {plain(f.message)}"
                )
            )
    not_verifiable = sorted(
        (i for i in report.images if i.status is ImageStatus.NOT_VERIFIABLE and i.reasons),
        key=lambda i: i.path,
    )
    if not_verifiable and _trusted_signature(report):
        parts.append(Text("Not verifiable", style="bold yellow"))
        for image in not_verifiable[:_TERMINAL_IMAGES]:
            parts.append(Text(f"  {plain(image.path)}: {'; '.join(map(plain, image.reasons))}"))
    for note in report.notes:
        parts.append(Text(f"Note: {plain(note)}"))

    style = _VERDICT_STYLE[verdict.verdict]
    parts.append(
        Panel(
            Group(
                Text.assemble(
                    ("(5) Verdict: ", "bold"),
                    (verdict.headline, style),
                    f"  ({verdict.exit_meaning})",
                ),
                *(Text(line) for line in verdict.explanation),
                Text(verdict.advice, style="bold"),
            ),
            border_style=style.replace("bold ", ""),
        )
    )
    parts.extend(_signer_lines(report))
    return Group(*parts)


def restore_summary(result: RestoreResult) -> RenderableType:
    """The check that gated the restore, then what was written and what was held back."""
    lines: list[RenderableType] = []
    out = plain(result.out)
    if result.restored:
        lines.append(
            Text(
                f"{_plural(len(result.restored), 'verified original')} written to {out}, "
                "ready for PACS import.",
                style="green",
            )
        )
    else:
        lines.append(Text(f"No images were written to {out} for import.", style="bold yellow"))
    if result.tampered_written:
        lines.append(
            Text(
                f"{_plural(len(result.tampered_written), 'tampered image')} written under "
                f"{out}/TAMPERED/ for investigation only. Do not import them.",
                style="bold red",
            )
        )
    if result.refused:
        lines.append(
            Text(
                f"{_plural(len(result.refused), 'image')} held back (changed or not verifiable):",
                style="yellow",
            )
        )
        for path in sorted(result.refused)[:_TERMINAL_IMAGES]:
            lines.append(Text(f"  {plain(path)}"))
        if len(result.refused) > _TERMINAL_IMAGES:
            lines.append(Text(f"  ... and {len(result.refused) - _TERMINAL_IMAGES} more"))
    style = _VERDICT_STYLE[result.report.verdict].replace("bold ", "")
    return Group(
        check_summary(result.report),
        Panel(Group(*lines), title="Restore", title_align="left", border_style=style),
    )


def _size(n: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def _field(mapping: Mapping[str, object], key: str) -> str:
    value = mapping.get(key)
    return "" if value is None else plain(value)


def _children(mapping: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    value = mapping.get(key)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _patient_table(summary: Iterable[Mapping[str, object]]) -> Tree:
    """Patient -> study -> series as a tree: narrow enough for an 80-column terminal."""
    tree = Tree(Text("On the disc", style="bold"), guide_style="dim")
    for patient in summary:
        details = "  ".join(
            f"{label} {_field(patient, key)}"
            for label, key in (("ID", "id"), ("born", "birth_date"), ("sex", "sex"))
            if _field(patient, key)
        )
        node = tree.add(Text.assemble((_field(patient, "name"), "bold"), "  ", details))
        for study in _children(patient, "studies"):
            accession = _field(study, "accession")
            study_node = node.add(
                Text(
                    f"Study {_field(study, 'date') or '(no date)'}  {_field(study, 'description')}"
                    + (f"  accession {accession}" if accession else "")
                )
            )
            for series in _children(study, "series"):
                label = " ".join(
                    p for p in (_field(series, "modality"), _field(series, "number")) if p
                )
                count = int(str(series.get("images", 0) or 0))
                study_node.add(
                    Text(
                        f"{label:<7} {_plural(count, 'image'):>10}  {_field(series, 'description')}"
                    )
                )
    return tree


def _fingerprint_lines(fingerprint: str) -> str:
    """A SHA-256 fingerprint in two halves, so a terminal never breaks it mid-byte."""
    parts = fingerprint.split(":")
    if len(parts) < 2:
        return fingerprint
    half = len(parts) // 2
    return ":".join(parts[:half]) + ":\n" + ":".join(parts[half:])


def author_summary(result: AuthorResult) -> RenderableType:
    """The closing panel of ``discmaker author``: where the disc is and what is on it."""
    parts: list[RenderableType] = []
    kind = "ISO image" if result.format == "iso" else "folder for a USB stick"
    outputs = result.outputs or (result.out,)
    if len(outputs) == 1:
        parts.append(Text.assemble(("Disc        ", "bold"), f"{outputs[0]}  ({kind})"))
    else:
        parts.append(Text.assemble(("Discs       ", "bold"), f"a set of {len(outputs)} ({kind}s):"))
        for n, path in enumerate(outputs, 1):
            parts.append(Text(f"  disc {n} of {len(outputs)}: {plain(path)}"))
    medium = result.medium
    capacity = getattr(medium, "capacity", None)
    size = _size(result.bytes_written)
    if isinstance(capacity, int) and capacity > 0:
        size += f" of {_size(capacity)} ({100 * result.bytes_written / capacity:.0f} %)"
    parts.append(
        Text.assemble(("Label       ", "bold"), f"{result.label}   {medium.name}   {size}")
    )
    parts.append(
        Text.assemble(
            ("Contents    ", "bold"),
            ", ".join(
                (
                    _plural(result.patients, "patient"),
                    _plural(result.studies, "study", "studies"),
                    _plural(result.series, "series", "series"),
                    _plural(result.images, "image"),
                )
            ),
        )
    )
    if result.summary:
        parts.append(_patient_table(result.summary))

    protected = Text.assemble(
        ("Protection  ", "bold"),
        (f"{result.watermarked} of {result.images} images carry a watermark", "green"),
    )
    parts.append(protected)
    if result.manifest_only:
        parts.append(
            Text(
                f"{_plural(len(result.manifest_only), 'image')} carry no watermark and are "
                "protected by the signed list of files only:",
                style="yellow",
            )
        )
        by_reason: dict[str, list[str]] = {}
        for file_id, reason in result.manifest_only:
            by_reason.setdefault(plain(reason), []).append(plain(file_id))
        for reason, files in sorted(by_reason.items()):
            listed = ", ".join(sorted(files)[:5]) + (" ..." if len(files) > 5 else "")
            parts.append(Text(f"  {reason}: {_plural(len(files), 'image')} ({listed})"))

    skipped = [
        (result.non_dicom_skipped, "not DICOM"),
        (result.duplicates_skipped, "identical duplicate"),
        (result.dicomdirs_skipped, "old DICOMDIR"),
    ]
    skipped_text = ", ".join(f"{n} {what}" for n, what in skipped if n) or "none"
    parts.append(Text.assemble(("Skipped     ", "bold"), f"{skipped_text} (files left out)"))
    parts.append(Text.assemble(("Signed by   ", "bold"), "key with SHA-256 fingerprint"))
    parts.append(Text(_fingerprint_lines(result.fingerprint)))
    parts.append(Text.assemble(("Took        ", "bold"), f"{result.seconds:.1f} s"))
    command = f"{APP_NAME} check {' '.join(shlex.quote(str(p)) for p in outputs)} --trust CERT"
    parts.append(
        Text.assemble(
            ("Next step   ", "bold"),
            "check it with: ",
            (command, "bold cyan"),
            "  (CERT: the cert.pem you signed with)",
        )
    )
    return Panel(Group(*parts), title="Disc ready", title_align="left", border_style="green")


# -- HTML ----------------------------------------------------------------------------------


def _window(pixels: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Display values -> 8 bits, windowed to the 1st-99th percentile of the finite values."""
    values = np.asarray(pixels).astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = (float(v) for v in np.percentile(values[finite], [1, 99]))
    values = np.where(finite, values, lo)
    if hi <= lo:  # flat image: mid grey where it is at the level, black below, white above
        out = np.where(values > lo, 255, np.where(values < lo, 0, 128))
        return out.astype(np.uint8)
    scaled = np.clip((values - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
    return np.rint(scaled).astype(np.uint8)


def _thumbnail_frame(image: ImageVerdict) -> int:
    return min((r.frame for r in image.regions), default=0)


def thumbnail_data_uri(pixels: npt.NDArray[Any], regions: Sequence[Region]) -> str:
    """A JPEG preview (longest side <= 256 px) as a ``data:`` URI, ``regions`` outlined in red.

    ``pixels`` is one frame of display values (2-D, any dtype); the regions' row/column boxes
    are in its pixel coordinates and are scaled with it.
    """
    array = np.asarray(pixels)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"a thumbnail needs a non-empty 2-D array, got shape {array.shape}")
    rows, cols = array.shape
    grey = Image.fromarray(_window(array))
    longest = max(rows, cols)
    if longest > THUMBNAIL_MAX:
        scale = THUMBNAIL_MAX / longest
        resample = Image.Resampling.LANCZOS
    elif longest < _THUMBNAIL_MIN:
        scale = float(_THUMBNAIL_MIN // longest)
        resample = Image.Resampling.NEAREST
    else:
        scale, resample = 1.0, Image.Resampling.NEAREST
    width, height = max(1, round(cols * scale)), max(1, round(rows * scale))
    if (width, height) != (cols, rows):
        grey = grey.resize((width, height), resample)
    picture = grey.convert("RGB")
    draw = ImageDraw.Draw(picture)
    sx, sy = width / cols, height / rows
    line = 2 if min(width, height) >= 32 else 1
    for r in regions:
        x0 = min(max(math.floor(r.col0 * sx), 0), width - 1)
        y0 = min(max(math.floor(r.row0 * sy), 0), height - 1)
        x1 = min(max(math.ceil(r.col1 * sx) - 1, x0), width - 1)
        y1 = min(max(math.ceil(r.row1 * sy) - 1, y0), height - 1)
        draw.rectangle((x0, y0, x1, y1), outline=(255, 0, 0), width=line)
    buffer = io.BytesIO()
    # JPEG with full-resolution colour keeps the red outline crisp at a tenth of PNG's size.
    picture.save(buffer, format="JPEG", quality=90, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_image(
    image: ImageVerdict, thumbnails: Mapping[str, npt.NDArray[Any]]
) -> dict[str, object]:
    regions = sorted(image.regions, key=lambda r: (r.frame, r.row0, r.col0))
    thumbnail, caption = "", ""
    pixels = thumbnails.get(image.path)
    if pixels is not None:
        frame = _thumbnail_frame(image)
        shown = [r for r in regions if r.frame == frame]
        thumbnail = thumbnail_data_uri(pixels, shown)
        caption = f"Frame {frame + 1}"
        caption += "; changed areas outlined in red." if shown else "."
        others = sorted({r.frame for r in regions} - {frame})
        if others:
            caption += f" Also changed, not shown: frame {', '.join(str(f + 1) for f in others)}."
    return {
        "path": plain(image.path),
        "series": plain(image.series_label),
        "sop_instance_uid": plain(image.sop_instance_uid),
        "attributes": [plain(a) for a in sorted(image.attributes)],
        "regions": [region_text(r) for r in regions],
        "reasons": [plain(r) for r in image.reasons],
        "thumbnail": thumbnail,
        "caption": caption,
    }


def _html_context(
    report: CheckReport,
    thumbnails: Mapping[str, npt.NDArray[Any]],
    checked_at: datetime,
) -> dict[str, object]:
    verdict = _verdict_text(report)
    signer = report.signer
    return {
        "software": APP_NAME,
        "version": __version__,
        "checked_at": f"{checked_at:%Y-%m-%d %H:%M} {checked_at.tzname() or ''}".strip(),
        "source": plain(report.source),
        "fileset_id": plain(report.fileset_id),
        "disc_number": report.disc_number,
        "disc_count": report.disc_count,
        "signed": report.signed,
        "signer": None
        if signer is None
        else {
            "subject": plain(signer.subject),
            "fingerprint": plain(signer.fingerprint),
            "trusted": signer.trusted,
        },
        "untrusted_advice": _untrusted_advice(),
        "verdict": {
            "value": verdict.verdict.value,
            "headline": verdict.headline,
            "exit_meaning": verdict.exit_meaning,
            "explanation": list(verdict.explanation),
            "advice": verdict.advice,
        },
        "steps": [
            {
                "number": s.number,
                "title": s.title,
                "state": s.state,
                "label": s.label,
                "detail": s.detail,
            }
            for s in _steps(report)
        ],
        "series": [vars(row) | {"state": row.state} for row in _series_rows(report)],
        "tampered": [_html_image(i, thumbnails) for i in _tampered(report)],
        "findings": [
            {
                "step": f.step,
                "kind": plain(f.kind),
                "path": plain(f.path),
                "message": plain(f.message),
            }
            for f in sorted(report.findings, key=lambda f: (f.step, f.path, f.kind))
        ],
        "not_verifiable": [
            {"path": plain(i.path), "reasons": [plain(r) for r in i.reasons]}
            for i in sorted(report.images, key=lambda i: i.path)
            if i.status is ImageStatus.NOT_VERIFIABLE and _trusted_signature(report)
        ],
        "notes": [plain(n) for n in report.notes],
    }


def render_html_report(
    report: CheckReport,
    *,
    thumbnails: Mapping[str, npt.NDArray[Any]] | None = None,
    checked_at: datetime | None = None,
) -> str:
    """The HTML report as text (see :func:`write_html_report`)."""
    when = checked_at or datetime.now().astimezone()
    html = templating.render(REPORT_TEMPLATE, **_html_context(report, thumbnails or {}, when))
    if "<script" in html.lower():  # the template has none and autoescaping keeps data out
        raise InternalError(
            "the HTML report came out with a <script> element; refusing to write it"
        )
    return html


def write_html_report(
    report: CheckReport,
    out: Path,
    *,
    thumbnails: Mapping[str, npt.NDArray[Any]] | None = None,
    checked_at: datetime | None = None,
) -> None:
    """Write a self-contained, printable (A4) HTML report for the patient record to ``out``.

    ``thumbnails`` maps an image's disc path to one frame of display values (2-D, any dtype):
    the lowest-numbered frame that has a changed region (frame 0 when none); that frame's
    regions are outlined in red. The page is rendered completely before anything is written,
    then written to a temporary file next to ``out`` and renamed over it, so ``out`` is either
    the previous file or the complete new report, never a partial one.
    """
    out = Path(out)
    html = render_html_report(report, thumbnails=thumbnails, checked_at=checked_at)
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give a file name for the report, e.g. report.htm")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write the report to {out}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fp:
            fp.write(html)
            fp.flush()
            os.fsync(fp.fileno())
        os.chmod(tmp, _REPORT_MODE)
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"Cannot write the report to {out}: {exc.strerror or exc}") from exc
        raise


__all__ = [
    "REPORT_TEMPLATE",
    "author_summary",
    "check_json",
    "check_summary",
    "region_text",
    "render_html_report",
    "restore_summary",
    "thumbnail_data_uri",
    "write_html_report",
]
