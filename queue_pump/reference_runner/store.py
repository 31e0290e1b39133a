"""SQLite job store of the reference runner, in the SQL kit's words (supabase/migrations): jobs
are ``queued``, ``running``, ``done`` or ``failed``; a runner may ``claim`` one, ``heartbeat`` to
keep its lease, then ``complete`` or ``fail`` it, or ``requeue`` it (give it back uncounted);
``purge`` deletes finished jobs past an age.

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

JobStatus = Literal["queued", "running", "done", "failed"]
# "lost": the job stopped being ours while it ran (its lease ran out and it was requeued, maybe
# claimed again), so this run's outcome was not recorded.
FinishStatus = Literal["done", "retry", "failed", "lost"]

STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed")
DEFAULT_QUEUE = "agent"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_S = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    payload      TEXT    NOT NULL DEFAULT '{}',
    status       TEXT    NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    worker_id    TEXT,
    dedupe_key   TEXT,
    last_error   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_queue_dedupe_key
    ON jobs (queue, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (queue, status, id);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (status, updated_at);
"""
# A file written before the statuses were the SQL kit's ("processing" for "running"): its CHECK
# constraint is rebuilt with the table, rows and ids kept.
_OLD_STATUS = "'processing'"
_INDEXES = ("jobs_queue_dedupe_key", "jobs_claim", "jobs_lease")

_COLUMNS = (
    "id, queue, type, payload, status, attempts, max_attempts, created_at, updated_at,"
    " started_at, finished_at, worker_id, dedupe_key, last_error"
)


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue, already validated for shape (see ``validation.parse_jobs``)."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    dedupe_key: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


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
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "type": self.type,
            "payload": self.payload,
            "status": self.status,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
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
        self._clock = clock
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
        with self._tx() as conn:
            self._create_schema(conn)

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        # executescript() would COMMIT our open transaction first; run statements one by one so
        # two processes creating the schema at once are serialised by the IMMEDIATE lock.
        old = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
                           ).fetchone()
        migrate = old is not None and _OLD_STATUS in old[0]
        if migrate:
            for index in _INDEXES:
                conn.execute(f"DROP INDEX IF EXISTS {index}")
            conn.execute("ALTER TABLE jobs RENAME TO jobs_before_running")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if migrate:
            renamed = _COLUMNS.replace(
                " status,", " CASE status WHEN 'processing' THEN 'running' ELSE status END,")
            conn.execute(f"INSERT INTO jobs ({_COLUMNS}) SELECT {renamed} FROM jobs_before_running")
            conn.execute("DROP TABLE jobs_before_running")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
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

    def enqueue_many(self, specs: Sequence[JobSpec]) -> list[tuple[Job, bool]]:
        """Add several jobs in one transaction (all or none), deduplicating as ``enqueue``."""
        for spec in specs:
            _check_spec(spec)
        results: list[tuple[Job, bool]] = []
        now = self._clock()
        with self._tx() as conn:
            for spec in specs:
                if spec.dedupe_key is not None:
                    row = conn.execute(
                        f"SELECT {_COLUMNS} FROM jobs WHERE queue = ? AND dedupe_key = ?",
                        (spec.queue, spec.dedupe_key),
                    ).fetchone()
                    if row is not None:
                        results.append((Job.from_row(row), False))
                        continue
                rows = conn.execute(
                    "INSERT INTO jobs (queue, type, payload, max_attempts, created_at, updated_at,"
                    " dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    f" RETURNING {_COLUMNS}",
                    (
                        spec.queue,
                        spec.type,
                        json.dumps(dict(spec.payload), separators=(",", ":")),
                        spec.max_attempts,
                        now,
                        now,
                        spec.dedupe_key,
                    ),
                ).fetchall()
                results.append((Job.from_row(rows[0]), True))
        return results

    def claim(self, queue: str, worker_id: str | None = None) -> Job | None:
        """Atomically take the oldest queued job of ``queue`` (expired leases are recovered
        first); returns it as ``running`` with ``attempts`` already counting this run."""
        now = self._clock()
        with self._tx() as conn:
            self._requeue_expired(conn, self.lease_s, now)
            # fetchall(): a RETURNING statement must be stepped to the end before COMMIT.
            rows = conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
                " started_at = ?, updated_at = ?, finished_at = NULL, worker_id = ?"
                " WHERE id = (SELECT id FROM jobs WHERE queue = ? AND status = 'queued'"
                "             ORDER BY id LIMIT 1)"
                " AND status = 'queued'"
                f" RETURNING {_COLUMNS}",
                (now, now, worker_id, queue),
            ).fetchall()
        return Job.from_row(rows[0]) if rows else None

    def complete(self, job: Job) -> FinishStatus:
        """The run that claimed ``job`` succeeded: ``done``; "lost" when it was no longer ours."""
        return self._finish(job, success=True, error=None)

    def fail(self, job: Job, error: str | None = None) -> FinishStatus:
        """The run that claimed ``job`` failed: back to ``queued`` ("retry") while attempts <
        max_attempts, else ``failed``; "lost" when it was no longer ours."""
        return self._finish(job, success=False, error=error)

    def _finish(self, job: Job, *, success: bool, error: str | None) -> FinishStatus:
        """The claim's attempt number acts as a fencing token: if the job was requeued by a
        lease expiry in the meantime, nothing is written and "lost" is returned."""
        now = self._clock()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT status, attempts, max_attempts FROM jobs WHERE id = ?", (job.id,)
            ).fetchone()
            if row is None or row[0] != "running" or row[1] != job.attempts:
                return "lost"
            if success:
                conn.execute(
                    "UPDATE jobs SET status = 'done', finished_at = ?, updated_at = ?,"
                    " last_error = NULL WHERE id = ?",
                    (now, now, job.id),
                )
                return "done"
            if row[1] < row[2]:
                conn.execute(
                    "UPDATE jobs SET status = 'queued', started_at = NULL, updated_at = ?,"
                    " last_error = ? WHERE id = ?",
                    (now, error, job.id),
                )
                return "retry"
            conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, updated_at = ?,"
                " last_error = ? WHERE id = ?",
                (now, now, error, job.id),
            )
            return "failed"

    def requeue(self, job: Job, reason: str) -> bool:
        """Give a claimed job back to ``queued`` without counting the attempt (the run was
        interrupted by a shutdown, not failed). Returns False when the job was no longer ours."""
        now = self._clock()
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, started_at = NULL,"
                " updated_at = ?, last_error = ?"
                " WHERE id = ? AND status = 'running' AND attempts = ?",
                (now, reason, job.id, job.attempts),
            )
            return cur.rowcount == 1

    def heartbeat(self, job: Job) -> bool:
        """The run holding ``job`` is alive: its lease starts again from now. False when the
        job is no longer ours (finished, or requeued after its lease ran out)."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET updated_at = ? WHERE id = ? AND status = 'running'"
                " AND attempts = ?",
                (self._clock(), job.id, job.attempts),
            )
            return cur.rowcount == 1

    def requeue_expired(self, lease_s: float | None = None) -> int:
        """Put back to ``queued`` every ``running`` job without a claim or heartbeat for longer
        than ``lease_s`` (default: the store's lease); returns how many. The attempt stays
        counted: the run may have been what killed the runner."""
        lease = self.lease_s if lease_s is None else lease_s
        with self._tx() as conn:
            return self._requeue_expired(conn, lease, self._clock())

    @staticmethod
    def _requeue_expired(conn: sqlite3.Connection, lease_s: float, now: float) -> int:
        cur = conn.execute(
            "UPDATE jobs SET status = 'queued', updated_at = ?, started_at = NULL,"
            " last_error = 'lease expired: the runner holding it is presumed dead'"
            " WHERE status = 'running' AND updated_at < ?",
            (now, now - lease_s),
        )
        return cur.rowcount

    def purge(self, older_than_s: float, max_rows: int = 10_000) -> int:
        """Delete up to ``max_rows`` jobs ``done`` or ``failed`` more than ``older_than_s`` ago,
        oldest first; returns how many."""
        with self._tx() as conn:
            cur = conn.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                " WHERE status IN ('done', 'failed') AND finished_at < ?"
                " ORDER BY finished_at LIMIT ?)",
                (self._clock() - older_than_s, max(max_rows, 0)),
            )
            return cur.rowcount

    # -- reads ----------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return Job.from_row(row) if row is not None else None

    def stats(self, queue: str | None = None) -> dict[str, Any]:
        """Counts by status, overall and per queue: ``{"queued": n, ..., "total": n,
        "byQueue": {queue: {"queued": n, ..., "total": n}}}`` (only ``queue`` when given)."""
        sql = "SELECT queue, status, COUNT(*) FROM jobs"
        params: tuple[str, ...] = ()
        if queue is not None:
            sql += " WHERE queue = ?"
            params = (queue,)
        with self._lock:
            rows = self._conn.execute(sql + " GROUP BY queue, status", params).fetchall()
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


def _check_spec(spec: JobSpec) -> None:
    # The HTTP layer gives callers nicer messages; this guards direct library use.
    if not spec.type:
        raise ValueError("job type must be a non-empty string")
    if not spec.queue:
        raise ValueError("queue must be a non-empty string")
    if spec.max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {spec.max_attempts}")
