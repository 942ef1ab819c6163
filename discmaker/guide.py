"""The guided terminal workflow: ``discmaker`` with no arguments.

For front-desk staff and radiographers who do not know the flags. A menu leads to each task
(create a patient disc, check a received disc, restore checked images for PACS import, keys
and trusted senders); every step says in plain words what it will do and shows what it found,
long work shows progress bars, each task ends with a result panel, the next step and the
equivalent command line, so the same job can be scripted.

Safety rules:

* Before a disc is written or burned, the patient's name, ID and birth date are read back and
  staff must confirm them against the request form; "no" stops with nothing written.
* Ctrl-C at any point stops cleanly: authoring and restoring are atomic, so nothing is left
  half-written, and the guide says so (exit status 130). An interrupted *burn* leaves an
  incomplete disc in the drive; the guide says to discard it.

Testable: :func:`run_guide` takes the console to print on and an optional text stream to read
answers from (``io.StringIO("1\\n/path/to/study\\n...")``); passphrases come from
``DISCMAKER_PASSPHRASE`` when set, else from the stream, else from a hidden terminal prompt.

Defaults remembered between runs (key and certificate paths, organisation, output folder,
medium; never patient data) live in ``guide.json`` under
``platformdirs.user_config_dir("discmaker")``; ``DISCMAKER_CONFIG_DIR`` points elsewhere.

Return value of :func:`run_guide`: the exit status of the last task (0 done; a check or
restore returns the check contract 0-3; other failures their sysexits code; 1 when staff
stopped a task, e.g. the patient did not match), or 130 when cancelled with Ctrl-C.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

import platformdirs
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.prompt import Confirm, Prompt
from rich.table import Table
from rich.text import Text

from discmaker import APP_NAME, errors, signing
from discmaker.media import Medium
from discmaker.render import (
    author_summary,
    check_summary,
    plain,
    progress_bars,
    restore_summary,
)

CONFIG_DIR_ENV = "DISCMAKER_CONFIG_DIR"
SETTINGS_FILE = "guide.json"
EXIT_CANCELLED = 130
EXIT_STOPPED = 1  # staff stopped the task on purpose (e.g. wrong patient); nothing written

ProgressFn = Callable[[str, int, int], None]


class _Stop(Exception):
    """Leave the guide with ``code`` (the message has been printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# -- remembered defaults ---------------------------------------------------------------------


def config_dir() -> Path:
    """Where the guide keeps its defaults; ``$DISCMAKER_CONFIG_DIR`` overrides."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def load_settings() -> dict[str, str]:
    """The remembered defaults; an unreadable or damaged file counts as none."""
    try:
        data = json.loads((config_dir() / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def save_settings(settings: dict[str, str]) -> bool:
    """Write the defaults atomically; False (and nothing changed) if that is not possible."""
    directory = config_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".guide.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fp:
                json.dump(settings, fp, indent=2, sort_keys=True)
            os.replace(tmp, directory / SETTINGS_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return False
    return True


# -- small helpers -----------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _command(*parts: object) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def suggest_medium(estimated_bytes: int) -> Medium:
    """The smallest disc that holds the study with room for the disc's own files."""
    needed = int(estimated_bytes * 1.05) + 4_000_000
    for medium in (Medium.CD, Medium.DVD, Medium.BD):
        if medium.capacity is not None and needed <= medium.capacity:
            return medium
    return Medium.USB


class _EchoInput:
    """A scripted answer stream: echoes each answer (so transcripts read like a session) and
    raises EOFError when the answers run out instead of letting a prompt loop forever."""

    def __init__(self, stream: TextIO, console: Console) -> None:
        self._stream = stream
        self._console = console

    def readline(self, size: int | None = -1, /) -> str:
        line = self.raw_line().rstrip("\r\n")  # as input() returns it
        self._console.print(Text(plain(line)), highlight=False)
        return line

    def raw_line(self) -> str:
        line = self._stream.readline()
        if not line:
            raise EOFError("no more answers")
        return line


class _Asker:
    """Questions, on the console; answers from the terminal or a scripted stream."""

    def __init__(self, console: Console, stream: TextIO | None) -> None:
        self.console = console
        self._scripted = _EchoInput(stream, console) if stream is not None else None
        self.stream = cast(TextIO, self._scripted) if self._scripted is not None else None

    def text(self, prompt: str, *, default: str | None = None) -> str:
        while True:
            if default is None:
                value = Prompt.ask(prompt, console=self.console, stream=self.stream)
            else:
                value = Prompt.ask(
                    prompt, console=self.console, default=default, stream=self.stream
                )
            value = str(value).strip()
            if value:
                return value
            self.console.print("Please type an answer, or press Ctrl-C to stop.")

    def choice(self, prompt: str, choices: Sequence[str], *, default: str | None = None) -> str:
        if default is None:
            answer = Prompt.ask(
                prompt, console=self.console, choices=list(choices), stream=self.stream
            )
        else:
            answer = Prompt.ask(
                prompt,
                console=self.console,
                choices=list(choices),
                default=default,
                stream=self.stream,
            )
        return str(answer)

    def yes(self, prompt: str, *, default: bool) -> bool:
        return bool(Confirm.ask(prompt, console=self.console, default=default, stream=self.stream))

    def secret(self, prompt: str) -> str:
        if self._scripted is not None:
            self.console.print(f"{prompt}: ", end="", markup=False, highlight=False)
            line = self._scripted.raw_line()
            self.console.print("(hidden)", style="dim")
            return line.rstrip("\r\n")
        return getpass.getpass(f"{prompt}: ")

    def path(
        self,
        prompt: str,
        *,
        default: Path | str | None = None,
        exists: bool | None = None,
        what: str = "file or folder",
    ) -> Path:
        """A path; ``exists`` True: must exist, False: must not exist yet, None: either."""
        while True:
            answer = self.text(prompt, default=str(default) if default is not None else None)
            path = Path(os.path.expanduser(answer.strip().strip("'\"")))
            if exists is True and not path.exists():
                self.console.print(
                    Text(f"There is no {what} at {plain(path)}. Check the name and try again.")
                )
                continue
            if exists is False and (path.exists() or path.is_symlink()):
                self.console.print(
                    Text(
                        f"{plain(path)} already exists and discmaker never overwrites. "
                        "Choose a new name."
                    )
                )
                continue
            return path


# -- the guide -----------------------------------------------------------------------------


class _Guide:
    def __init__(self, console: Console, stream: TextIO | None) -> None:
        self.c = console
        self.ask = _Asker(console, stream)
        self.settings = load_settings()
        self.kept: list[str] = []  # outputs finished (complete) in this session

    # -- output ------------------------------------------------------------------------

    def say(self, text: str, style: str | None = None) -> None:
        self.c.print(Text(text, style=style or ""), highlight=False)

    def intro(self, title: str, text: str) -> None:
        self.c.print()
        self.c.print(Panel(Text(text), title=title, title_align="left", border_style="cyan"))

    def show_command(self, *lines: str, passphrase: bool = False) -> None:
        self.say("To do the same without the guide (for scripts):", "bold")
        for line in lines:
            self.c.print(Text(f"  {line}", style="cyan"), soft_wrap=True, highlight=False)
        if passphrase:
            self.say(
                f"  (the passphrase is asked for, or taken from {signing.PASSPHRASE_ENV})", "dim"
            )

    def next_step(self, text: str) -> None:
        self.c.print(Text.assemble(("Next step: ", "bold"), text))

    def progress(self) -> AbstractContextManager[ProgressFn]:
        return progress_bars(self.c)

    def remember(self, **values: str) -> None:
        self.settings.update(values)
        if not save_settings(self.settings):
            self.say(
                f"(Could not save these choices as defaults in {config_dir()}; "
                "they will be asked again next time.)",
                "dim",
            )

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> int:
        self.c.print(
            Panel(
                Text(
                    "Tamper-evident patient discs. Choose a task by typing its number and "
                    "pressing Enter. Press Ctrl-C at any time to stop: nothing is left "
                    "half-written."
                ),
                title=f"{APP_NAME}",
                title_align="left",
                border_style="cyan",
            )
        )
        menu: list[tuple[str, str, Callable[[], int], bool]] = [
            ("1", "Create a patient disc from a study", self.create_disc, False),
            ("2", "Check a disc we received", self.check_received, True),
            ("3", "Restore checked images for import into PACS", self.restore, True),
            ("4", "Keys and trusted senders", self.keys_menu, False),
        ]
        code = 0
        while True:
            self.c.print()
            self.say("What would you like to do?", "bold")
            for key, text, _, _ in menu:
                self.say(f"  {key}  {text}")
            self.say("  q  Quit")
            answer = self.ask.choice("Choose", [m[0] for m in menu] + ["q"])
            if answer == "q":
                self.say("Goodbye.")
                return code
            _, _, action, check_contract = next(m for m in menu if m[0] == answer)
            code = self.attempt(action, check_contract=check_contract)

    def attempt(self, action: Callable[[], int], *, check_contract: bool = False) -> int:
        """Run one task; a discmaker error is explained and the guide goes on."""
        try:
            return action()
        except errors.DiscmakerError as exc:
            code = exc.exit_code
            if check_contract and isinstance(exc, errors.InputError | errors.DiscError):
                code = errors.CHECK_UNREADABLE
            self.c.print(Text.assemble(("Problem: ", "bold red"), plain(exc)))
            self.say(
                "The task stopped and left nothing half-written. Fix the problem above, "
                "then choose the task again."
            )
            return code

    # -- 1. create a disc --------------------------------------------------------------

    def create_disc(self) -> int:
        from discmaker.author import AuthorRequest, author, default_label
        from discmaker.burn import list_drives
        from discmaker.dicomdir import validate_fileset_id
        from discmaker.preview import preview

        self.intro(
            "Create a patient disc",
            "This makes a signed, tamper-evident patient disc from a study exported from "
            "PACS. First it reads the study and shows what it found; you then choose where "
            "the disc goes and confirm the patient. Nothing in the study folder is changed.",
        )
        # No default on purpose: last time's study belongs to another patient.
        study = self.ask.path("Folder with the exported study", exists=True, what="folder")
        self.say("Reading the study headers (the images themselves are not read yet)...")
        with self.progress() as bar:
            found = preview([study], progress=lambda d, t: bar("scan", d, t))
        self.c.print(self.preview_panel(found))

        drives = list_drives()
        self.c.print()
        self.say("Where should the disc go?", "bold")
        choices: list[str] = []
        if drives:
            self.say("  b  Burn a CD/DVD in " + ", ".join(plain(d.description) for d in drives))
            choices.append("b")
        else:
            self.say("  (No disc burner found on this computer, or xorriso is not installed.)")
        self.say("  i  Save a disc image (ISO file) to burn later")
        self.say("  u  Copy onto a USB stick (a folder)")
        choices += ["i", "u"]
        where = self.ask.choice("Choose", choices, default=choices[0])

        drive = None
        if where == "b":
            drive = drives[0]
            if len(drives) > 1:
                for n, d in enumerate(drives, 1):
                    self.say(f"  {n}  {plain(d.description)}")
                pick = self.ask.choice("Which drive", [str(n) for n in range(1, len(drives) + 1)])
                drive = drives[int(pick) - 1]

        if where == "u":
            medium = Medium.USB
        else:
            suggested = suggest_medium(found.estimated_bytes)
            if suggested is Medium.USB:
                self.say(
                    f"The study needs about {_size(found.estimated_bytes)}: more than a "
                    "Blu-ray disc holds. Use a USB stick, or split the study.",
                    "yellow",
                )
                suggested = Medium.BD
            else:
                self.say(
                    f"The study needs about {_size(found.estimated_bytes)}; "
                    f"a {suggested.label} is big enough."
                )
            medium = Medium[
                self.ask.choice(
                    "Disc type", ["cd", "dvd", "bd"], default=suggested.name.lower()
                ).upper()
            ]

        now = datetime.now(UTC)
        while True:
            label = self.ask.text(
                "Disc label (1-16 of A-Z, 0-9, _)", default=default_label(now)
            ).upper()
            try:
                validate_fileset_id(label)
                break
            except errors.UsageError as exc:
                self.say(str(exc), "yellow")

        out_dir = Path(self.settings.get("out_dir") or Path.cwd())
        burn_dir: tempfile.TemporaryDirectory[str] | None = None
        if where == "i":
            out = self.ask.path(
                "Save the disc image as", default=out_dir / f"{label}.iso", exists=False
            )
        elif where == "u":
            out = self.ask.path(
                "New folder on the USB stick for the disc", default=out_dir / label, exists=False
            )
        else:
            burn_dir = tempfile.TemporaryDirectory(prefix="discmaker-burn-")
            out = Path(burn_dir.name) / f"{label}.iso"

        try:
            key, cert, key_path, cert_path = self.signing_identity()
            if not self.confirm_patient(found):
                return EXIT_STOPPED

            req = AuthorRequest(
                inputs=(study,),
                out=out,
                key=key,
                cert=cert,
                format="folder" if where == "u" else "iso",
                label=label,
                medium=medium,
            )
            self.say("Making the disc: watermarking every image, then signing the disc...")
            with self.progress() as bar:
                result = author(req, progress=bar)
            if burn_dir is None:
                self.kept.append(str(out))

            self.c.print(author_summary(result))
            remembered = {
                "key": str(key_path),
                "cert": str(cert_path),
                "medium": medium.name.lower(),
            }
            if burn_dir is None:
                remembered["out_dir"] = str(out.parent)
            self.remember(**remembered)

            author_cmd = [APP_NAME, "author", study, "--key", key_path, "--cert", cert_path]
            code = 0
            if drive is not None:
                code = self.burn_and_verify(out, drive.address, cert_path)
                self.show_command(
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
            if self.ask.yes("Check the new disc now? (recommended)", default=True):
                code = self.check_own(out, cert_path)
            if where == "u":
                self.next_step(
                    "safely eject the USB stick before unplugging it, and give it to the patient."
                )
            else:
                self.next_step(
                    f"burn {plain(out)} to a {medium.label} with the computer's burning "
                    "program, or run this guide on a computer with a disc burner."
                )
            extra = ["--format", "folder"] if where == "u" else []
            self.show_command(
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

    def preview_panel(self, found: Any) -> RenderableType:
        from discmaker.preview import StudyPreview, format_date

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
                        _plural(len(found.studies), "study", "studies"),
                        _plural(found.series_count, "series", "series"),
                        _plural(found.images, "image"),
                        f"{_size(found.total_bytes)} "
                        f"(about {_size(found.estimated_bytes)} on the disc)",
                    )
                ),
            )
        )
        skipped = [
            (found.non_dicom_skipped, "file that is not DICOM", "files that are not DICOM"),
            (found.duplicates_skipped, "identical copy", "identical copies"),
            (found.dicomdirs_skipped, "old DICOMDIR", "old DICOMDIRs"),
        ]
        left_out = [_plural(n, one, many) for n, one, many in skipped if n]
        if left_out:
            parts.append(Text.assemble(("Left out    ", "bold"), ", ".join(left_out)))
        return Panel(Group(*parts), title="What was found", title_align="left")

    def confirm_patient(self, found: Any) -> bool:
        lines: list[RenderableType] = [
            Text("Compare with the request form before anything is written:", style="bold")
        ]
        for p in found.patients:
            lines.append(Text.assemble(("  Name        ", "bold"), plain(p.display_name)))
            lines.append(Text.assemble(("  Patient ID  ", "bold"), plain(p.id)))
            lines.append(Text.assemble(("  Birth date  ", "bold"), plain(p.display_birth_date)))
        self.c.print(Panel(Group(*lines), title="Right patient?", border_style="yellow"))
        if self.ask.yes(
            "Do the name, patient ID and birth date all match the request form?", default=False
        ):
            return True
        self.say("Stopped: nothing was written.", "bold yellow")
        self.say(
            "Check the request form and the study export (was the right patient exported?), "
            "then start again."
        )
        return False

    def signing_identity(self) -> tuple[Any, Any, Path, Path]:
        """The centre's key and certificate, loaded (asks for the passphrase if needed)."""
        key_default = self.settings.get("key")
        if key_default is None or not Path(key_default).exists():
            self.say("The disc is signed with this centre's signing key (key.pem).")
            if not self.ask.yes(
                "Does this centre already have a signing key? (no: make one now)", default=True
            ):
                self.create_identity()
                key_default = self.settings.get("key")
        key_path = self.ask.path(
            "Signing key (key.pem)", default=key_default, exists=True, what="key file"
        )
        cert_default = self.settings.get("cert")
        if cert_default is None or Path(cert_default).parent != key_path.parent:
            cert_default = str(key_path.parent / signing.CERT_FILE_NAME)
        cert_path = self.ask.path(
            "Certificate (cert.pem)", default=cert_default, exists=True, what="certificate file"
        )
        cert = signing.load_certificate(cert_path)
        env = signing.passphrase_from_env()
        tries = 1 if env is not None else 3
        for attempt in range(1, tries + 1):
            passphrase = (
                env if env is not None else self.ask.secret(f"Passphrase for {key_path}").encode()
            )
            try:
                key = signing.load_private_key(key_path, passphrase=passphrase)
                break
            except errors.KeyFileError as exc:
                if attempt >= tries:
                    raise
                self.say(f"{exc}. Try again.", "yellow")
        signing.check_pair(key, cert)
        return key, cert, key_path, cert_path

    def burn_and_verify(self, iso: Path, drive: str, cert_path: Path) -> int:
        from discmaker.burn import burn, verify_burn
        from discmaker.trust import TrustStore

        self.say(f"Burning to {plain(drive)}. Do not open the drive until it is finished.")
        try:
            with self.progress() as bar:
                burn(iso, drive, progress=bar)
        except KeyboardInterrupt:
            self.say(
                "Cancelled while burning: the disc in the drive is incomplete. Do not give it "
                "out; throw it away (a rewritable disc can be reused). Nothing else was "
                "written.",
                "bold yellow",
            )
            raise _Stop(EXIT_CANCELLED) from None
        self.say("Reading the disc back to check it...")
        with self.progress() as bar:
            report = verify_burn(drive, TrustStore.from_paths([cert_path]), progress=bar)
        self.c.print(check_summary(report))
        if report.ok:
            self.say("The disc is burned and verified.", "bold green")
            self.next_step("write the label on the disc and give it to the patient.")
        else:
            self.say("The burned disc did not verify. Do not give it out.", "bold red")
            self.next_step("burn a new disc; if it fails again, try another blank disc.")
        return report.exit_code

    def check_own(self, out: Path, cert_path: Path) -> int:
        from discmaker.check import check_disc
        from discmaker.trust import TrustStore

        with self.progress() as bar:
            report = check_disc(out, trust=TrustStore.from_paths([cert_path]), progress=bar)
        self.c.print(check_summary(report))
        if not report.ok:
            self.say("The new disc did not verify. Do not give it out.", "bold red")
        return report.exit_code

    # -- 2. check a received disc ------------------------------------------------------

    def _default_source(self) -> str | None:
        for candidate in ("/dev/sr0", "/dev/cdrom"):
            if Path(candidate).exists():
                return candidate
        return self.settings.get("check_source")

    def check_received(self) -> int:
        from discmaker.check import check_disc
        from discmaker.trust import TrustStore

        self.intro(
            "Check a disc we received",
            "This checks a disc, disc image (ISO file) or USB folder sent by another centre: "
            "the sender's signature, every file, and every image's hidden watermark. It "
            "changes nothing and writes nothing.",
        )
        source = self.ask.path(
            "Disc drive, ISO file or folder to check",
            default=self._default_source(),
            exists=True,
            what="disc, ISO file or folder",
        )
        store = TrustStore.default()
        if store.is_empty():
            self.say(
                "No trusted senders are set up yet, so the result can only be 'not "
                "verifiable'. Add senders under 'Keys and trusted senders'.",
                "yellow",
            )
        with self.progress() as bar:
            report = check_disc(source, trust=store, progress=bar)
        self.c.print(check_summary(report))
        if source.is_file() or source.is_dir():
            self.remember(check_source=str(source))
        if report.ok:
            self.next_step(
                "to import the images into PACS, choose 3 (Restore checked images) in the menu."
            )
        elif report.exit_code == errors.CHECK_NOT_VERIFIABLE:
            self.next_step(
                "if the sender is not trusted yet, get their certificate, confirm its "
                "fingerprint by telephone and add it under 4 (Keys and trusted senders)."
            )
        else:
            self.next_step(
                "do not import these images. Tell the sender and your PACS administrator."
            )
        self.show_command(_command(APP_NAME, "check", source))
        return report.exit_code

    # -- 3. restore --------------------------------------------------------------------

    def restore(self) -> int:
        from discmaker.restore import restore_disc
        from discmaker.trust import TrustStore

        self.intro(
            "Restore checked images for import",
            "This checks a received disc and writes the images that verify, with their "
            "original pixels, into a new folder ready for PACS import. Images that fail are "
            "not written. The disc is not changed.",
        )
        source = self.ask.path(
            "Disc drive, ISO file or folder",
            default=self._default_source(),
            exists=True,
            what="disc, ISO file or folder",
        )
        parent = Path(self.settings.get("restore_dir") or Path.cwd())
        out = self.ask.path(
            "New folder for the restored images", default=parent / "RESTORED", exists=False
        )
        with self.progress() as bar:
            result = restore_disc(source, trust=TrustStore.default(), out=out, progress=bar)
        self.kept.append(str(out))
        self.c.print(restore_summary(result))
        self.remember(restore_dir=str(out.parent))
        if result.restored:
            self.next_step(f"import the folder {plain(out)} into PACS.")
        else:
            self.next_step("nothing can be imported; tell the sender and your PACS administrator.")
        self.show_command(_command(APP_NAME, "restore", source, "--out", out))
        return result.exit_code

    # -- 4. keys and trusted senders ---------------------------------------------------

    def keys_menu(self) -> int:
        items: list[tuple[str, str, Callable[[], int]]] = [
            ("1", "Create this centre's signing key", self.create_identity),
            ("2", "Trust a sender's certificate", self.trust_add),
            ("3", "List trusted senders", self.trust_list),
            ("4", "Stop trusting a sender", self.trust_remove),
        ]
        code = 0
        while True:
            self.c.print()
            self.say("Keys and trusted senders", "bold")
            for key, text, _ in items:
                self.say(f"  {key}  {text}")
            self.say("  b  Back to the main menu")
            answer = self.ask.choice("Choose", [i[0] for i in items] + ["b"])
            if answer == "b":
                return code
            code = self.attempt(next(i[2] for i in items if i[0] == answer))

    def create_identity(self) -> int:
        self.intro(
            "Create this centre's signing key",
            "This makes the key that signs your discs (key.pem, kept secret and protected by "
            "a passphrase) and its certificate (cert.pem, given to the clinics that receive "
            "your discs). Do this once per centre; existing keys are never overwritten.",
        )
        org = self.ask.text("Organisation name", default=self.settings.get("org"))
        default_dir = config_dir() / "signing"
        while True:
            folder = self.ask.path("Folder for key.pem and cert.pem", default=default_dir)
            if (folder / signing.KEY_FILE_NAME).exists() or (
                folder / signing.CERT_FILE_NAME
            ).exists():
                self.say("That folder already holds a key or certificate. Choose another.")
                continue
            break
        identity = signing.generate_identity(org)
        passphrase = signing.passphrase_from_env()
        while passphrase is None:
            first = self.ask.secret("New passphrase for the key")
            again = self.ask.secret("Repeat the passphrase")
            if not first:
                self.say("The passphrase cannot be empty.", "yellow")
            elif first != again:
                self.say("The two passphrases differ. Please type them again.", "yellow")
            else:
                passphrase = first.encode()
        key_path, cert_path = signing.write_identity(identity, folder, passphrase=passphrase)
        self.kept.append(str(key_path))
        fp = signing.fingerprint(identity.certificate)
        self.c.print(
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
        self.remember(org=org, key=str(key_path), cert=str(cert_path))
        self.next_step(
            "give cert.pem to the clinics that receive your discs and read them the "
            "fingerprint by telephone. Keep key.pem and its passphrase secret."
        )
        self.show_command(
            _command(APP_NAME, "keygen", "--org", org, "--out", folder), passphrase=True
        )
        return 0

    def trust_add(self) -> int:
        from discmaker.trust import TrustedSigner, TrustStore

        self.intro(
            "Trust a sender",
            "Discs from a sender verify only once you trust the sender's certificate. You "
            "will see its fingerprint: telephone the sender on a number you already know "
            "(not one from the disc or an email) and ask them to read theirs out.",
        )
        cert_path = self.ask.path(
            "Sender's certificate file (.pem)", exists=True, what="certificate file"
        )
        signer = TrustedSigner.from_certificate(signing.load_certificate(cert_path))
        self.c.print(
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
        if not self.ask.yes(
            "Did the sender read out exactly this fingerprint on the phone?", default=False
        ):
            self.say("Not trusted. Nothing was changed.", "bold yellow")
            return EXIT_STOPPED
        store = TrustStore.default()
        store.add(cert_path)
        self.say(f"Trusted: {plain(signer.subject)}", "bold green")
        self.next_step("discs signed by this sender now verify under 2 (Check a disc).")
        self.show_command(_command(APP_NAME, "trust", "add", cert_path))
        return 0

    def trust_list(self) -> int:
        from discmaker.trust import TrustStore

        store = TrustStore.default()
        signers = store.list()
        if not signers:
            self.say(f"No trusted senders yet (store: {store.directory}).")
        else:
            table = Table(title="Trusted senders", header_style="bold")
            for column in ("#", "Sender", "Fingerprint", "Valid until"):
                table.add_column(column)
            for n, s in enumerate(signers, 1):
                table.add_row(
                    str(n), Text(plain(s.subject)), s.fingerprint, f"{s.not_after:%Y-%m-%d}"
                )
            self.c.print(table)
        for problem in store.problems:
            self.say(f"Skipped {plain(problem.path)}: {plain(problem.reason)}", "yellow")
        self.show_command(_command(APP_NAME, "trust", "list"))
        return 0

    def trust_remove(self) -> int:
        from discmaker.trust import TrustStore

        store = TrustStore.default()
        signers = store.list()
        if not signers:
            self.say("No trusted senders yet: there is nothing to remove.")
            return 0
        for n, s in enumerate(signers, 1):
            self.c.print(Text(f"  {n}  {plain(s.subject)}  {s.fingerprint}"), soft_wrap=True)
        answer = self.ask.choice(
            "Which sender should no longer be trusted (b: back)",
            [str(n) for n in range(1, len(signers) + 1)] + ["b"],
        )
        if answer == "b":
            return 0
        signer = signers[int(answer) - 1]
        if not self.ask.yes(
            f"Stop trusting {plain(signer.subject)}? Their discs will then show as 'not "
            "verifiable'.",
            default=False,
        ):
            self.say("Nothing was changed.")
            return EXIT_STOPPED
        store.remove(signer.fingerprint)
        self.say(f"No longer trusted: {plain(signer.subject)}", "bold green")
        self.show_command(_command(APP_NAME, "trust", "remove", signer.fingerprint))
        return 0


def run_guide(*, console: Console | None = None, stream: TextIO | None = None) -> int:
    """Run the guided workflow; returns the exit status (see the module docstring).

    ``stream``: answers, one a line (tests pass ``io.StringIO``); None reads the terminal.
    """
    console = console or Console(stderr=True, highlight=False)
    guide = _Guide(console, stream)
    try:
        return guide.run()
    except _Stop as stop:
        return stop.code
    except (KeyboardInterrupt, EOFError):
        console.print()
        message = "Cancelled: nothing was written"
        if guide.kept:
            message += (
                " by the step that was interrupted. Finished before it, complete and kept: "
                + ", ".join(plain(k) for k in guide.kept)
            )
        console.print(Text(message + ".", style="bold yellow"), soft_wrap=True)
        return EXIT_CANCELLED


__all__ = [
    "CONFIG_DIR_ENV",
    "EXIT_CANCELLED",
    "EXIT_STOPPED",
    "SETTINGS_FILE",
    "config_dir",
    "load_settings",
    "run_guide",
    "save_settings",
    "suggest_medium",
]
