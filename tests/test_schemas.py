"""The JSON documents the CLI prints follow the published schemas in docs/schemas/.

Real outputs only: a study authored with ``author --json``, and ``check --json`` /
``restore --json`` on a genuine disc, a tampered copy, an unsigned folder and a disc set.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from referencing import Registry, Resource

from discmaker.crypto import signing
from discmaker.format.manifest import MANIFEST_PATH, parse
from discmaker.models import (
    AUTHOR_RESULT_FORMAT,
    CHECK_REPORT_FORMAT,
    REPORT_VERSION,
    RESTORE_RESULT_FORMAT,
    SET_REPORT_FORMAT,
)
from discmaker.pacs.store import IMPORT_RESULT_FORMAT
from discmaker.ui.cli import main
from tests.conftest import PASSPHRASE, Centre

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
NAMES = {
    CHECK_REPORT_FORMAT: "check-report",
    SET_REPORT_FORMAT: "set-report",
    RESTORE_RESULT_FORMAT: "restore-result",
    AUTHOR_RESULT_FORMAT: "author-result",
    IMPORT_RESULT_FORMAT: "import-result",  # validated with real imports in test_import.py
}


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / f"{name}.v{REPORT_VERSION}.json").read_text())
    return doc


def _registry() -> Registry[Any]:
    resources = [Resource.from_contents(_schema(n)) for n in NAMES.values()]
    return Registry().with_resources((r.id() or "", r) for r in resources)


def validate(doc: dict[str, Any]) -> None:
    """``doc`` against the schema its own ``format`` / ``format_version`` names."""
    assert doc["format_version"] == REPORT_VERSION
    schema = _schema(NAMES[doc["format"]])
    jsonschema.Draft202012Validator(schema, registry=_registry()).validate(doc)


validate_import = validate  # for tests/test_import.py, which has the PACS


def run_json(argv: list[str]) -> tuple[int, dict[str, Any]]:
    """``discmaker ARGV`` in process; its exit status and the JSON it printed on stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert out.getvalue(), f"no JSON on stdout (exit {code}): {err.getvalue()}"
    doc: dict[str, Any] = json.loads(out.getvalue())
    return code, doc


@pytest.fixture(scope="module")
def authored(
    tmp_path_factory: pytest.TempPathFactory, centre: Centre, study_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """A disc folder authored with ``discmaker author --json``, and that JSON."""
    out = tmp_path_factory.mktemp("schemas") / "DISC"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(signing.PASSPHRASE_ENV, PASSPHRASE.decode())
        code, doc = run_json(
            [
                "author",
                str(study_dir),
                "--key",
                str(centre.key_path),
                "--cert",
                str(centre.cert_path),
                "--out",
                str(out),
                "--format",
                "folder",
                "--label",
                "SCHEMAS",
                "--timestamp",
                "2026-01-02T10:00:00Z",
                "--workers",
                "1",
                "--json",
            ]
        )
    assert code == 0
    return out, doc


def _check(source: Path | list[Path], centre: Centre) -> tuple[int, dict[str, Any]]:
    sources = source if isinstance(source, list) else [source]
    return run_json(["check", *map(str, sources), "--trust", str(centre.cert_path), "--json"])


def _tamper(disc: Path) -> None:
    """A tag editor on one image, changed pixels in another (both watermarked)."""
    marked = [i.file_id for i in parse((disc / MANIFEST_PATH).read_bytes()).images]
    marked = [f for f in marked if f]
    header, pixels = disc / marked[0], disc / marked[1]
    ds = dcmread(header)
    ds.PatientName = "FORGED^NAME"
    ds.save_as(header)
    ds = dcmread(pixels)
    arr = ds.pixel_array.copy()
    arr[40:60, 40:60] = arr.max()
    ds.PixelData = arr.tobytes()
    ds.save_as(pixels)


# -- the schemas themselves ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAMES.values()))
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = _schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.v{REPORT_VERSION}.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    fmt = next(f for f, n in NAMES.items() if n == name)
    assert schema["properties"]["format"] == {"const": fmt}


def test_the_schemas_reject_what_they_should(authored: tuple[Path, dict[str, Any]]) -> None:
    _, doc = authored
    with pytest.raises(jsonschema.ValidationError):
        validate({k: v for k, v in doc.items() if k != "images"})
    with pytest.raises(jsonschema.ValidationError):
        validate({**doc, "medium": "floppy"})


# -- real outputs ----------------------------------------------------------------------------


def test_author_json(authored: tuple[Path, dict[str, Any]], centre: Centre) -> None:
    out, doc = authored
    validate(doc)
    assert doc["format"] == AUTHOR_RESULT_FORMAT
    assert doc["outputs"] == [str(out)] and doc["images"] == 10
    assert doc["signer_fingerprint"] == signing.fingerprint(centre.identity.certificate)


def test_check_json_genuine(authored: tuple[Path, dict[str, Any]], centre: Centre) -> None:
    code, doc = _check(authored[0], centre)
    validate(doc)
    assert code == 0 and doc["verdict"] == "verified" and doc["exit_code"] == 0
    assert doc["summary"]["ok"] + doc["summary"]["manifest-only"] == 10


def test_check_json_genuine_iso(disc_iso: Path, centre: Centre) -> None:
    code, doc = _check(disc_iso, centre)
    validate(doc)
    assert code == 0


def test_check_json_tampered(disc_copy: Any, centre: Centre) -> None:
    disc = disc_copy()
    _tamper(disc)
    code, doc = _check(disc, centre)
    validate(doc)
    assert code == 1 and doc["verdict"] == "tampered"
    tampered = [i for i in doc["images"] if i["status"] == "tampered"]
    assert any("PatientName" in i["attributes"] for i in tampered)
    assert any(i["regions"] for i in tampered)


def test_check_json_unsigned_folder(study_dir: Path, centre: Centre) -> None:
    # A plain folder of DICOM files: no signature, no DICOMDIR: loose files, not verifiable.
    code, doc = _check(study_dir, centre)
    validate(doc)
    assert code == 2 and doc["verdict"] == "not-verifiable" and doc["input"] == "files"
    assert not doc["signed"] and doc["signer"] is None
    assert doc["findings"] == [] and doc["summary"]["not-verifiable"] == 10


def test_check_json_unsigned_disc(study_dir: Path, tmp_path: Path, centre: Centre) -> None:
    # A vendor disc (pydicom's File-set writer): DICOMDIR and images, no discmaker signature.
    fs = FileSet()
    for p in sorted(study_dir.rglob("*")):
        if p.is_file():
            fs.add(p)
    fs.write(tmp_path / "vendor")
    fs._stage["t"].cleanup()  # pydicom only removes its staging folder at collection
    code, doc = _check(tmp_path / "vendor", centre)
    validate(doc)
    assert code == 2 and doc["verdict"] == "not-verifiable"
    assert not doc["signed"] and doc["signer"] is None
    assert doc["summary"]["not-verifiable"] == 10


def test_check_json_signature_removed(disc_copy: Any, centre: Centre) -> None:
    disc = disc_copy()
    shutil.rmtree(disc / "DISCSIG")
    code, doc = _check(disc, centre)
    validate(doc)
    assert code == 1 and [f["path"] for f in doc["findings"]] == ["DISCSIG"]


def test_check_json_untrusted_signer(disc_folder: Path, other_centre: Centre) -> None:
    code, doc = _check(disc_folder, other_centre)
    validate(doc)
    assert code == 2 and doc["signer"]["trusted"] is False


def test_set_report_json(disc_folder: Path, disc_copy: Any, centre: Centre) -> None:
    # Two copies of one single-disc "set": a real, incomplete set report (disc given twice).
    code, doc = _check([disc_folder, disc_copy()], centre)
    validate(doc)
    assert doc["format"] == SET_REPORT_FORMAT
    assert code == 1 and not doc["complete"] and len(doc["discs"]) == 2
    assert any("given twice" in f["message"] for f in doc["set_findings"])
    for disc in doc["discs"]:
        validate(disc)


def test_restore_json_genuine(disc_folder: Path, centre: Centre, tmp_path: Path) -> None:
    out = tmp_path / "restored"
    code, doc = run_json(
        ["restore", str(disc_folder), "--trust", str(centre.cert_path), "--out", str(out), "--json"]
    )
    validate(doc)
    assert code == 0 and doc["exit_code"] == 0 and len(doc["restored"]) == 10
    assert doc["report"]["verdict"] == "verified" and not doc["refused"]


def test_restore_json_tampered(disc_copy: Any, centre: Centre, tmp_path: Path) -> None:
    disc = disc_copy()
    _tamper(disc)
    code, doc = run_json(
        [
            "restore",
            str(disc),
            "--trust",
            str(centre.cert_path),
            "--out",
            str(tmp_path / "restored"),
            "--tampered-to",
            str(tmp_path / "altered"),
            "--json",
        ]
    )
    validate(doc)
    assert code == 1 and doc["verdict"] == "tampered" and len(doc["refused"]) >= 2
    assert doc["tampered_written"]
