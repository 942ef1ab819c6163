"""The disc label: one A4 page per disc, to print on a CD/DVD label sheet or put in the case.

IHE PDI (ITI TF-1, 15.4.1.3) asks the label of a patient disc to name the patient, the
study or studies (date and description), the institution that made it, the disc's number
in a set, and to say "DICOM ONLY" for a disc that carries no viewer. :func:`write_label_pdf`
draws that inside a 120 mm disc outline (with its 22 mm hub), and repeats it, with every
study, below the outline as a case insert.

The PDF has a real text layer (``pdftotext`` extracts every word). Names in any script
render when a Unicode TrueType font is installed (DejaVu Sans: Debian/Ubuntu package
fonts-dejavu-core, Fedora dejavu-sans-fonts; CJK from Noto CJK or Droid Sans Fallback when
present); a character no installed font has is transliterated (``Łódź`` -> ``Lodz``, other
scripts -> ``?``) and the PDF's built-in Helvetica is used when no such font is installed at
all. The output depends on nothing else than its arguments and the fonts found, and appears
whole or not at all (:func:`discmaker.atomic.replace_file`).
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path

from discmaker.atomic import replace_file
from discmaker.errors import OutputError
from discmaker.people import long_date, parse_da, person_name, plain
from discmaker.templating import PatientSummary

log = logging.getLogger(__name__)

DICOM_ONLY = "DICOM ONLY"

# Where the usual Linux distributions and macOS (Homebrew, MacPorts) install DejaVu Sans.
_UNICODE_FONTS: tuple[tuple[Path, Path], ...] = tuple(
    (Path(folder) / "DejaVuSans.ttf", Path(folder) / "DejaVuSans-Bold.ttf")
    for folder in (
        "/usr/share/fonts/truetype/dejavu",  # Debian, Ubuntu
        "/usr/share/fonts/dejavu-sans-fonts",  # Fedora, RHEL
        "/usr/share/fonts/dejavu",  # openSUSE, older Fedora
        "/usr/share/fonts/TTF",  # Arch
        "/usr/local/share/fonts/dejavu",  # FreeBSD
        "/opt/homebrew/share/fonts",
        "/opt/local/share/fonts/dejavu-fonts",
    )
)
# Fonts for characters DejaVu lacks (Chinese, Japanese, Korean), tried in this order.
_FALLBACK_FONTS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/google-droid-sans-fonts/DroidSansFallbackFull.ttf"),
)
# Letters NFKD does not take apart into a base letter and marks.
_LATIN = str.maketrans(
    {
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Ħ": "H",
        "ħ": "h",
        "\u0131": "i",
        "Œ": "OE",
        "œ": "oe",
        "Ŧ": "T",
        "ŧ": "t",
        "\u017f": "s",
        "Ŋ": "N",
        "ŋ": "n",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
    }
)

_PAGE_W = 210.0  # A4, millimetres
_CX, _CY, _RADIUS, _HUB = 105.0, 82.0, 60.0, 11.0
_MARGIN = 5.0  # kept clear inside the disc outline
_MAX_STUDIES_ON_DISC = 3


@dataclass(frozen=True)
class LabelInfo:
    """What the label of one disc says, as it is to be shown (``DOE, JANE``, not the DICOM
    form ``DOE^JANE``: :func:`label_info` makes it from the DICOM values)."""

    patient_name: str
    patient_id: str
    birth_date: date | None
    studies: tuple[tuple[date | None, str], ...]  # (study date, description), disc order
    institution: str
    disc_number: int
    disc_count: int
    created: datetime
    # One more line, as the requester wrote it (a Media Creation request's Label Text): on
    # the disc above the studies, and in the case insert; "" for none.
    text: str = ""
    # False: a Media Creation request asked for a label without information extracted from
    # the instances (Label Using Information Extracted From Instances NO): no patient, no
    # study, only ``text`` and the disc's own facts
    from_instances: bool = True


def label_info(
    patients: Iterable[PatientSummary],
    *,
    institution: str,
    disc_number: int,
    disc_count: int,
    created: datetime,
    text: str = "",
    from_instances: bool = True,
) -> LabelInfo:
    """The label of one disc from the patients and studies on it (several patients, on a disc
    authored with mixed patients allowed, are named one after the other); with
    ``from_instances`` False, from ``text`` and the disc's own facts only."""
    patients = list(patients) if from_instances else []
    names = [person_name(n) for n in _distinct(p.name for p in patients)]
    births = _distinct(p.birth_date for p in patients)
    return LabelInfo(
        patient_name="; ".join(names),
        patient_id="; ".join(_distinct(p.id for p in patients)),
        birth_date=parse_da(births[0]) if len(births) == 1 else None,
        studies=tuple(
            (parse_da(s.date), s.description) for p in patients for s in p.studies.values()
        ),
        institution=institution,
        disc_number=disc_number,
        disc_count=disc_count,
        created=created,
        text=" ".join(text.split())[:200],  # one line, as the label has room for
        from_instances=from_instances,
    )


def write_label_pdf(labels: LabelInfo | Sequence[LabelInfo], dest: Path) -> None:
    """Write the labels (one page per disc of a set) as the PDF ``dest``, replacing it whole.

    Raises :class:`OutputError` when ``dest`` cannot be written.
    """
    data = label_pdf_bytes(labels)
    try:
        replace_file(dest, data)
    except OSError as exc:
        raise OutputError(
            f"The disc label {dest} could not be written ({exc.strerror or exc}). Choose a "
            "folder you can write to, or free some space."
        ) from exc
    log.debug("label: %s written, %d bytes", dest.name, len(data))


def label_pdf_bytes(
    labels: LabelInfo | Sequence[LabelInfo], *, unicode_fonts: bool = True
) -> bytes:
    """The label PDF's bytes, one page per label. ``unicode_fonts=False`` uses the built-in
    Helvetica only (what a computer without DejaVu Sans gets; the tests check the
    transliteration with it)."""
    pages = (labels,) if isinstance(labels, LabelInfo) else tuple(labels)
    if not pages:
        raise ValueError("a label PDF needs at least one disc")
    fonts = _installed_fonts() if unicode_fonts else None
    return bytes(_Label(pages, fonts).output())


# -- drawing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fonts:
    regular: Path
    bold: Path
    fallbacks: tuple[Path, ...]


@cache
def _installed_fonts() -> _Fonts | None:
    for regular, bold in _UNICODE_FONTS:
        if regular.is_file() and bold.is_file():
            fallbacks = tuple(p for p in _FALLBACK_FONTS if p.is_file())
            return _Fonts(regular=regular, bold=bold, fallbacks=fallbacks)
    log.debug("label: no Unicode font installed; Helvetica with transliteration")
    return None


class _Label:
    """The labels of a set drawn with fpdf2, a page each; a new object per PDF (fpdf2 objects
    are not shared between threads)."""

    def __init__(self, pages: Sequence[LabelInfo], fonts: _Fonts | None) -> None:
        from fpdf import FPDF  # noqa: PLC0415 (0.7 s to import: only when a label is made)

        info = self.info = pages[0]
        pdf = FPDF(orientation="P", unit="mm", format="A4")
        pdf.set_auto_page_break(auto=False)
        pdf.set_margins(15, 15, 15)
        pdf.set_creation_date(info.created)
        pdf.set_producer("discmaker")
        pdf.set_creator("discmaker")
        pdf.set_title(
            f"Disc label: {plain(info.patient_name if info.from_instances else info.text)}"
        )
        pdf.set_lang("en")
        self.cmap: set[int] | None = None  # None: Helvetica (Latin-1)
        if fonts is not None:
            pdf.add_font("label", "", str(fonts.regular))
            pdf.add_font("label", "B", str(fonts.bold))
            covered: set[int] = set()
            names = []
            for n, path in enumerate(fonts.fallbacks):
                name = f"fallback{n}"
                pdf.add_font(name, "", str(path))
                pdf.add_font(name, "B", str(path))
                names.append(name)
            for font in pdf.fonts.values():
                covered |= set(getattr(font, "cmap", {}))
            if names:
                pdf.set_fallback_fonts(names, exact_match=False)
            self.cmap = covered
            self.family = "label"
        else:
            self.family = "helvetica"
        self.pdf = pdf
        for page in pages:
            self.info = page
            pdf.add_page()
            self._disc()
            self._insert()

    def output(self) -> bytearray:
        return self.pdf.output()

    # Text --------------------------------------------------------------------------------

    def text(self, value: object) -> str:
        """``value`` as one line the fonts can draw."""
        out = []
        for ch in plain(value):
            if self._drawable(ch):
                out.append(ch)
                continue
            spelled = unicodedata.normalize("NFKD", ch.translate(_LATIN))
            bare = "".join(c for c in spelled if not unicodedata.combining(c))
            out.append(bare if bare and all(self._drawable(c) for c in bare) else "?")
        return "".join(out)

    def _drawable(self, ch: str) -> bool:
        if self.cmap is None:
            return ord(ch) < 256 and ch.isprintable()
        return ord(ch) in self.cmap or ch == " "

    def line(self, y: float, value: str, *, size: float, bold: bool = False, width: float) -> None:
        """``value`` centred on the page at height ``y`` (mm), shrunk to fit ``width``,
        shortened with "..." when it does not fit at 6 pt either."""
        pdf = self.pdf
        text = self.text(value)
        style = "B" if bold else ""
        pdf.set_font(self.family, style, size)
        while pdf.get_string_width(text) > width and size > 6:
            size -= 0.5
            pdf.set_font(self.family, style, size)
        if pdf.get_string_width(text) > width:
            while text and pdf.get_string_width(text + "...") > width:
                text = text[:-1]
            text = text.rstrip() + "..."
        pdf.set_xy((_PAGE_W - width) / 2, y)
        pdf.cell(width, size * 0.45, text, align="C")

    # The disc ----------------------------------------------------------------------------

    def _chord(self, y: float, height: float) -> float:
        """Width of the disc available for a line from ``y`` to ``y + height``."""
        dy = max(abs(y - _CY), abs(y + height - _CY))
        if dy >= _RADIUS - _MARGIN:
            return 0.0
        return 2 * math.sqrt((_RADIUS - _MARGIN) ** 2 - dy**2)

    def _disc(self) -> None:
        info, pdf = self.info, self.pdf
        pdf.set_draw_color(160, 160, 160)
        pdf.set_line_width(0.2)
        pdf.circle(_CX, _CY, _RADIUS)
        pdf.circle(_CX, _CY, _HUB)
        top = [(DICOM_ONLY, 15.0, True)]
        if info.from_instances:
            top += [
                (info.patient_name or "(no name)", 12.0, True),
                (_id_and_birth(info), 9.0, False),
            ]
        top.append((info.institution, 9.0, False))
        y = _CY - _RADIUS + 12
        for value, size, bold in top:
            self.line(y, value, size=size, bold=bold, width=self._chord(y, size * 0.45))
            y += size * 0.45 + 2.5
        y = _CY + _HUB + 5
        if info.text.strip():
            self.line(y, info.text, size=9, bold=True, width=self._chord(y, 4.5))
            y += 5.5
        studies = [_study_line(d, s) for d, s in self.info.studies]
        shown = studies[:_MAX_STUDIES_ON_DISC]
        if len(studies) > len(shown):
            shown.append(f"and {len(studies) - len(shown)} more (see the case insert)")
        for value in shown:
            self.line(y, value, size=8.5, width=self._chord(y, 4))
            y += 4.5
        y = max(y + 1.5, _CY + _RADIUS - 24)
        self.line(y, _disc_of(info), size=11, bold=True, width=self._chord(y, 5))
        y += 6.5
        self.line(y, _created(info), size=8, width=self._chord(y, 4))

    # The case insert ---------------------------------------------------------------------

    def _insert(self) -> None:
        info = self.info
        y = _CY + _RADIUS + 14
        width = _PAGE_W - 30
        self.line(y, f"Patient imaging disc - {DICOM_ONLY}", size=12, bold=True, width=width)
        y += 9
        about_patient = [
            ("Patient", info.patient_name or "(no name)"),
            ("Patient ID", info.patient_id or "(none)"),
            ("Born", long_date(info.birth_date) if info.birth_date else "not recorded"),
        ]
        rows = [
            *(about_patient if info.from_instances else []),
            ("Made by", info.institution),
            *([("Label", info.text)] if info.text.strip() else []),
            ("Disc", _disc_of(info)),
            ("Created", long_date(info.created.date())),
        ]
        for n, (d, description) in enumerate(info.studies):
            rows.append(("Studies" if n == 0 else "", _study_line(d, description)))
        pdf = self.pdf
        for key, value in rows:
            if y > 285:
                break
            pdf.set_font(self.family, "B", 9)
            pdf.set_xy(15, y)
            pdf.cell(30, 4, self.text(key))
            pdf.set_font(self.family, "", 9)
            pdf.set_xy(45, y)
            text = self.text(value)
            while text and pdf.get_string_width(text) > width - 30:
                text = text[:-1]
            pdf.cell(width - 30, 4, text)
            y += 5


def _id_and_birth(info: LabelInfo) -> str:
    parts = []
    if info.patient_id:
        parts.append(f"ID {info.patient_id}")
    parts.append(
        f"born {long_date(info.birth_date)}" if info.birth_date else "birth date not recorded"
    )
    return ", ".join(parts)


def _study_line(day: date | None, description: str) -> str:
    when = f"Study of {long_date(day)}" if day else "Study (no date)"
    return f"{when}: {description}" if description.strip() else when


def _disc_of(info: LabelInfo) -> str:
    return f"Disc {info.disc_number} of {info.disc_count}"


def _created(info: LabelInfo) -> str:
    return f"Created {long_date(info.created.date())}"


def _distinct(values: Iterable[str]) -> list[str]:
    return [v for v in dict.fromkeys(v.strip() for v in values) if v]


__all__ = ["DICOM_ONLY", "LabelInfo", "label_info", "label_pdf_bytes", "write_label_pdf"]
