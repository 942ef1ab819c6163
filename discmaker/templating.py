"""Rendering of the files made from ``templates/``: the IHE PDI root files and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jinja2

from discmaker.errors import InternalError
from discmaker.people import date_for_people


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
