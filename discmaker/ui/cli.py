"""Command line: a thin layer over the library. The only module (with the guide) that prints.

Exit codes: `check` and `restore` use the check contract (0 verified, 1 tampered or
inconsistent, 2 not verifiable, 3 unreadable input or usage error). The other commands use
sysexits codes (64 usage, 65 bad data, 66 no input, 73 cannot create output, 77 key problem,
70 internal error); 130 after Ctrl-C. See the README and :func:`discmaker.errors.exit_code_for`.

Logging: ``--verbose`` / ``-v`` (anywhere on the line), or ``DISCMAKER_LOG=debug`` (or info,
warning, error), sends the ``discmaker`` loggers to stderr with timestamps. stdout stays
reserved for ``--json`` documents.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

import discmaker
from discmaker import APP_NAME, errors
from discmaker.crypto import signing
from discmaker.disc.media import Medium
from discmaker.parallel import default_workers
from discmaker.ui import cli_help, cli_station
from discmaker.ui.wording import plain

if TYPE_CHECKING:
    from discmaker.author.create import AuthorResult
    from discmaker.ui.render import ProgressFn

PASSPHRASE_ENV = signing.PASSPHRASE_ENV
CHECK_COMMANDS = frozenset({"check", "restore"})
LOG_ENV = "DISCMAKER_LOG"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LOG_LEVELS |= {"error": logging.ERROR}

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors get our exit codes."""

    def error(self, message: str) -> Any:
        raise errors.UsageError(f"{self.prog}: {message}. Run '{self.prog} --help' for usage.")


class _Version:
    """discmaker's version as text, looked up only when shown (importing what looks it up
    costs every command a few tens of milliseconds)."""

    def __str__(self) -> str:
        return f"{discmaker.__version__}"


class _VersionAction(argparse.Action):
    """``--version``: argparse's own action, with the version looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings,
            dest=dest,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{APP_NAME} {_Version()}")  # what argparse's "version" action prints
        parser.exit()


def progress_bars(console: Console, *, enabled: bool) -> AbstractContextManager[ProgressFn]:
    """:func:`discmaker.ui.render.progress_bars`, imported only when bars are shown
    (``--json`` shows none)."""
    if not enabled:
        return nullcontext(_no_progress)
    from discmaker.ui.render import progress_bars as bars

    return bars(console, enabled=True)


def _no_progress(stage: str, done: int, total: int) -> None:
    """The progress callback when no bars are shown."""


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise errors.UsageError(
            f"--timestamp {text!r} is not an ISO 8601 time; use e.g. 2026-01-02T10:00:00Z."
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _size(text: str) -> int:
    units = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}
    number, unit = text.strip().upper().rstrip("B"), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        value = int(float(number) * units[unit])
    except ValueError as exc:
        raise errors.UsageError(
            f"--capacity {text!r} is not a size; use e.g. 650M or 4.7G."
        ) from exc
    if value <= 0:
        raise errors.UsageError("--capacity must be larger than zero.")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=APP_NAME,
        formatter_class=cli_help.HelpFormatter,
        description="Tamper-evident patient discs of DICOM studies, and the checker for them. "
        "Run without arguments for the guided workflow.",
    )
    parser.add_argument("--version", action=_VersionAction)
    _add_verbose(parser, default=False)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("keygen", help="create the imaging centre's signing key and certificate")
    p.add_argument("--org", required=True, help="organisation name, e.g. 'City Imaging Centre'")
    p.add_argument("--out", required=True, type=Path, help="folder for key.pem and cert.pem")

    p = sub.add_parser("author", help="author a signed patient disc from a study")
    p.add_argument("study", nargs="+", type=Path, help="study folders or files")
    p.add_argument("--key", required=True, type=Path, help="signing key (key.pem)")
    p.add_argument("--cert", required=True, type=Path, help="certificate (cert.pem)")
    p.add_argument(
        "--out", required=True, type=Path, help="disc.iso, or a folder with --format folder"
    )
    p.add_argument(
        "--format",
        choices=["iso", "folder"],
        default="iso",
        help="an ISO 9660 image to burn, or a folder to copy onto a USB stick",
    )
    p.add_argument(
        "--label",
        help="File-set ID / volume label: 1-16 of A-Z 0-9 _ (default: DM and the time, "
        "e.g. DM202612021430)",
    )
    p.add_argument(
        "--medium",
        choices=[m.name.lower() for m in Medium],
        default="cd",
        help="the medium the disc must fit on (its standard size, unless --capacity)",
    )
    p.add_argument("--institution", help="creating institution (default: the certificate's O)")
    p.add_argument(
        "--timestamp",
        type=_timestamp,
        help="fixed time (ISO 8601) for reproducible output (default: now)",
    )
    p.add_argument(
        "--allow-mixed-patients",
        action="store_true",
        help="put studies of more than one patient on one disc (default: refused, the usual "
        "sign of a wrong export)",
    )
    p.add_argument(
        "--span",
        action="store_true",
        help="split a study too large for one medium over several discs (disc k of n)",
    )
    p.add_argument(
        "--capacity",
        type=_size,
        help="usable size of the medium, e.g. 650M or 7.8G (default: the medium's standard size)",
    )
    p.add_argument(
        "--burn",
        nargs="?",
        const="",
        metavar="DRIVE",
        help="also burn the ISO with xorriso and read the disc back to check it before "
        "success; DRIVE e.g. /dev/sr0 (default: not burned; without DRIVE: the one burner "
        "found)",
    )
    p.add_argument(
        "--label-pdf",
        type=Path,
        metavar="FILE",
        help="also write the disc label as a PDF: patient, birth date, studies, institution, "
        "disc k of n, DICOM ONLY (one page per disc; default: no label)",
    )
    p.add_argument(
        "--skip-unusable",
        action="store_true",
        help="leave out a file that cannot go on a disc (damaged, or without a key the "
        "DICOMDIR needs), name it in the summary, README.TXT and manifest, and exit 2 "
        "(default: such a file stops the disc, nothing is written)",
    )
    p.add_argument("--workers", type=int, help="worker processes (default: every core)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    p = sub.add_parser("check", help="check a received disc, ISO image or folder")
    p.add_argument(
        "source",
        type=Path,
        nargs="+",
        help="ISO file, block device or folder; give every disc of a set to check the set",
    )
    _add_trust(p)
    p.add_argument("--json", action="store_true", help="versioned JSON report on stdout")
    p.add_argument(
        "--report",
        type=Path,
        help="also write an HTML report for the patient record to this file (default: none)",
    )

    p = sub.add_parser("restore", help="write verified originals for PACS import")
    p.add_argument("source", type=Path, help="ISO file, block device or folder")
    _add_trust(p)
    p.add_argument("--out", required=True, type=Path, help="new folder for the PACS import")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="also write the verified images of a series that has an unverified image "
        "(default: such a series is held back whole)",
    )
    p.add_argument(
        "--tampered-to",
        type=Path,
        metavar="DIR",
        help="new folder, apart from --out, for copies of the altered images (investigation "
        "only; default: not written)",
    )
    p.add_argument("--json", action="store_true", help="versioned JSON result on stdout")

    p = sub.add_parser(
        "import",
        help="check a received disc and send its verified originals to a PACS",
        description="Checks the disc as 'check' does; only a verified disc is sent. Sends the "
        "verified originals (what 'restore' writes) with DICOM C-STORE, records each in the "
        "import log and skips what that PACS already holds. Exit 0 all stored, 1 or 2 the "
        "disc did not verify (nothing sent), 3 unreadable disc, 69 PACS unreachable or "
        "refused, 75 some images not stored (run again to send the rest).",
    )
    p.add_argument("source", type=Path, help="ISO file, block device or folder")
    p.add_argument(
        "--to",
        required=True,
        metavar="AET@HOST:PORT",
        help="the PACS: its AE title, host and DICOM port, e.g. PACS@pacs.hospital.local:104",
    )
    _add_trust(p)
    p.add_argument(
        "--aet", default="DISCMAKER", help="this computer's AE title (default: DISCMAKER)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the disc and echo the PACS, show what would be sent; send nothing",
    )
    p.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="import log (default: $DISCMAKER_IMPORT_LOG, else import-log.jsonl in the user "
        "data folder)",
    )
    p.add_argument("--workers", type=int, help="worker processes (default: every core)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object on stdout (docs/schemas/import-result.v1.json)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="DICOM over TLS (TLS 1.2 or later; the PACS's certificate must name the host in "
        "--to and be signed by a CA this computer trusts, or the one in --tls-ca)",
    )
    p.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="PEM file of the CA that signed the PACS's certificate (implies --tls; default: "
        "this computer's trusted CAs)",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="this computer's TLS certificate (PEM), for a PACS that asks for one (implies "
        "--tls; default: none)",
    )
    p.add_argument(
        "--tls-key",
        type=Path,
        metavar="FILE",
        help="the private key of --tls-cert (default: in the --tls-cert file)",
    )
    p.add_argument(
        "--worklist",
        metavar="AET@HOST:PORT",
        help="look the local order up in this Modality Worklist (C-FIND by --accession, or "
        "by --patient-id) and coerce Patient ID, name and Accession Number to its values "
        "(default: no lookup)",
    )
    p.add_argument(
        "--patient-id",
        help="coerce Patient ID to the local one (reconciliation; default: send the disc's)",
    )
    p.add_argument(
        "--patient-name", help="coerce Patient's Name, e.g. DOE^JANE (default: the disc's)"
    )
    p.add_argument(
        "--accession", help="coerce Accession Number to the local order's (default: the disc's)"
    )

    p = sub.add_parser("trust", help="manage trusted senders")
    tsub = p.add_subparsers(dest="trust_command", parser_class=_Parser, required=True)
    t = tsub.add_parser(
        "add",
        help="trust a sender: their certificate file, or a disc, ISO or drive they sent",
        description="Shows the sender's name and fingerprint and asks you to confirm it with "
        "the sender by telephone before trusting it.",
    )
    t.add_argument(
        "cert",
        type=Path,
        metavar="SOURCE",
        help="certificate file (cert.pem), or a received disc folder, ISO image or drive "
        "(its DISCSIG/SIGNER.PEM is read)",
    )
    t.add_argument(
        "--yes",
        action="store_true",
        help="the fingerprint was already confirmed: do not ask (for scripts)",
    )
    tsub.add_parser("list", help="list trusted senders")
    t = tsub.add_parser("remove", help="stop trusting a sender")
    t.add_argument("fingerprint", help="the sender's fingerprint, as 'trust list' shows it")
    stations = cli_station.add_parsers(sub, _Parser)
    named = [(name, command) for name, command in sub.choices.items() if name != "station"]
    named += [(f"trust {name}", command) for name, command in tsub.choices.items()]
    named += stations
    for name, command in named:
        _add_verbose(command, default=argparse.SUPPRESS)  # `-v` after the command works too
        cli_help.apply(command, name)
    return parser


def _add_trust(parser: argparse.ArgumentParser) -> None:
    """``--trust``, as check, restore and import take it."""
    parser.add_argument(
        "--trust",
        action="append",
        type=Path,
        help="trust only this certificate or folder of certificates; repeatable (default: "
        "the trust store, yours and the site's; see 'discmaker trust list')",
    )


def _add_verbose(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help=f"log what discmaker does to stderr (or set {LOG_ENV}=debug|info|warning|error; "
        "default: off)",
    )


# -- logging -------------------------------------------------------------------------------


def _log_level(verbose: bool) -> int | None:
    """The level asked for by --verbose or DISCMAKER_LOG; None: no log output."""
    named = os.environ.get(LOG_ENV, "").strip().lower()
    if named and named not in _LOG_LEVELS:
        raise errors.UsageError(
            f"{LOG_ENV}={named!r} is not a log level; use one of {', '.join(_LOG_LEVELS)}."
        )
    if verbose:
        return logging.DEBUG
    return _LOG_LEVELS.get(named)


class _StderrLog:
    """A timestamped stderr handler on the ``discmaker`` logger, removed again by :meth:`close`
    (``main`` runs many times in one test process)."""

    def __init__(self, level: int) -> None:
        self.logger = logging.getLogger(APP_NAME)
        self.previous_level = self.logger.level
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.handler.setLevel(level)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(level)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.previous_level)
        self.handler.close()


def _start_logging(verbose: bool) -> _StderrLog | None:
    level = _log_level(verbose)
    return None if level is None else _StderrLog(level)


def _write_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


ERROR_FORMAT = "discmaker-error"  # docs/schemas/error.v1.json


def _error_json(exc: BaseException, code: int) -> dict[str, Any]:
    """What ``--json`` prints when a command stops with an error: still exactly one object."""
    return {
        "format": ERROR_FORMAT,
        "format_version": 1,
        "exit_code": code,
        "error": {
            "kind": type(exc).__name__,
            "who_must_act": _who_must_act(exc),
            "message": str(exc) or type(exc).__name__,
        },
    }


def _who_must_act(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled"
    if isinstance(exc, errors.DiscError):
        return "disc"
    if isinstance(exc, errors.VerificationError):
        return "verification"
    if isinstance(exc, errors.InternalError) or not isinstance(exc, errors.DiscmakerError):
        return "discmaker"
    return "operator"


def _progress_console(args: argparse.Namespace, console: Console) -> Console:
    """Where progress goes: stderr, so that stdout carries only results (or the JSON)."""
    found = getattr(args, "progress_console", None)
    return found if isinstance(found, Console) else console


# -- helpers -------------------------------------------------------------------------------


def _passphrase(*, confirm: bool, what: str) -> bytes:
    env = signing.passphrase_from_env()
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise errors.UsageError(
            f"A passphrase is needed for {what}, and there is no terminal to ask it on. "
            f"Set {PASSPHRASE_ENV} for automated use."
        )
    first = getpass.getpass(f"Passphrase for {what}: ").encode()
    if confirm:
        again = getpass.getpass("Repeat the passphrase: ").encode()
        if again != first:
            raise errors.UsageError("The two passphrases differ. Nothing was written.")
    return first


# -- commands ------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace, console: Console) -> int:
    identity = signing.generate_identity(args.org)
    passphrase = _passphrase(confirm=True, what="the new signing key")
    key_path, cert_path = signing.write_identity(identity, args.out, passphrase=passphrase)
    fp = signing.fingerprint(identity.certificate)
    console.print(
        f"[green]Signing key[/]   {escape(str(key_path))}  (mode 0600, passphrase-protected)"
    )
    console.print(f"[green]Certificate[/]   {escape(str(cert_path))}")
    console.print(Text.assemble(("Fingerprint", "bold"), f"   {fp}"), soft_wrap=True)
    console.print(
        "Give cert.pem to the clinics that receive your discs, and read them this fingerprint "
        "by telephone so they can confirm it. Keep key.pem and its passphrase secret."
    )
    return 0


def cmd_author(args: argparse.Namespace, console: Console) -> int:
    from discmaker.author.create import AuthorRequest, author

    drive = _burner(args) if args.burn is not None else None  # before any work
    cert = signing.load_certificate(args.cert)
    passphrase = _passphrase(confirm=False, what=str(args.key))
    key = signing.load_private_key(args.key, passphrase=passphrase)
    req = AuthorRequest(
        inputs=tuple(args.study),
        out=args.out,
        key=key,
        cert=cert,
        format=args.format,
        label=args.label,
        medium=Medium[args.medium.upper()],
        institution=args.institution,
        timestamp=args.timestamp,
        allow_mixed_patients=args.allow_mixed_patients,
        workers=args.workers if args.workers is not None else default_workers(),
        span=args.span,
        capacity=args.capacity,
        label_pdf=args.label_pdf,
        skip_unusable=args.skip_unusable,
    )
    try:
        with progress_bars(_progress_console(args, console), enabled=not args.json) as progress:
            result = author(req, progress=progress)
    except errors.UnusableFileError as exc:
        if args.skip_unusable:
            raise
        raise errors.UnusableFileError(
            exc.path,
            exc.problem,
            f"{exc.advice} Or run again with --skip-unusable to make the disc without such "
            "files (each is named on it).",
        ) from exc
    log.debug(
        "authored %d image(s) (%d watermarked), %d bytes in %.1f s",
        result.images,
        result.watermarked,
        result.bytes_written,
        result.seconds,
    )
    if drive is not None:
        _burn_and_read_back(args, console, result.outputs[0], drive, result.label)
    if args.json:
        from discmaker.models import author_result_to_json

        _write_json(author_result_to_json(result))
        return _author_exit(result)
    from discmaker.ui.render import author_summary

    console.print(author_summary(result))
    if drive is not None:
        console.print(Text(f"Burned to {drive} and read back: the disc verified.", "green"))
    return _author_exit(result)


def _author_exit(result: AuthorResult) -> int:
    """0 when every input file is on the disc; 2 when some were left out (--skip-unusable)."""
    return errors.AUTHOR_OMISSIONS if result.omitted else 0


def _burner(args: argparse.Namespace) -> str:
    """The drive ``--burn`` names, or the one burner this computer has; refused before work."""
    from discmaker.disc.burn import INSTALL_HINT, STDIO_PREFIX, find_xorriso, list_drives

    if args.format != "iso":
        raise errors.UsageError("--burn burns an ISO image: leave out --format folder.")
    if args.span:
        raise errors.UsageError(
            "--burn burns one disc; with --span, author the set, then burn each ISO image "
            "(the guide asks for each disc in turn)."
        )
    if find_xorriso() is None:
        raise errors.InputError(f"--burn needs xorriso, which is not installed. {INSTALL_HINT}")
    if args.burn:
        if not args.burn.startswith(STDIO_PREFIX) and not Path(args.burn).exists():
            raise errors.UsageError(f"--burn {args.burn}: there is no such drive.")
        return str(args.burn)
    drives = list_drives()
    if not drives:
        raise errors.InputError(
            "--burn: xorriso is installed but finds no disc burner on this computer. Connect "
            "one (and check that this user may use it, e.g. the cdrom group), or name it: "
            "--burn /dev/sr0."
        )
    if len(drives) > 1:
        names = ", ".join(d.address for d in drives)
        raise errors.UsageError(
            f"--burn: several burners ({names}); name one, e.g. --burn {drives[0].address}."
        )
    return drives[0].address


def _burn_and_read_back(
    args: argparse.Namespace, console: Console, iso: Path, drive: str, label: str
) -> None:
    """Burn ``iso``, read the disc back and check it against our own certificate."""
    from discmaker.check.burned import verify_burn
    from discmaker.crypto.trust import TrustStore
    from discmaker.disc.burn import burn

    shown = _progress_console(args, console)
    labels = {"burn": "Burning (MB)"}
    try:
        with progress_bars(shown, enabled=not args.json) as bars:
            burn(iso, drive, progress=lambda stage, d, t: bars(labels.get(stage, stage), d, t))
    except KeyboardInterrupt:
        shown.print(
            Text(
                f"Interrupted while burning: the disc in {drive} is incomplete; do not give "
                f"it out. The disc image {iso} is complete and kept.",
                "bold yellow",
            )
        )
        raise
    with progress_bars(shown, enabled=not args.json) as bars:
        report = verify_burn(
            drive, TrustStore.from_paths([args.cert]), progress=bars, workers=default_workers()
        )
    if not report.ok or report.fileset_id != label:
        raise errors.OutputError(
            f"The disc burned in {drive} did not verify when read back ({report.verdict.value}"
            f", label {report.fileset_id or 'none'}): do not give it out. Burn the image {iso} "
            "again on a new disc."
        )


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    from discmaker.check.verify import check_disc, check_set, tamper_thumbnails

    trust = _trust_store(args.trust)
    if args.report:
        _check_report_path(args.report)
    reports = []
    for source in args.source:
        log.debug("checking %s", source)
        started = time.monotonic()
        with progress_bars(_progress_console(args, console), enabled=not args.json) as progress:
            report = check_disc(source, trust=trust, progress=progress, workers=default_workers())
        log.debug(
            "checked %s: %s, %d image(s), %d finding(s) in %.1f s",
            source,
            report.verdict.value,
            len(report.images),
            len(report.findings),
            time.monotonic() - started,
        )
        reports.append(report)
    result = check_set(reports) if len(reports) > 1 else None
    if result is not None:  # each disc as the whole set judges it (disc k of n, with the rest)
        reports = list(result.discs)
    for n, (source, report) in enumerate(zip(args.source, reports, strict=True), 1):
        if not args.json:
            from discmaker.ui.render import check_summary

            console.print(check_summary(report))
        if args.report:
            from discmaker.ui.report_html import write_html_report  # PIL and jinja2: only here

            path = args.report
            if len(reports) > 1:
                path = path.with_name(f"{path.stem}_{n}{path.suffix}")
            write_html_report(report, path, thumbnails=tamper_thumbnails(source, report))
            if not args.json:
                console.print(Text(f"HTML report written to {path}"))
    if result is None:
        if args.json:
            _write_json(reports[0].to_json())
        return reports[0].exit_code
    if args.json:
        _write_json(result.to_json())
    elif result.complete:
        console.print(f"[green]Set complete:[/] all {len(reports)} discs of the set are present.")
    else:
        for finding in result.findings:
            console.print(Text.assemble(("Set incomplete: ", "red"), finding.message))
    return result.exit_code


def _check_report_path(path: Path) -> None:
    """Refuse an HTML report that could not be written, before the disc is read."""
    parent = path.absolute().parent
    if path.is_dir():
        raise errors.OutputError(f"--report {path} is a folder; give a file name, e.g. report.html")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise errors.OutputError(
            f"--report {path}: the folder {parent} does not exist or cannot be written; "
            "choose another place for the report (nothing was checked yet)"
        )


def cmd_restore(args: argparse.Namespace, console: Console) -> int:
    from discmaker.check.restore import restore_disc
    from discmaker.ui.render import restore_summary

    trust = _trust_store(args.trust)
    with progress_bars(_progress_console(args, console), enabled=not args.json) as progress:
        result = restore_disc(
            args.source,
            trust=trust,
            out=args.out,
            allow_partial=args.allow_partial,
            tampered_to=args.tampered_to,
            progress=progress,
            workers=default_workers(),
        )
    log.debug(
        "restored %d, held back %d, tampered written %d",
        len(result.restored),
        len(result.refused),
        len(result.tampered_written),
    )
    if args.json:
        _write_json(result.to_json())
    else:
        console.print(restore_summary(result))
    return result.exit_code


def _cmd_import(args: argparse.Namespace, console: Console) -> int:
    from discmaker.pacs.destination import Destination
    from discmaker.pacs.network import Tls
    from discmaker.pacs.reconcile import Reconciliation
    from discmaker.pacs.store import import_disc
    from discmaker.ui.render import check_summary
    from discmaker.ui.wording import plural

    destination = Destination.parse(args.to)
    tls = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        if args.tls_key and not args.tls_cert:
            raise errors.UsageError("--tls-key needs --tls-cert (the certificate of that key).")
        tls = Tls(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key)
    coerced = (args.patient_id, args.patient_name, args.accession)
    reconcile = None
    if args.worklist:
        from dataclasses import replace

        from discmaker.pacs.worklist import lookup_order

        reconcile = lookup_order(
            args.worklist,
            accession=args.accession,
            patient_id=args.patient_id,
            calling_aet=args.aet,
            tls=tls,
        )
        if args.patient_name is not None:  # the operator's word over the worklist's
            reconcile = replace(reconcile, patient_name=args.patient_name)
        if not args.json:
            _progress_console(args, console).print(
                Text(
                    f"Local order from the worklist: Patient ID {reconcile.patient_id}, "
                    f"{reconcile.patient_name}, Accession Number {reconcile.accession_number}."
                )
            )
    elif any(v is not None for v in coerced):
        reconcile = Reconciliation(
            patient_id=args.patient_id,
            patient_name=args.patient_name,
            accession_number=args.accession,
        )
    trust = _trust_store(args.trust)
    labels = {"send": "Sending to PACS"}
    with progress_bars(_progress_console(args, console), enabled=not args.json) as bars:

        def progress(stage: str, done: int, total: int) -> None:
            bars(labels.get(stage, stage), done, total)

        result = import_disc(
            args.source,
            destination,
            trust=trust,
            calling_aet=args.aet,
            dry_run=args.dry_run,
            log_path=args.log,
            reconcile=reconcile,
            progress=progress,
            workers=args.workers if args.workers is not None else default_workers(),
            tls=tls,
        )
    if args.json:
        _write_json(result.to_json())
        return result.exit_code
    where = plain(destination)
    if not result.verified:
        console.print(check_summary(result.report))
        why = (
            "it shows changes since it was signed (above). Do not import it; ask the sender "
            "for a new disc."
            if result.report.tampered
            else "no sender in your trust store vouches for it (above). If you expect discs "
            "from this sender, confirm their fingerprint by telephone, run 'discmaker trust "
            "add', then import again."
        )
        console.print(Text.assemble(("Nothing was sent ", "bold red"), f"to {where}: {why}"))
        return result.exit_code
    log.debug(
        "import to %s: %d sent, %d skipped, %d failed, %d would be sent",
        destination,
        len(result.sent),
        len(result.skipped),
        len(result.failed),
        len(result.would_send),
    )
    disc = plain(result.report.fileset_id) or plain(args.source)
    console.print(Text.assemble(("Disc verified ", "green"), f"({disc})."))
    if result.dry_run:
        console.print(
            Text(
                f"Dry run: {where} answered. {plural(len(result.would_send), 'image')} would "
                f"be sent, {len(result.skipped)} already there. Nothing was sent.",
                style="bold",
            )
        )
    elif result.sent:
        warned = [i for i in result.sent if i.message]
        line = f"{plural(len(result.sent), 'image')} sent to {where} and stored."
        if warned:
            line += f" {len(warned)} with a warning from the PACS ({plain(warned[0].message)})."
        console.print(Text(line, style="green"))
    if result.skipped:
        console.print(
            Text(f"{plural(len(result.skipped), 'image')} already at {where}: not sent again.")
        )
    if not result.dry_run and not result.sent and not result.failed:
        console.print(Text(f"Nothing new to send: every image is already at {where}."))
    if result.failed:
        console.print(
            Text(f"{plural(len(result.failed), 'image')} NOT stored at {where}:", style="bold red")
        )
        for item in result.failed[:20]:
            tries = f" (after {plural(item.attempts, 'attempt')})" if item.attempts else ""
            console.print(Text(f"  {plain(item.path)}: {plain(item.message)}{tries}"))
        if len(result.failed) > 20:
            console.print(Text(f"  ... and {len(result.failed) - 20} more (see the import log)."))
        console.print(
            "Run the same command again to send only the missing images. If they keep "
            "failing, give this list to the PACS administrator."
        )
    if result.reconciled and (result.sent or result.dry_run):
        console.print(
            Text(
                f"Reconciled in the sent copies: {', '.join(result.reconciled)} (the values "
                "on the disc are kept in Original Attributes Sequence)."
            )
        )
    if not result.dry_run:
        console.print(Text(f"Import log: {plain(result.log_path)}"), soft_wrap=True)
    return result.exit_code


def _trust_store(paths: Sequence[Path] | None) -> Any:
    from discmaker.crypto.trust import TrustStore

    return TrustStore.from_paths(paths) if paths else TrustStore.default()


def cmd_trust(args: argparse.Namespace, console: Console) -> int:
    from discmaker.check.sender import sender_certificate
    from discmaker.crypto.trust import TrustStore

    store = TrustStore.default()
    if args.trust_command == "add":
        certificate = sender_certificate(args.cert)
        subject, fingerprint = signing.subject_text(certificate), signing.fingerprint(certificate)
        console.print(Text.assemble("Sender      ", (plain(subject), "bold")))
        console.print(Text(f"Fingerprint {fingerprint}"), soft_wrap=True)
        if not args.yes:
            if not sys.stdin.isatty():
                raise errors.UsageError(
                    "trust add asks you to confirm the fingerprint, but there is no terminal "
                    "to ask on; confirm it with the sender by telephone, then run again with "
                    "--yes"
                )
            answer = console.input(
                "Have you read this fingerprint to the sender by telephone, and does it "
                "match theirs? Type yes to trust them: "
            )
            if answer.strip().lower() not in ("y", "yes"):
                console.print("Not trusted. Nothing was changed.")
                return errors.EX_USAGE
        signer = store.add_certificate(certificate)
        console.print(Text.assemble(("Trusted ", "green"), plain(signer.subject)))
    elif args.trust_command == "remove":
        signer = store.remove(args.fingerprint)
        console.print(
            Text(f"Removed {plain(signer.subject)} ({signer.fingerprint})"), soft_wrap=True
        )
    else:
        signers = store.list()
        if not signers:
            console.print(Text(f"No trusted senders yet (store: {store.directory})."))
        for s in signers:
            console.print(
                Text(f"{s.fingerprint}  {plain(s.subject)}  (valid until {s.not_after:%Y-%m-%d})"),
                soft_wrap=True,
            )
        for problem in store.problems:
            console.print(
                Text.assemble(("Skipped ", "yellow"), plain(f"{problem.path}: {problem.reason}"))
            )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "keygen": cmd_keygen,
    "author": cmd_author,
    "check": cmd_check,
    "restore": cmd_restore,
    "import": _cmd_import,
    "trust": cmd_trust,
    "station": cli_station.cmd_station,
}


def _interrupted(command: str | None) -> str:
    if command == "import":
        return (
            "Images already stored in the PACS stay there and are in the import log; "
            "the rest were not sent. Run the same command again to send only the rest."
        )
    return (
        "Nothing was left half-written: any partial output was removed. Input folders "
        "were not touched."
    )


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Run one command line; its exit status (the check contract for check and restore)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # No emoji codes (":AB:" in a fingerprint) and no markup in anything that is not ours.
    # Results go to stdout, progress and errors to stderr (a given console takes both).
    diagnostics = console or Console(stderr=True, highlight=False, emoji=False)
    console = console or Console(highlight=False, emoji=False)
    command = argv[0] if argv else None
    stderr_log: _StderrLog | None = None
    wants_json = "--json" in argv
    try:
        if not argv:
            stderr_log = _start_logging(verbose=False)
            from discmaker.ui.guide import run_guide

            return int(run_guide(console=console))
        args = build_parser().parse_args(argv)
        stderr_log = _start_logging(verbose=args.verbose)
        if args.command is None:
            raise errors.UsageError(f"No command given. Run '{APP_NAME} --help' for usage.")
        command = args.command
        wants_json = bool(getattr(args, "json", False))
        args.progress_console = diagnostics
        log.debug("%s %s: %s", APP_NAME, _Version(), " ".join(argv))
        code = COMMANDS[args.command](args, console)
        log.debug("%s finished with exit status %d", command, code)
        return code
    except errors.DiscmakerError as exc:
        log.debug("%s stopped: %s", command, type(exc).__name__, exc_info=True)
        diagnostics.print(Text.assemble(("Error: ", "bold red"), plain(exc)))
        code = errors.exit_code_for(exc, check_contract=command in CHECK_COMMANDS)
        if wants_json:
            _write_json(_error_json(exc, code))
        return code
    except KeyboardInterrupt as exc:
        diagnostics.print(Text.assemble(("Interrupted. ", "bold yellow"), _interrupted(command)))
        code = errors.exit_code_for(exc)
        if wants_json:
            _write_json(_error_json(exc, code))
        return code
    except Exception as exc:
        if os.environ.get("DISCMAKER_DEBUG"):
            raise
        log.debug("internal error", exc_info=True)
        diagnostics.print(
            f"[bold red]Internal error[/] ({type(exc).__name__}): this is a bug in discmaker. "
            "Please report it with the command you ran (run again with DISCMAKER_DEBUG=1 "
            "or --verbose for details). No partial output was kept."
        )
        code = errors.exit_code_for(exc, check_contract=command in CHECK_COMMANDS)
        if wants_json:
            _write_json(_error_json(exc, code))
        return code
    finally:
        if stderr_log is not None:
            stderr_log.close()


__all__ = ["build_parser", "main"]
