"""The disc label PDF (discmaker/disc/label.py): its text layer, read back with pdftotext."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from discmaker.disc.label import LabelInfo, label_info, label_pdf_bytes, write_label_pdf
from discmaker.templating import PatientSummary, StudySummary

pytestmark = pytest.mark.skipif(
    shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed"
)

INFO = LabelInfo(
    patient_name="ŁÓDŹ, Zoë",
    patient_id="PID-123",
    birth_date=date(1970, 1, 1),
    studies=((date(2026, 1, 2), "CT CHEST"), (None, "US ABDOMEN")),
    institution="Hôpital Sainte-Anne",
    disc_number=1,
    disc_count=2,
    created=datetime(2026, 12, 2, 18, 0, tzinfo=UTC),
)


def _text(pdf: Path) -> str:
    out = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split())


def test_label_says_what_ihe_pdi_asks(tmp_path: Path) -> None:
    dest = tmp_path / "label.pdf"
    write_label_pdf(INFO, dest)
    text = _text(dest)
    for words in (
        "DICOM ONLY",
        "PID-123",
        "born 1 January 1970",
        "Study of 2 January 2026: CT CHEST",
        "Study (no date): US ABDOMEN",
        "Hôpital Sainte-Anne",
        "Disc 1 of 2",
        "Created 2 December 2026",
    ):
        assert words in text
    assert "Zoë" in text
    assert [p.name for p in tmp_path.iterdir()] == ["label.pdf"]  # no partial file left


def test_without_a_unicode_font_names_are_transliterated(tmp_path: Path) -> None:
    dest = tmp_path / "label.pdf"
    info = LabelInfo(**{**vars(INFO), "patient_name": "ŁÓDŹ, Zoë Иван"})
    dest.write_bytes(label_pdf_bytes(info, unicode_fonts=False))
    text = _text(dest)
    assert "LÓDZ, Zoë ????" in text  # Latin-1 kept, Ł and Ź spelled, Cyrillic as '?'
    assert "DICOM ONLY" in text


def test_label_info_from_the_patients_on_a_disc() -> None:
    patient = PatientSummary(name="DOE^JANE", id="P1", birth_date="19700101", sex="F")
    patient.studies["1.2.3"] = StudySummary(date="20260102", description="CT", accession="A1")
    patient.studies["1.2.4"] = StudySummary(date="", description="", accession="")
    info = label_info(
        [patient], institution="Clinic", disc_number=2, disc_count=3, created=INFO.created
    )
    assert info.birth_date == date(1970, 1, 1)
    assert info.studies == ((date(2026, 1, 2), "CT"), (None, ""))
    assert (info.patient_name, info.patient_id, info.disc_number) == ("DOE, JANE", "P1", 2)


def test_one_page_per_disc_of_a_set(tmp_path: Path) -> None:
    dest = tmp_path / "labels.pdf"
    write_label_pdf([INFO, LabelInfo(**{**vars(INFO), "disc_number": 2})], dest)
    pages = _text(dest).count("Patient imaging disc")
    assert pages == 2
    assert "Disc 1 of 2" in _text(dest) and "Disc 2 of 2" in _text(dest)
    with pytest.raises(ValueError):
        label_pdf_bytes([])
