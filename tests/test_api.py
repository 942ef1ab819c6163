"""The public Python API: ``import discmaker`` and what it offers integrators."""

from __future__ import annotations

import doctest
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import discmaker
from discmaker import errors
from discmaker.sample import write_sample_study
from tests.conftest import Centre

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PUBLIC = [
    "APP_NAME",
    "AuthorRequest",
    "AuthorResult",
    "CheckReport",
    "Destination",
    "DestinationError",
    "DiscError",
    "DiscmakerError",
    "Finding",
    "Identity",
    "ImageStatus",
    "ImageVerdict",
    "ImportResult",
    "InputError",
    "InternalError",
    "KeyFileError",
    "Medium",
    "NoImagesError",
    "OutputError",
    "Region",
    "RestoreResult",
    "SetReport",
    "Signer",
    "StudyError",
    "Tls",
    "TooLargeError",
    "TrustStore",
    "TrustedSigner",
    "UntrustedSignerError",
    "UnusableFileError",
    "UsageError",
    "Verdict",
    "VerificationError",
    "__version__",
    "author_disc",
    "author_result_to_json",
    "check_disc",
    "check_set",
    "fingerprint",
    "generate_identity",
    "import_disc",
    "load_certificate",
    "load_private_key",
    "restore_disc",
    "write_identity",
]

_ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _python(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env=env or _ENV,
        cwd=Path(__file__).resolve().parent.parent,
    )


# -- the facade ----------------------------------------------------------------------------


def test_all_is_pinned() -> None:
    assert discmaker.__all__ == PUBLIC  # a change here is a change of the public API
    assert sorted(discmaker.__all__) == discmaker.__all__


def test_every_public_name_resolves_to_the_library_object() -> None:
    from discmaker.author import create
    from discmaker.check import restore, verify
    from discmaker.crypto import signing, trust
    from discmaker.disc import media
    from discmaker.models import CheckReport

    for name in PUBLIC:
        assert getattr(discmaker, name) is not None, name
    assert discmaker.author_disc is create.author
    assert discmaker.AuthorRequest is create.AuthorRequest
    assert discmaker.check_disc is verify.check_disc
    assert discmaker.check_set is verify.check_set
    assert discmaker.restore_disc is restore.restore_disc
    assert discmaker.TrustStore is trust.TrustStore
    assert discmaker.load_private_key is signing.load_private_key
    assert discmaker.Medium is media.Medium
    assert discmaker.CheckReport is CheckReport
    assert discmaker.UsageError is errors.UsageError
    assert set(PUBLIC) <= set(dir(discmaker))
    # Subpackages stay reachable under their own names.
    assert discmaker.author is sys.modules["discmaker.author"]


def test_error_tree_is_complete() -> None:
    exported = {n for n in PUBLIC if isinstance(getattr(discmaker, n), type)}
    defined = {
        n
        for n, v in vars(errors).items()
        if isinstance(v, type) and issubclass(v, errors.DiscmakerError)
    }
    assert defined <= exported


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = discmaker.nope  # type: ignore[attr-defined]
    assert not hasattr(discmaker, "author_")


def test_import_is_light() -> None:
    heavy = ["numpy", "pydicom", "rich", "cryptography", "pycdlib", "PIL", "jinja2"]
    probe = _python(
        "import sys, discmaker; discmaker.APP_NAME; discmaker.__version__;"
        f"print([m for m in {heavy!r} if m in sys.modules]);"
        "print(sorted(m for m in sys.modules if m.startswith('discmaker')))"
    )
    assert probe.returncode == 0, probe.stderr
    loaded, ours = probe.stdout.splitlines()
    assert loaded == "[]"
    assert ours == "['discmaker']"
    # ... and the first use loads what it needs.
    probe = _python("import sys, discmaker; discmaker.Verdict; print('numpy' in sys.modules)")
    assert probe.stdout.strip() == "False"
    probe = _python("import sys, discmaker; discmaker.check_disc; print('pydicom' in sys.modules)")
    assert probe.stdout.strip() == "True"


def test_the_library_does_not_import_rich() -> None:
    # Everything but the ui, including the heavy modules, loads without a terminal library.
    probe = _python(
        "import sys, discmaker;"
        "[getattr(discmaker, n) for n in discmaker.__all__];"
        "import discmaker.author.preview, discmaker.disc.burn, discmaker.sample;"
        "print([m for m in sys.modules if m == 'rich' or m.startswith('rich.')])"
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_docstring_example_runs(tmp_path: Path) -> None:
    """The usage example in ``discmaker.__doc__`` is executed, not just read."""
    study = tmp_path / "study"
    write_sample_study(study, ct_slices=3, ct_size=256, mr_slices=2, mr_size=128)
    (tmp_path / "keys").mkdir()
    assert discmaker.__doc__ is not None
    test = doctest.DocTestParser().get_doctest(
        discmaker.__doc__,
        {"study_dir": str(study), "keys_dir": str(tmp_path / "keys"), "out_dir": str(tmp_path)},
        "discmaker",
        discmaker.__file__,
        0,
    )
    assert len(test.examples) >= 8
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)
    assert (tmp_path / "disc.iso").is_file()


# -- JSON documents come from the models ----------------------------------------------------


def test_cli_check_json_is_the_model_document(
    disc_folder: Path, centre: Centre, capsys: pytest.CaptureFixture[str]
) -> None:
    from discmaker.ui.cli import main

    report = discmaker.check_disc(
        disc_folder, trust=discmaker.TrustStore.from_paths([centre.cert_path])
    )
    capsys.readouterr()
    assert main(["check", str(disc_folder), "--trust", str(centre.cert_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == report.to_json()
    doc = report.to_json()
    assert (doc["format"], doc["format_version"]) == ("discmaker-check-report", 1)
    json.dumps(doc)  # plain types only


# -- exit codes: one table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "other", "check"),
    [
        (errors.UsageError("x"), 64, 3),
        (errors.NoImagesError("x"), 66, 3),
        (errors.StudyError("x"), 65, 3),
        (errors.KeyFileError("x"), 77, 3),
        (errors.OutputError("x"), 73, 3),
        (errors.TooLargeError("x"), 65, 3),
        (errors.DiscError("x"), 3, 3),
        (errors.VerificationError("x"), 1, 1),
        (errors.UntrustedSignerError("x"), 2, 2),
        (errors.InternalError("x"), 70, 3),
        (RuntimeError("bug"), 70, 3),
        (KeyboardInterrupt(), 130, 130),
    ],
)
def test_exit_code_for(exc: BaseException, other: int, check: int) -> None:
    assert errors.exit_code_for(exc) == other
    assert errors.exit_code_for(exc, check_contract=True) == check


def test_cli_and_guide_use_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from discmaker.ui import cli
    from discmaker.ui.guide_session import EXIT_CANCELLED

    assert EXIT_CANCELLED == errors.EX_INTERRUPTED

    def internal(*_: object) -> int:
        raise errors.InternalError("our bug")

    monkeypatch.setitem(cli.COMMANDS, "check", internal)
    monkeypatch.setitem(cli.COMMANDS, "keygen", internal)
    assert cli.main(["check", "x"]) == 3  # the check contract holds even for our bugs
    assert cli.main(["keygen", "--org", "X", "--out", "y"]) == 70
    capsys.readouterr()


# -- logging --------------------------------------------------------------------------------


def test_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("discmaker").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} DEBUG +discmaker[.\w]*: ", re.M)


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "discmaker", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**_ENV, **env},
        cwd=Path(__file__).resolve().parent.parent,
    )


@pytest.mark.parametrize("how", ["--verbose", "-v-after", "env"])
def test_verbose_logs_go_to_stderr_and_json_stays_clean(
    disc_folder: Path, centre: Centre, how: str
) -> None:
    args = ["check", str(disc_folder), "--trust", str(centre.cert_path), "--json"]
    env: dict[str, str] = {}
    if how == "--verbose":
        args.insert(0, "--verbose")
    elif how == "-v-after":
        args.append("-v")
    else:
        env["DISCMAKER_LOG"] = "debug"
    run = _cli(args, **env)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)  # nothing but the document on stdout
    assert doc["verdict"] == "verified"
    assert "DEBUG" not in run.stdout
    lines = _LOG_LINE.findall(run.stderr)
    assert len(lines) >= 3, run.stderr
    assert "verified" in run.stderr and str(disc_folder) in run.stderr


def test_quiet_by_default_and_bad_level_refused(disc_folder: Path, centre: Centre) -> None:
    args = ["check", str(disc_folder), "--trust", str(centre.cert_path), "--json"]
    run = _cli(args)
    assert run.returncode == 0 and not _LOG_LINE.search(run.stderr)
    json.loads(run.stdout)
    run = _cli(args, DISCMAKER_LOG="info")  # no INFO records from a clean check: no DEBUG lines
    assert run.returncode == 0 and "DEBUG" not in run.stderr
    run = _cli(args, DISCMAKER_LOG="chatty")
    assert run.returncode == 3 and "DISCMAKER_LOG" in run.stderr
    assert json.loads(run.stdout)["error"]["who_must_act"] == "operator"  # --json: one object


def test_in_process_main_leaves_no_handler_behind(disc_folder: Path, centre: Centre) -> None:
    from discmaker.ui.cli import main

    logger = logging.getLogger("discmaker")
    before = list(logger.handlers), logger.level
    main(["--verbose", "check", str(disc_folder), "--trust", str(centre.cert_path)])
    assert (list(logger.handlers), logger.level) == before
