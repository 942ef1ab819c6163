"""The import log: an append-only record of what was sent to which PACS, as JSON lines.

Where: ``--log FILE`` (the ``log_path`` argument), else ``$DISCMAKER_IMPORT_LOG``, else
``platformdirs.user_data_dir("discmaker")/import-log.jsonl`` (on Linux
``~/.local/share/discmaker/import-log.jsonl``). Created with mode 0600 in a folder of mode
0700 if they do not exist; never rewritten, only appended to.

One JSON object per line, each complete in itself (``format`` ``discmaker-import-log``,
``format_version`` 1):

* ``"event": "instance"`` — one C-STORE attempt: ``sop_instance_uid``, ``path`` (on the disc),
  ``status`` (``stored``, ``stored-with-warning`` or ``failed``), ``dimse_status`` (the PACS's
  status code, null when it did not answer), ``attempt`` (1, 2, ...), ``message``;
* ``"event": "run"`` — the end of one ``import`` run: ``outcome`` (``complete``,
  ``incomplete``, ``not-verified``, ``unreachable``) and the counts;

and on every line: ``when`` (ISO 8601 UTC), ``run`` (an id shared by the lines of one run),
``user``, ``host`` (this computer), ``source`` (the disc as given), ``fileset_id``,
``signer_fingerprint``, ``verdict`` (the check's), ``destination`` (``AET@HOST:PORT``) and
``calling_aet``. No patient names or IDs are written; reconciled attribute values neither
(only their keywords, in ``reconciled``).

A later run to the same destination skips every instance the log says was stored there
(:meth:`ImportLog.stored`). Lines are written with one ``write`` each under an exclusive lock,
so imports running at the same time (threads or processes) never interleave; a line cut short
by a crash is skipped when reading and never glued to the next one.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import platformdirs

from discmaker import APP_NAME
from discmaker.errors import OutputError
from discmaker.jsonlines import AppendLog

log = logging.getLogger(__name__)

IMPORT_LOG_ENV = "DISCMAKER_IMPORT_LOG"
IMPORT_LOG_NAME = "import-log.jsonl"
LOG_FORMAT = "discmaker-import-log"
LOG_VERSION = 1
STORED_STATUSES = frozenset({"stored", "stored-with-warning"})


def default_log_path() -> Path:
    """``$DISCMAKER_IMPORT_LOG``, else the user data folder's ``import-log.jsonl``."""
    override = os.environ.get(IMPORT_LOG_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / IMPORT_LOG_NAME


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container), no LOGNAME
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RunContext:
    """What every line of one run carries."""

    source: str
    destination: str
    calling_aet: str
    fileset_id: str
    signer_fingerprint: str
    verdict: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    user: str = field(default_factory=_user)
    host: str = field(default_factory=socket.gethostname)

    def fields(self) -> dict[str, Any]:
        return {
            "format": LOG_FORMAT,
            "format_version": LOG_VERSION,
            "run": self.run,
            "user": self.user,
            "host": self.host,
            "source": self.source,
            "fileset_id": self.fileset_id,
            "signer_fingerprint": self.signer_fingerprint,
            "verdict": self.verdict,
            "destination": self.destination,
            "calling_aet": self.calling_aet,
        }


def _cannot(path: Path, exc: OSError, *, started: bool = False) -> OutputError:
    what = (
        "The import stopped; what was sent before is recorded, run it again to send the rest"
        if started
        else "Nothing was sent"
    )
    return OutputError(
        f"The import log {path} cannot be written ({exc.strerror or exc}). {what}. "
        f"Give a writable file with --log, or set {IMPORT_LOG_ENV}."
    )


class ImportLog:
    """One open import log. Use as a context manager; :meth:`write` appends one line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = AppendLog(self.path)

    def __enter__(self) -> ImportLog:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Open for appending (creating it and its folder if needed); :class:`OutputError`
        if that is impossible, before anything is sent."""
        try:
            self._file.open()
        except OSError as exc:
            raise _cannot(self.path, exc) from exc
        log.debug("import log: %s", self.path)

    def close(self) -> None:
        self._file.close()

    def write(self, context: RunContext, event: str, **values: Any) -> None:
        """Append one line: ``event``, the run's fields and ``values``."""
        record = {"when": _now(), "event": event, **context.fields(), **values}
        try:
            self._file.append(record)
        except OSError as exc:
            raise _cannot(self.path, exc, started=True) from exc

    def stored(self, destination: str) -> frozenset[str]:
        """SOP Instance UIDs the log says ``destination`` stored (in any earlier run)."""
        return stored_instances(self.path, destination)


def stored_instances(path: Path, destination: str) -> frozenset[str]:
    """SOP Instance UIDs that ``path`` (an import log) records as stored by ``destination``.

    A missing log is empty; lines that are not complete JSON objects are skipped (counted in
    the debug log)."""
    uids: set[str] = set()
    skipped = 0
    needle = json.dumps(destination)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        raise OutputError(
            f"The import log {path} cannot be read ({exc.strerror or exc}). Nothing was sent. "
            f"Give a readable file with --log, or set {IMPORT_LOG_ENV}."
        ) from exc
    with handle:
        for raw in handle:
            if needle.encode() not in raw:  # cheap filter before parsing
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                skipped += 1
                continue
            if (
                isinstance(record, dict)
                and record.get("event") == "instance"
                and record.get("destination") == destination
                and record.get("status") in STORED_STATUSES
                and isinstance(record.get("sop_instance_uid"), str)
            ):
                uids.add(record["sop_instance_uid"])
    if skipped:
        log.debug("import log: %d unreadable line(s) skipped", skipped)
    return frozenset(uids)


__all__ = [
    "IMPORT_LOG_ENV",
    "IMPORT_LOG_NAME",
    "LOG_FORMAT",
    "LOG_VERSION",
    "STORED_STATUSES",
    "ImportLog",
    "RunContext",
    "default_log_path",
    "stored_instances",
]
