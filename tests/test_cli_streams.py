"""Results on stdout, progress and errors on stderr; --json prints exactly one JSON object,
errors included; a report that cannot be written is refused before any work (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import Centre

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def _cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120", **extra}
    return subprocess.run(
        [sys.executable, "-m", "discmaker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_the_summary_goes_to_stdout(disc_iso: Path, centre: Centre) -> None:
    proc = _cli("check", str(disc_iso), "--trust", str(centre.cert_path))
    assert proc.returncode == 0
    assert "VERIFIED" in proc.stdout  # `check disc.iso > result.txt` keeps the result
    assert "VERIFIED" not in proc.stderr


def test_trust_list_goes_to_stdout(tmp_path: Path, centre: Centre) -> None:
    store = {"DISCMAKER_TRUST_DIR": str(tmp_path / "trust")}
    assert _cli("trust", "add", str(centre.cert_path), "--yes", **store).returncode == 0
    listed = _cli("trust", "list", **store)
    assert "Test Imaging Centre" in listed.stdout  # `trust list | grep` finds it


@pytest.mark.parametrize(
    "args, code",
    [
        (["check", "/no/such/disc.iso", "--json"], 3),
        (["check", "--json"], 3),
        (["restore", "/no/such/disc.iso", "--out", "/tmp/x-never", "--json"], 3),
    ],
)
def test_json_errors_are_still_one_json_object(args: list[str], code: int) -> None:
    proc = _cli(*args)
    assert proc.returncode == code
    doc = json.loads(proc.stdout)  # exactly one object, nothing else on stdout
    schema = json.loads((SCHEMAS / "error.v1.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["exit_code"] == code and doc["error"]["message"]
    assert "Error:" in proc.stderr


def test_an_unwritable_report_is_refused_before_the_check(
    disc_iso: Path, centre: Centre, tmp_path: Path
) -> None:
    report = tmp_path / "missing" / "folder" / "report.html"
    proc = _cli("check", str(disc_iso), "--trust", str(centre.cert_path), "--report", str(report))
    assert proc.returncode == 3
    assert "nothing was checked yet" in proc.stderr
    assert "VERIFIED" not in proc.stdout
