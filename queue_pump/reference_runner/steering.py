"""The operator's side of the store, per organization (docs/OPERATOR_API.md): list with keyset
pages, one job with its history, cancel, retry one and in bulk, hung jobs, purge, the summary.
Each write is one transaction of the store's; bulk ones act on at most ``MAX_BULK`` jobs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import history
from .store import (
    FINISHED,
    Job,
    JobStore,
    delete_jobs,
    end_cancelled,
    select_jobs,
)

MAX_PAGE = 500
MAX_BULK = 10_000
MAX_HUNG = 500
RECENT_FAILURES = 10
MAX_FAILURE_TEXT = 500
MINUTES = 60  # whole minutes before the current one in perMinute


class Conflict(Exception):
    """The action does not apply to the job's status."""

    def __init__(self, job: Job, message: str) -> None:
        super().__init__(message)
        self.job = job


@dataclass(frozen=True)
class ListQuery:
    statuses: tuple[str, ...] = ()
    type: str | None = None
    queue: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    cursor: tuple[float, int] | None = None


def job_json(job: Job, *, full: bool = False) -> dict[str, Any]:
    """A job as the operator API shows it (§3); ``full`` adds payload, progress and result."""
    def at(value: float | None) -> str | None:
        return None if value is None else history.iso(value)

    shown: dict[str, Any] = {
        "id": job.id, "queue": job.queue, "type": job.type, "status": job.status,
        "attempts": job.attempts, "maxAttempts": job.max_attempts, "priority": job.priority,
        "runAt": at(job.run_at),
        "createdAt": at(job.created_at), "updatedAt": at(job.updated_at),
        "startedAt": at(job.started_at), "finishedAt": at(job.finished_at),
        "heartbeatAt": at(job.heartbeat_at), "leaseExpiresAt": at(job.lease_expires_at),
        "lockedBy": job.worker_id if job.status == "running" else None,
        "dedupeKey": job.dedupe_key, "lastError": job.last_error,
        "cancelRequested": job.cancel_requested,
    }
    if full:
        shown |= {"payload": job.payload, "progress": job.progress, "result": job.result}
    return shown


def list_jobs(store: JobStore, org: str, query: ListQuery
              ) -> tuple[list[Job], tuple[float, int] | None]:
    """Newest first (created, then id); the cursor of the next page, or None on the last."""
    where, params = ["organization_id = ?"], list[Any]([org])
    if query.statuses:
        where.append(f"status IN ({','.join('?' * len(query.statuses))})")
        params += query.statuses
    for clause, value in (("type = ?", query.type), ("queue = ?", query.queue),
                          ("created_at >= ?", query.since), ("created_at < ?", query.until)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if query.cursor is not None:
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [query.cursor[0], query.cursor[0], query.cursor[1]]
    with store.reading() as conn:
        jobs = select_jobs(conn, " AND ".join(where), params,
                           f"ORDER BY created_at DESC, id DESC LIMIT {query.limit + 1}")
    if len(jobs) <= query.limit:
        return jobs, None
    last = jobs[query.limit - 1]
    return jobs[:query.limit], (last.created_at, last.id)


def events(store: JobStore, org: str, job_id: int, after: int = 0,
           limit: int = MAX_PAGE) -> tuple[Job, list[dict[str, Any]]] | None:
    with store.reading() as conn:
        found = select_jobs(conn, "id = ? AND organization_id = ?", (job_id, org))
        if not found:
            return None
        return found[0], history.read(conn, job_id, after, limit)


def cancel(store: JobStore, org: str, job_id: int, by: str = "operator"
           ) -> tuple[Job, bool] | None:
    """Queued: cancelled now. Running: a request the run sees. Cancelled: no change. Done or
    failed: Conflict. None when the organization has no such job."""
    now = store.clock()
    with store.transaction() as conn:
        found = select_jobs(conn, "id = ? AND organization_id = ?", (job_id, org))
        if not found:
            return None
        job = found[0]
        changed = _cancel_one(conn, job, now, by)
        return select_jobs(conn, "id = ?", (job_id,))[0], changed


def _cancel_one(conn: Any, job: Job, now: float, by: str) -> bool:
    if job.status == "queued":
        end_cancelled(conn, job.id, now, f"cancelled while queued (by {by})")
        return True
    if job.status == "running":
        if job.cancel_requested:
            return False
        conn.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                     (now, job.id))
        history.append(conn, job.id, "cancel_requested", now, data={"by": by})
        return True
    if job.status == "cancelled":
        return False
    raise Conflict(job, f"job {job.id} is {job.status}; only queued or running jobs can be "
                        "cancelled")


def retry(store: JobStore, org: str, job_id: int, by: str = "operator") -> Job | None:
    """A failed or cancelled job back to queued, due now, attempts 0; else Conflict."""
    now = store.clock()
    with store.transaction() as conn:
        found = select_jobs(conn, "id = ? AND organization_id = ?", (job_id, org))
        if not found:
            return None
        job = found[0]
        if job.status not in ("failed", "cancelled"):
            raise Conflict(job, f"job {job.id} is {job.status}; only failed or cancelled jobs "
                                "can be retried")
        _requeue_for_retry(conn, [job.id], now, {"by": by, "bulk": False})
        return select_jobs(conn, "id = ?", (job_id,))[0]


def _requeue_for_retry(conn: Any, ids: list[int], now: float, data: dict[str, Any]) -> None:
    for job_id in ids:
        conn.execute(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?, updated_at = ?,"
            " started_at = NULL, finished_at = NULL, heartbeat_at = NULL,"
            " lease_expires_at = NULL, last_error = NULL, cancel_requested = 0, result = NULL"
            " WHERE id = ?", (now, now, job_id))
        history.append(conn, job_id, "retried", now, data=data)


def _matching(conn: Any, where: list[str], params: list[Any], order: str,
              cap: int = MAX_BULK) -> tuple[list[int], bool]:
    rows = conn.execute(f"SELECT id FROM jobs WHERE {' AND '.join(where)} ORDER BY {order}"
                        f" LIMIT {cap + 1}", params).fetchall()
    ids = [r[0] for r in rows]
    return ids[:cap], len(ids) > cap


def retry_failed(store: JobStore, org: str, *, type: str | None = None,
                 queue: str | None = None, since: float | None = None,
                 until: float | None = None, dry_run: bool = False,
                 by: str = "operator") -> dict[str, Any]:
    """Every failed job matching, by when it failed; at most MAX_BULK a call."""
    where, params = ["organization_id = ?", "status = 'failed'"], list[Any]([org])
    for clause, value in (("type = ?", type), ("queue = ?", queue),
                          ("finished_at >= ?", since), ("finished_at < ?", until)):
        if value is not None:
            where.append(clause)
            params.append(value)
    with store.transaction() as conn:
        ids, more = _matching(conn, where, params, "finished_at, id")
        if not dry_run:
            _requeue_for_retry(conn, ids, store.clock(), {"by": by, "bulk": True})
    return {"matched": len(ids), "retried": 0 if dry_run else len(ids), "dryRun": dry_run,
            "more": more}


def _hung_where(org: str, older_than_s: float, queue: str | None, now: float
                ) -> tuple[list[str], list[Any]]:
    where = ["organization_id = ?", "status = 'running'", "heartbeat_at < ?"]
    params: list[Any] = [org, now - older_than_s]
    if queue is not None:
        where.append("queue = ?")
        params.append(queue)
    return where, params


def hung(store: JobStore, org: str, older_than_s: float, queue: str | None = None
         ) -> list[Job]:
    """Running jobs with no heartbeat for ``older_than_s``, oldest heartbeat first."""
    where, params = _hung_where(org, older_than_s, queue, store.clock())
    with store.reading() as conn:
        return select_jobs(conn, " AND ".join(where), params,
                           f"ORDER BY heartbeat_at, id LIMIT {MAX_HUNG}")


def cancel_hung(store: JobStore, org: str, older_than_s: float, queue: str | None = None,
                dry_run: bool = False, by: str = "operator") -> dict[str, Any]:
    now = store.clock()
    where, params = _hung_where(org, older_than_s, queue, now)
    with store.transaction() as conn:
        ids, _ = _matching(conn, where, params, "heartbeat_at, id")
        cancelled = 0
        if not dry_run:
            for job in select_jobs(conn, f"id IN ({','.join('?' * len(ids))})", ids):
                cancelled += _cancel_one(conn, job, now, by)
    return {"matched": len(ids), "cancelled": cancelled, "dryRun": dry_run}


def purge(store: JobStore, org: str, older_than_s: float, dry_run: bool = False
          ) -> dict[str, Any]:
    """This organization's finished jobs older than ``older_than_s``, with their histories."""
    where = ["organization_id = ?", f"status IN ({','.join('?' * len(FINISHED))})",
             "finished_at < ?"]
    params: list[Any] = [org, *FINISHED, store.clock() - older_than_s]
    with store.transaction() as conn:
        ids, more = _matching(conn, where, params, "finished_at, id")
        deleted = 0 if dry_run else delete_jobs(conn, ids)
    return {"matched": len(ids), "deleted": deleted, "dryRun": dry_run, "more": more}


def _zero() -> dict[str, Any]:
    return {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0, "due": 0,
            "oldestDueAgeSeconds": None}


def stats(store: JobStore, org: str, queue: str | None = None) -> dict[str, Any]:
    """The summary (§9): counts per queue and in all, due jobs and the oldest's age, done and
    failed per minute over the last hour, the newest failures."""
    now = store.clock()
    scope, params = "organization_id = ?", [org]
    if queue is not None:
        scope += " AND queue = ?"
        params.append(queue)
    per_queue: dict[str, dict[str, Any]] = {queue: _zero()} if queue is not None else {}
    first_minute = math.floor(now / 60) * 60 - MINUTES * 60
    with store.reading() as conn:
        for q, status, count in conn.execute(
                f"SELECT queue, status, COUNT(*) FROM jobs WHERE {scope} GROUP BY queue, status",
                params):
            per_queue.setdefault(q, _zero())[status] = count
        due = conn.execute(
            f"SELECT queue, COUNT(*), MIN(run_at) FROM jobs WHERE {scope} AND status = 'queued'"
            " AND run_at <= ? GROUP BY queue", [*params, now]).fetchall()
        minutes = conn.execute(
            f"SELECT status, CAST((finished_at - ?) / 60 AS INTEGER), COUNT(*) FROM jobs"
            f" WHERE {scope} AND status IN ('done', 'failed') AND finished_at >= ?"
            " GROUP BY 1, 2", [first_minute, *params, first_minute]).fetchall()
        failures = conn.execute(
            f"SELECT id, queue, type, finished_at, last_error FROM jobs WHERE {scope}"
            f" AND status = 'failed' ORDER BY finished_at DESC, id DESC LIMIT {RECENT_FAILURES}",
            params).fetchall()
    for q, count, oldest in due:
        per_queue[q]["due"] = count
        per_queue[q]["oldestDueAgeSeconds"] = round(max(now - oldest, 0.0), 3)
    return {
        "queues": [{"queue": q, **per_queue[q]} for q in sorted(per_queue)],
        "total": _total(per_queue.values()),
        "perMinute": _per_minute(first_minute, minutes),
        "recentFailures": [
            {"id": i, "queue": q, "type": t, "finishedAt": history.iso(at),
             "error": (error or "")[:MAX_FAILURE_TEXT]}
            for i, q, t, at, error in failures],
    }


def _total(queues: Any) -> dict[str, Any]:
    total = _zero()
    for per in queues:
        for key in ("queued", "running", "done", "failed", "cancelled", "due"):
            total[key] += per[key]
        age = per["oldestDueAgeSeconds"]
        if age is not None and (total["oldestDueAgeSeconds"] is None
                                or age > total["oldestDueAgeSeconds"]):
            total["oldestDueAgeSeconds"] = age
    return total


def _per_minute(first_minute: float, rows: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    buckets: list[dict[str, Any]] = [
        {"minute": history.iso(first_minute + 60 * i).replace(".000000Z", "Z"),
         "done": 0, "failed": 0} for i in range(MINUTES + 1)]
    for status, index, count in rows:
        if 0 <= index <= MINUTES:
            buckets[index][status] += count
    return buckets
