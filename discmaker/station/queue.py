"""The station's durable memory: received instances, studies and disc jobs in SQLite (WAL).

One job per disc (or set of discs) to make. States::

    requested -> received -> authoring -> written -> burned | handed-over -> verified
                                                                  (any) -> failed | cancelled

``requested``: a Media Creation Management request not yet initiated (N-ACTION); ``received``:
ready to author once its instances are all there; ``written``: the disc image is complete
under its final name. A restart puts ``authoring`` jobs back to ``received`` (the author never
leaves a partial disc under a final name, so starting again is safe) and continues
``written`` ones where they stopped. A study gets one job: instances arriving after its job was
made are kept and counted as *late* (``station retry`` makes a new disc with them).

Every method is one transaction on one connection guarded by a lock, so receiver threads and
the job worker share a :class:`Queue`; ``station status`` in another process reads the same
file (WAL lets it read while the station writes).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discmaker.errors import OutputError, UsageError

SCHEMA_VERSION = 1

STATES = (
    "requested",
    "received",
    "authoring",
    "written",
    "burned",
    "handed-over",
    "verified",
    "failed",
    "cancelled",
)
FINAL = frozenset({"verified", "failed", "cancelled"})
ACTIVE = frozenset(STATES) - FINAL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_aet TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    interrupted REAL,
    job_id INTEGER,
    late INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    label TEXT NOT NULL DEFAULT '',
    outputs TEXT NOT NULL DEFAULT '[]',
    label_pdf TEXT NOT NULL DEFAULT '',
    manifest_sha256 TEXT NOT NULL DEFAULT '',
    images INTEGER NOT NULL DEFAULT 0,
    omitted INTEGER NOT NULL DEFAULT 0,
    kept INTEGER NOT NULL DEFAULT 1,
    copies INTEGER NOT NULL DEFAULT 1,
    audit_pending INTEGER NOT NULL DEFAULT 0,
    label_text TEXT NOT NULL DEFAULT '',
    label_from_instances INTEGER NOT NULL DEFAULT 1,
    allow_splitting INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS job_instances (
    job_id INTEGER NOT NULL,
    sop_uid TEXT NOT NULL,
    PRIMARY KEY (job_id, sop_uid)
);
CREATE TABLE IF NOT EXISTS media_requests (
    request_uid TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL,
    calling_aet TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Job:
    id: int
    study_uid: str
    trigger: str  # "quiet" (nothing arrived for a while), "request" (Media Creation), "retry"
    state: str
    reason: str
    created: float
    updated: float
    attempts: int
    label: str
    outputs: tuple[str, ...]
    label_pdf: str
    manifest_sha256: str
    images: int
    omitted: int
    copies: int  # discs to make of it (a Media Creation request's Number of Copies)
    instances: int  # instances the job covers
    present: int  # of those, received so far
    late: int  # instances of its study that arrived after the job was made
    # printed on the label (a Media Creation request's Label Text); not in the JSON or the
    # audit log, as a requester may have written patient data into it
    label_text: str = ""
    # a Media Creation request's Label Using Information Extracted From Instances: False ->
    # the label names no patient or study, only the label text and the disc's own facts
    label_from_instances: bool = True
    # a Media Creation request's Allow Media Splitting: False -> a study needing more than
    # one disc fails rather than becoming a set
    allow_splitting: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "study_instance_uid": self.study_uid,
            "trigger": self.trigger,
            "state": self.state,
            "reason": self.reason,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "attempts": self.attempts,
            "label": self.label,
            "outputs": list(self.outputs),
            "label_pdf": self.label_pdf or None,
            "manifest_sha256": self.manifest_sha256 or None,
            "images": self.images,
            "omitted": self.omitted,
            "copies": self.copies,
            "instances": self.instances,
            "received": self.present,
            "late": self.late,
            "label_from_instances": self.label_from_instances,
            "allow_splitting": self.allow_splitting,
        }


@dataclass(frozen=True)
class WaitingStudy:
    """A study with instances but no job yet."""

    study_uid: str
    instances: int
    first_received: float
    last_received: float
    interrupted: float | None


def _job_row(db: sqlite3.Connection, job_id: int) -> sqlite3.Row:
    """The job's row, for an operator's command; :class:`UsageError` when there is none."""
    row: sqlite3.Row | None = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        raise UsageError(f"There is no job {job_id}. 'discmaker station jobs' lists them.")
    return row


# Columns added since schema 1 was first written: (name, definition). A queue made before
# gets them at the next start (older stations ignore them).
_ADDED_COLUMNS = (
    ("audit_pending", "INTEGER NOT NULL DEFAULT 0"),
    ("label_text", "TEXT NOT NULL DEFAULT ''"),
    ("label_from_instances", "INTEGER NOT NULL DEFAULT 1"),
    ("allow_splitting", "INTEGER NOT NULL DEFAULT 1"),
)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    have = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
    for name, definition in _ADDED_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class Queue:
    """The station's SQLite database; see the module docstring."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """``read_only``: for ``station status`` and ``jobs``, which a monitoring user without
        write access may run; the file must exist."""
        self.path = path
        try:
            if read_only:
                self._db = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=30,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # One connection shared by the receiver threads and the job loop, under our lock.
                self._db = sqlite3.connect(
                    path, timeout=30, isolation_level=None, check_same_thread=False
                )
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(
                f"The station's queue {path} cannot be opened ({exc}). Check that the state "
                "folder exists, and run this as the station's user."
            ) from exc
        self._lock = threading.RLock()
        self._db.row_factory = sqlite3.Row
        if read_only:
            return
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a stored instance survives a power cut
            self._db.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as exc:
            raise OutputError(f"The station's queue {path} cannot be used ({exc}).") from exc
        with self._tx() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            _add_missing_columns(db)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise UsageError(
                    f"{path} was made by another discmaker version (schema {row[0]}); this one "
                    f"reads schema {SCHEMA_VERSION}. Use a new state folder."
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- receiving ---------------------------------------------------------------------------

    def study_of(self, sop_uid: str) -> str | None:
        """The study an instance was received in, or None if it never was."""
        with self._lock:
            row = self._db.execute(
                "SELECT study_uid FROM instances WHERE sop_uid=?", (sop_uid,)
            ).fetchone()
        return None if row is None else str(row["study_uid"])

    def add_instance(
        self,
        *,
        sop_uid: str,
        study_uid: str,
        series_uid: str,
        sop_class: str,
        path: str,
        size: int,
        calling_aet: str,
        now: float,
    ) -> str:
        """Record a durable instance. Returns what it is to its study:

        ``"new"`` (the study has no job yet, or a Media Creation request names the instance),
        ``"late"`` (the study's disc is being made: kept and counted, ``station retry`` makes
        the disc again with it) or ``"again"`` (the study's disc was finished, verified,
        failed or cancelled: the study starts over and becomes a new job once quiet).
        Raises :class:`UsageError` when the SOP Instance UID was received in another study.
        """
        with self._tx() as db:
            known = db.execute(
                "SELECT study_uid FROM instances WHERE sop_uid=?", (sop_uid,)
            ).fetchone()
            if known is not None and known["study_uid"] != study_uid:
                raise UsageError("this SOP Instance UID was already received in another study")
            db.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sop_uid) DO "
                "UPDATE SET path=excluded.path, size=excluded.size, received=excluded.received",
                (sop_uid, study_uid, series_uid, sop_class, path, size, calling_aet, now),
            )
            requested = db.execute(
                "SELECT j.id FROM job_instances ji JOIN jobs j ON j.id=ji.job_id WHERE "
                "ji.sop_uid=? AND j.trigger='request' AND j.state IN ('requested', 'received')",
                (sop_uid,),
            ).fetchone()
            study = db.execute(
                "SELECT s.job_id, j.state FROM studies s LEFT JOIN jobs j ON j.id=s.job_id "
                "WHERE s.study_uid=?",
                (study_uid,),
            ).fetchone()
            request_job = None if requested is None else int(requested["id"])
            if study is None:
                db.execute(
                    "INSERT INTO studies (study_uid, first_received, last_received) "
                    "VALUES (?, ?, ?)",
                    (study_uid, now, now),
                )
                if request_job is not None:
                    self._link_request(db, request_job, study_uid)
                return "new"
            db.execute("UPDATE studies SET last_received=? WHERE study_uid=?", (now, study_uid))
            if study["job_id"] is None:
                if request_job is not None:  # N-CREATE came first: the request makes the disc
                    self._link_request(db, request_job, study_uid)
                return "new"
            if request_job is not None:
                return "new"
            if study["state"] in FINAL or study["state"] is None:
                db.execute(
                    "UPDATE studies SET job_id=NULL, late=0, interrupted=NULL, "
                    "first_received=? WHERE study_uid=?",
                    (now, study_uid),
                )
                return "again"
            db.execute("UPDATE studies SET late=late+1 WHERE study_uid=?", (study_uid,))
            return "late"

    def _link_request(self, db: sqlite3.Connection, job_id: int, study_uid: str) -> None:
        """A study whose instances a Media Creation request named before they arrived."""
        db.execute("UPDATE studies SET job_id=? WHERE study_uid=?", (job_id, study_uid))
        db.execute("UPDATE jobs SET study_uid=? WHERE id=? AND study_uid=''", (study_uid, job_id))

    def mark_interrupted(self, study_uids: Iterable[str], *, now: float) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE studies SET interrupted=? WHERE study_uid=?",
                [(now, uid) for uid in study_uids],
            )

    def clear_interrupted(self, study_uids: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE studies SET interrupted=NULL WHERE study_uid=?",
                [(uid,) for uid in study_uids],
            )

    def waiting_studies(self) -> list[WaitingStudy]:
        with self._lock:
            rows = self._db.execute(
                "SELECT s.study_uid, s.first_received, s.last_received, s.interrupted, "
                "(SELECT COUNT(*) FROM instances i WHERE i.study_uid=s.study_uid) AS n "
                "FROM studies s WHERE s.job_id IS NULL ORDER BY s.first_received"
            ).fetchall()
        return [
            WaitingStudy(
                r["study_uid"], r["n"], r["first_received"], r["last_received"], r["interrupted"]
            )
            for r in rows
        ]

    # -- jobs --------------------------------------------------------------------------------

    def create_study_job(self, study_uid: str, *, now: float) -> int | None:
        """A job for every instance of ``study_uid`` received so far; None if it has one."""
        with self._tx() as db:
            row = db.execute(
                "SELECT job_id FROM studies WHERE study_uid=?", (study_uid,)
            ).fetchone()
            if row is None or row["job_id"] is not None:
                return None
            count = db.execute(
                "SELECT COUNT(*) FROM instances WHERE study_uid=?", (study_uid,)
            ).fetchone()[0]
            if not count:
                return None
            job_id = self._insert_job(db, study_uid, "quiet", "received", now)
            db.execute(
                "INSERT INTO job_instances SELECT ?, sop_uid FROM instances WHERE study_uid=?",
                (job_id, study_uid),
            )
            db.execute("UPDATE studies SET job_id=? WHERE study_uid=?", (job_id, study_uid))
            return job_id

    def create_request_job(
        self,
        request_uid: str,
        calling_aet: str,
        sop_uids: Sequence[str],
        *,
        now: float,
        copies: int = 1,
        label_text: str = "",
        label_from_instances: bool = True,
        allow_splitting: bool = True,
    ) -> int:
        """A job for a Media Creation request naming ``sop_uids``, in state ``requested``
        (``label_text`` and ``label_from_instances``: for its label; ``allow_splitting``
        False: one disc or none).

        When one active or verified job already covers every named instance (the quiet period
        made the disc first), the request is attached to it instead: no study is authored
        twice. Raises :class:`UsageError` for a request UID already known.
        """
        with self._tx() as db:
            if db.execute(
                "SELECT 1 FROM media_requests WHERE request_uid=?", (request_uid,)
            ).fetchone():
                raise UsageError(f"media creation request {request_uid} exists already")
            existing = self._covering_job(db, sop_uids)
            if existing is not None:
                job_id = existing
                db.execute("UPDATE jobs SET copies=MAX(copies, ?) WHERE id=?", (copies, job_id))
                # while its disc is not written yet, the request's wishes still apply to it
                db.execute(
                    "UPDATE jobs SET label_text=CASE WHEN ?='' THEN label_text ELSE ? END, "
                    "label_from_instances=MIN(label_from_instances, ?), "
                    "allow_splitting=MIN(allow_splitting, ?) "
                    "WHERE id=? AND state IN ('requested', 'received', 'authoring')",
                    (label_text, label_text, label_from_instances, allow_splitting, job_id),
                )
            else:
                studies = {
                    r["study_uid"]
                    for uid in sop_uids
                    for r in db.execute("SELECT study_uid FROM instances WHERE sop_uid=?", (uid,))
                }
                study_uid = sorted(studies)[0] if studies else ""
                job_id = self._insert_job(db, study_uid, "request", "requested", now)
                db.execute(
                    "UPDATE jobs SET copies=?, label_text=?, label_from_instances=?, "
                    "allow_splitting=? WHERE id=?",
                    (copies, label_text, label_from_instances, allow_splitting, job_id),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO job_instances VALUES (?, ?)",
                    [(job_id, uid) for uid in sop_uids],
                )
                db.executemany(
                    "UPDATE studies SET job_id=? WHERE study_uid=? AND job_id IS NULL",
                    [(job_id, s) for s in studies],
                )
            db.execute(
                "INSERT INTO media_requests VALUES (?, ?, ?, ?)",
                (request_uid, job_id, calling_aet, now),
            )
            return job_id

    def _covering_job(self, db: sqlite3.Connection, sop_uids: Sequence[str]) -> int | None:
        if not sop_uids:
            return None
        placeholders = ",".join("?" * len(sop_uids))
        rows = db.execute(
            "SELECT ji.job_id, COUNT(*) AS n FROM job_instances ji JOIN jobs j ON j.id=ji.job_id "
            f"WHERE ji.sop_uid IN ({placeholders}) AND j.state NOT IN "
            "('failed', 'cancelled', 'verified') "
            "GROUP BY ji.job_id",
            list(sop_uids),
        ).fetchall()
        for row in rows:
            if row["n"] == len(set(sop_uids)):
                return int(row["job_id"])
        return None

    def job_for_request(self, request_uid: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id FROM media_requests WHERE request_uid=?", (request_uid,)
            ).fetchone()
        return None if row is None else self.job(int(row["job_id"]))

    def _insert_job(
        self, db: sqlite3.Connection, study_uid: str, trigger: str, state: str, now: float
    ) -> int:
        cur = db.execute(
            "INSERT INTO jobs (study_uid, trigger, state, created, updated) VALUES (?, ?, ?, ?, ?)",
            (study_uid, trigger, state, now, now),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def set_state(
        self,
        job_id: int,
        state: str,
        *,
        now: float,
        reason: str = "",
        expect: Sequence[str] = (),
        audit: bool = False,
        **fields: Any,
    ) -> bool:
        """Move a job to ``state``; ``fields`` are other columns (outputs as a sequence).
        Returns False, changing nothing, when an operator cancelled the job meanwhile, or
        when it is no longer in one of the ``expect`` states (cancelled and retried while
        this step ran: the new attempt decides).

        ``audit=True`` (a disc verified or failed): in the same transaction the job is marked
        as owing its audit line, until :meth:`audited`; after a crash in between,
        :meth:`audit_pending` names it, so no ended disc goes unaudited."""
        if state not in STATES:
            raise ValueError(state)
        columns = {"state": state, "reason": reason, "updated": now}
        if audit:
            columns["audit_pending"] = 1
        for key, value in fields.items():
            columns[key] = json.dumps(list(value)) if key == "outputs" else value
        assignments = ", ".join(f"{k}=?" for k in columns)
        with self._tx() as db:
            guard = "state!='cancelled'"
            if expect:
                guard += f" AND state IN ({','.join('?' * len(expect))})"
            cur = db.execute(
                f"UPDATE jobs SET {assignments} WHERE id=? AND {guard}",
                [*columns.values(), job_id, *expect],
            )
            return cur.rowcount == 1

    def audit_pending(self) -> list[Job]:
        """Jobs that ended (verified, failed) whose audit line may not be written yet."""
        return self._jobs("WHERE j.audit_pending=1 ORDER BY j.id", ())

    def audited(self, job_id: int) -> None:
        """The job's audit line is written (and flushed)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET audit_pending=0 WHERE id=?", (job_id,))

    def start_attempt(self, job_id: int, *, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state='authoring', attempts=attempts+1, reason='', updated=? "
                "WHERE id=?",
                (now, job_id),
            )

    def job(self, job_id: int) -> Job | None:
        jobs = self._jobs("WHERE j.id=?", (job_id,))
        return jobs[0] if jobs else None

    def jobs(self, *, limit: int = 100) -> list[Job]:
        return self._jobs("ORDER BY j.id DESC LIMIT ?", (limit,))

    def jobs_in(self, states: Iterable[str]) -> list[Job]:
        wanted = sorted(states)
        return self._jobs(f"WHERE j.state IN ({','.join('?' * len(wanted))}) ORDER BY j.id", wanted)

    def _jobs(self, where: str, params: Sequence[Any]) -> list[Job]:
        query = (
            "SELECT j.*, "
            "(SELECT COUNT(*) FROM job_instances ji WHERE ji.job_id=j.id) AS n_instances, "
            "(SELECT COUNT(*) FROM job_instances ji JOIN instances i ON i.sop_uid=ji.sop_uid "
            " WHERE ji.job_id=j.id) AS n_present, "
            "COALESCE((SELECT late FROM studies s WHERE s.job_id=j.id "
            " AND s.study_uid=j.study_uid), 0) AS n_late "
            f"FROM jobs j {where}"
        )
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [
            Job(
                id=r["id"],
                study_uid=r["study_uid"],
                trigger=r["trigger"],
                state=r["state"],
                reason=r["reason"],
                created=r["created"],
                updated=r["updated"],
                attempts=r["attempts"],
                label=r["label"],
                outputs=tuple(json.loads(r["outputs"])),
                label_pdf=r["label_pdf"],
                manifest_sha256=r["manifest_sha256"],
                images=r["images"],
                omitted=r["omitted"],
                copies=r["copies"],
                instances=r["n_instances"],
                present=r["n_present"],
                late=r["n_late"],
                label_text=r["label_text"],
                label_from_instances=bool(r["label_from_instances"]),
                allow_splitting=bool(r["allow_splitting"]),
            )
            for r in rows
        ]

    def job_files(self, job_id: int) -> list[tuple[str, str]]:
        """(SOP Instance UID, spool path) of the job's instances received so far."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.sop_uid, i.path FROM job_instances ji JOIN instances i "
                "ON i.sop_uid=ji.sop_uid WHERE ji.job_id=? ORDER BY i.path",
                (job_id,),
            ).fetchall()
        return [(r["sop_uid"], r["path"]) for r in rows]

    def senders(self, job_id: int) -> list[str]:
        """The calling AE titles the job's instances came from (for the audit line)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT i.calling_aet FROM job_instances ji JOIN instances i "
                "ON i.sop_uid=ji.sop_uid WHERE ji.job_id=? ORDER BY 1",
                (job_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def retry(self, job_id: int, *, now: float) -> Job:
        """Put a failed or cancelled job back in the queue, with every instance of its study
        received since (late ones included). Raises :class:`UsageError` otherwise."""
        with self._tx() as db:
            job = _job_row(db, job_id)
            if job["state"] not in ("failed", "cancelled", "verified"):
                raise UsageError(
                    f"Job {job_id} is {job['state']}; only a failed, cancelled or verified job "
                    "can be made again."
                )
            if job["audit_pending"]:
                raise UsageError(
                    f"Job {job_id}'s audit line is not written yet (the station stopped before "
                    "it could write it); start the station, which writes it, then retry."
                )
            if not job["kept"]:
                raise UsageError(
                    f"The received images of job {job_id} are no longer kept "
                    "(keep_received_days): send the study to the station again."
                )
            if job["trigger"] != "request":
                db.execute(
                    "INSERT OR IGNORE INTO job_instances SELECT ?, sop_uid FROM instances "
                    "WHERE study_uid=?",
                    (job_id, job["study_uid"]),
                )
                db.execute("UPDATE studies SET late=0 WHERE job_id=?", (job_id,))
            db.execute(
                "UPDATE jobs SET state='received', reason='', updated=? WHERE id=?",
                (now, job_id),
            )
        found = self.job(job_id)
        assert found is not None
        return found

    def cancel(self, job_id: int, *, now: float) -> Job:
        with self._tx() as db:
            job = _job_row(db, job_id)
            if job["state"] in FINAL:
                raise UsageError(f"Job {job_id} is {job['state']} already; nothing to cancel.")
            if job["state"] not in ("requested", "received", "authoring"):
                raise UsageError(
                    f"Job {job_id} is {job['state']}: its disc is made and is being checked and "
                    "delivered, so it can no longer be cancelled (the audit log will record it)."
                )
            db.execute(
                "UPDATE jobs SET state='cancelled', reason='cancelled by an operator', updated=? "
                "WHERE id=?",
                (now, job_id),
            )
        found = self.job(job_id)
        assert found is not None
        return found

    def recover(self, *, now: float, reason: str = "resumed after a restart") -> list[int]:
        """Jobs left authoring (a restart, an error) go back to ``received``. Returns them."""
        with self._tx() as db:
            rows = db.execute("SELECT id FROM jobs WHERE state='authoring'").fetchall()
            db.execute(
                "UPDATE jobs SET state='received', reason=?, updated=? WHERE state='authoring'",
                (reason, now),
            )
        return [int(r["id"]) for r in rows]

    def expire(self, *, before: float) -> list[str]:
        """Forget the received instances of jobs that ended (verified, failed or cancelled)
        before ``before``; returns their spool paths for the caller to delete. A job an
        operator retried is no longer ended: its instances stay."""
        final = ",".join(f"'{state}'" for state in sorted(FINAL))
        with self._tx() as db:
            jobs = [
                r["id"]
                for r in db.execute(
                    f"SELECT id FROM jobs WHERE state IN ({final}) AND kept=1 AND updated<?",
                    (before,),
                )
            ]
            paths: list[str] = []
            # an instance a newer job still needs (the study was sent again) stays
            still_needed = (
                "SELECT ji2.sop_uid FROM job_instances ji2 JOIN jobs j2 ON j2.id=ji2.job_id "
                f"WHERE j2.id!=? AND j2.kept=1 AND NOT (j2.state IN ({final}) AND j2.updated<?)"
            )
            for job_id in jobs:
                needed = {r[0] for r in db.execute(still_needed, (job_id, before))}
                # and so does one received again after this job ended (a re-sent study)
                rows = db.execute(
                    "SELECT i.sop_uid, i.path FROM job_instances ji JOIN instances i "
                    "ON i.sop_uid=ji.sop_uid JOIN jobs j ON j.id=ji.job_id "
                    "WHERE ji.job_id=? AND i.received <= j.updated",
                    (job_id,),
                ).fetchall()
                gone = [(r["sop_uid"],) for r in rows if r["sop_uid"] not in needed]
                paths += [r["path"] for r in rows if r["sop_uid"] not in needed]
                db.executemany("DELETE FROM instances WHERE sop_uid=?", gone)
                db.execute("UPDATE jobs SET kept=0 WHERE id=?", (job_id,))
        return paths

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {r[0]: r[1] for r in rows}


__all__ = ["ACTIVE", "FINAL", "STATES", "Job", "Queue", "WaitingStudy"]
