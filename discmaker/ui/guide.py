"""The guided terminal workflow: ``discmaker`` with no arguments.

For front-desk staff and radiographers who do not know the flags. A menu leads to each task
(create a patient disc, check a received disc, restore checked images for PACS import, keys
and trusted senders); every step says in plain words what it will do and shows what it found,
long work shows progress bars, each task ends with a result panel, the next step and the
equivalent command line, so the same job can be scripted.

Safety rules:

* Before a disc is written or burned, the patient's name, ID and birth date are read back and
  staff must confirm them against the request form; "no" stops with nothing written.
* Ctrl-C at any point stops the task cleanly: authoring and restoring are atomic, so nothing is
  left half-written; the guide says so, naming only what *this* task finished, and returns to
  the main menu. Ctrl-C again (at the menu) leaves the guide with exit status 130. An
  interrupted *burn* leaves an incomplete disc in the drive; the guide says to discard it. An
  interrupted import says that what the PACS already stored stays there (and is logged).
* A mistake costs one answer: a folder without DICOM files, a certificate that is not one or
  three wrong passphrases ask that question again and keep every other answer. Answers are
  read in any case (``Q``, ``Yes``, ``no``).

Testable: :func:`run_guide` takes the console to print on and an optional text stream to read
answers from (``io.StringIO("1\\n/path/to/study\\n...")``); passphrases come from
``DISCMAKER_PASSPHRASE`` when set, else from the stream, else from a hidden terminal prompt.

This module is the menu and the entry point; the tasks are in :mod:`discmaker.ui.guide_tasks`,
the questions, messages and the defaults remembered between runs (never patient data) in
:mod:`discmaker.ui.guide_session`.

Return value of :func:`run_guide`: the exit status of the last task (0 done; a check or
restore returns the check contract 0-3; other failures their sysexits code; 1 when staff
stopped a task, e.g. the patient did not match), or 130 when cancelled with Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TextIO

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from discmaker import APP_NAME
from discmaker.ui.guide_session import EXIT_CANCELLED, Session, Stop
from discmaker.ui.guide_tasks import (
    check_received,
    create_disc,
    import_received,
    keys_menu,
    restore,
)


def _main_menu(session: Session) -> int:
    session.console.print(
        Panel(
            Text(
                "Tamper-evident patient discs. Choose a task by typing its number and "
                "pressing Enter. Press Ctrl-C at any time to stop a task: nothing is left "
                "half-written, and you come back here. Ctrl-C here leaves the guide."
            ),
            title=f"{APP_NAME}",
            title_align="left",
            border_style="cyan",
        )
    )
    menu: list[tuple[str, str, Callable[[], int], bool]] = [
        ("1", "Create a patient disc from a study", partial(create_disc, session), False),
        ("2", "Check a disc we received", partial(check_received, session), True),
        ("3", "Restore checked images for import into PACS", partial(restore, session), True),
        ("4", "Import a checked disc into PACS", partial(import_received, session), True),
        ("5", "Keys and trusted senders", partial(keys_menu, session), False),
    ]
    code = 0
    while True:
        session.console.print()
        session.say("What would you like to do?", "bold")
        for key, text, _, _ in menu:
            session.say(f"  {key}  {text}")
        session.say("  q  Quit")
        answer = session.ask.choice("Choose", [m[0] for m in menu] + ["q"])
        if answer == "q":
            session.say("Goodbye.")
            return code
        _, _, action, check_contract = next(m for m in menu if m[0] == answer)
        code = session.run_task(action, check_contract=check_contract)


def run_guide(*, console: Console | None = None, stream: TextIO | None = None) -> int:
    """Run the guided workflow; returns the exit status (see the module docstring).

    ``stream``: answers, one a line (tests pass ``io.StringIO``); None reads the terminal.
    """
    console = console or Console(stderr=True, highlight=False, emoji=False)
    session = Session(console, stream)
    try:
        return _main_menu(session)
    except Stop as stop:
        return stop.code
    except (KeyboardInterrupt, EOFError):
        # Ctrl-C at the main menu (a task's own Ctrl-C returns to the menu), or the answers
        # ran out (end of input) in the middle of a task.
        console.print()
        if session.in_task:
            message = session.cancelled_message()
        else:
            message = "Cancelled at the main menu. Goodbye."
        console.print(Text(message, style="bold yellow"), soft_wrap=True)
        return EXIT_CANCELLED


__all__ = ["run_guide"]
