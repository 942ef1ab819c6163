"""The HTML report of a check: a self-contained, printable (A4) page for the patient record,
with a thumbnail of every changed image and its changed areas outlined in red.

What the report says is decided in :mod:`discmaker.ui.wording`, shared with the terminal. Every
string that came off a received disc is hostile input: it goes through
:func:`discmaker.ui.wording.plain` and reaches the page only through the autoescaping template,
never as raw HTML.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from discmaker import APP_NAME, __version__, templating
from discmaker.atomic import replace_file
from discmaker.errors import InternalError, OutputError
from discmaker.models import CheckReport, ImageStatus, ImageVerdict, InputKind, Region
from discmaker.ui.wording import (
    certificate_validity,
    check_steps,
    patient_blocks,
    patients_source_text,
    plain,
    region_text,
    series_rows,
    tampered_images,
    trusted_signature,
    untrusted_advice,
    verdict_text,
)

if TYPE_CHECKING:
    import numpy.typing as npt

REPORT_TEMPLATE = "REPORT.HTM.j2"
THUMBNAIL_MAX = 256  # px, longest side of a preview in the HTML report
_THUMBNAIL_MIN = 128  # tiny images are enlarged (nearest neighbour) so the boxes stay visible
_REPORT_MODE = 0o644


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
        caption = f"Frame {frame + 1}"  # frames counted from 1, as everywhere
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


def _sentence(text: str) -> str:
    """``text`` with a capital first letter (Jinja's ``capitalize`` lowers the rest)."""
    return text[:1].upper() + text[1:]


def _html_context(
    report: CheckReport,
    thumbnails: Mapping[str, npt.NDArray[Any]],
    checked_at: datetime,
) -> dict[str, object]:
    verdict = verdict_text(report)
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
        "unsigned": report.unsigned,
        "input": report.kind.value,
        "loose_files": report.kind is InputKind.FILES,
        "not_a_disc": report.kind is InputKind.NOT_A_DISC,
        "patients": [
            {
                "name": b.name,
                "patient_id": b.patient_id,
                "birth_date": b.birth_date,
                "sex": b.sex,
                "studies": [vars(study) for study in b.studies],
            }
            for b in patient_blocks(report)
        ],
        "patients_source": _sentence(patients_source_text(report)),
        "signer": None
        if signer is None
        else {
            "subject": plain(signer.subject),
            "fingerprint": plain(signer.fingerprint),
            "trusted": signer.trusted,
            "validity": certificate_validity(signer),
            "valid_at_signing": signer.valid_at_signing is not False,
        },
        "untrusted_advice": untrusted_advice(report.source),
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
            for s in check_steps(report)
        ],
        "series": [vars(row) | {"state": row.state} for row in series_rows(report)],
        "tampered": [_html_image(i, thumbnails) for i in tampered_images(report)],
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
            if i.status is ImageStatus.NOT_VERIFIABLE and trusted_signature(report)
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
        replace_file(out, html.encode("utf-8"), mode=_REPORT_MODE)
    except OSError as exc:
        raise OutputError(f"Cannot write the report to {out}: {exc.strerror or exc}") from exc


__all__ = [
    "REPORT_TEMPLATE",
    "THUMBNAIL_MAX",
    "render_html_report",
    "thumbnail_data_uri",
    "write_html_report",
]
