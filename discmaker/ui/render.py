"""What people read in the terminal: rich renderables for the CLI and the guide.

(The versioned JSON documents come from the models: :meth:`CheckReport.to_json` and friends.)

Nothing here prints: the CLI prints what these functions return. Every string that came off a
received disc (paths, certificate subjects, reasons) is hostile input, so it is shown as plain
text (:func:`discmaker.ui.wording.plain`), never as rich markup. What a check report says is
decided in :mod:`discmaker.ui.wording`; the HTML report is :mod:`discmaker.ui.report_html`.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
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

from discmaker import APP_NAME
from discmaker.models import (
    CheckReport,
    ImageStatus,
    ImageVerdict,
    InputKind,
    RestoreResult,
    Verdict,
)
from discmaker.people import date_for_people, person_name
from discmaker.ui.wording import (
    STATE_LABEL,
    SeriesRow,
    Step,
    StepState,
    certificate_validity,
    check_steps,
    human_size,
    patient_blocks,
    patients_source_text,
    plain,
    plural,
    region_text,
    series_rows,
    tampered_images,
    trusted_signature,
    untrusted_advice,
    verdict_text,
)

if TYPE_CHECKING:
    from discmaker.author.create import AuthorResult
    from discmaker.format.manifest import OmittedFile

_TERMINAL_IMAGES = 20  # tampered images listed in the terminal; the rest are in --json/--report
_TERMINAL_FINDINGS = 50  # disc-level problems listed (a hostile DICOMDIR can give 100,000s)
_TERMINAL_REGIONS = 5  # regions listed per image in the terminal

_STATE_STYLE: dict[StepState, str] = {
    "pass": "bold green",
    "fail": "bold red",
    "warn": "bold yellow",
    "skip": "bold yellow",
}

_VERDICT_STYLE = {
    Verdict.VERIFIED: "bold green",
    Verdict.IMAGES_VERIFIED: "bold green",
    Verdict.TAMPERED: "bold red",
    Verdict.INCONSISTENT: "bold red",
    Verdict.NOT_VERIFIABLE: "bold yellow",
    Verdict.INCOMPLETE_SET: "bold yellow",
    Verdict.NOT_A_DISC: "bold yellow",
}


# -- progress ------------------------------------------------------------------------------


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


_REDRAW_SECONDS = 0.1


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
        # No refresh thread: redrawn from the callbacks instead, so the process stays
        # single-threaded and its workers can be forked (discmaker.parallel.process_context).
        auto_refresh=False,
    ) as bar:
        tasks: dict[str, TaskID] = {}
        drawn = [0.0]

        def update(stage: str, done: int, total: int) -> None:
            if stage in _BYTE_STAGES:
                done, total = done // 1_000_000, max(1, total // 1_000_000)
            if stage not in tasks:
                tasks[stage] = bar.add_task(PROGRESS_LABELS.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)
            now = time.monotonic()
            if done >= total or now - drawn[0] >= _REDRAW_SECONDS:
                drawn[0] = now
                bar.refresh()

        yield update


# -- JSON ----------------------------------------------------------------------------------


# -- terminal ------------------------------------------------------------------------------


def _mark(state: StepState) -> Text:
    return Text(f"{STATE_LABEL[state]:<11}", style=_STATE_STYLE[state])


def _steps_table(steps: Sequence[Step]) -> Table:
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


def _series_table(rows: Sequence[SeriesRow]) -> Table:
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


def _image_lines(
    image: ImageVerdict, *, max_regions: int | None, unsigned: bool = False
) -> list[Text]:
    lines = [Text.assemble(("  ", ""), (plain(image.path), "bold"))]
    if image.series_label:
        lines[0].append(f"  (series {plain(image.series_label)})")
    if image.attributes:
        changed = ", ".join(plain(a) for a in sorted(image.attributes))
        what = "header disagrees" if unsigned else "header changed"  # nobody signed it
        lines.append(Text(f"    {what}: {changed}"))
    regions = sorted(image.regions, key=lambda r: (r.frame, r.row0, r.col0))
    shown = regions if max_regions is None else regions[:max_regions]
    for region in shown:
        lines.append(Text(f"    pixels changed: {region_text(region)}"))
    if len(regions) > len(shown):
        lines.append(Text(f"    ... and {plural(len(regions) - len(shown), 'more area')}"))
    for reason in image.reasons:
        lines.append(Text(f"    {plain(reason)}"))
    if len(lines) == 1:
        lines.append(Text("    changed after signing"))
    return lines


def _signer_lines(report: CheckReport) -> list[RenderableType]:
    signer = report.signer
    if report.unsigned:
        return []  # nobody signed it: the verdict says what that means
    if signer is None:
        text = "no signer" if not report.signed else "signer certificate missing"
        return [Text.assemble(("Signer       ", "bold"), text)]
    trusted = Text("yes", style="green") if signer.trusted else Text("NO", style="bold yellow")
    lines: list[RenderableType] = [
        Text.assemble(("Signer       ", "bold"), plain(signer.subject)),
        _Fingerprint(signer.fingerprint, "Fingerprint  "),
        Text.assemble(("Trusted      ", "bold"), trusted),
    ]
    validity = certificate_validity(signer)
    if validity:
        ok = signer.valid_at_signing is not False
        lines.append(Text.assemble(("Certificate  ", "bold"), (validity, "" if ok else "bold red")))
    if not signer.trusted:
        lines.append(Text(untrusted_advice(report.source), style="yellow"))
    return lines


def _patients_tree(report: CheckReport) -> Tree | None:
    """Whose disc it is: patient -> studies (date, description, accession, contents)."""
    blocks = patient_blocks(report)
    if not blocks:
        return None
    title = "Patient" if len(blocks) == 1 else f"Patients ({len(blocks)})"
    tree = Tree(
        Text.assemble((title, "bold"), f"  ({patients_source_text(report)})"), guide_style="dim"
    )
    for block in blocks:
        details = "  ".join(
            f"{label} {value}"
            for label, value in (
                ("ID", block.patient_id),
                ("born", block.birth_date),
                ("sex", block.sex),
            )
            if value
        )
        node = tree.add(Text.assemble((block.name, "bold"), "  ", details))
        for study in block.studies:
            line = f"Study {study.date or '(no date)'}"
            if study.description:
                line += f"  {study.description}"
            if study.accession:
                line += f"  accession {study.accession}"
            node.add(Text(f"{line}  ({study.contents})"))
    return tree


def check_summary(report: CheckReport) -> RenderableType:
    """The terminal summary of a check: patient, steps, series table, what changed, verdict,
    signer."""
    steps = check_steps(report)
    verdict = verdict_text(report)
    parts: list[RenderableType] = []
    where = Text.assemble(("Checked ", "bold"), plain(report.source))
    if report.fileset_id or report.disc_count > 1:
        where.append(f"  (disc {plain(report.fileset_id) or '?'}")
        if report.disc_count > 1:
            where.append(f", {report.disc_number} of {report.disc_count}")
        where.append(")")
    parts.append(where)
    patients = _patients_tree(report)
    if patients is not None:
        parts.append(patients)
    parts.append(_steps_table(steps))
    rows = series_rows(report)
    if rows:
        parts.append(_series_table(rows))
    elif report.kind is not InputKind.NOT_A_DISC:
        parts.append(Text("No images were found on the disc.", style="yellow"))

    tampered = tampered_images(report)
    if tampered:
        heading = "Images with problems" if report.unsigned else "Changed images"
        parts.append(Text(f"{heading} ({len(tampered)})", style="bold red"))
        for image in tampered[:_TERMINAL_IMAGES]:
            parts.extend(
                _image_lines(image, max_regions=_TERMINAL_REGIONS, unsigned=report.unsigned)
            )
        if len(tampered) > _TERMINAL_IMAGES:
            parts.append(
                Text(
                    f"  ... and {plural(len(tampered) - _TERMINAL_IMAGES, 'more image')}; "
                    "the full list is in the --json and --report output."
                )
            )
    if report.findings:
        parts.append(Text(f"Problems with the disc ({len(report.findings)})", style="bold red"))
        ordered = sorted(report.findings, key=lambda f: (f.step, f.path, f.kind))
        for f in ordered[:_TERMINAL_FINDINGS]:
            parts.append(
                Text(
                    f"  ({f.step}) {plain(f.kind)}: {plain(f.path) or '(disc)'}: {plain(f.message)}"
                )
            )
        if len(ordered) > _TERMINAL_FINDINGS:
            parts.append(
                Text(
                    f"  ... and {plural(len(ordered) - _TERMINAL_FINDINGS, 'more problem')}; "
                    "the full list is in the --json and --report output."
                )
            )
    not_verifiable = sorted(
        (i for i in report.images if i.status is ImageStatus.NOT_VERIFIABLE and i.reasons),
        key=lambda i: i.path,
    )
    if not_verifiable and trusted_signature(report):
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
                f"{plural(len(result.restored), 'verified original')} written to {out}, "
                "ready for PACS import.",
                style="green",
            )
        )
    else:
        lines.append(
            Text("No images were written for import; no folder was made.", style="bold yellow")
        )
    if result.tampered_written:
        where = plain(Path(result.tampered_written[0]).parent) if result.tampered_written else ""
        lines.append(
            Text(
                f"{plural(len(result.tampered_written), 'altered image')} copied apart "
                f"(under {where}) for investigation only. Do not import them.",
                style="bold red",
            )
        )
    held = set(result.held_back)
    failed = [p for p in sorted(result.refused) if p not in held]
    if failed:
        lines.append(
            Text(
                f"{plural(len(failed), 'image')} not restored (changed or not verifiable):",
                style="yellow",
            )
        )
        for path in failed[:_TERMINAL_IMAGES]:
            lines.append(Text(f"  {plain(path)}"))
        if len(failed) > _TERMINAL_IMAGES:
            lines.append(Text(f"  ... and {len(failed) - _TERMINAL_IMAGES} more"))
    if held:
        lines.append(
            Text(
                f"{plural(len(held), 'verified image')} held back too: their series has an "
                "image that did not verify, and a PACS would file it as complete. To restore "
                "them anyway, run restore again with --allow-partial.",
                style="yellow",
            )
        )
    style = _VERDICT_STYLE[result.report.verdict].replace("bold ", "")
    return Group(
        check_summary(result.report),
        Panel(Group(*lines), title="Restore", title_align="left", border_style=style),
    )


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
        born = date_for_people(_field(patient, "birth_date"), "")
        details = "  ".join(
            f"{label} {value}"
            for label, value in (
                ("ID", _field(patient, "id")),
                ("born", born),
                ("sex", _field(patient, "sex")),
            )
            if value
        )
        name = person_name(_field(patient, "name")) or "(no name)"
        node = tree.add(Text.assemble((name, "bold"), "  ", details))
        for study in _children(patient, "studies"):
            accession = _field(study, "accession")
            study_node = node.add(
                Text(
                    f"Study of {date_for_people(_field(study, 'date'), '(no date)')}  "
                    f"{_field(study, 'description')}"
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
                        f"{label:<7} {plural(count, 'image'):>10}  {_field(series, 'description')}"
                    )
                )
    return tree


class _Fingerprint:
    """A SHA-256 fingerprint on one line when the terminal is wide enough (as ``trust list``
    and a telephone call read it), else in two halves; never broken mid-byte."""

    def __init__(self, fingerprint: str, label: str = "") -> None:
        self.fingerprint = plain(fingerprint)
        self.label = label

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        fp = self.fingerprint
        parts = fp.split(":")
        if len(self.label) + len(fp) <= options.max_width or len(parts) < 2:
            yield Text.assemble((self.label, "bold"), fp, no_wrap=True, overflow="ignore")
            return
        half = len(parts) // 2
        indent = " " * len(self.label)
        yield Text.assemble((self.label, "bold"), ":".join(parts[:half]) + ":")
        yield Text(indent + ":".join(parts[half:]))


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
    size = human_size(result.bytes_written)
    if isinstance(capacity, int) and capacity > 0:
        size += f" of {human_size(capacity)} ({100 * result.bytes_written / capacity:.0f} %)"
    parts.append(
        Text.assemble(("Label       ", "bold"), f"{result.label}   {medium.name}   {size}")
    )
    parts.append(
        Text.assemble(
            ("Contents    ", "bold"),
            ", ".join(
                (
                    plural(result.patients, "patient"),
                    plural(result.studies, "study", "studies"),
                    plural(result.series, "series", "series"),
                    plural(result.images, "image"),
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
                f"{plural(len(result.manifest_only), 'image')} carry no watermark and are "
                "protected by the signed list of files only:",
                style="yellow",
            )
        )
        by_reason: dict[str, list[str]] = {}
        for file_id, reason in result.manifest_only:
            by_reason.setdefault(plain(reason), []).append(plain(file_id))
        for reason, files in sorted(by_reason.items()):
            listed = ", ".join(sorted(files)[:5]) + (" ..." if len(files) > 5 else "")
            parts.append(Text(f"  {reason}: {plural(len(files), 'image')} ({listed})"))

    for note in result.notes:
        parts.append(Text(plain(note), style="yellow"))

    skipped = [
        (result.non_dicom_skipped, "not DICOM"),
        (result.duplicates_skipped, "identical duplicate"),
        (result.dicomdirs_skipped, "old DICOMDIR"),
    ]
    skipped_text = ", ".join(f"{n} {what}" for n, what in skipped if n) or "none"
    parts.append(Text.assemble(("Skipped     ", "bold"), f"{skipped_text} (files left out)"))
    if result.omitted:
        parts.extend(_omitted_lines(result.omitted))
    if result.label_pdf is not None:
        parts.append(Text.assemble(("Label PDF   ", "bold"), plain(result.label_pdf)))
    parts.append(Text.assemble(("Signed by   ", "bold"), "key with SHA-256 fingerprint"))
    parts.append(_Fingerprint(result.fingerprint))
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
    if result.omitted:
        title, border = "Disc ready, with files left out", "yellow"
    else:
        title, border = "Disc ready", "green"
    return Panel(Group(*parts), title=title, title_align="left", border_style=border)


_OMITTED_SHOWN = 20


def _omitted_lines(omitted: Sequence[OmittedFile]) -> list[RenderableType]:
    """The files ``--skip-unusable`` left out, each with its problem (the first 20)."""
    lines: list[RenderableType] = [
        Text.assemble(
            ("Left out    ", "bold"),
            (
                f"{plural(len(omitted), 'file')} could not go on the disc (named in its "
                "README.TXT and manifest too); send them another way if they are needed:",
                "yellow",
            ),
        )
    ]
    for item in omitted[:_OMITTED_SHOWN]:
        lines.append(Text(f"  {plain(item.file)}: {plain(item.reason)}"))
    if len(omitted) > _OMITTED_SHOWN:
        lines.append(Text(f"  ... and {len(omitted) - _OMITTED_SHOWN} more"))
    return lines


__all__ = [
    "PROGRESS_LABELS",
    "ProgressFn",
    "author_summary",
    "check_summary",
    "progress_bars",
    "restore_summary",
]
