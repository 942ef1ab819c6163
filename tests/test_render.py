"""What people read: terminal summaries, the versioned JSON report and the HTML report."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image
from rich.console import Console, RenderableType

from discmaker import templating
from discmaker.disc.media import Medium
from discmaker.errors import OutputError
from discmaker.models import (
    CHECK_REPORT_FORMAT,
    REPORT_VERSION,
    CheckReport,
    Finding,
    ImageStatus,
    ImageVerdict,
    Region,
    RestoreResult,
    Signer,
)
from discmaker.ui import render, report_html, wording

FINGERPRINT = "SHA256:3F:A1:77:0C:9E:12:DE:AD:BE:EF"


def _shows_fingerprint(text: str) -> bool:
    """The terminal shows the fingerprint in two halves, each unbroken."""
    parts = FINGERPRINT.split(":")
    half = len(parts) // 2
    return ":".join(parts[:half]) + ":" in text and ":".join(parts[half:]) in text


SUBJECT = "O=City Imaging Centre,CN=City Imaging Centre"
EVIL = "DICOM/<script>alert(1)</script>/IM9"
WHEN = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)


def _images(n: int, series: str, status: ImageStatus = ImageStatus.OK) -> list[ImageVerdict]:
    folder = series.replace(" ", "")
    return [
        ImageVerdict(
            path=f"DICOM/{folder}/IM{k}",
            status=status,
            sop_instance_uid=f"1.2.3.{folder}.{k}",
            series_uid=f"1.2.3.{folder}",
            series_label=series,
        )
        for k in range(n)
    ]


@pytest.fixture
def clean() -> CheckReport:
    images = (
        *_images(3, "CT 2"),
        *_images(2, "CT 10"),
        *_images(1, "SR 99", ImageStatus.MANIFEST_ONLY),
    )
    return CheckReport(
        source="/media/cdrom",
        signed=True,
        signature_valid=True,
        signer=Signer(SUBJECT, FINGERPRINT, trusted=True),
        images=images,
        findings=(),
        fileset_id="CITY0001",
    )


@pytest.fixture
def tampered(clean: CheckReport) -> CheckReport:
    header = ImageVerdict(
        path="DICOM/CT2/IM1",
        status=ImageStatus.TAMPERED,
        reasons=("(0010,0010) Patient's Name differs from the signed value.",),
        attributes=("PatientName", "PatientID"),
        sop_instance_uid="1.2.3.CT2.1",
        series_label="CT 2",
    )
    pixels = ImageVerdict(
        path="DICOM/CT10/IM0",
        status=ImageStatus.TAMPERED,
        reasons=("The watermark of 2 areas does not match the pixels.",),
        regions=(Region(2, 64, 0, 128, 64), Region(0, 10, 20, 40, 60)),
        sop_instance_uid="1.2.3.CT10.0",
        series_label="CT 10",
    )
    evil = ImageVerdict(
        path=EVIL,
        status=ImageStatus.TAMPERED,
        reasons=("[bold red]markup[/] and \x1b[31mescape\x1b[0m",),
        series_label="CT 10",
    )
    by_path = {i.path: i for i in clean.images}
    by_path.update({i.path: i for i in (header, pixels, evil)})
    return replace(
        clean,
        images=tuple(by_path.values()),
        findings=(
            Finding(2, "missing", "DICOM/CT2/IM7", "listed in the signed manifest, not on disc"),
            Finding(2, "extra", "VIEWER/RUN.EXE", "on the disc but not in the signed manifest"),
        ),
    )


@pytest.fixture
def untrusted(clean: CheckReport) -> CheckReport:
    return replace(clean, signer=Signer(SUBJECT, FINGERPRINT, trusted=False))


@pytest.fixture
def unsigned() -> CheckReport:
    return CheckReport(
        source="vendor.iso",
        signed=False,
        signature_valid=False,
        signer=None,
        images=tuple(_images(4, "MR 3", ImageStatus.NOT_VERIFIABLE)),
        findings=(),
        notes=("The disc has no DISCSIG folder.",),
    )


def _text(renderable: RenderableType) -> str:
    console = Console(record=True, width=120, color_system="truecolor")
    console.print(renderable)
    return console.export_text()


def _doc(report: CheckReport) -> dict[str, Any]:
    return cast(dict[str, Any], report.to_json())


def _plain_types(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_types(v) for v in value)
    return value is None or type(value) in (str, int, bool)


class _StrictParser(HTMLParser):
    """Fails on unbalanced or mis-nested tags, which html.parser alone would accept."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "col", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]} at {self.getpos()}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _StrictParser:
    parser = _StrictParser()
    parser.feed(html)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


# -- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "verdict", "exit_code"),
    [
        ("clean", "verified", 0),
        ("tampered", "tampered", 1),
        ("untrusted", "not-verifiable", 2),
        ("unsigned", "not-verifiable", 2),
    ],
)
def test_check_json_is_versioned_plain_and_round_trips(
    name: str, verdict: str, exit_code: int, request: pytest.FixtureRequest
) -> None:
    report: CheckReport = request.getfixturevalue(name)
    doc = _doc(report)
    assert json.loads(json.dumps(doc)) == doc
    assert _plain_types(doc)
    assert doc["format"] == CHECK_REPORT_FORMAT
    assert doc["format_version"] == REPORT_VERSION
    assert doc["verdict"] == verdict
    assert doc["exit_code"] == exit_code == report.exit_code
    assert set(doc) >= {"source", "signed", "signature_valid", "signer", "disc", "summary"}
    assert set(doc["summary"]) == {"ok", "tampered", "manifest-only", "not-verifiable"}
    assert sum(doc["summary"].values()) == len(report.images)


def test_check_json_tampered_details(tampered: CheckReport) -> None:
    doc = _doc(tampered)
    assert doc["summary"] == {"ok": 3, "tampered": 3, "manifest-only": 1, "not-verifiable": 0}
    signer = {"subject": SUBJECT, "fingerprint": FINGERPRINT, "trusted": True}
    assert doc["signer"].items() >= signer.items()
    assert doc["disc"] == {"fileset_id": "CITY0001", "number": 1, "count": 1, "missing": []}
    images = {i["path"]: i for i in doc["images"]}
    header = images["DICOM/CT2/IM1"]
    assert header["status"] == "tampered"
    assert header["attributes"] == ["PatientID", "PatientName"]
    assert header["series"] == "CT 2"
    assert header["sop_instance_uid"] == "1.2.3.CT2.1"
    assert images["DICOM/CT10/IM0"]["regions"] == [  # frames counted from 1, as the text does
        {"frame": 1, "row0": 10, "col0": 20, "row1": 40, "col1": 60},
        {"frame": 3, "row0": 64, "col0": 0, "row1": 128, "col1": 64},
    ]
    assert images[EVIL]["path"] == EVIL  # JSON keeps the data as found; json.dumps escapes
    assert [(f["step"], f["kind"]) for f in doc["findings"]] == [
        (2, "missing"),  # by step, then path
        (2, "extra"),
    ]


def test_check_json_is_deterministic(tampered: CheckReport) -> None:
    shuffled = replace(
        tampered,
        images=tuple(reversed(tampered.images)),
        findings=tuple(reversed(tampered.findings)),
    )
    first = json.dumps(tampered.to_json())
    assert json.dumps(shuffled.to_json()) == first
    paths = [i["path"] for i in _doc(tampered)["images"]]
    assert paths == sorted(paths)


def test_check_json_unsigned_has_no_signer(unsigned: CheckReport) -> None:
    doc = _doc(unsigned)
    assert doc["signer"] is None
    assert doc["signed"] is False
    assert doc["notes"] == ["The disc has no DISCSIG folder."]
    assert doc["summary"] == {"ok": 0, "tampered": 0, "manifest-only": 0, "not-verifiable": 4}


# -- terminal ------------------------------------------------------------------------------


def test_check_summary_clean(clean: CheckReport) -> None:
    text = _text(render.check_summary(clean))
    for n in range(1, 6):
        assert f"({n})" in text
    assert "CT 2" in text and "CT 10" in text and "SR 99" in text
    assert text.index("CT 2 ") < text.index("CT 10")  # natural order, not "CT 10" < "CT 2"
    assert "VERIFIED" in text
    assert "exit code 0" in text
    assert "FAILED" not in text
    assert _shows_fingerprint(text)
    assert "trust add" not in text


def test_check_summary_tampered(tampered: CheckReport) -> None:
    text = _text(render.check_summary(tampered))
    assert "TAMPERED" in text and "exit code 1" in text
    assert "(3) FAILED" in text and "(4) FAILED" in text and "(2) FAILED" in text
    assert "(1) OK" in text
    assert "PatientID, PatientName" in text
    assert "frame 1, rows 10-39, columns 20-59" in text
    assert "frame 3, rows 64-127, columns 0-63" in text
    assert "DICOM/CT2/IM7" in text and "VIEWER/RUN.EXE" in text
    # Disc data is shown as text: rich markup is not interpreted, escapes are neutralised.
    assert "[bold red]markup[/]" in text
    assert "\x1b" not in text
    assert EVIL in text


def test_check_summary_escape_codes_never_reach_the_terminal(tampered: CheckReport) -> None:
    console = Console(record=True, width=120, force_terminal=True, color_system="truecolor")
    console.print(render.check_summary(tampered))
    styled = console.export_text(styles=True)
    assert "\x1b[31mescape" not in styled


def test_check_summary_untrusted_tells_what_to_do(untrusted: CheckReport) -> None:
    text = _text(render.check_summary(untrusted))
    assert "NOT VERIFIABLE" in text and "exit code 2" in text
    assert _shows_fingerprint(text)
    assert "telephone" in text
    assert "discmaker trust add" in text
    assert "(1) CAUTION" in text
    assert "TAMPERED" not in text


def test_check_summary_unsigned(unsigned: CheckReport) -> None:
    text = _text(render.check_summary(unsigned))
    assert "NOT VERIFIABLE" in text and "exit code 2" in text
    assert "not made with discmaker" in text
    assert "MR 3" in text
    assert "(3) OK" in text and "Consistent" in text  # checked against the DICOMDIR
    assert "The disc has no DISCSIG folder." in text


def test_check_summary_empty_disc_never_looks_verified(clean: CheckReport) -> None:
    text = _text(render.check_summary(replace(clean, images=())))
    assert "NOT VERIFIABLE" in text
    assert "no images" in text.lower()


def test_restore_summary(tampered: CheckReport) -> None:
    result = RestoreResult(
        report=tampered,
        out="/srv/import",
        restored=("/srv/import/IM0.dcm",),
        tampered_written=("/srv/altered/IM1.dcm",),
        refused=("DICOM/CT2/IM1", "DICOM/CT10/IM0", EVIL),
        held_back=("DICOM/CT10/IM0",),
    )
    text = _text(render.restore_summary(result))
    assert "1 verified original written to /srv/import" in text
    assert "(under /srv/altered) for investigation only. Do not import them" in text
    assert "2 images not restored" in text
    assert "1 verified image held back too" in text and "--allow-partial" in text
    assert "(5)" in text


def test_author_summary() -> None:
    from discmaker.author.create import AuthorResult

    result = AuthorResult(
        out=Path("/tmp/out dir/disc.iso"),
        format="iso",
        label="CITY0001",
        medium=Medium.CD,
        images=12,
        watermarked=11,
        manifest_only=(("DICOM/SR/IM0", "structured report: no pixels"),),
        bytes_written=123_456_789,
        patients=1,
        studies=1,
        series=2,
        non_dicom_skipped=3,
        duplicates_skipped=0,
        dicomdirs_skipped=1,
        fingerprint=FINGERPRINT,
        seconds=4.2,
        summary=[
            {
                "name": "DOE^JANE",
                "id": "P123",
                "birth_date": "19700101",
                "sex": "F",
                "studies": [
                    {
                        "date": "20260101",
                        "description": "CT CHEST [contrast]",
                        "accession": "A1",
                        "series": [
                            {"number": "2", "modality": "CT", "description": "", "images": 11},
                            {"number": "99", "modality": "SR", "description": "", "images": 1},
                        ],
                    }
                ],
            }
        ],
    )
    text = _text(render.author_summary(result))
    assert "disc.iso" in text
    assert "CITY0001" in text and "CD" in text and "123.5 MB" in text
    assert "DOE, JANE" in text and "CT CHEST [contrast]" in text and "CT 2" in text
    assert "born 1 Jan 1970 (1970-01-01)" in text and "19700101" not in text
    assert "Study of 1 Jan 2026 (2026-01-01)" in text and "20260101" not in text
    assert "11 of 12 images carry a watermark" in text
    assert "structured report: no pixels" in text
    assert "3 not DICOM" in text and "1 old DICOMDIR" in text
    assert _shows_fingerprint(text)
    assert "discmaker check '/tmp/out dir/disc.iso' --trust CERT" in text


# -- HTML ----------------------------------------------------------------------------------


def _gradient(rows: int, cols: int, dtype: type = np.uint16) -> np.ndarray[Any, Any]:
    y, x = np.mgrid[0:rows, 0:cols]
    return np.asarray((x + y) * 7, dtype=dtype)


def test_html_report_tampered(tampered: CheckReport, tmp_path: Path) -> None:
    out = tmp_path / "report.htm"
    thumbs = {"DICOM/CT10/IM0": _gradient(512, 512)}
    report_html.write_html_report(tampered, out, thumbnails=thumbs, checked_at=WHEN)
    html = out.read_text(encoding="utf-8")
    parser = _parse(html)
    text = " ".join(parser.text)
    assert "TAMPERED" in text
    assert FINGERPRINT in text and SUBJECT in text
    assert "2026-03-04 10:30" in text
    for n in range(1, 6):
        assert f"({n})" in text
    for path in ("DICOM/CT2/IM1", "DICOM/CT10/IM0", EVIL, "VIEWER/RUN.EXE"):
        assert path in text
    assert "frame 1, rows 10-39, columns 20-59" in text
    assert "PatientName" in text
    # The hostile path is text, not markup, and nothing executable is in the page.
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert not any(tag == "script" for tag, _ in parser.tags)
    # Self-contained: the only image source is inline data.
    sources = [attrs.get("src") or "" for tag, attrs in parser.tags if tag == "img"]
    assert len(sources) == 1 and sources[0].startswith("data:image/")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//|file:)", html)
    assert "@page" in html and "A4" in html


def test_html_report_clean_untrusted_and_unsigned(
    clean: CheckReport, untrusted: CheckReport, unsigned: CheckReport
) -> None:
    html = report_html.render_html_report(clean, checked_at=WHEN)
    text = " ".join(_parse(html).text)
    assert "VERIFIED" in text and "FAILED" not in text and FINGERPRINT in text
    assert "CT 2" in text and "CT 10" in text and "SR 99" in text

    text = " ".join(_parse(report_html.render_html_report(untrusted, checked_at=WHEN)).text)
    assert "NOT VERIFIABLE" in text and FINGERPRINT in text and "telephone" in text

    text = " ".join(_parse(report_html.render_html_report(unsigned, checked_at=WHEN)).text)
    assert "NOT VERIFIABLE" in text and "not made with discmaker" in text


def _decode(uri: str) -> Image.Image:
    header, data = uri.split(",", 1)
    assert header in ("data:image/jpeg;base64", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def _is_red(img: Image.Image, x: int, y: int) -> bool:
    r, g, b = cast(tuple[int, int, int], img.getpixel((x, y)))
    return r > 180 and g < 90 and b < 90


def test_thumbnail_is_scaled_and_outlines_the_region_in_red() -> None:
    pixels = _gradient(512, 384, np.int16)  # rows x cols; grey everywhere, never red
    img = _decode(report_html.thumbnail_data_uri(pixels, [Region(0, 100, 40, 200, 140)]))
    assert img.size == (192, 256)  # longest side 256, aspect kept
    # Box scaled by 0.5: rows 50-100, cols 20-70. Its edges are red, its inside is not.
    assert _is_red(img, 20, 75)  # left edge
    assert _is_red(img, 45, 50)  # top edge
    assert not _is_red(img, 45, 75)  # inside
    assert not _is_red(img, 150, 200)  # elsewhere


@pytest.mark.parametrize(
    "pixels",
    [
        pytest.param(np.full((64, 64), 7, np.uint8), id="flat-uint8"),
        pytest.param(np.arange(-500, 500, dtype=np.int16).reshape(20, 50), id="signed-int16"),
        pytest.param(
            np.where(np.eye(40, dtype=bool), np.nan, np.linspace(0, 1, 1600).reshape(40, 40)),
            id="float-with-nan",
        ),
        pytest.param(np.eye(300, 1000, dtype=bool), id="bool-wide"),
        pytest.param(np.full((3, 3), np.inf), id="all-infinite"),
    ],
)
def test_thumbnail_accepts_any_dtype(pixels: np.ndarray[Any, Any]) -> None:
    img = _decode(report_html.thumbnail_data_uri(pixels, [Region(0, 0, 0, 2, 2)]))
    assert max(img.size) <= report_html.THUMBNAIL_MAX


def test_html_report_with_thumbnail_embeds_data_uri(tampered: CheckReport) -> None:
    html = report_html.render_html_report(
        tampered, thumbnails={"DICOM/CT10/IM0": _gradient(100, 100, np.float32)}, checked_at=WHEN
    )
    assert "data:image/" in html
    assert "Also changed, not shown: frame 3" in html


def test_write_html_report_replaces_atomically(tampered: CheckReport, tmp_path: Path) -> None:
    out = tmp_path / "report.htm"
    out.write_text("old report")
    report_html.write_html_report(tampered, out, checked_at=WHEN)
    assert os.listdir(tmp_path) == ["report.htm"]
    assert "TAMPERED" in out.read_text(encoding="utf-8")


def test_write_html_report_writes_nothing_when_rendering_fails(
    tampered: CheckReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, **context: object) -> str:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(templating, "render", broken)
    out = tmp_path / "report.htm"
    with pytest.raises(RuntimeError, match="template exploded"):
        report_html.write_html_report(tampered, out)
    assert os.listdir(tmp_path) == []

    out.write_text("old report")
    with pytest.raises(RuntimeError):
        report_html.write_html_report(tampered, out)
    assert os.listdir(tmp_path) == ["report.htm"]
    assert out.read_text() == "old report"


def test_write_html_report_bad_thumbnail_writes_nothing(
    tampered: CheckReport, tmp_path: Path
) -> None:
    out = tmp_path / "report.htm"
    with pytest.raises(ValueError, match="2-D"):
        report_html.write_html_report(
            tampered, out, thumbnails={"DICOM/CT10/IM0": np.zeros((2, 2, 2, 2))}
        )
    assert os.listdir(tmp_path) == []


def test_write_html_report_failed_write_leaves_no_temp_file(
    tampered: CheckReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match="Cannot write the report"):
        report_html.write_html_report(tampered, tmp_path / "report.htm")
    assert os.listdir(tmp_path) == []


def test_write_html_report_into_a_folder_is_refused(clean: CheckReport, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a folder"):
        report_html.write_html_report(clean, tmp_path)


def test_region_text() -> None:
    assert wording.region_text(Region(3, 1, 2, 30, 40)) == "frame 4, rows 1-29, columns 2-39"


def test_step_4_counts_the_watermarked_and_the_manifest_only_images(clean: CheckReport) -> None:
    step4 = wording.check_steps(clean)[3]
    assert step4.state == "pass"
    assert step4.detail.startswith("5 of 6 images carry a watermark, all intact; 1 is protected")
    none_marked = replace(clean, images=tuple(_images(5, "SR 1", ImageStatus.MANIFEST_ONLY)))
    step4 = wording.check_steps(none_marked)[3]
    assert "intact" not in step4.detail  # nothing carried a watermark to be intact
    assert step4.detail.startswith("None of the 5 images carries a watermark")


REAL_FINGERPRINT = ":".join(f"{n:02X}" for n in range(0, 256, 8))  # 32 bytes, 95 characters


@pytest.mark.parametrize("width", [120, 200])
def test_fingerprint_on_one_line_when_the_terminal_is_wide_enough(
    clean: CheckReport, width: int
) -> None:
    report = replace(clean, signer=Signer(SUBJECT, REAL_FINGERPRINT, trusted=True))
    console = Console(record=True, width=width, color_system=None)
    console.print(render.check_summary(report))
    lines = console.export_text().splitlines()
    assert any(REAL_FINGERPRINT in line for line in lines)


def test_fingerprint_in_unbroken_halves_in_a_narrow_terminal(clean: CheckReport) -> None:
    report = replace(clean, signer=Signer(SUBJECT, REAL_FINGERPRINT, trusted=True))
    console = Console(record=True, width=80, color_system=None)
    console.print(render.check_summary(report))
    lines = console.export_text().splitlines()
    parts = REAL_FINGERPRINT.split(":")
    first, second = ":".join(parts[:16]) + ":", ":".join(parts[16:])
    assert any(first in line for line in lines) and any(second in line for line in lines)
    assert not any(REAL_FINGERPRINT in line for line in lines)
