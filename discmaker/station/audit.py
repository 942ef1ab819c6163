"""The station's audit log: one JSON line per disc made or failed, never rewritten.

``state/audit.jsonl``, lines of ``format`` ``discmaker-station-audit`` version 1: ``when``
(the job ended, ISO 8601 UTC), ``station``, ``job``, ``attempt``, ``result`` (``verified``
or ``failed``), ``reason``, ``study_instance_uid``, ``label`` (the disc's File-set ID),
``outputs``, ``manifest_sha256`` (of each disc's signed DISCSIG/MANIFEST.JSN),
``signer_fingerprint``, ``images``, ``omitted`` and ``senders`` (the calling AE titles its
instances came from). No patient names or IDs: the study UID and the manifest hash lead to
the disc, which says whose it is. The queue marks a job as owing its line in the same
transaction as its end, so a station stopped in between writes the line when it starts again,
once (:meth:`AuditLog.has`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from discmaker.errors import OutputError
from discmaker.jsonlines import AppendLog, read_records

AUDIT_FORMAT = "discmaker-station-audit"
AUDIT_VERSION = 1


class AuditLog:
    """Append-only; safe to share between threads."""

    def __init__(self, path: Path, station: str) -> None:
        self.path = path
        self.station = station
        self._file = AppendLog(path)
        try:
            self._file.open()
        except OSError as exc:
            raise OutputError(
                f"The station's audit log {path} cannot be opened ({exc.strerror or exc})."
            ) from exc

    def close(self) -> None:
        self._file.close()

    def has(self, *, job: int, attempt: int, result: str) -> bool:
        """Whether a line for this attempt of ``job`` with ``result`` is in the log (after a
        crash: was it written before the queue could note it?)."""
        return any(
            r.get("format") == AUDIT_FORMAT
            and r.get("job") == job
            and r.get("attempt") == attempt
            and r.get("result") == result
            for r in read_records(self.path)
        )

    def record(
        self,
        *,
        job: int,
        attempt: int,
        result: str,
        reason: str,
        study_uid: str,
        label: str,
        outputs: Sequence[str],
        manifest_sha256: Sequence[str],
        signer_fingerprint: str,
        images: int,
        omitted: int,
        senders: Sequence[str],
        when: float | None = None,
    ) -> None:
        """One line, flushed to the disk before this returns (``when``: the time the job
        ended, default now). Raises :class:`OutputError`."""
        line = {
            "format": AUDIT_FORMAT,
            "format_version": AUDIT_VERSION,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
            "station": self.station,
            "job": job,
            "attempt": attempt,
            "result": result,
            "reason": reason,
            "study_instance_uid": study_uid,
            "label": label,
            "outputs": list(outputs),
            "manifest_sha256": list(manifest_sha256),
            "signer_fingerprint": signer_fingerprint,
            "images": images,
            "omitted": omitted,
            "senders": list(senders),
        }
        try:
            self._file.append(line, durable=True)
        except OSError as exc:
            raise OutputError(
                f"The station's audit log {self.path} cannot be written ({exc.strerror or exc})."
            ) from exc


__all__ = ["AUDIT_FORMAT", "AUDIT_VERSION", "AuditLog"]
