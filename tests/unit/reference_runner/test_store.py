"""JobStore on its own, and the property everything rests on: concurrent claimers (threads with
their own connections, separate processes, two runner apps on one file) never share a job."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from queue_pump.reference_runner import RUNNER_PATH, JobSpec, JobStore, start_runner
from tests.support.net import tls

TOKEN = "runner-SECRET-91c2"
ORG = "org-test"
AUTH = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_claim_takes_the_oldest_of_its_queue_only() -> None:
    store = JobStore()
    a1, _ = store.enqueue("a1", queue="a")
    store.enqueue("b1", queue="b")
    a2, _ = store.enqueue("a2", queue="a")
    first = store.claim("a", "w")
    second = store.claim("a", "w")
    assert first is not None and second is not None
    assert (first.id, second.id) == (a1.id, a2.id)
    assert (first.status, first.attempts, first.worker_id) == ("running", 1, "w")
    assert store.claim("a", "w") is None
    assert store.claim("missing") is None
    store.close()


def test_payload_round_trips_and_defaults() -> None:
    store = JobStore()
    job, created = store.enqueue("t", {"nested": {"list": [1, 2.5, None]}, "s": "é"})
    assert created
    assert job.payload == {"nested": {"list": [1, 2.5, None]}, "s": "é"}
    assert (job.queue, job.max_attempts, job.status, job.attempts) == ("agent", 3, "queued", 0)
    got = store.get(job.id)
    assert got == job
    assert store.get(job.id + 100) is None
    store.close()


def test_enqueue_rejects_nonsense_from_library_callers() -> None:
    store = JobStore()
    with pytest.raises(ValueError, match="type"):
        store.enqueue("")
    with pytest.raises(ValueError, match="max_attempts"):
        store.enqueue("t", max_attempts=0)
    with pytest.raises(ValueError, match="lease_s"):
        JobStore(lease_s=0)
    store.close()


def test_enqueue_many_is_all_or_nothing() -> None:
    store = JobStore()
    with pytest.raises(ValueError):
        store.enqueue_many([JobSpec("ok"), JobSpec("")])
    assert store.stats()["total"] == 0
    store.close()


def test_finish_outcomes_and_attempt_accounting() -> None:
    store = JobStore()
    store.enqueue("t", max_attempts=2)
    job = store.claim("agent")
    assert job is not None
    assert store.fail(job, "boom") == "retry"
    after_retry = store.get(job.id)
    assert after_retry is not None
    assert (after_retry.status, after_retry.last_error) == ("queued", "boom")
    job = store.claim("agent")
    assert job is not None and job.attempts == 2
    assert store.fail(job, "boom again") == "failed"
    failed = store.get(job.id)
    assert failed is not None and failed.status == "failed" and failed.finished_at is not None
    assert store.complete(job) == "lost"  # already finished: not ours any more
    store.close()


def test_requeue_gives_the_job_back_without_spending_an_attempt() -> None:
    store = JobStore()
    store.enqueue("t")
    job = store.claim("agent")
    assert job is not None
    assert store.requeue(job, "shutting down") is True
    back = store.get(job.id)
    assert back is not None and (back.status, back.attempts) == ("queued", 0)
    assert store.requeue(job, "again") is False
    store.close()


def test_requeue_expired_respects_the_lease() -> None:
    clock = Clock()
    store = JobStore(lease_s=300, clock=clock)
    store.enqueue("t")
    job = store.claim("agent", "w")
    assert job is not None
    clock.now += 299
    assert store.requeue_expired() == 0
    clock.now += 2
    assert store.requeue_expired(lease_s=600) == 0
    assert store.requeue_expired() == 1
    back = store.get(job.id)
    assert back is not None
    assert back.status == "queued" and "lease expired" in (back.last_error or "")
    assert back.attempts == 1  # the run may be what killed the runner: it counts
    store.close()


def test_late_finish_after_a_lease_expiry_is_lost_not_recorded() -> None:
    clock = Clock()
    store = JobStore(lease_s=10, clock=clock)
    store.enqueue("t")
    slow = store.claim("agent", "slow-runner")
    assert slow is not None
    clock.now += 11
    fresh = store.claim("agent", "other-runner")  # requeues the stale one, then claims it
    assert fresh is not None and fresh.id == slow.id and fresh.attempts == 2
    assert store.fail(slow, "late") == "lost"
    assert store.complete(fresh) == "done"
    final = store.get(slow.id)
    assert final is not None and (final.status, final.worker_id) == ("done", "other-runner")
    store.close()


def test_stats_counts_by_status_and_queue() -> None:
    store = JobStore()
    store.enqueue_many([JobSpec("t", queue="a"), JobSpec("t", queue="a"), JobSpec("t", queue="b")])
    job = store.claim("a")
    assert job is not None
    s = store.stats()
    assert (s["queued"], s["running"], s["total"]) == (2, 1, 3)
    assert s["byQueue"]["a"] == {"queued": 1, "running": 1, "done": 0, "failed": 0,
                                 "cancelled": 0, "total": 2}
    assert store.stats("b")["byQueue"] == {
        "b": {"queued": 1, "running": 0, "done": 0, "failed": 0, "cancelled": 0, "total": 1}}
    store.close()


def test_file_store_uses_wal_and_enforces_unique_dedupe(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    store = JobStore(str(db))
    store.enqueue("t", dedupe_key="k")
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO jobs (queue, type, created_at, updated_at, dedupe_key)"
                     " VALUES ('agent', 't', 0, 0, 'k')")
    conn.execute("INSERT INTO jobs (queue, type, created_at, updated_at, dedupe_key)"
                 " VALUES ('other', 't', 0, 0, 'k')")  # another queue may reuse the key
    conn.close()


# -- atomicity --------------------------------------------------------------------------------


def _claim_all(db: str, barrier: threading.Barrier, out: list[int]) -> None:
    store = JobStore(db)  # its own connection, as a separate process would have
    barrier.wait()
    while (job := store.claim("agent", threading.current_thread().name)) is not None:
        out.append(job.id)
        store.complete(job)
        time.sleep(0.0002)  # SQLite's lock is not fair: without a pause one thread takes all
    store.close()


def test_threads_with_their_own_connections_never_share_a_job(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.sqlite3")
    seed = JobStore(db)
    ids = [job.id for job, _ in seed.enqueue_many([JobSpec("t")] * 400)]
    barrier = threading.Barrier(4)
    claimed: list[list[int]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=_claim_all, args=(db, barrier, claimed[i]), name=f"w{i}")
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    every = [i for part in claimed for i in part]
    assert sorted(every) == ids  # each job exactly once
    assert sum(1 for part in claimed if part) >= 2  # they really did compete
    s = seed.stats()
    assert (s["done"], s["running"], s["queued"]) == (400, 0, 0)
    assert {job.attempts for job in map(seed.get, ids) if job is not None} == {1}
    seed.close()


_CLAIMER = textwrap.dedent("""
    import pathlib, sys, time
    from queue_pump.reference_runner import JobStore
    db, ready, name, count = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    store = JobStore(db)
    (ready / name).touch()
    deadline = time.monotonic() + 20
    # Start together (once every process has imported and connected), so the claims overlap.
    while len(list(ready.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.001)
    while (job := store.claim("agent", name)) is not None:
        print(job.id, flush=True)
        store.complete(job)
        time.sleep(0.0005)  # SQLite's lock is not fair: without a pause one process takes all
""")


def test_separate_processes_sharing_a_file_never_share_a_job(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.sqlite3")
    ready = tmp_path / "ready"
    ready.mkdir()
    seed = JobStore(db)
    ids = [job.id for job, _ in seed.enqueue_many([JobSpec("t")] * 300)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, db, str(ready), f"p{i}", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=30) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    per_proc = [[int(line) for line in out.split()] for out, _ in outputs]
    every = [i for part in per_proc for i in part]
    assert sorted(every) == ids
    assert sum(1 for part in per_proc if part) >= 2
    assert seed.stats()["done"] == 300
    seed.close()


def test_two_runner_apps_on_one_file_never_run_a_job_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.sqlite3")
    seed = JobStore(db)
    ids = [job.id for job, _ in seed.enqueue_many([JobSpec("t")] * 120)]
    seed.close()

    async def pump(client: httpx.AsyncClient, name: str, ran: list[int]) -> None:
        while True:
            resp = await client.post(RUNNER_PATH, params={"worker": "1", "queue": "agent"},
                                     headers={"X-Worker-Id": name})
            data = resp.json()
            if not data["processed"]:
                return
            assert data["status"] == "done"
            ran.append(data["jobId"])

    async def body() -> None:
        async with (
            await start_runner(db=db, token=TOKEN, organization_id=ORG,
                               rng=random.Random(1)) as r1,
            await start_runner(db=db, token=TOKEN, organization_id=ORG,
                               rng=random.Random(2)) as r2,
            httpx.AsyncClient(base_url=r1.url, headers=AUTH, verify=tls()) as c1,
            httpx.AsyncClient(base_url=r2.url, headers=AUTH, verify=tls()) as c2,
        ):
            ran: list[int] = []
            await asyncio.gather(*(pump(c, f"pump-{i}", ran)
                                   for i, c in enumerate([c1, c2] * 4)))
            assert sorted(ran) == ids
            assert r1.counters.processed > 0 and r2.counters.processed > 0
            assert r1.counters.processed + r2.counters.processed == len(ids)
            workers = Counter(job.worker_id for job in map(r1.store.get, ids) if job)
            assert len(workers) >= 2 and sum(workers.values()) == len(ids)

    asyncio.run(asyncio.wait_for(body(), timeout=30))


def test_a_heartbeat_keeps_the_lease_and_only_for_the_run_that_holds_it() -> None:
    clock = Clock()
    store = JobStore(lease_s=10, clock=clock)
    store.enqueue("t")
    job = store.claim("agent", "w")
    assert job is not None
    for _ in range(3):  # 24 s in all, never 10 without a heartbeat
        clock.now += 8
        assert store.heartbeat(job) is True
    assert store.requeue_expired() == 0
    clock.now += 11
    assert store.requeue_expired() == 1
    assert store.heartbeat(job) is False  # requeued: no longer this run's
    store.close()


def test_purge_deletes_finished_jobs_past_the_age_oldest_first() -> None:
    clock = Clock()
    store = JobStore(clock=clock)
    for _ in range(3):
        store.enqueue("t")
    done = [store.claim("agent") for _ in range(3)]
    assert all(job is not None for job in done)
    store.complete(done[0])  # type: ignore[arg-type]
    clock.now += 10
    store.fail(done[1], "boom")  # type: ignore[arg-type]  # back to queued: not finished
    store.enqueue("t", queue="once", max_attempts=1)
    last = store.claim("once")
    assert last is not None
    store.fail(last, "boom")  # failed for good
    clock.now += 100
    assert store.purge(older_than_s=105) == 1  # only the one finished 110 s ago
    assert store.get(done[0].id) is None  # type: ignore[union-attr]
    assert store.purge(older_than_s=50, max_rows=0) == 0
    assert store.purge(older_than_s=50) == 1
    s = store.stats()
    assert (s["done"], s["failed"], s["queued"], s["running"]) == (0, 0, 1, 1)
    store.close()


def test_a_file_from_before_the_kits_statuses_is_upgraded_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "old.sqlite3")
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.execute("INSERT INTO jobs (queue, type, status, attempts, created_at, updated_at,"
                " started_at) VALUES ('agent', 't', 'processing', 1, 1, 1, 1)")
    old.execute("INSERT INTO jobs (queue, type, status, created_at, updated_at)"
                " VALUES ('agent', 't', 'queued', 2, 2)")
    old.commit()
    old.close()
    store = JobStore(path)
    s = store.stats()
    assert (s["running"], s["queued"], s["total"]) == (1, 1, 2)
    assert store.requeue_expired() == 1  # its lease ran out long ago
    job = store.claim("agent", "w")
    assert job is not None and job.status == "running"
    store.close()
    assert JobStore(path).stats()["total"] == 2  # a second open finds nothing to upgrade


# The table as the store created it before it spoke the SQL kit's words.
OLD_SCHEMA = """
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    payload      TEXT    NOT NULL DEFAULT '{}',
    status       TEXT    NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'processing', 'done', 'failed')),
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
CREATE UNIQUE INDEX jobs_queue_dedupe_key ON jobs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX jobs_claim ON jobs (queue, status, id);
CREATE INDEX jobs_lease ON jobs (status, started_at);
"""


def test_the_backlog_is_counted_with_the_claim_and_capped() -> None:
    clock = Clock()
    store = JobStore(clock=clock)
    for _ in range(5):
        store.enqueue("t")
    store.enqueue_many([JobSpec("later", run_at=clock.now + 3600)])
    job, due = store.claim_counted("agent", "w")
    assert job is not None and due == 4  # four left; the job due in an hour is not counted
    _, due = store.claim_counted("agent", "w", cap=2)
    assert due == 2  # at least two: the cap, as the kit caps at 1000
    assert store.claim_counted("other", "w") == (None, 0)
    store.close()
