"""Every command's --help: each option says what it does and what happens without it, and
the help ends with the command's exit codes and an example."""

from __future__ import annotations

import argparse
import re

import pytest

from discmaker.ui import cli_help
from discmaker.ui.cli import build_parser


def _commands() -> list[tuple[str, argparse.ArgumentParser]]:
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    full = f"{prefix} {name}".strip()
                    nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                    if not nested:
                        found.append((full, sub))
                    walk(full, sub)

    walk("", build_parser())
    return found


COMMANDS = _commands()


def test_every_command_is_found() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"check", "restore", "import", "author", "keygen", "trust add"} <= names


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_option_has_help_and_its_default(name: str, parser: argparse.ArgumentParser) -> None:
    formatter = cli_help.HelpFormatter(prog=parser.prog)
    missing_help = [a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not missing_help, f"{name}: no help for {missing_help}"
    silent = [
        "/".join(a.option_strings)
        for a in parser._actions
        if not cli_help.states_default(a, formatter)
    ]
    assert not silent, f"{name}: the help of {silent} does not say what the default is"


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_help_ends_with_exit_codes_and_an_example(
    name: str, parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    assert name in cli_help.EPILOGS, f"no exit codes written for {name!r}"
    tail = text[text.index("exit codes:") :]
    codes = [int(c) for c in re.findall(r"^\s+(\d+)  ", tail, flags=re.MULTILINE)]
    assert 0 in codes and codes == sorted(codes)
    example = tail.split("example:\n", 1)[1].strip()
    assert example.startswith(f"discmaker {name}")
    assert text.rstrip().endswith(example)


def test_flags_and_values_state_their_default() -> None:
    text = dict(COMMANDS)["import"].format_help()
    assert "send nothing (default: off)" in " ".join(text.split())
    assert "(default: DISCMAKER)" in text
