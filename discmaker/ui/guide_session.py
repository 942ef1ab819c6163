"""The guide's conversation with staff: questions and answers, messages, progress bars and the
defaults remembered between runs.

Answers come from the terminal, or from a scripted text stream (tests pass
``io.StringIO("1\\n/path/to/study\\n...")``) whose answers are echoed so that a transcript
reads like a session. Passphrases come from ``DISCMAKER_PASSPHRASE`` when set, else from the
stream, else from a hidden terminal prompt.

Defaults remembered between runs (key and certificate paths, organisation, output folder,
medium; never patient data) live in ``guide.json`` under
``platformdirs.user_config_dir("discmaker")``; ``DISCMAKER_CONFIG_DIR`` points elsewhere.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO, cast

import platformdirs
from rich.console import Console
from rich.panel import Panel
from rich.prompt import Prompt
from rich.text import Text

from discmaker import APP_NAME, errors
from discmaker.atomic import replace_file
from discmaker.crypto import signing
from discmaker.ui.render import ProgressFn, progress_bars
from discmaker.ui.wording import plain

CONFIG_DIR_ENV = "DISCMAKER_CONFIG_DIR"
SETTINGS_FILE = "guide.json"
EXIT_CANCELLED = errors.EX_INTERRUPTED
EXIT_STOPPED = 1  # staff stopped the task on purpose (e.g. wrong patient); nothing written


class Stop(Exception):
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
        text = json.dumps(settings, indent=2, sort_keys=True)
        replace_file(directory / SETTINGS_FILE, text.encode("utf-8"), mode=0o600)
    except OSError:
        return False
    return True


# -- questions -------------------------------------------------------------------------------


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


YES_WORDS = frozenset({"y", "yes"})
NO_WORDS = frozenset({"n", "no"})


class Asker:
    """Questions, on the console; answers from the terminal or a scripted stream.

    Answers are read case-insensitively (``Q``, ``I``, ``Yes`` and ``NO`` are all understood),
    and a yes/no question takes ``y``, ``yes``, ``n`` or ``no``. Prompts are plain text, never
    markup (a path with ``[`` in it is shown as it is).
    """

    def __init__(self, console: Console, stream: TextIO | None) -> None:
        self.console = console
        self._scripted = _EchoInput(stream, console) if stream is not None else None
        self.stream = cast(TextIO, self._scripted) if self._scripted is not None else None

    def _raw(self, prompt: str, default: str | None) -> str:
        """One line, surrounding spaces removed; Enter gives ``default`` (or "")."""
        text = Text(prompt, style="prompt")
        if default is None:
            value = Prompt.ask(text, console=self.console, stream=self.stream)
        else:
            value = Prompt.ask(text, console=self.console, default=default, stream=self.stream)
        return str(value).strip()

    def text(self, prompt: str, *, default: str | None = None) -> str:
        while True:
            value = self._raw(prompt, default)
            if value:
                return value
            self.console.print("Please type an answer, or press Ctrl-C to stop.")

    def optional(self, prompt: str) -> str:
        """An answer that may be left empty (Enter): returns ""."""
        return self._raw(prompt, None)

    def choice(self, prompt: str, choices: Sequence[str], *, default: str | None = None) -> str:
        """One of ``choices`` (returned as spelled there), whatever the case typed."""
        by_key = {c.lower(): c for c in choices}
        while True:
            answer = self._raw(f"{prompt} [{'/'.join(choices)}]", default).lower()
            if answer in by_key:
                return by_key[answer]
            self.console.print(
                Text(
                    f"Please type one of {', '.join(choices)} and press Enter (or Ctrl-C to stop)."
                )
            )

    def yes(self, prompt: str, *, default: bool) -> bool:
        """A yes/no question: y, yes, n or no in any case; Enter gives ``default``."""
        while True:
            answer = self._raw(f"{prompt} [y/n]", "y" if default else "n").lower()
            if answer in YES_WORDS:
                return True
            if answer in NO_WORDS:
                return False
            self.console.print("Please answer yes or no (y or n).")

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


# -- the session -----------------------------------------------------------------------------


MIN_PASSPHRASE = 12  # characters, for a new signing key
_WRONG_PASSPHRASE = "the passphrase does not open"  # signing.load_private_key's wording


class Session:
    """One run of the guide: the console, the questions, the remembered defaults, what the
    current task finished (shown if it is cancelled) and the PACS last used in this run."""

    def __init__(self, console: Console, stream: TextIO | None) -> None:
        self.console = console
        self.ask = Asker(console, stream)
        self.settings = load_settings()
        self.kept: list[str] = []  # outputs the current task finished (complete)
        self.key_made: Path | None = None  # a signing key the current task made on the way
        self.in_task = False
        #: The PACS details typed last in this run (aet, host, port, calling): the defaults
        #: of the next import. Not saved between runs.
        self.pacs: dict[str, str] = {}

    # -- output ------------------------------------------------------------------------

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(Text(text, style=style or ""), highlight=False)

    def say_unwrapped(self, label: str, value: str, style: str = "") -> None:
        """``label value`` on one line that the console never breaks (the terminal may
        fold it on screen, but copying it gives the whole value): fingerprints, paths."""
        self.console.print(
            Text.assemble((label, "bold"), (value, style)),
            soft_wrap=True,
            highlight=False,
        )

    def intro(self, title: str, text: str) -> None:
        self.console.print()
        self.console.print(Panel(Text(text), title=title, title_align="left", border_style="cyan"))

    def show_command(self, *lines: str, passphrase: bool = False) -> None:
        """The equivalent command lines, each on one unbroken line (copyable at any width)."""
        self.say("To do the same without the guide (for scripts):", "bold")
        for line in lines:
            self.console.print(Text(f"  {line}", style="cyan"), soft_wrap=True, highlight=False)
        if passphrase:
            self.say(
                f"  (the passphrase is asked for, or taken from {signing.PASSPHRASE_ENV})", "dim"
            )

    def next_step(self, text: str) -> None:
        self.console.print(Text.assemble(("Next step: ", "bold"), text))

    def progress(self) -> AbstractContextManager[ProgressFn]:
        return progress_bars(self.console)

    def remember(self, **values: str) -> None:
        self.settings.update(values)
        if not save_settings(self.settings):
            self.say(
                f"(Could not save these choices as defaults in {config_dir()}; "
                "they will be asked again next time.)",
                "dim",
            )

    def attempt(self, action: Callable[[], int], *, check_contract: bool = False) -> int:
        """Run one task; a discmaker error is explained and the guide goes on."""
        try:
            return action()
        except errors.DiscmakerError as exc:
            code = errors.exit_code_for(exc, check_contract=check_contract)
            self.console.print(Text.assemble(("Problem: ", "bold red"), plain(exc)))
            self.say(
                "The task stopped and left nothing half-written. Fix the problem above, "
                "then choose the task again."
            )
            return code

    def run_task(self, action: Callable[[], int], *, check_contract: bool = False) -> int:
        """One task from the main menu. Ctrl-C in it (at a question or during work) comes back
        here: the guide says what was and was not written and returns to the main menu."""
        self.kept = []
        self.key_made = None
        self.in_task = True  # stays set when the answers run out (EOFError) mid-task
        try:
            code = self.attempt(action, check_contract=check_contract)
        except KeyboardInterrupt:
            self.console.print()
            self.console.print(Text(self.cancelled_message(), style="bold yellow"), soft_wrap=True)
            self.back_to_menu()
            code = EXIT_CANCELLED
        except Stop as stop:
            if stop.code != EXIT_CANCELLED:
                raise
            self.back_to_menu()  # the task said what the interruption left behind
            code = stop.code
        self.in_task = False
        return code

    def back_to_menu(self) -> None:
        self.say("Back to the main menu. Press Ctrl-C again to leave the guide.", "dim")

    def cancelled_message(self) -> str:
        """What an interruption of the current task leaves: only what *this* task finished."""
        if self.kept:
            message = (
                "Cancelled. Finished by this task before it was stopped, complete and kept: "
                + ", ".join(plain(k) for k in self.kept)
                + ". Nothing else was written."
            )
        else:
            message = "Cancelled: nothing was written."
        if self.key_made is not None:
            message += (
                f" The signing key made in this task is kept ({plain(self.key_made)}); "
                "it is not made again."
            )
        return message

    # -- passphrases -------------------------------------------------------------------

    def load_key(self, key_path: Path) -> Any | None:
        """The signing key at ``key_path``, or None after three wrong passphrases (the caller
        asks for the key again). The passphrase from the environment is tried first; when it
        does not open the key, it is asked for. A file that is not a usable key raises
        :class:`KeyFileError` at once (no passphrase would help)."""
        env = signing.passphrase_from_env()
        if env is not None:
            try:
                return signing.load_private_key(key_path, passphrase=env)
            except errors.KeyFileError as exc:
                if _WRONG_PASSPHRASE not in str(exc):
                    raise
                self.say(
                    f"The passphrase in {signing.PASSPHRASE_ENV} does not open {key_path}; "
                    "type it instead.",
                    "yellow",
                )
        tries = 3
        for attempt in range(1, tries + 1):
            passphrase = self.ask.secret(f"Passphrase for {key_path}").encode()
            if not passphrase:
                self.say("The passphrase cannot be empty.", "yellow")
                continue
            try:
                return signing.load_private_key(key_path, passphrase=passphrase)
            except errors.KeyFileError as exc:
                if _WRONG_PASSPHRASE not in str(exc):
                    raise
                if attempt < tries:
                    self.say(f"{exc}. Try again ({tries - attempt} more).", "yellow")
        self.say(
            f"{tries} wrong passphrases for {key_path}. Choose the key again (or another key); "
            "your other answers are kept.",
            "yellow",
        )
        return None

    def new_passphrase(self) -> bytes:
        """A passphrase for a new key, at least :data:`MIN_PASSPHRASE` characters: from the
        environment when it is long enough, else typed twice."""
        env = signing.passphrase_from_env()
        if env is not None:
            if len(env.decode("utf-8", errors="surrogateescape")) >= MIN_PASSPHRASE:
                return env
            self.say(
                f"The passphrase in {signing.PASSPHRASE_ENV} is shorter than {MIN_PASSPHRASE} "
                "characters: too short for a new signing key. Type a longer one.",
                "yellow",
            )
        self.say(
            f"Choose a passphrase of at least {MIN_PASSPHRASE} characters (a few words make a "
            "good one). Every disc is signed with it: keep it where the centre's staff can "
            "find it, but nobody else.",
            "dim",
        )
        while True:
            first = self.ask.secret("New passphrase for the key")
            if len(first) < MIN_PASSPHRASE:
                self.say(
                    f"That passphrase has {len(first)} characters; it needs at least "
                    f"{MIN_PASSPHRASE}. Please type a longer one.",
                    "yellow",
                )
                continue
            again = self.ask.secret("Repeat the passphrase")
            if first != again:
                self.say("The two passphrases differ. Please type them again.", "yellow")
                continue
            return first.encode()


__all__ = [
    "CONFIG_DIR_ENV",
    "EXIT_CANCELLED",
    "EXIT_STOPPED",
    "MIN_PASSPHRASE",
    "SETTINGS_FILE",
    "Asker",
    "Session",
    "Stop",
    "config_dir",
    "load_settings",
    "save_settings",
]
