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
from rich.prompt import Confirm, Prompt
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


class Asker:
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


# -- the session -----------------------------------------------------------------------------


class Session:
    """One run of the guide: the console, the questions, the remembered defaults and what was
    finished so far (shown if the run is cancelled)."""

    def __init__(self, console: Console, stream: TextIO | None) -> None:
        self.console = console
        self.ask = Asker(console, stream)
        self.settings = load_settings()
        self.kept: list[str] = []  # outputs finished (complete) in this session

    # -- output ------------------------------------------------------------------------

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(Text(text, style=style or ""), highlight=False)

    def intro(self, title: str, text: str) -> None:
        self.console.print()
        self.console.print(Panel(Text(text), title=title, title_align="left", border_style="cyan"))

    def show_command(self, *lines: str, passphrase: bool = False) -> None:
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

    # -- passphrases -------------------------------------------------------------------

    def load_key(self, key_path: Path) -> Any:
        """The signing key at ``key_path``: the passphrase from the environment (one try), else
        asked for (three tries)."""
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
        return key

    def new_passphrase(self) -> bytes:
        """A passphrase for a new key: from the environment, else typed twice."""
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
        return passphrase


__all__ = [
    "CONFIG_DIR_ENV",
    "EXIT_CANCELLED",
    "EXIT_STOPPED",
    "SETTINGS_FILE",
    "Asker",
    "Session",
    "Stop",
    "config_dir",
    "load_settings",
    "save_settings",
]
