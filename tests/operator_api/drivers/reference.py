"""The reference runner's driver: ``queue-pump runner``'s app, served on loopback from a thread
of the test process (real HTTP, a real SQLite file), one per test; the owner's writes go to the
file through a connection of their own, as another process's would."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from queue_pump.reference_runner import start_runner
from tests.operator_api.target import Target

AGENT_TOKEN = "agent-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-fedcba9876543210"
ORG, OTHER_ORG = "org-a", "org-b"

# Every time a job and its events carry, but the lease's end.
_JOB_TIMES = ("created_at", "run_at", "started_at", "heartbeat_at", "finished_at", "updated_at")


class _Served:
    """The runner's event loop in a thread of its own, so a test may block on HTTP calls."""

    def __init__(self, db: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = asyncio.run_coroutine_threadsafe(start_runner(
            db=db, token=AGENT_TOKEN, organization_id=ORG, admin_token=ADMIN_TOKEN,
            allowed_organizations=(ORG, OTHER_ORG), drain_timeout_s=0.0), self.loop
        ).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def _owner(db: str) -> sqlite3.Connection:
    return sqlite3.connect(db, timeout=30, isolation_level=None)


def _backdate(db: str, job_id: int, seconds: float) -> None:
    with _owner(db) as conn:
        moved = ", ".join(f"{c} = {c} - ?" for c in _JOB_TIMES)
        conn.execute(f"UPDATE jobs SET {moved} WHERE id = ?", (*[seconds] * 6, job_id))
        conn.execute("UPDATE job_events SET at = at - ? WHERE job_id = ?", (seconds, job_id))


def _make_succeed(db: str, job_id: int) -> None:
    with _owner(db) as conn:
        conn.execute("UPDATE jobs SET type = 'echo' WHERE id = ?", (job_id,))


@pytest.fixture
def reference_target(tmp_path: Path) -> Iterator[Target]:
    db = str(tmp_path / "jobs.sqlite3")
    served = _Served(db)
    try:
        yield Target(
            name="reference", supabase_url=served.runner.url, admin_token=ADMIN_TOKEN,
            agent_token=AGENT_TOKEN, organization=ORG, other_organization=OTHER_ORG,
            backdate=lambda job_id, s: _backdate(db, job_id, s),
            make_succeed=lambda job_id: _make_succeed(db, job_id))
    finally:
        served.close()
