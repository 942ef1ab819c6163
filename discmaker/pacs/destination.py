"""Where an import goes: ``AET@HOST:PORT``, AE titles, and what can go wrong with a PACS.

Light to import (no pynetdicom, no pydicom): the command line parses ``--to`` with it before
anything heavy loads.

Exit codes of ``discmaker import`` beyond the check's 0-3 are sysexits(3) codes: 69
(``EX_UNAVAILABLE``) when the PACS cannot be reached or refuses us, 75 (``EX_TEMPFAIL``) when
some instances were not stored (running the same command again sends only what is missing).
"""

from __future__ import annotations

from dataclasses import dataclass

from discmaker.errors import InputError, UsageError

IMPORT_UNREACHABLE = 69  # sysexits EX_UNAVAILABLE: the PACS is unreachable or refused us
IMPORT_INCOMPLETE = 75  # sysexits EX_TEMPFAIL: some instances were not stored; run again

DEFAULT_CALLING_AET = "DISCMAKER"
MAX_AET_LENGTH = 16


class DestinationError(InputError):
    """The PACS cannot be reached, refuses the association, or does not answer the echo.

    Nothing was sent. Someone must fix the address, the AE titles, the PACS's configuration
    (our AE title may have to be registered there) or the network between them.
    """

    exit_code = IMPORT_UNREACHABLE


def check_aet(value: str, *, what: str) -> str:
    """``value`` as a valid AE title (PS3.5 AE: 1-16 characters, no backslash or control
    characters, not only spaces), surrounding spaces removed; :class:`UsageError` if not."""
    title = value.strip(" ")
    problem = ""
    if not title:
        problem = "is empty"
    elif len(title) > MAX_AET_LENGTH:
        problem = f"is {len(title)} characters long; at most {MAX_AET_LENGTH} are allowed"
    elif any(c == "\\" or not (" " <= c <= "~") for c in title):
        problem = "may only use plain letters, digits, spaces and punctuation (no backslash)"
    if problem:
        raise UsageError(
            f"The {what} {value!r} {problem}. Ask your PACS administrator for the exact "
            "AE title (for example PACS or STORESCP)."
        )
    return title


@dataclass(frozen=True)
class Destination:
    """A DICOM Storage SCP: its AE title (the *called* AE title), host name or address, port."""

    aet: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "aet", check_aet(self.aet, what="AE title of the PACS"))
        host = self.host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or any(c.isspace() or c in "/@" for c in host):
            raise UsageError(
                f"{self.host!r} is not a host name or address. Use e.g. pacs.hospital.local "
                "or 10.0.0.5."
            )
        object.__setattr__(self, "host", host.lower())
        if not 1 <= self.port <= 65535:
            raise UsageError(
                f"Port {self.port} is not a TCP port (1-65535). The usual DICOM ports are "
                "104 and 11112; ask your PACS administrator."
            )

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@HOST:PORT`` (an IPv6 address in brackets: ``PACS@[fd00::5]:104``)."""
        aet, at, rest = text.rpartition("@")
        host, colon, port = rest.rpartition(":")
        if rest.startswith("[") and "]" in rest:  # [IPv6]:port
            close = rest.index("]")
            host, colon, port = rest[: close + 1], rest[close + 1 : close + 2], rest[close + 2 :]
        if not at or not colon or not port.isdigit():
            raise UsageError(
                f"The PACS address {text!r} is not AET@HOST:PORT. Give the PACS's AE title, host "
                "and DICOM port, e.g. PACS@pacs.hospital.local:104."
            )
        return cls(aet=aet, host=host, port=int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"


__all__ = [
    "DEFAULT_CALLING_AET",
    "IMPORT_INCOMPLETE",
    "IMPORT_UNREACHABLE",
    "MAX_AET_LENGTH",
    "Destination",
    "DestinationError",
    "check_aet",
]
