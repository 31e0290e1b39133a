"""SQLite job store of the reference runner, in the SQL kit's words (supabase/migrations): jobs
are ``queued``, ``running``, ``done``, ``failed`` or ``cancelled``; a runner may ``claim`` one,
``heartbeat`` to keep its lease, then ``complete`` or ``fail`` it, or ``requeue`` it (give it back
uncounted); ``purge`` deletes finished jobs past an age. Every change of a job is also an event of
its history (history.py), written here in the same transaction, so every path records.

Jobs belong to an organization. The empty name, ``OWN``, is the runner's own organization (its
``ORGANIZATION_ID``, whatever that is): a store used directly, and every file written before
organizations, holds its jobs there. The operator's side (lists, cancel, retry, hung, purge per
organization, the summary) is steering.py, over the same transactions.

Every write happens in a ``BEGIN IMMEDIATE`` transaction: SQLite then takes the database's write
lock up front, so a claim (read the oldest queued row, mark it running) cannot interleave with
another claim, whether that one comes from a thread of this process or from another process that
opened the same file. That, plus the ``AND status = 'queued'`` guard on the UPDATE, is what makes a
job go to exactly one caller.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from . import history

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
# "lost": the job stopped being ours while it ran (its lease ran out and it was requeued, maybe
# claimed again), so this run's outcome was not recorded. "cancelled": an operator asked, and
# the run's outcome, whatever it was, ended the job cancelled.
FinishStatus = Literal["done", "retry", "failed", "lost", "cancelled"]

STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed", "cancelled")
FINISHED: tuple[JobStatus, ...] = ("done", "failed", "cancelled")
DEFAULT_QUEUE = "agent"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_S = 300.0
OWN = ""  # the runner's own organization
# The contract's optional backlog is counted no further than this, as the Supabase kit does:
# a value of 1000 means at least 1000 due.
BACKLOG_CAP = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT    NOT NULL,
    type             TEXT    NOT NULL,
    payload          TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    created_at       REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    worker_id        TEXT,
    dedupe_key       TEXT,
    last_error       TEXT,
    organization_id  TEXT    NOT NULL DEFAULT '',
    run_at           REAL    NOT NULL DEFAULT 0,
    heartbeat_at     REAL,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT,
    result           TEXT,
    -- the history's bound, kept on the job so that writing an event never counts the history
    events           INTEGER NOT NULL DEFAULT 0,
    event_bytes      INTEGER NOT NULL DEFAULT 0,
    dropped          INTEGER NOT NULL DEFAULT 0,
    -- higher runs first (issue 24), as in the Supabase kit
    priority         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_events (
    job_id  INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    at      REAL    NOT NULL,
    kind    TEXT    NOT NULL,
    attempt INTEGER,
    worker  TEXT,
    message TEXT,
    data    TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_dedupe
    ON jobs (organization_id, queue, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_due_by_priority
    ON jobs (organization_id, queue, priority DESC, run_at, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_heartbeats
    ON jobs (organization_id, heartbeat_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished
    ON jobs (organization_id, status, finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');
CREATE INDEX IF NOT EXISTS jobs_finished_at
    ON jobs (finished_at) WHERE status IN ('done', 'failed', 'cancelled');
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (organization_id, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_counts ON jobs (organization_id, queue, status)
"""
# Indexes of the tables written before: dropped when such a file is upgraded.
_OLD_INDEXES = ("jobs_queue_dedupe_key", "jobs_claim", "jobs_lease", "jobs_due")
# The columns every version of the table had, copied when a file is upgraded.
_OLD_COLUMNS = ("id, queue, type, payload, status, attempts, max_attempts, created_at,"
                " updated_at, started_at, finished_at, worker_id, dedupe_key, last_error")

_COLUMNS = (
    "id, queue, type, payload, status, attempts, max_attempts, created_at, updated_at,"
    " started_at, finished_at, worker_id, dedupe_key, last_error, organization_id, run_at,"
    " heartbeat_at, lease_expires_at, cancel_requested, progress, result, priority"
)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue, already validated for shape (see ``validation.parse_jobs``).
    ``run_at`` None: due now."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    dedupe_key: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    run_at: float | None = None
    organization: str = OWN
    priority: int = 0


@dataclass(frozen=True)
class Job:
    id: int
    queue: str
    type: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    worker_id: str | None
    dedupe_key: str | None
    last_error: str | None
    organization: str = OWN
    run_at: float = 0.0
    heartbeat_at: float | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    progress: Any = None
    result: Any = None
    priority: int = 0

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Job:
        payload = json.loads(row[3])
        return cls(
            id=row[0],
            queue=row[1],
            type=row[2],
            payload=payload if isinstance(payload, dict) else {"value": payload},
            status=row[4],
            attempts=row[5],
            max_attempts=row[6],
            created_at=row[7],
            updated_at=row[8],
            started_at=row[9],
            finished_at=row[10],
            worker_id=row[11],
            dedupe_key=row[12],
            last_error=row[13],
            organization=row[14],
            run_at=row[15],
            heartbeat_at=row[16],
            lease_expires_at=row[17],
            cancel_requested=bool(row[18]),
            progress=_load(row[19]),
            result=_load(row[20]),
            priority=row[21],
        )

    def to_json(self) -> dict[str, Any]:
        """The runner's own ``GET /jobs/{id}`` (epoch seconds); the operator API's shape is
        steering.py's."""
        return {
            "id": self.id,
            "queue": self.queue,
            "type": self.type,
            "payload": self.payload,
            "status": self.status,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "priority": self.priority,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "workerId": self.worker_id,
            "dedupeKey": self.dedupe_key,
            "lastError": self.last_error,
        }


class JobStore:
    """Jobs in one SQLite database (a file path, or ``":memory:"``).

    One connection guarded by a lock, so any thread of the process may call any method; separate
    processes (or separate ``JobStore`` objects) sharing a file coordinate through SQLite's own
    locking. ``lease_s`` is how long a job may stay ``running`` without a claim or a heartbeat
    before it is presumed abandoned by a dead runner and put back to ``queued``; it must exceed
    the longest run between heartbeats.
    """

    def __init__(
        self,
        path: str = ":memory:",
        *,
        lease_s: float = DEFAULT_LEASE_S,
        busy_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        self.path = path
        self.lease_s = lease_s
        self.clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves instead of letting the module
        # open deferred transactions, which would take the write lock too late to be atomic.
        self._conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            if path != ":memory:" and not path.startswith("file::memory:"):
                # WAL lets readers (stats, get) run while another process holds the write lock.
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
        with self.transaction() as conn:
            self._create_schema(conn, lease_s)

    @staticmethod
    def _create_schema(conn: sqlite3.Connection, lease_s: float) -> None:
        # executescript() would COMMIT our open transaction first; run statements one by one so
        # two processes creating the schema at once are serialised by the IMMEDIATE lock.
        old = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
                           ).fetchone()
        # A file written before cancellation, organizations and histories: the table is rebuilt
        # (its CHECK constraint changed), rows and ids kept, the new times derived.
        upgrade = old is not None and "cancel_requested" not in old[0]
        for index in _OLD_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        if upgrade:
            conn.execute("ALTER TABLE jobs RENAME TO jobs_before")
        elif old is not None and "priority" not in old[0]:
            # A file from before priorities (issue 24): the column, every job at 0.
            conn.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if upgrade:
            renamed = _OLD_COLUMNS.replace(
                " status,", " CASE status WHEN 'processing' THEN 'running' ELSE status END,")
            conn.execute(f"INSERT INTO jobs ({_OLD_COLUMNS}) SELECT {renamed} FROM jobs_before")
            conn.execute("DROP TABLE jobs_before")
            conn.execute("UPDATE jobs SET run_at = created_at, heartbeat_at = CASE status"
                         " WHEN 'running' THEN updated_at END, lease_expires_at = CASE status"
                         " WHEN 'running' THEN updated_at + ? END", (lease_s,))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The write lock, taken up front (BEGIN IMMEDIATE), committed at the end."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                # Some errors (e.g. SQLITE_FULL) already rolled back; a second ROLLBACK would
                # raise and hide the real error.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (one statement each, or a deferred snapshot)."""
        with self._lock:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writes ---------------------------------------------------------------------------------

    def enqueue(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
        dedupe_key: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> tuple[Job, bool]:
        """Add one job; returns ``(job, created)``. With a ``dedupe_key`` already used in
        ``queue``, nothing is added and the existing job is returned with ``created=False``."""
        spec = JobSpec(type, dict(payload or {}), queue, dedupe_key, max_attempts)
        return self.enqueue_many([spec])[0]

    def enqueue_many(self, specs: Sequence[JobSpec], *, by: str = "sql"
                     ) -> list[tuple[Job, bool]]:
        """Add several jobs in one transaction (all or none), deduplicating as ``enqueue``;
        ``by`` is who, for the history (``sql``, ``enqueue``, ``operator``)."""
        for spec in specs:
            _check_spec(spec)
        results: list[tuple[Job, bool]] = []
        now = self.clock()
        with self.transaction() as conn:
            for spec in specs:
                if spec.dedupe_key is not None:
                    row = conn.execute(
                        f"SELECT {_COLUMNS} FROM jobs WHERE organization_id = ? AND queue = ?"
                        " AND dedupe_key = ?",
                        (spec.organization, spec.queue, spec.dedupe_key),
                    ).fetchone()
                    if row is not None:
                        results.append((Job.from_row(row), False))
                        continue
                rows = conn.execute(
                    "INSERT INTO jobs (organization_id, queue, type, payload, max_attempts,"
                    " created_at, updated_at, run_at, dedupe_key, priority)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    f" RETURNING {_COLUMNS}",
                    (spec.organization, spec.queue, spec.type, dump(dict(spec.payload)),
                     spec.max_attempts, now, now, now if spec.run_at is None else spec.run_at,
                     spec.dedupe_key, spec.priority),
                ).fetchall()
                job = Job.from_row(rows[0])
                history.append(conn, job.id, "enqueued", now, data={"by": by})
                results.append((job, True))
        return results

    def claim(self, queue: str, worker_id: str | None = None, *, org: str = OWN) -> Job | None:
        """Atomically take the due job of ``queue`` with the highest priority, then the oldest
        (expired leases are recovered first); returns it as ``running`` with ``attempts``
        already counting this run."""
        return self.claim_counted(queue, worker_id, org=org, cap=0)[0]

    def claim_counted(self, queue: str, worker_id: str | None = None, *, org: str = OWN,
                      cap: int = BACKLOG_CAP) -> tuple[Job | None, int]:
        """``claim``, and how many jobs of the queue are still due after it, counted in the
        same transaction up to ``cap`` (a value of ``cap`` means at least that many): the
        contract's optional ``backlog``, cheap at a million due jobs (the queue's entries of
        jobs_due_by_priority, read no further than the cap; jobs scheduled for later are
        stepped over, so many of them cost more)."""
        now = self.clock()
        with self.transaction() as conn:
            job = self._claim(conn, queue, worker_id, org, now)
            due = 0
            if job is not None and cap > 0:
                due = conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE organization_id = ?"
                    " AND queue = ? AND status = 'queued' AND run_at <= ? LIMIT ?)",
                    (org, queue, now, cap)).fetchone()[0]
        return job, due

    def _claim(self, conn: sqlite3.Connection, queue: str, worker_id: str | None, org: str,
               now: float) -> Job | None:
        self._requeue_expired(conn, now)
        # fetchall(): a RETURNING statement must be stepped to the end before COMMIT.
        rows = conn.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
            " started_at = ?, updated_at = ?, heartbeat_at = ?, lease_expires_at = ?,"
            " finished_at = NULL, worker_id = ?"
            " WHERE id = (SELECT id FROM jobs WHERE organization_id = ? AND queue = ?"
            "             AND status = 'queued' AND run_at <= ?"
            "             ORDER BY priority DESC, run_at, id LIMIT 1)"
            " AND status = 'queued'"
            f" RETURNING {_COLUMNS}",
            (now, now, now, now + self.lease_s, worker_id, org, queue, now),
        ).fetchall()
        if not rows:
            return None
        job = Job.from_row(rows[0])
        history.append(conn, job.id, "claimed", now, attempt=job.attempts, worker=worker_id)
        return job

    def complete(self, job: Job, result: Any = None) -> FinishStatus:
        """The run that claimed ``job`` succeeded: ``done`` (``cancelled`` when an operator
        asked meanwhile); "lost" when it was no longer ours."""
        return self._finish(job, error=None, result=result)

    def fail(self, job: Job, error: str | None = None) -> FinishStatus:
        """The run that claimed ``job`` failed: back to ``queued`` ("retry") while attempts <
        max_attempts, else ``failed``; ``cancelled`` when an operator asked meanwhile; "lost"
        when it was no longer ours."""
        return self._finish(job, error=error or "failed")

    def cancelled_while_running(self, job: Job) -> FinishStatus:
        """The run stopped because an operator cancelled it: ``cancelled``, never retried."""
        return self._finish(job, error=None, stopped=True)

    def _finish(self, job: Job, *, error: str | None, result: Any = None,
                stopped: bool = False) -> FinishStatus:
        """The claim's attempt number acts as a fencing token: if the job was requeued by a
        lease expiry in the meantime, nothing is written and "lost" is returned."""
        now = self.clock()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT status, attempts, max_attempts, cancel_requested FROM jobs WHERE id = ?",
                (job.id,),
            ).fetchone()
            if row is None or row[0] != "running" or row[1] != job.attempts:
                return "lost"
            if stopped or row[3]:
                _end_cancelled(conn, job.id, now, "cancelled while running: an operator asked"
                               + (f" (the run ended: {error})" if error else ""))
                return "cancelled"
            if error is None:
                conn.execute(
                    "UPDATE jobs SET status = 'done', finished_at = ?, updated_at = ?,"
                    " lease_expires_at = NULL, last_error = NULL, result = ? WHERE id = ?",
                    (now, now, None if result is None else dump(result), job.id),
                )
                history.append(conn, job.id, "completed", now, attempt=job.attempts,
                               worker=job.worker_id)
                return "done"
            return _record_failure(conn, job, row[1] < row[2], error, now)

    def requeue(self, job: Job, reason: str) -> bool:
        """Give a claimed job back to ``queued`` without counting the attempt (the run was
        interrupted by a shutdown, not failed). Returns False when the job was no longer ours."""
        now = self.clock()
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, started_at = NULL,"
                " updated_at = ?, last_error = ?, lease_expires_at = NULL"
                " WHERE id = ? AND status = 'running' AND attempts = ?",
                (now, reason, job.id, job.attempts),
            )
            if cur.rowcount == 1:
                history.append(conn, job.id, "requeued", now, attempt=job.attempts,
                               worker=job.worker_id, message=reason)
            return cur.rowcount == 1

    def heartbeat(self, job: Job, progress: Any = None) -> bool:
        """The run holding ``job`` is alive: its lease starts again from now (with
        ``progress``, a checkpoint, saved and recorded). False when the job is no longer ours
        (finished, or requeued after its lease ran out)."""
        now = self.clock()
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET updated_at = ?, heartbeat_at = ?, lease_expires_at = ?,"
                " progress = COALESCE(?, progress)"
                " WHERE id = ? AND status = 'running' AND attempts = ?",
                (now, now, now + self.lease_s, None if progress is None else dump(progress),
                 job.id, job.attempts),
            )
            if cur.rowcount == 1 and progress is not None:
                history.append(conn, job.id, "progress", now, attempt=job.attempts,
                               data={"progress": progress})
            return cur.rowcount == 1

    def cancel_requested(self, job: Job) -> bool:
        """Whether an operator asked the run holding ``job`` to stop (a read, no write)."""
        with self.reading() as conn:
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?",
                               (job.id,)).fetchone()
        return bool(row and row[0])

    def requeue_expired(self, lease_s: float | None = None) -> int:
        """Put back to ``queued`` every ``running`` job whose lease ran out (with ``lease_s``:
        without a claim or heartbeat for longer than that); returns how many. The attempt stays
        counted: the run may have been what killed the runner. A job an operator asked to
        cancel ends ``cancelled`` instead."""
        with self.transaction() as conn:
            return self._requeue_expired(conn, self.clock(), lease_s)

    @staticmethod
    def _requeue_expired(conn: sqlite3.Connection, now: float,
                         lease_s: float | None = None) -> int:
        if lease_s is None:
            where, bound = "lease_expires_at < ?", now
        else:
            where, bound = "heartbeat_at < ?", now - lease_s
        rows = conn.execute(
            f"SELECT id, attempts, worker_id, cancel_requested FROM jobs"
            f" WHERE status = 'running' AND {where}", (bound,)).fetchall()
        for job_id, attempt, worker, cancel in rows:
            history.append(conn, job_id, "lease_expired", now, attempt=attempt, worker=worker)
            if cancel:
                _end_cancelled(conn, job_id, now, "its lease ran out while it was being cancelled")
                continue
            conn.execute(
                "UPDATE jobs SET status = 'queued', updated_at = ?, started_at = NULL,"
                " lease_expires_at = NULL,"
                " last_error = 'lease expired: the runner holding it is presumed dead'"
                " WHERE id = ?", (now, job_id))
        return len(rows)

    def purge(self, older_than_s: float, max_rows: int = 10_000) -> int:
        """Delete up to ``max_rows`` finished jobs (``done``, ``failed``, ``cancelled``) of
        every organization finished more than ``older_than_s`` ago, oldest first, with their
        histories; returns how many. The global clean-up; an operator's is steering.purge."""
        with self.transaction() as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM jobs WHERE status IN ('done', 'failed', 'cancelled')"
                " AND finished_at < ? ORDER BY finished_at LIMIT ?",
                (self.clock() - older_than_s, max(max_rows, 0)))]
            return delete_jobs(conn, ids)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, job_id: int, *, org: str | None = None) -> Job | None:
        """The job, or None; with ``org``, only that organization's."""
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE id = ?"
        params: tuple[Any, ...] = (job_id,)
        if org is not None:
            sql += " AND organization_id = ?"
            params += (org,)
        with self.reading() as conn:
            row = conn.execute(sql, params).fetchone()
        return Job.from_row(row) if row is not None else None

    def stats(self, queue: str | None = None) -> dict[str, Any]:
        """Counts by status, overall and per queue, every organization: ``{"queued": n, ...,
        "total": n, "byQueue": {queue: {"queued": n, ..., "total": n}}}`` (only ``queue`` when
        given). The operator's summary, per organization, is steering.stats."""
        sql = "SELECT queue, status, COUNT(*) FROM jobs"
        params: tuple[str, ...] = ()
        if queue is not None:
            sql += " WHERE queue = ?"
            params = (queue,)
        with self.reading() as conn:
            rows = conn.execute(sql + " GROUP BY queue, status", params).fetchall()
        totals: dict[str, Any] = {s: 0 for s in STATUSES} | {"total": 0}
        by_queue: dict[str, dict[str, int]] = {}
        if queue is not None:
            by_queue[queue] = {s: 0 for s in STATUSES} | {"total": 0}
        for q, status, count in rows:
            per = by_queue.setdefault(q, {s: 0 for s in STATUSES} | {"total": 0})
            per[status] += count
            per["total"] += count
            totals[status] += count
            totals["total"] += count
        totals["byQueue"] = by_queue
        return totals


def select_jobs(conn: sqlite3.Connection, where: str, params: Sequence[Any],
                tail: str = "") -> list[Job]:
    """Jobs matching a WHERE clause (steering.py's reads)."""
    return [Job.from_row(r) for r in conn.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE {where} {tail}", tuple(params))]


def delete_jobs(conn: sqlite3.Connection, ids: Sequence[int]) -> int:
    """Delete jobs and their histories; how many jobs went."""
    deleted = 0
    for start in range(0, len(ids), 500):  # SQLite's bound on host parameters
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM job_events WHERE job_id IN ({marks})", chunk)
        deleted += conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk).rowcount
    return deleted


def end_cancelled(conn: sqlite3.Connection, job_id: int, now: float, why: str) -> None:
    """The job ends ``cancelled`` (steering.py cancels queued jobs with it)."""
    _end_cancelled(conn, job_id, now, why)


def _end_cancelled(conn: sqlite3.Connection, job_id: int, now: float, why: str) -> None:
    conn.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?,"
        " lease_expires_at = NULL WHERE id = ?", (now, now, job_id))
    history.append(conn, job_id, "cancelled", now, message=why)


def _record_failure(conn: sqlite3.Connection, job: Job, again: bool, error: str,
                    now: float) -> FinishStatus:
    if again:
        # Due again at once, in its place: the reference runner has no backoff of its own.
        conn.execute(
            "UPDATE jobs SET status = 'queued', started_at = NULL, updated_at = ?,"
            " lease_expires_at = NULL, last_error = ? WHERE id = ?",
            (now, error, job.id),
        )
        run_at = conn.execute("SELECT run_at FROM jobs WHERE id = ?", (job.id,)).fetchone()[0]
        history.append(conn, job.id, "failed", now, attempt=job.attempts, worker=job.worker_id,
                       message=error, data={"retryAt": history.iso(max(run_at, now))})
        return "retry"
    conn.execute(
        "UPDATE jobs SET status = 'failed', finished_at = ?, updated_at = ?,"
        " lease_expires_at = NULL, last_error = ? WHERE id = ?",
        (now, now, error, job.id),
    )
    history.append(conn, job.id, "failed", now, attempt=job.attempts, worker=job.worker_id,
                   message=error, data={"final": True})
    return "failed"


def _check_spec(spec: JobSpec) -> None:
    # The HTTP layer gives callers nicer messages; this guards direct library use.
    if not spec.type:
        raise ValueError("job type must be a non-empty string")
    if not spec.queue:
        raise ValueError("queue must be a non-empty string")
    if spec.max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {spec.max_attempts}")
