"""DICOM values as people read them: dates (``2 January 2026``), names and safe one-line text.

One home for the wording that everything people read uses (the check report, the closing
summaries, the disc label). Pure functions of their arguments; no locale is consulted, so
every disc and report reads the same whatever the machine's settings (English month names).
"""

from __future__ import annotations

import unicodedata
from datetime import date

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def plain(text: object) -> str:
    """``text`` made safe to show: control, format (bidi override) and line characters -> '?'
    (newline and tab -> space)."""
    out = []
    for ch in str(text):
        if ch in "\n\t":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def parse_da(value: str) -> date | None:
    """A DICOM date (DA, ``20260102``) as a date; None when empty, partial or impossible."""
    text = str(value).strip()
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def long_date(day: date) -> str:
    """``2 January 2026``."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def person_date(value: str) -> str:
    """A DICOM date (DA, ``20260102``) as people write it: ``2 January 2026``. Anything else
    (empty, partial, impossible) is shown as it is."""
    day = parse_da(value)
    return long_date(day) if day else plain(value).strip()


def date_for_people(value: str, missing: str = "(not recorded)") -> str:
    """A DICOM date (``19700312``) as ``12 Mar 1970 (1970-03-12)``: unambiguous whatever the
    reader's local habit (what the disc's README.TXT and INDEX.HTM, the guide and the closing
    summary write); anything else as it is, ``missing`` when empty."""
    day = parse_da(value)
    if day is None:
        return plain(value).strip() or missing
    return f"{day.day} {MONTHS[day.month - 1][:3]} {day.year} ({day.isoformat()})"


def person_name(value: str) -> str:
    """A DICOM Person Name (``DOE^JANE^^DR``) as people read it: ``DOE, DR JANE``: family
    name, then prefix, given and middle names, then suffix (its first, alphabetic form)."""
    group = plain(value).split("=", 1)[0]
    family, given, middle, prefix, suffix = ([*group.split("^"), "", "", "", ""])[:5]
    rest = " ".join(p.strip() for p in (prefix, given, middle) if p.strip())
    name = ", ".join(p for p in (family.strip(), rest) if p)
    return f"{name} {suffix.strip()}".strip() or plain(value).strip()


__all__ = [
    "MONTHS",
    "date_for_people",
    "long_date",
    "parse_da",
    "person_date",
    "person_name",
    "plain",
]
