"""The guide's tasks: create a patient disc, check a received disc, restore checked images
for PACS import, and keys and trusted senders.

Each task says in plain words what it will do, shows what it found, ends with a result panel
and the next step, and shows the equivalent command line so the same job can be scripted. A
task returns its exit status (see :mod:`discmaker.ui.guide`). Before a disc is written or burned,
staff confirm the patient's name, ID and birth date against the request form.

The library modules behind the tasks are imported when a task starts, so the menu opens fast.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import platformdirs
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from discmaker import APP_NAME, errors
from discmaker.crypto import signing
from discmaker.disc.media import Medium
from discmaker.models import CheckReport, Verdict
from discmaker.parallel import default_workers
from discmaker.ui.guide_session import EXIT_CANCELLED, EXIT_STOPPED, Session, Stop, config_dir
from discmaker.ui.render import author_summary, check_summary, restore_summary
from discmaker.ui.wording import human_size, plain, plural


def _command(*parts: object) -> str:
    """One shell-quoted command line (printed unbroken by :meth:`Session.show_command`)."""
    return shlex.join(str(p) for p in parts)


def suggest_medium(estimated_bytes: int) -> Medium:
    """The smallest disc that holds the study with room for the disc's own files."""
    needed = int(estimated_bytes * 1.05) + 4_000_000
    for medium in (Medium.CD, Medium.DVD, Medium.BD):
        if medium.capacity is not None and needed <= medium.capacity:
            return medium
    return Medium.USB


# -- 1. create a disc ----------------------------------------------------------------------


def create_disc(session: Session) -> int:
    from discmaker.author.create import AuthorRequest, author, default_label
    from discmaker.author.preview import preview
    from discmaker.disc.burn import find_xorriso, list_drives
    from discmaker.format.dicomdir import validate_fileset_id

    session.intro(
        "Create a patient disc",
        "This makes a signed, tamper-evident patient disc from a study exported from "
        "PACS. First it reads the study and shows what it found; you then choose where "
        "the disc goes and confirm the patient. Nothing in the study folder is changed.",
    )
    while True:  # a folder without a usable study asks for the folder again, nothing else
        # No default on purpose: last time's study belongs to another patient.
        study = session.ask.path("Folder with the exported study", exists=True, what="folder")
        read = _read_study(session, study, preview)
        if read is not None:
            break
    found, skip_unusable = read
    session.console.print(_preview_panel(found))

    drives = list_drives()
    session.console.print()
    session.say("Where should the disc go?", "bold")
    choices: list[str] = []
    if drives:
        session.say("  b  Burn a CD/DVD in " + ", ".join(plain(d.description) for d in drives))
        choices.append("b")
    elif find_xorriso() is None:
        session.say(
            "  (Burning is not possible here: xorriso, the burning program, is not installed. "
            "Ask IT to install it.)"
        )
    else:
        session.say("  (No disc burner found on this computer.)")
    session.say("  i  Save a disc image (ISO file) to burn later")
    session.say("  u  Copy onto a USB stick (a folder)")
    choices += ["i", "u"]
    where = session.ask.choice("Choose", choices, default=choices[0])

    drive = None
    if where == "b":
        drive = drives[0]
        if len(drives) > 1:
            for n, d in enumerate(drives, 1):
                session.say(f"  {n}  {plain(d.description)}")
            pick = session.ask.choice("Which drive", [str(n) for n in range(1, len(drives) + 1)])
            drive = drives[int(pick) - 1]

    if where == "u":
        medium = Medium.USB
    else:
        suggested = suggest_medium(found.estimated_bytes)
        if suggested is Medium.USB:
            session.say(
                f"The study needs about {human_size(found.estimated_bytes)}: more than a "
                "Blu-ray disc holds. Use a USB stick, or split the study.",
                "yellow",
            )
            suggested = Medium.BD
        else:
            session.say(
                f"The study needs about {human_size(found.estimated_bytes)}; "
                f"a {suggested.label} is big enough."
            )
        medium = Medium[
            session.ask.choice(
                "Disc type", ["cd", "dvd", "bd"], default=suggested.name.lower()
            ).upper()
        ]

    now = datetime.now(UTC)
    while True:
        label = session.ask.text(
            "Disc label (1-16 of A-Z, 0-9, _)", default=default_label(now)
        ).upper()
        try:
            validate_fileset_id(label)
            break
        except errors.UsageError as exc:
            session.say(str(exc), "yellow")

    out_dir = Path(session.settings.get("out_dir") or Path.cwd())
    burn_dir: tempfile.TemporaryDirectory[str] | None = None
    if where == "i":
        out = session.ask.path(
            "Save the disc image as", default=out_dir / f"{label}.iso", exists=False
        )
    elif where == "u":
        out = session.ask.path(
            "New folder on the USB stick for the disc", default=out_dir / label, exists=False
        )
    else:
        # Not the system temp folder: it is often in memory, and a DVD image is 4.7 GB.
        cache = Path(platformdirs.user_cache_dir(APP_NAME))
        cache.mkdir(parents=True, exist_ok=True)
        burn_dir = tempfile.TemporaryDirectory(prefix="burn-", dir=cache)
        out = Path(burn_dir.name) / f"{label}.iso"

    try:
        key, cert, key_path, cert_path = _signing_identity(session)
        if not _confirm_patient(session, found):
            return EXIT_STOPPED

        req = AuthorRequest(
            inputs=(study,),
            out=out,
            key=key,
            cert=cert,
            format="folder" if where == "u" else "iso",
            label=label,
            medium=medium,
            expected_instances=found.sop_instance_uids,
            workers=default_workers(),
            skip_unusable=skip_unusable,
        )
        session.say("Making the disc: watermarking every image, then signing the disc...")
        try:
            with session.progress() as bar:
                result = author(req, progress=bar)
        except errors.UnusableFileError as exc:  # found only once the pixels are read
            if not _leave_out(session, exc):
                return EXIT_STOPPED
            skip_unusable = True
            req = replace(req, skip_unusable=True)
            session.say("Making the disc again, without the files that cannot go on it...")
            with session.progress() as bar:
                result = author(req, progress=bar)
        if burn_dir is None:
            session.kept.append(str(out))

        session.console.print(author_summary(result))
        remembered = {
            "key": str(key_path),
            "cert": str(cert_path),
            "medium": medium.name.lower(),
        }
        if burn_dir is None:
            remembered["out_dir"] = str(out.parent)
        session.remember(**remembered)

        author_cmd = [APP_NAME, "author", study, "--key", key_path, "--cert", cert_path]
        if skip_unusable:
            author_cmd.append("--skip-unusable")
        code = 0
        if drive is not None:
            code = _burn_and_verify(session, out, drive.address, cert_path, result.label)
            session.show_command(
                _command(
                    *author_cmd,
                    "--out",
                    "disc.iso",
                    "--label",
                    label,
                    "--medium",
                    medium.name.lower(),
                ),
                _command(
                    "xorriso",
                    "-as",
                    "cdrecord",
                    "-v",
                    f"dev={drive.address}",
                    "blank=as_needed",
                    "disc.iso",
                ),
                _command(APP_NAME, "check", drive.address, "--trust", cert_path),
                passphrase=True,
            )
            return code
        if session.ask.yes("Check the new disc now? (recommended)", default=True):
            code = _check_own(session, out, cert_path)
        if where == "u":
            session.next_step(
                "safely eject the USB stick before unplugging it, and give it to the patient."
            )
        else:
            session.next_step(
                f"burn {plain(out)} to a {medium.label} with the computer's burning "
                "program, or run this guide on a computer with a disc burner."
            )
        extra = ["--format", "folder"] if where == "u" else []
        session.show_command(
            _command(
                *author_cmd,
                "--out",
                out,
                "--label",
                label,
                "--medium",
                medium.name.lower(),
                *extra,
            ),
            passphrase=True,
        )
        return code
    finally:
        if burn_dir is not None:
            burn_dir.cleanup()


def _read_study(
    session: Session, study: Path, preview: Callable[..., Any]
) -> tuple[Any, bool] | None:
    """The study's preview, and whether staff chose to leave out files that cannot go on a
    disc; None (after saying why) when the folder must be chosen again."""
    session.say("Reading the study headers (the images themselves are not read yet)...")
    skip = False
    while True:
        try:
            with session.progress() as bar:
                found = preview(
                    [study], skip_unusable=skip, progress=lambda d, t: bar("scan", d, t)
                )
        except errors.UnusableFileError as exc:
            if skip or not _leave_out(session, exc):
                session.say("Choose the folder again once the file is fixed or exported again.")
                return None
            skip = True
            continue
        except errors.InputError as exc:
            session.console.print(Text.assemble(("Problem: ", "bold red"), plain(exc)))
            session.say("Choose the folder again: the one the PACS export wrote the study into.")
            return None
        return found, skip


def _leave_out(session: Session, exc: errors.UnusableFileError) -> bool:
    """Ask whether to make the disc without the files that cannot go on it (default: no)."""
    session.console.print(Text.assemble(("Problem: ", "bold red"), plain(exc)))
    session.say(
        "This file cannot go on a disc. The disc can be made without it (and without any "
        "other such file): each is then named on the disc and in the summary."
    )
    return session.ask.yes("Leave such files out and go on?", default=False)


def _preview_panel(found: Any) -> RenderableType:
    from discmaker.author.preview import StudyPreview, format_date

    assert isinstance(found, StudyPreview)
    parts: list[RenderableType] = []
    for p in found.patients:
        parts.append(
            Text.assemble(
                ("Patient     ", "bold"),
                plain(p.display_name or "(no name)"),
                "   ID ",
                plain(p.id),
                "   born ",
                plain(p.display_birth_date),
            )
        )
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for column in ("Study date", "Study", "Series", "Modality", "Description", "Images"):
        table.add_column(column, justify="right" if column == "Images" else "left")
    for s in found.studies:
        first = True
        for series in s.series:
            table.add_row(
                Text(plain(format_date(s.date)) if first else ""),
                Text(plain(s.description or "(no description)") if first else ""),
                Text(plain(series.number)),
                Text(plain(series.modality)),
                Text(plain(series.description)),
                Text(str(series.images)),
            )
            first = False
    parts.append(table)
    parts.append(
        Text.assemble(
            ("Total       ", "bold"),
            ", ".join(
                (
                    plural(len(found.studies), "study", "studies"),
                    plural(found.series_count, "series", "series"),
                    plural(found.images, "image"),
                    f"{human_size(found.total_bytes)} "
                    f"(about {human_size(found.estimated_bytes)} on the disc)",
                )
            ),
        )
    )
    skipped = [
        (found.non_dicom_skipped, "file that is not DICOM", "files that are not DICOM"),
        (found.duplicates_skipped, "identical copy", "identical copies"),
        (found.dicomdirs_skipped, "old DICOMDIR", "old DICOMDIRs"),
    ]
    left_out = [plural(n, one, many) for n, one, many in skipped if n]
    if left_out:
        parts.append(Text.assemble(("Left out    ", "bold"), ", ".join(left_out)))
    if found.unusable:
        parts.append(
            Text.assemble(
                ("Cannot go   ", "bold"),
                (f"{plural(len(found.unusable), 'file')} left out (named on the disc):", "yellow"),
            )
        )
        for item in found.unusable[:10]:
            parts.append(Text(f"  {plain(item.file)}: {plain(item.reason)}"))
        if len(found.unusable) > 10:
            parts.append(Text(f"  ... and {len(found.unusable) - 10} more"))
    return Panel(Group(*parts), title="What was found", title_align="left")


def _confirm_patient(session: Session, found: Any) -> bool:
    lines: list[RenderableType] = [
        Text("Compare with the request form before anything is written:", style="bold")
    ]
    for p in found.patients:
        lines.append(Text.assemble(("  Name        ", "bold"), plain(p.display_name)))
        lines.append(Text.assemble(("  Patient ID  ", "bold"), plain(p.id)))
        lines.append(Text.assemble(("  Birth date  ", "bold"), plain(p.display_birth_date)))
    session.console.print(Panel(Group(*lines), title="Right patient?", border_style="yellow"))
    if session.ask.yes(
        "Do the name, patient ID and birth date all match the request form?", default=False
    ):
        return True
    session.say("Stopped: nothing was written.", "bold yellow")
    session.say(
        "Check the request form and the study export (was the right patient exported?), "
        "then start again."
    )
    return False


def _signing_identity(session: Session) -> tuple[Any, Any, Path, Path]:
    """The centre's key and certificate, loaded (asks for the passphrase if needed).

    A certificate that cannot be read asks for the certificate again; three wrong passphrases,
    a file that is not a usable key, or a certificate of another key ask for the key again.
    """
    key_default = session.settings.get("key")
    if key_default is None or not Path(key_default).exists():
        session.say("The disc is signed with this centre's signing key (key.pem).")
        if not session.ask.yes(
            "Does this centre already have a signing key? (no: make one now)", default=True
        ):
            _create_identity(session)
            key_default = session.settings.get("key")
    cert_default = session.settings.get("cert")
    while True:
        key_path = session.ask.path(
            "Signing key (key.pem)", default=key_default, exists=True, what="key file"
        )
        key_default = str(key_path)
        if cert_default is None or Path(cert_default).parent != key_path.parent:
            cert_default = str(key_path.parent / signing.CERT_FILE_NAME)
        while True:
            cert_path = session.ask.path(
                "Certificate (cert.pem)", default=cert_default, exists=True, what="certificate file"
            )
            try:
                cert = signing.load_certificate(cert_path)
                break
            except errors.KeyFileError as exc:
                session.say(f"{plain(exc)}. Choose the certificate again.", "yellow")
        cert_default = str(cert_path)
        try:
            key = session.load_key(key_path)
            if key is None:
                continue  # three wrong passphrases: the key question again
            signing.check_pair(key, cert)
        except (errors.KeyFileError, errors.UsageError) as exc:
            session.say(f"{plain(exc)}. Choose the key and certificate again.", "yellow")
            continue
        return key, cert, key_path, cert_path


def _burn_and_verify(
    session: Session, iso: Path, drive: str, cert_path: Path, expected_label: str
) -> int:
    from discmaker.check.burned import verify_burn
    from discmaker.crypto.trust import TrustStore
    from discmaker.disc.burn import burn

    session.say(f"Burning to {plain(drive)}. Do not open the drive until it is finished.")
    try:
        with session.progress() as bar:
            burn(iso, drive, progress=bar)
    except KeyboardInterrupt:
        session.say(
            "Cancelled while burning: the disc in the drive is incomplete. Do not give it "
            "out; throw it away (a rewritable disc can be reused). Nothing else was "
            "written.",
            "bold yellow",
        )
        raise Stop(EXIT_CANCELLED) from None
    session.say("Reading the disc back to check it...")
    try:
        with session.progress() as bar:
            report = verify_burn(
                drive, TrustStore.from_paths([cert_path]), progress=bar, workers=default_workers()
            )
    except KeyboardInterrupt:
        session.say(
            "Cancelled while reading the disc back: the disc was burned but NOT checked. "
            "Do not give it out until it has been checked (menu 2).",
            "bold yellow",
        )
        raise Stop(EXIT_CANCELLED) from None
    session.console.print(check_summary(report))
    if report.ok and report.fileset_id != expected_label:
        session.say(
            f"The disc in the drive is not the one just burned (label {plain(report.fileset_id)}, "
            f"expected {plain(expected_label)}). Do not give it out.",
            "bold red",
        )
        return errors.CHECK_TAMPERED
    if report.ok:
        session.say("The disc is burned and verified.", "bold green")
        session.next_step("write the label on the disc and give it to the patient.")
    else:
        session.say("The burned disc did not verify. Do not give it out.", "bold red")
        session.next_step("burn a new disc; if it fails again, try another blank disc.")
    return report.exit_code


def _check_own(session: Session, out: Path, cert_path: Path) -> int:
    from discmaker.check.verify import check_disc
    from discmaker.crypto.trust import TrustStore

    with session.progress() as bar:
        report = check_disc(
            out,
            trust=TrustStore.from_paths([cert_path]),
            progress=bar,
            workers=default_workers(),
        )
    session.console.print(check_summary(report))
    if not report.ok:
        session.say("The new disc did not verify. Do not give it out.", "bold red")
    return report.exit_code


# -- 2. check a received disc --------------------------------------------------------------


def _ask_received_source(session: Session, prompt: str) -> Path:
    """Where the received disc is: a drive, an ISO file or a folder."""
    return session.ask.path(
        prompt, default=_default_source(session), exists=True, what="disc, ISO file or folder"
    )


def _default_source(session: Session) -> str | None:
    for candidate in ("/dev/sr0", "/dev/cdrom"):
        if Path(candidate).exists():
            return candidate
    return session.settings.get("check_source")


def check_received(session: Session) -> int:
    """Check a received disc; then offer to trust an unknown sender (after the telephone
    confirmation), to save the HTML report, and, for a verified disc, to import it."""
    session.intro(
        "Check a disc we received",
        "This checks a disc, disc image (ISO file) or USB folder sent by another centre: "
        "the sender's signature, every file, and every image's hidden watermark. It "
        "changes nothing on the disc. Afterwards you can save a report for the patient "
        "record and, if the disc verifies, import it into PACS.",
    )
    return _check_then(session, want_import=False)


def import_received(session: Session) -> int:
    """Import into PACS from the main menu: the disc is checked first; only a verified disc
    is offered for import."""
    session.intro(
        "Import a checked disc into PACS",
        "This first checks the disc (signature, files, watermarks). Only if it verifies are "
        "its original images sent to your PACS, after a test connection (DICOM echo). The "
        "disc is not changed.",
    )
    return _check_then(session, want_import=True)


def _check_then(session: Session, *, want_import: bool) -> int:
    from discmaker.crypto.trust import TrustStore

    source = _ask_received_source(session, "Disc drive, ISO file or folder to check")
    store = TrustStore.default()
    if store.is_empty():
        session.say(
            "No trusted senders are set up yet. If the disc's sender is not trusted, you "
            "can trust them after the check, once you have confirmed their fingerprint by "
            "telephone.",
            "yellow",
        )
    report = _run_check(session, source, store)
    # Remember the folder only: received file names often carry the patient's name.
    if source.is_file():
        session.remember(check_source=str(source.parent))
    elif source.is_dir():
        session.remember(check_source=str(source))
    commands: list[str] = []
    if _may_trust(report) and _trust_sender(session, source, report, store):
        commands.append(_command(APP_NAME, "trust", "add", source))
        session.say("Checking the disc again, now that its sender is trusted...")
        report = _run_check(session, source, store)
    if report.ok:
        session.say(
            "The disc verified: its images are exactly what the sender signed.", "bold green"
        )
    elif report.verdict is Verdict.IMAGES_VERIFIED:
        session.say(
            "Each image verified by its watermark: header and pixels are exactly what the "
            "sender sealed.",
            "bold green",
        )
        session.next_step(
            "these are loose files, so nothing shows whether other images of the study are "
            "missing. For the whole study in PACS, ask the sender for the disc."
        )
    elif report.verdict is Verdict.NOT_VERIFIABLE:
        session.next_step(
            "do not import these images until the sender is trusted: get their certificate "
            "(or use this disc), confirm its fingerprint by telephone and trust them under "
            "5 (Keys and trusted senders), then check the disc again."
        )
    else:
        session.next_step(
            "do not import these images. Tell the sender and your PACS administrator."
        )
    report_path = _offer_report(session, source, report)
    check_cmd: list[object] = [APP_NAME, "check", source]
    if report_path is not None:
        check_cmd += ["--report", report_path]
    commands.append(_command(*check_cmd))
    session.show_command(*commands)
    if not report.ok:
        if want_import and report.verdict is Verdict.IMAGES_VERIFIED:
            session.say(
                "Not imported: only a whole disc that verifies is sent to PACS. Nothing was sent.",
                "bold red",
            )
        elif want_import:
            session.say(
                "Not imported: only a disc that verifies is sent to PACS. Nothing was sent.",
                "bold red",
            )
        return report.exit_code
    if want_import or session.ask.yes("Import these images into PACS now?", default=False):
        return _import_to_pacs(session, source, report, store)
    session.next_step(
        "to import the images into PACS, choose 4 (Import) in the menu, or 3 to restore "
        "them into a folder."
    )
    return report.exit_code


def _run_check(session: Session, source: Path, store: Any) -> CheckReport:
    from discmaker.check.verify import check_disc

    with session.progress() as bar:
        report = check_disc(source, trust=store, progress=bar, workers=default_workers())
    session.console.print(check_summary(report))
    return report


def _may_trust(report: CheckReport) -> bool:
    """A consistent, validly signed disc whose signer nobody here trusts yet."""
    signer = report.signer
    return bool(
        report.verdict is Verdict.NOT_VERIFIABLE
        and report.signed
        and report.signature_valid
        and not report.tampered
        and signer is not None
        and not signer.trusted
    )


def _trust_sender(session: Session, source: Path, report: CheckReport, store: Any) -> bool:
    """Offer to trust the disc's sender; True when they were added to the user's store."""
    from discmaker.check.sender import sender_certificate
    from discmaker.crypto.trust import TrustedSigner

    session.console.print()
    session.say("The sender of this disc is not trusted here yet.", "bold yellow")
    if not session.ask.yes(
        "Trust this sender? (you will confirm their fingerprint by telephone first)",
        default=False,
    ):
        session.say("Not trusted. Nothing was changed.")
        return False
    certificate = sender_certificate(source)
    signer = TrustedSigner.from_certificate(certificate)
    if report.signer is None or signer.fingerprint != report.signer.fingerprint:
        # The disc in the drive is not the one just checked (or it changed): trust nothing.
        raise errors.DiscError(
            f"the sender certificate on {source} is not the one the check just read; the disc "
            "may have been changed or swapped. Nothing was trusted; check the disc again"
        )
    if not _confirm_sender(session, signer):
        return False
    store.add_certificate(certificate)
    _say_trusted(session, signer, store)
    return True


def _safe_label(text: str) -> str:
    """A disc's label for a file name (the disc is hostile: A-Z, 0-9 and _ only)."""
    kept = "".join(c for c in text.upper() if c.isascii() and (c.isalnum() or c == "_"))
    return kept[:16] or "DISC"


def _report_path_problem(path: Path) -> str | None:
    parent = path.absolute().parent
    if path.suffix.lower() not in (".html", ".htm"):
        return f"{plain(path.name)} does not end in .html; give a name such as report.html."
    if not parent.is_dir():
        return f"The folder {plain(parent)} does not exist. Choose a folder that exists."
    if not os.access(parent, os.W_OK | os.X_OK):
        return (
            f"The folder {plain(parent)} cannot be written by you. Choose another place for "
            "the report (for example your home folder)."
        )
    return None


def _offer_report(session: Session, source: Path, report: CheckReport) -> Path | None:
    """Offer the HTML report of the check for the patient record; its path when saved."""
    from discmaker.check.verify import tamper_thumbnails
    from discmaker.ui.report_html import write_html_report

    if not session.ask.yes(
        "Save a report of this check (HTML, printable) for the patient record?", default=True
    ):
        return None
    folder = Path(session.settings.get("report_dir") or Path.cwd())
    when = datetime.now().astimezone().strftime("%Y%m%d-%H%M")
    default = folder / f"check-{_safe_label(report.fileset_id)}-{when}.html"
    thumbnails = tamper_thumbnails(source, report)
    while True:  # a place that cannot be written asks for the place again
        path = session.ask.path("Save the report as", default=default, exists=False)
        problem = _report_path_problem(path)
        if problem is None:
            try:
                write_html_report(report, path, thumbnails=thumbnails)
                break
            except errors.OutputError as exc:
                problem = f"{plain(exc)}. Choose another place for the report."
        session.say(problem, "yellow")
        default = folder / default.name
    session.kept.append(str(path))
    session.remember(report_dir=str(path.absolute().parent))
    session.say_unwrapped("Report saved: ", str(path), "green")
    return path


# -- import into PACS ----------------------------------------------------------------------


def _ask_aet(session: Session, prompt: str, default: str | None, what: str) -> str:
    from discmaker.pacs.destination import check_aet

    while True:
        try:
            return check_aet(session.ask.text(prompt, default=default), what=what)
        except errors.UsageError as exc:
            session.say(plain(exc), "yellow")


def _ask_pacs(session: Session) -> tuple[Any, str] | None:
    """The PACS and this computer's AE title, once the PACS answered a DICOM echo; None when
    the operator gives up. The answers are the defaults of the next import in this run."""
    from discmaker.pacs.destination import DEFAULT_CALLING_AET, Destination, DestinationError
    from discmaker.pacs.network import Association
    from discmaker.pacs.store import DEFAULT_TIMEOUT

    memory = session.pacs
    while True:
        aet = _ask_aet(session, "AE title of the PACS", memory.get("aet"), "AE title of the PACS")
        memory["aet"] = aet
        while True:
            host = session.ask.text(
                "Host name or IP address of the PACS", default=memory.get("host")
            )
            try:
                Destination(aet=aet, host=host, port=104)
                break
            except errors.UsageError as exc:
                session.say(plain(exc), "yellow")
        memory["host"] = host
        while True:
            port_text = session.ask.text("DICOM port of the PACS", default=memory.get("port"))
            if port_text.isdigit() and 1 <= int(port_text) <= 65535:
                break
            session.say(
                f"{plain(port_text)} is not a port number (1-65535). The usual DICOM ports are "
                "104 and 11112; ask your PACS administrator.",
                "yellow",
            )
        memory["port"] = port_text
        calling = _ask_aet(
            session,
            "AE title of this computer (as the PACS knows it)",
            memory.get("calling", DEFAULT_CALLING_AET),
            "AE title of this computer",
        )
        memory["calling"] = calling
        destination = Destination(aet=aet, host=host, port=int(port_text))
        session.say(f"Testing the connection to {plain(destination)} (DICOM echo)...")
        try:
            with Association(
                destination, calling_aet=calling, storage=(), timeout=DEFAULT_TIMEOUT
            ) as assoc:
                assoc.echo()
        except DestinationError as exc:
            session.say("The PACS does not answer.", "bold red")
            session.say(plain(exc))
            if session.ask.yes("Change the PACS details and try again?", default=True):
                continue
            session.say("Nothing was sent.", "bold yellow")
            return None
        session.say(f"The PACS {plain(destination)} answered.", "green")
        return destination, calling


def _ask_local_value(
    session: Session, prompt: str, received: str, check: Callable[[str], Any]
) -> str | None:
    """This hospital's value, or None (Enter) to keep the received one."""
    shown = plain(received) if received else "(empty)"
    while True:
        value = session.ask.optional(f"{prompt} (Enter keeps {shown})")
        if not value or value == received:
            return None
        try:
            check(value)
            return value
        except errors.UsageError as exc:
            session.say(plain(exc), "yellow")


def _ask_reconciliation(session: Session, report: CheckReport) -> Any:
    """Import reconciliation: local Patient ID, name and accession number, or None."""
    from discmaker.pacs.reconcile import Reconciliation
    from discmaker.ui.wording import person_name

    patients = report.patients
    if len(patients) != 1:
        session.say(
            f"The disc holds images of {len(patients)} patients: patient details are sent as "
            "received (reconcile them in PACS).",
            "yellow",
        )
        return None
    patient = patients[0]
    session.console.print()
    session.say("Match the images to this hospital's records (import reconciliation)", "bold")
    session.say(
        "Type this hospital's values from your patient system or the order, or press Enter "
        "to keep the values on the disc. Only the copies sent to PACS change; the values on "
        "the disc are kept in them (Original Attributes Sequence)."
    )
    session.say_unwrapped(
        "  On the disc: ", f"{person_name(patient.name)}, ID {plain(patient.patient_id)}"
    )
    patient_id = _ask_local_value(
        session,
        "Local Patient ID",
        patient.patient_id,
        lambda v: Reconciliation(patient_id=v),
    )
    name = _ask_local_value(
        session,
        "Local patient name, as FAMILY^GIVEN",
        patient.name,
        lambda v: Reconciliation(patient_name=v),
    )
    accession = None
    studies = patient.studies
    if len(studies) == 1:
        accession = _ask_local_value(
            session,
            "Local accession number",
            studies[0].accession,
            lambda v: Reconciliation(accession_number=v),
        )
    elif len(studies) > 1:
        session.say(
            f"The disc holds {len(studies)} studies: their accession numbers are sent as received.",
            "dim",
        )
    if patient_id is None and name is None and accession is None:
        session.say("The values on the disc are sent unchanged.")
        return None
    return Reconciliation(patient_id=patient_id, patient_name=name, accession_number=accession)


def _import_to_pacs(session: Session, source: Path, report: CheckReport, store: Any) -> int:
    """The guided import of a verified disc: PACS details and echo, reconciliation, send."""
    from discmaker.pacs.destination import DEFAULT_CALLING_AET
    from discmaker.pacs.store import import_disc

    assert report.ok  # never offered for a disc that did not verify
    session.console.print()
    session.say("Import into PACS", "bold")
    pacs = _ask_pacs(session)
    if pacs is None:
        return EXIT_STOPPED
    destination, calling = pacs
    reconcile = _ask_reconciliation(session, report)
    session.say(
        "Checking the disc once more and sending its verified original images "
        f"to {plain(destination)}..."
    )
    sending = [False]
    labels = {"send": "Sending to PACS"}
    try:
        with session.progress() as bars:

            def progress(stage: str, done: int, total: int) -> None:
                sending[0] = sending[0] or stage == "send"
                bars(labels.get(stage, stage), done, total)

            result = import_disc(
                source,
                destination,
                trust=store,
                calling_aet=calling,
                reconcile=reconcile,
                progress=progress,
                workers=default_workers(),
            )
    except KeyboardInterrupt:
        if not sending[0]:
            raise  # still checking: nothing was sent or written
        session.say(
            "Cancelled while sending to PACS. The images the PACS already confirmed stay "
            "there and are recorded in the import log; choose Import again to send only the "
            "rest. Nothing else was written.",
            "bold yellow",
        )
        raise Stop(EXIT_CANCELLED) from None
    command: list[object] = [APP_NAME, "import", source, "--to", destination]
    if calling != DEFAULT_CALLING_AET:
        command += ["--aet", calling]
    if reconcile is not None:
        flags = {"PatientID": "--patient-id", "PatientName": "--patient-name"}
        flags["AccessionNumber"] = "--accession"
        for keyword, value in reconcile.values.items():
            command += [flags[keyword], value]
    if not result.verified:  # the disc changed between the check and the import
        session.console.print(check_summary(result.report))
        session.say(
            "Nothing was sent: the disc no longer verifies (see above). Do not import it.",
            "bold red",
        )
        return result.exit_code
    session.console.print(_import_panel(result))
    session.say_unwrapped("Import log: ", str(result.log_path))
    if result.failed:
        session.next_step(
            "choose 4 (Import) again to send only the images that were not stored. If they "
            "keep failing, give the list above to the PACS administrator."
        )
    else:
        reconciled = (
            f" The copies in PACS carry this hospital's {', '.join(result.reconciled)}."
            if result.reconciled
            else ""
        )
        session.next_step(f"the images are in PACS; tell the radiologist.{reconciled}")
    session.show_command(_command(*command))
    return result.exit_code


def _import_panel(result: Any) -> RenderableType:
    stored, there, failed = len(result.sent), len(result.skipped), len(result.failed)
    warned = [i for i in result.sent if i.message]
    lines: list[RenderableType] = [
        Text.assemble(("Stored in PACS    ", "bold"), plural(stored, "image")),
        Text.assemble(("Already there     ", "bold"), plural(there, "image")),
        Text.assemble(
            ("Failed            ", "bold"), (plural(failed, "image"), "bold red" if failed else "")
        ),
    ]
    if warned:
        lines.append(
            Text(f"{len(warned)} stored with a warning from the PACS ({plain(warned[0].message)}).")
        )
    for item in result.failed[:10]:
        lines.append(Text(f"  {plain(item.path)}: {plain(item.message)}", style="red"))
    if failed > 10:
        lines.append(Text(f"  ... and {failed - 10} more (see the import log)."))
    style = "red" if failed else "green"
    return Panel(
        Group(*lines),
        title=f"Import into {plain(result.destination)}",
        title_align="left",
        border_style=style,
    )


# -- 3. restore ----------------------------------------------------------------------------


def restore(session: Session) -> int:
    from discmaker.check.restore import restore_disc
    from discmaker.crypto.trust import TrustStore

    session.intro(
        "Restore checked images for import",
        "This checks a received disc and writes the images that verify, with their "
        "original pixels, into a new folder ready for PACS import. Images that fail are "
        "not written. The disc is not changed.",
    )
    source = _ask_received_source(session, "Disc drive, ISO file or folder")
    parent = Path(session.settings.get("restore_dir") or Path.cwd())
    out = session.ask.path(
        "New folder for the restored images", default=parent / "RESTORED", exists=False
    )
    partial = False

    def ask_partial(held: Sequence[str], failed: Sequence[str]) -> bool:
        nonlocal partial
        session.say(
            f"{len(failed)} image(s) did not verify: {', '.join(failed[:5])}"
            + (" ..." if len(failed) > 5 else "")
            + f". {len(held)} verified image(s) of the same series would be incomplete in "
            "PACS without them.",
            "yellow",
        )
        partial = session.ask.yes(
            "Restore the verified images of those incomplete series anyway?", default=False
        )
        return partial

    with session.progress() as bar:
        result = restore_disc(
            source,
            trust=TrustStore.default(),
            out=out,
            allow_partial=ask_partial,
            progress=bar,
            workers=default_workers(),
        )
    session.console.print(restore_summary(result))
    session.remember(restore_dir=str(out.parent))
    if result.restored:
        session.kept.append(str(out))
        incomplete = " Some series in it are incomplete: tell the radiologist." if partial else ""
        session.next_step(f"import the folder {plain(out)} into PACS.{incomplete}")
    else:
        session.next_step("nothing can be imported; tell the sender and your PACS administrator.")
    command = [APP_NAME, "restore", source, "--out", out, *(["--allow-partial"] if partial else [])]
    session.show_command(_command(*command))
    return result.exit_code


# -- 4. keys and trusted senders -----------------------------------------------------------


def keys_menu(session: Session) -> int:
    items: list[tuple[str, str, Callable[[], int]]] = [
        ("1", "Create this centre's signing key", partial(_create_identity, session)),
        ("2", "Trust a sender's certificate", partial(_trust_add, session)),
        ("3", "List trusted senders", partial(_trust_list, session)),
        ("4", "Stop trusting a sender", partial(_trust_remove, session)),
    ]
    code = 0
    while True:
        session.console.print()
        session.say("Keys and trusted senders", "bold")
        for key, text, _ in items:
            session.say(f"  {key}  {text}")
        session.say("  b  Back to the main menu")
        answer = session.ask.choice("Choose", [i[0] for i in items] + ["b"])
        if answer == "b":
            return code
        code = session.attempt(next(i[2] for i in items if i[0] == answer))


def _create_identity(session: Session) -> int:
    session.intro(
        "Create this centre's signing key",
        "This makes the key that signs your discs (key.pem, kept secret and protected by "
        "a passphrase) and its certificate (cert.pem, given to the clinics that receive "
        "your discs). Do this once per centre; existing keys are never overwritten.",
    )
    org = session.ask.text("Organisation name", default=session.settings.get("org"))
    default_dir = config_dir() / "signing"
    while True:
        folder = session.ask.path("Folder for key.pem and cert.pem", default=default_dir)
        if (folder / signing.KEY_FILE_NAME).exists() or (folder / signing.CERT_FILE_NAME).exists():
            session.say("That folder already holds a key or certificate. Choose another.")
            continue
        break
    identity = signing.generate_identity(org)
    passphrase = session.new_passphrase()
    key_path, cert_path = signing.write_identity(identity, folder, passphrase=passphrase)
    session.key_made = key_path
    fp = signing.fingerprint(identity.certificate)
    session.console.print()
    session.say("Signing key created", "bold green")
    # Not in a panel: a panel breaks long lines, and the fingerprint and paths are copied.
    session.say_unwrapped("Signing key  ", str(key_path))
    session.say_unwrapped("Certificate  ", str(cert_path))
    session.say_unwrapped("Fingerprint  ", fp)
    session.console.print(
        Panel(
            Text(
                f"The key is the file {key_path} (with cert.pem next to it). Without it this "
                "centre cannot sign discs under the name the clinics trust, so keep a copy "
                "now: copy the whole folder "
                f"{folder} to a USB stick or your IT department's backup and lock it away. "
                "Keep the passphrase apart from the copy (for example in a sealed envelope in "
                "the safe). Never send key.pem to anyone; only cert.pem is given out."
            ),
            title="Back up the key",
            title_align="left",
            border_style="yellow",
        )
    )
    session.remember(org=org, key=str(key_path), cert=str(cert_path))
    session.next_step(
        "back up the key (above), give cert.pem to the clinics that receive your discs and "
        "read them the fingerprint by telephone. Keep key.pem and its passphrase secret."
    )
    session.show_command(
        _command(APP_NAME, "keygen", "--org", org, "--out", folder), passphrase=True
    )
    return 0


def _trust_add(session: Session) -> int:
    from discmaker.crypto.trust import TrustedSigner, TrustStore

    session.intro(
        "Trust a sender",
        "Discs from a sender verify only once you trust the sender's certificate. You "
        "will see its fingerprint: telephone the sender on a number you already know "
        "(not one from the disc or an email) and ask them to read theirs out.",
    )
    while True:  # a file that is not a certificate asks for the file again
        cert_path = session.ask.path(
            "Sender's certificate file (.pem)", exists=True, what="certificate file"
        )
        try:
            certificate = signing.load_certificate(cert_path)
            break
        except errors.KeyFileError as exc:
            session.say(f"{plain(exc)}. Choose the sender's certificate file again.", "yellow")
    signer = TrustedSigner.from_certificate(certificate)
    if not _confirm_sender(session, signer):
        return EXIT_STOPPED
    store = TrustStore.default()
    store.add_certificate(certificate)
    _say_trusted(session, signer, store)
    session.next_step("discs signed by this sender now verify under 2 (Check a disc).")
    session.show_command(_command(APP_NAME, "trust", "add", cert_path))
    return 0


def _confirm_sender(session: Session, signer: Any) -> bool:
    """Shows the sender and fingerprint; True once the operator says the sender read out the
    same fingerprint on the telephone. "No" changes nothing."""
    session.console.print()
    session.say("Confirm the sender by telephone before trusting them", "bold yellow")
    session.say_unwrapped("Sender       ", plain(signer.subject))
    session.say_unwrapped("Fingerprint  ", signer.fingerprint)
    session.say_unwrapped("Valid until  ", f"{signer.not_after:%Y-%m-%d}")
    session.say(
        "Telephone the sender on a number you already know (not one from the disc or an "
        "email) and ask them to read out their fingerprint. Compare every pair of characters."
    )
    if session.ask.yes(
        "Did the sender read out exactly this fingerprint on the phone?", default=False
    ):
        return True
    session.say("Not trusted. Nothing was changed.", "bold yellow")
    return False


def _say_trusted(session: Session, signer: Any, store: Any) -> None:
    session.say(f"Trusted: {plain(signer.subject)}", "bold green")
    session.say_unwrapped("(Added to your trust store: ", f"{plain(store.directory)})", "dim")


def _trust_list(session: Session) -> int:
    from discmaker.crypto.trust import TrustStore

    store = TrustStore.default()
    signers = store.list()
    if not signers:
        session.say(f"No trusted senders yet (store: {store.directory}).")
    else:
        # One line each, never broken, so that a fingerprint can be read out or copied whole.
        session.say("Trusted senders", "bold")
        for n, s in enumerate(signers, 1):
            session.console.print(
                Text(f"  {n}  {plain(s.subject)}  (valid until {s.not_after:%Y-%m-%d})")
            )
            session.say_unwrapped("     Fingerprint ", s.fingerprint)
    for problem in store.problems:
        session.say(f"Skipped {plain(problem.path)}: {plain(problem.reason)}", "yellow")
    session.show_command(_command(APP_NAME, "trust", "list"))
    return 0


def _trust_remove(session: Session) -> int:
    from discmaker.crypto.trust import TrustStore

    store = TrustStore.default()
    signers = store.list()
    if not signers:
        session.say("No trusted senders yet: there is nothing to remove.")
        return 0
    for n, s in enumerate(signers, 1):
        session.console.print(Text(f"  {n}  {plain(s.subject)}  {s.fingerprint}"), soft_wrap=True)
    answer = session.ask.choice(
        "Which sender should no longer be trusted (b: back)",
        [str(n) for n in range(1, len(signers) + 1)] + ["b"],
    )
    if answer == "b":
        return 0
    signer = signers[int(answer) - 1]
    if not session.ask.yes(
        f"Stop trusting {plain(signer.subject)}? Their discs will then show as 'not verifiable'.",
        default=False,
    ):
        session.say("Nothing was changed.")
        return EXIT_STOPPED
    store.remove(signer.fingerprint)
    session.say(f"No longer trusted: {plain(signer.subject)}", "bold green")
    session.show_command(_command(APP_NAME, "trust", "remove", signer.fingerprint))
    return 0


__all__ = [
    "check_received",
    "create_disc",
    "import_received",
    "keys_menu",
    "restore",
    "suggest_medium",
]
