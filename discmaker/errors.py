"""Errors, grouped by who must act.

::

    DiscmakerError
    ├── InputError            the operator must fix what they passed in
    │   ├── UsageError        a flag or argument is wrong (bad label, output inside input)
    │   ├── NoImagesError     nothing usable to put on a disc (empty folder, no DICOM files)
    │   ├── StudyError        the DICOM files are unusable as given (truncated, mixed patients,
    │   │                     duplicate instances, a required element missing)
    │   ├── KeyFileError      the signing key or certificate is unusable (wrong passphrase,
    │   │                     unreadable file)
    │   ├── OutputError       the output cannot be written where asked
    │   └── TooLargeError     the disc does not fit the chosen medium
    ├── DiscError             the received disc, ISO or folder cannot be read safely
    ├── VerificationError     the disc was read but failed verification (the checker's findings)
    │   └── UntrustedSignerError  signed, but not by a sender in the trust store
    └── InternalError         our bug: please report it

Each class carries the process exit code the CLI uses, so "the disc failed" never looks like
"the tool could not run"; :func:`exit_code_for` is the one place an exception that stopped a
command becomes an exit status (the CLI and the guide both ask it). Messages name the DICOM
element or file concerned and say what to do; they never contain patient data.
"""

from __future__ import annotations

# sysexits(3) codes for authoring and the other commands; `check` has its own contract (0-3).
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_NOPERM = 77
EX_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), for every command

# `discmaker check` exit codes (the contract in the README).
CHECK_OK = 0
CHECK_TAMPERED = 1
CHECK_NOT_VERIFIABLE = 2
CHECK_UNREADABLE = 3

# `author --skip-unusable`: the disc was made, and some input files were left out (named in
# the summary, README.TXT and the manifest). Not 0, so a script notices the omission.
AUTHOR_OMISSIONS = 2


class DiscmakerError(Exception):
    """Base of every error discmaker raises on purpose."""

    exit_code: int = EX_SOFTWARE


class InputError(DiscmakerError):
    """The operator must fix the input, the arguments or the environment."""

    exit_code = EX_DATAERR


class UsageError(InputError):
    exit_code = EX_USAGE


class NoImagesError(InputError):
    exit_code = EX_NOINPUT


class StudyError(InputError):
    exit_code = EX_DATAERR


class UnusableFileError(StudyError):
    """One input file cannot go on a disc (damaged, or without a key the DICOMDIR needs).

    ``problem`` says what is wrong without the file's path (for the manifest and README.TXT,
    which name the file by its place in the input folder); the message adds path and advice.
    ``AuthorRequest.skip_unusable`` leaves such a file out instead of stopping.
    """

    def __init__(self, path: str, problem: str, advice: str) -> None:
        super().__init__(f"{path}: {problem}. {advice}")
        self.path = path
        self.problem = problem
        self.advice = advice

    def __reduce__(self) -> tuple[type[UnusableFileError], tuple[str, str, str]]:
        # Raised in worker processes: rebuild from the three parts, not from the message.
        return (type(self), (self.path, self.problem, self.advice))


class KeyFileError(InputError):
    exit_code = EX_NOPERM


class OutputError(InputError):
    exit_code = EX_CANTCREAT


class TooLargeError(InputError):
    exit_code = EX_DATAERR


class DiscError(DiscmakerError):
    """The received disc, ISO image or folder cannot be read safely."""

    exit_code = CHECK_UNREADABLE


class VerificationError(DiscmakerError):
    """The disc was read, and what it holds does not verify."""

    exit_code = CHECK_TAMPERED


class UntrustedSignerError(VerificationError):
    exit_code = CHECK_NOT_VERIFIABLE


class InternalError(DiscmakerError):
    """Our bug. The message asks the operator to report it."""

    exit_code = EX_SOFTWARE


def exit_code_for(exc: BaseException, *, check_contract: bool = False) -> int:
    """The exit status of a command that stopped with ``exc``.

    ``check_contract``: the command is ``check`` or ``restore``, whose statuses are 0-3 only (a
    verification error keeps its 1 or 2; anything else, our bugs included, is 3 "could not
    check"). The other commands use each class's sysexits code, 70 for an unexpected exception.
    Ctrl-C is 130 everywhere.
    """
    if isinstance(exc, KeyboardInterrupt):
        return EX_INTERRUPTED
    code = exc.exit_code if isinstance(exc, DiscmakerError) else EX_SOFTWARE
    if check_contract and code not in (CHECK_TAMPERED, CHECK_NOT_VERIFIABLE):
        return CHECK_UNREADABLE
    return code


__all__ = [
    "AUTHOR_OMISSIONS",
    "CHECK_NOT_VERIFIABLE",
    "CHECK_OK",
    "CHECK_TAMPERED",
    "CHECK_UNREADABLE",
    "EX_CANTCREAT",
    "EX_DATAERR",
    "EX_INTERRUPTED",
    "EX_NOINPUT",
    "EX_NOPERM",
    "EX_SOFTWARE",
    "EX_USAGE",
    "DiscError",
    "DiscmakerError",
    "InputError",
    "InternalError",
    "KeyFileError",
    "NoImagesError",
    "OutputError",
    "StudyError",
    "TooLargeError",
    "UntrustedSignerError",
    "UnusableFileError",
    "UsageError",
    "VerificationError",
    "exit_code_for",
]
