"""A job's history: append-only events, numbered per job, written by the store in the
transaction that changes the job (docs/OPERATOR_API.md §5), and bounded per job.

The bound is kept on the job's row (how many events, how many bytes, how many dropped), so
writing an event never counts the history. Past ``MAX_EVENTS`` or ``MAX_BYTES`` an event is
dropped, except those that end the job, and one ``dropped`` event says how many went so far.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

MAX_EVENTS = 200
MAX_BYTES = 256 * 1024
# Events that end a job are kept past the bound, up to this many more: an operator's retries
# are unbounded, a history is not.
MAX_ENDINGS_PAST = 20
MAX_MESSAGE = 2000
MAX_DATA = 2048
ENDINGS = frozenset({"completed", "cancelled"})


def iso(at: float) -> str:
    """A time as the operator API writes it: ISO 8601, UTC, microseconds."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clip_message(text: str | None) -> str | None:
    if text is None:
        return None
    one_line = " ".join(str(text).split())
    return one_line[:MAX_MESSAGE]


def _clip_data(data: dict[str, Any] | None) -> str | None:
    if data is None:
        return None
    text = json.dumps(data, separators=(",", ":"), default=str)
    if len(text) > MAX_DATA:
        text = json.dumps({"clipped": text[:MAX_DATA - 100]}, separators=(",", ":"))
    return text


def append(conn: sqlite3.Connection, job_id: int, kind: str, at: float, *,
           attempt: int | None = None, worker: str | None = None, message: str | None = None,
           data: dict[str, Any] | None = None) -> None:
    """Write one event of ``job_id``'s history, or count it dropped."""
    row = conn.execute("SELECT events, event_bytes, dropped FROM jobs WHERE id = ?",
                       (job_id,)).fetchone()
    if row is None:
        return
    events, size, dropped = row
    text, blob = clip_message(message), _clip_data(data)
    cost = len(text or "") + len(blob or "") + len(kind) + len(worker or "")
    ending = kind in ENDINGS or (kind == "failed" and bool(data and data.get("final")))
    fits = events < MAX_EVENTS and size + cost <= MAX_BYTES
    if not fits and not (ending and events < MAX_EVENTS + MAX_ENDINGS_PAST):
        _drop(conn, job_id, events, dropped + 1, at)
        return
    conn.execute(
        "INSERT INTO job_events (job_id, seq, at, kind, attempt, worker, message, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (job_id, events + 1, at, kind, attempt, worker, text, blob))
    conn.execute("UPDATE jobs SET events = events + 1, event_bytes = event_bytes + ?"
                 " WHERE id = ?", (cost, job_id))


def _drop(conn: sqlite3.Connection, job_id: int, events: int, dropped: int, at: float) -> None:
    data = json.dumps({"dropped": dropped})
    if dropped == 1:  # the first one dropped: say so, once
        conn.execute(
            "INSERT INTO job_events (job_id, seq, at, kind, data) VALUES (?, ?, ?, 'dropped', ?)",
            (job_id, events + 1, at, data))
        conn.execute("UPDATE jobs SET events = events + 1, dropped = 1 WHERE id = ?", (job_id,))
        return
    conn.execute("UPDATE job_events SET data = ? WHERE job_id = ? AND kind = 'dropped'",
                 (data, job_id))
    conn.execute("UPDATE jobs SET dropped = ? WHERE id = ?", (dropped, job_id))


def read(conn: sqlite3.Connection, job_id: int, after: int = 0,
         limit: int = 500) -> list[dict[str, Any]]:
    """Events of ``job_id`` after ``after``, oldest first, as the operator API shows them."""
    rows = conn.execute(
        "SELECT seq, at, kind, attempt, worker, message, data FROM job_events"
        " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?", (job_id, after, limit))
    return [{"seq": seq, "at": iso(at), "kind": kind, "attempt": attempt, "worker": worker,
             "message": message, "data": json.loads(data) if data else {}}
            for seq, at, kind, attempt, worker, message, data in rows]
