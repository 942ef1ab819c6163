"""What every ``--help`` ends with: the command's exit codes and one example.

One table per command (``"check"``, ``"trust add"``, ...), so the exit codes a script relies on
are written once, next to each other, and a test can hold every command to it. The formatter
states each option's default: from argparse where the default is a value, "off" for a flag;
an option whose default is None must say in its own help what happens without it.
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Epilog:
    exit_codes: tuple[tuple[int, str], ...]
    example: str

    def render(self) -> str:
        lines = ["exit codes:"]
        for code, meaning in sorted(self.exit_codes):
            lines += textwrap.wrap(
                meaning, 78, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7
            )
        lines += ["", "example:", f"  {self.example}"]
        return "\n".join(lines)


_INTERRUPTED = (130, "interrupted (Ctrl-C); nothing half-written is left under a final name")
_USAGE = (64, "wrong command line (the message says what to change)")
_CHECK_CODES = (
    (0, "verified: every image is as the trusted sender signed it"),
    (1, "tampered or inconsistent: do not import; the findings say what changed and where"),
    (
        2,
        "not verifiable (unsigned, unknown sender), an incomplete set of discs, or loose "
        "files verified image by image by their watermarks (never a whole study)",
    ),
    (3, "not a disc, unreadable input, or a wrong command line"),
)

EPILOGS: dict[str, Epilog] = {
    "keygen": Epilog(
        (
            (0, "key.pem and cert.pem written"),
            _USAGE,
            (73, "the output folder cannot be written, or already holds a key"),
            _INTERRUPTED,
        ),
        "discmaker keygen --org 'City Imaging Centre' --out ~/discmaker-key",
    ),
    "author": Epilog(
        (
            (0, "disc written"),
            (
                2,
                "disc written, but --skip-unusable left files out (the summary, README.TXT "
                "and the manifest name them)",
            ),
            _USAGE,
            (
                65,
                "the study cannot go on a disc as it is (the message names the file); or "
                "--burn finds no burner, or xorriso is not installed",
            ),
            (66, "a study folder or file does not exist"),
            (
                73,
                "the output cannot be written (exists already, disk full, no permission), or "
                "the burned disc did not verify when read back (the ISO image is kept)",
            ),
            (77, "the signing key or certificate cannot be used (passphrase, expiry)"),
            _INTERRUPTED,
        ),
        "discmaker author /data/export/ct --key key.pem --cert cert.pem --out disc.iso",
    ),
    "check": Epilog(
        (*_CHECK_CODES, _INTERRUPTED),
        "discmaker check /media/cdrom --report check-report.html",
    ),
    "restore": Epilog(
        (*_CHECK_CODES, _INTERRUPTED),
        "discmaker restore /media/cdrom --out /srv/pacs-import/2026-12-02-doe",
    ),
    "import": Epilog(
        (
            (0, "every verified original is stored in the PACS (or was already there)"),
            (1, "the disc is tampered or inconsistent: nothing sent"),
            (2, "the disc is not verifiable or an incomplete set: nothing sent"),
            (3, "not a disc or unreadable input"),
            _USAGE,
            (69, "the PACS does not answer or refuses the association"),
            (73, "the import log cannot be written: nothing sent"),
            (75, "some images were not stored: run the same command again to send the rest"),
            _INTERRUPTED,
        ),
        "discmaker import /media/cdrom --to PACS@pacs.hospital.local:104",
    ),
    "station": Epilog(
        (
            (0, "stopped by SIGTERM; a disc under way was finished first"),
            (64, "a mistake in the configuration or the flags (the message names the setting)"),
            (65, "cannot listen on the DICOM port (in use, or below 1024 without the right)"),
            (73, "the output or state folder, the queue or the audit log cannot be written"),
            (77, "the signing key, its passphrase or the certificate cannot be used"),
            (130, "interrupted (Ctrl-C); a disc under way starts again at the next start"),
        ),
        "discmaker station --config /etc/discmaker/station.toml",
    ),
    "station run": Epilog(
        (
            (0, "stopped by SIGTERM; a disc under way was finished first"),
            (64, "a mistake in the configuration or the flags (the message names the setting)"),
            (65, "cannot listen on the DICOM port (in use, or below 1024 without the right)"),
            (73, "the output or state folder, the queue or the audit log cannot be written"),
            (77, "the signing key, its passphrase or the certificate cannot be used"),
            (130, "interrupted (Ctrl-C); a disc under way starts again at the next start"),
        ),
        "discmaker station run --config /etc/discmaker/station.toml",
    ),
    "station status": Epilog(
        (
            (0, "the status is printed"),
            *(
                (
                    64,
                    "no station queue in that state folder, no such job, or a job in the wrong "
                    "state for it",
                ),
                (73, "the queue cannot be opened"),
            ),
        ),
        "discmaker station status --config /etc/discmaker/station.toml",
    ),
    "station jobs": Epilog(
        (
            (0, "the jobs are printed"),
            *(
                (
                    64,
                    "no station queue in that state folder, no such job, or a job in the wrong "
                    "state for it",
                ),
                (73, "the queue cannot be opened"),
            ),
        ),
        "discmaker station jobs --config /etc/discmaker/station.toml --json",
    ),
    "station retry": Epilog(
        (
            (0, "the job is back in the queue: the running station makes its disc"),
            *(
                (
                    64,
                    "no station queue in that state folder, no such job, or a job in the wrong "
                    "state for it",
                ),
                (73, "the queue cannot be opened"),
            ),
        ),
        "discmaker station retry 42 --config /etc/discmaker/station.toml",
    ),
    "station cancel": Epilog(
        (
            (0, "the job is cancelled (its disc, if under way, is removed)"),
            *(
                (
                    64,
                    "no station queue in that state folder, no such job, or a job in the wrong "
                    "state for it",
                ),
                (73, "the queue cannot be opened"),
            ),
        ),
        "discmaker station cancel 42 --config /etc/discmaker/station.toml",
    ),
    "trust add": Epilog(
        (
            (0, "the sender is trusted"),
            (
                64,
                "you answered no, or there was no terminal to ask on and no --yes: "
                "nothing changed; also a source without a sender certificate",
            ),
            (77, "the certificate file cannot be read or is not a usable sender certificate"),
            (73, "the trust store cannot be written"),
            _INTERRUPTED,
        ),
        "discmaker trust add /media/cdrom",
    ),
    "trust list": Epilog(
        ((0, "the list is printed (it may be empty)"), _USAGE),
        "discmaker trust list",
    ),
    "trust remove": Epilog(
        (
            (0, "the sender is no longer trusted"),
            (
                64,
                "no trusted sender has that fingerprint, or it is in the site-wide store "
                "(which only an administrator changes)",
            ),
            (73, "the trust store cannot be written"),
        ),
        "discmaker trust remove 3f2a9c...",
    ),
}


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose as usual, keeps indented lines (exit-code tables, examples) as written,
    and appends each option's default unless its help already states it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs: list[str] = []
        for block in text.split("\n"):
            if block.startswith(" ") or not block.strip():
                paragraphs.append(indent + block)
            else:
                paragraphs.append(
                    textwrap.fill(block, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or "default" in text.lower() or action.required:
            return text
        if action.default is argparse.SUPPRESS or isinstance(
            action, argparse._HelpAction | argparse._VersionAction
        ):
            return text
        if action.nargs == 0 and action.default is False:
            return f"{text} (default: off)"
        if action.default is not None:
            return f"{text} (default: %(default)s)"
        return text


def states_default(action: argparse.Action, formatter: HelpFormatter) -> bool:
    """Whether ``--help`` tells the reader what happens without ``action`` (tests use it)."""
    if action.required or not action.option_strings:
        return True
    if isinstance(action, argparse._HelpAction | argparse._VersionAction):
        return True
    return "default" in (formatter._get_help_string(action) or "").lower()


def apply(parser: argparse.ArgumentParser, command: str) -> None:
    """Give ``parser`` (the parser of ``command``) its epilog and our formatter."""
    parser.formatter_class = HelpFormatter
    epilog = EPILOGS.get(command)
    if epilog is not None:
        parser.epilog = epilog.render()


__all__ = ["EPILOGS", "Epilog", "HelpFormatter", "apply", "states_default"]
