"""The guide's tasks: create a patient disc, check a received disc, restore checked images
for PACS import, and keys and trusted senders.

Each task says in plain words what it will do, shows what it found, ends with a result panel
and the next step, and shows the equivalent command line so the same job can be scripted. A
task returns its exit status (see :mod:`discmaker.ui.guide`). Before a disc is written or burned,
staff confirm the patient's name, ID and birth date against the request form.

The library modules behind the tasks are imported when a task starts, so the menu opens fast.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable, Sequence
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
from discmaker.parallel import default_workers
from discmaker.ui.guide_session import EXIT_CANCELLED, EXIT_STOPPED, Session, Stop, config_dir
from discmaker.ui.render import author_summary, check_summary, restore_summary
from discmaker.ui.wording import human_size, plain, plural


def _command(*parts: object) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


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
    from discmaker.disc.burn import list_drives
    from discmaker.format.dicomdir import validate_fileset_id

    session.intro(
        "Create a patient disc",
        "This makes a signed, tamper-evident patient disc from a study exported from "
        "PACS. First it reads the study and shows what it found; you then choose where "
        "the disc goes and confirm the patient. Nothing in the study folder is changed.",
    )
    # No default on purpose: last time's study belongs to another patient.
    study = session.ask.path("Folder with the exported study", exists=True, what="folder")
    session.say("Reading the study headers (the images themselves are not read yet)...")
    with session.progress() as bar:
        found = preview([study], progress=lambda d, t: bar("scan", d, t))
    session.console.print(_preview_panel(found))

    drives = list_drives()
    session.console.print()
    session.say("Where should the disc go?", "bold")
    choices: list[str] = []
    if drives:
        session.say("  b  Burn a CD/DVD in " + ", ".join(plain(d.description) for d in drives))
        choices.append("b")
    else:
        session.say("  (No disc burner found on this computer, or xorriso is not installed.)")
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
        )
        session.say("Making the disc: watermarking every image, then signing the disc...")
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
    """The centre's key and certificate, loaded (asks for the passphrase if needed)."""
    key_default = session.settings.get("key")
    if key_default is None or not Path(key_default).exists():
        session.say("The disc is signed with this centre's signing key (key.pem).")
        if not session.ask.yes(
            "Does this centre already have a signing key? (no: make one now)", default=True
        ):
            _create_identity(session)
            key_default = session.settings.get("key")
    key_path = session.ask.path(
        "Signing key (key.pem)", default=key_default, exists=True, what="key file"
    )
    cert_default = session.settings.get("cert")
    if cert_default is None or Path(cert_default).parent != key_path.parent:
        cert_default = str(key_path.parent / signing.CERT_FILE_NAME)
    cert_path = session.ask.path(
        "Certificate (cert.pem)", default=cert_default, exists=True, what="certificate file"
    )
    cert = signing.load_certificate(cert_path)
    key = session.load_key(key_path)
    signing.check_pair(key, cert)
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
    from discmaker.check.verify import check_disc
    from discmaker.crypto.trust import TrustStore

    session.intro(
        "Check a disc we received",
        "This checks a disc, disc image (ISO file) or USB folder sent by another centre: "
        "the sender's signature, every file, and every image's hidden watermark. It "
        "changes nothing and writes nothing.",
    )
    source = _ask_received_source(session, "Disc drive, ISO file or folder to check")
    store = TrustStore.default()
    if store.is_empty():
        session.say(
            "No trusted senders are set up yet, so the result can only be 'not "
            "verifiable'. Add senders under 'Keys and trusted senders'.",
            "yellow",
        )
    with session.progress() as bar:
        report = check_disc(source, trust=store, progress=bar, workers=default_workers())
    session.console.print(check_summary(report))
    # Remember the folder only: received file names often carry the patient's name.
    if source.is_file():
        session.remember(check_source=str(source.parent))
    elif source.is_dir():
        session.remember(check_source=str(source))
    if report.ok:
        session.next_step(
            "to import the images into PACS, choose 3 (Restore checked images) in the menu."
        )
    elif report.exit_code == errors.CHECK_NOT_VERIFIABLE:
        session.next_step(
            "if the sender is not trusted yet, get their certificate, confirm its "
            "fingerprint by telephone and add it under 4 (Keys and trusted senders)."
        )
    else:
        session.next_step(
            "do not import these images. Tell the sender and your PACS administrator."
        )
    session.show_command(_command(APP_NAME, "check", source))
    return report.exit_code


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
    session.kept.append(str(key_path))
    fp = signing.fingerprint(identity.certificate)
    session.console.print(
        Panel(
            Group(
                Text.assemble(("Signing key  ", "bold"), str(key_path)),
                Text.assemble(("Certificate  ", "bold"), str(cert_path)),
                Text.assemble(("Fingerprint  ", "bold"), fp),
            ),
            title="Signing key created",
            title_align="left",
            border_style="green",
        )
    )
    session.remember(org=org, key=str(key_path), cert=str(cert_path))
    session.next_step(
        "give cert.pem to the clinics that receive your discs and read them the "
        "fingerprint by telephone. Keep key.pem and its passphrase secret."
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
    cert_path = session.ask.path(
        "Sender's certificate file (.pem)", exists=True, what="certificate file"
    )
    signer = TrustedSigner.from_certificate(signing.load_certificate(cert_path))
    session.console.print(
        Panel(
            Group(
                Text.assemble(("Sender       ", "bold"), plain(signer.subject)),
                Text.assemble(("Fingerprint  ", "bold"), signer.fingerprint),
                Text.assemble(("Valid until  ", "bold"), f"{signer.not_after:%Y-%m-%d}"),
            ),
            title="Confirm by telephone",
            title_align="left",
            border_style="yellow",
        )
    )
    if not session.ask.yes(
        "Did the sender read out exactly this fingerprint on the phone?", default=False
    ):
        session.say("Not trusted. Nothing was changed.", "bold yellow")
        return EXIT_STOPPED
    store = TrustStore.default()
    store.add(cert_path)
    session.say(f"Trusted: {plain(signer.subject)}", "bold green")
    session.next_step("discs signed by this sender now verify under 2 (Check a disc).")
    session.show_command(_command(APP_NAME, "trust", "add", cert_path))
    return 0


def _trust_list(session: Session) -> int:
    from discmaker.crypto.trust import TrustStore

    store = TrustStore.default()
    signers = store.list()
    if not signers:
        session.say(f"No trusted senders yet (store: {store.directory}).")
    else:
        table = Table(title="Trusted senders", header_style="bold")
        for column in ("#", "Sender", "Fingerprint", "Valid until"):
            table.add_column(column)
        for n, s in enumerate(signers, 1):
            table.add_row(str(n), Text(plain(s.subject)), s.fingerprint, f"{s.not_after:%Y-%m-%d}")
        session.console.print(table)
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
    "keys_menu",
    "restore",
    "suggest_medium",
]
