"""Rendering of the files made from ``templates/``: the IHE PDI root files and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jinja2

from discmaker.errors import InternalError

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date_for_people(value: str, missing: str = "(not recorded)") -> str:
    """A DICOM date (``19700312``) as ``12 Mar 1970 (1970-03-12)``: unambiguous whatever the
    reader's local habit; anything else as it is (``missing`` when empty). The templates'
    ``for_people`` filter."""
    text = str(value or "").strip()
    if len(text) == 8 and text.isdigit():
        year, month, day = text[:4], int(text[4:6]), int(text[6:])
        if 1 <= month <= 12 and 1 <= day <= 31:
            return f"{day} {_MONTHS[month - 1]} {year} ({year}-{month:02d}-{day:02d})"
    return text or missing


@cache
def environment() -> jinja2.Environment:
    """The one template environment (immutable once built, so threads share it safely).

    Templates are package data (``discmaker/templates``), loaded through importlib.resources so
    that a wheel, a zip import and a source tree all find them.
    """
    try:
        loader = jinja2.PackageLoader("discmaker", "templates")
    except ValueError as exc:
        raise InternalError(
            "discmaker's templates folder is missing from the installation. Reinstall discmaker."
        ) from exc
    env = jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("htm", "html", "htm.j2", "html.j2"),
            default_for_string=False,
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["for_people"] = date_for_people
    return env


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)


@dataclass
class SeriesSummary:
    number: str
    modality: str
    description: str
    images: int = 0


@dataclass
class StudySummary:
    date: str
    description: str
    accession: str
    series: dict[str, SeriesSummary] = field(default_factory=dict)


@dataclass
class PatientSummary:
    name: str
    id: str
    birth_date: str
    sex: str
    studies: dict[str, StudySummary] = field(default_factory=dict)


def as_context(patients: dict[str, PatientSummary]) -> list[dict[str, Any]]:
    """Nested summaries as plain lists for the templates, in insertion order."""
    return [
        {
            "name": p.name.replace("^", " ").strip(),
            "id": p.id,
            "birth_date": p.birth_date,
            "sex": p.sex,
            "studies": [
                {
                    "date": s.date,
                    "description": s.description,
                    "accession": s.accession,
                    "series": [vars(r) for r in s.series.values()],
                }
                for s in p.studies.values()
            ],
        }
        for p in patients.values()
    ]


__all__ = [
    "PatientSummary",
    "SeriesSummary",
    "StudySummary",
    "as_context",
    "environment",
    "render",
]
