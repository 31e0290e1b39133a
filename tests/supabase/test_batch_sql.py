"""The batch migration on a real PostgreSQL: claim_batch over claim, and the capped backlog."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from . import kit
from .test_sql import claim, connect, enqueue, expire_lease, job

pytestmark = pytest.mark.kit


def claim_batch(conn: psycopg.Connection[Any], org: str, worker: str | None, n: int,
                lease: int = 60) -> list[dict[str, Any]]:
    return conn.execute(
        "select * from queue_pump.claim_batch(organization_id => %s, queue => 'agent',"
        " worker => %s, lease_seconds => %s, max_jobs => %s)", (org, worker, lease, n)).fetchall()


def backlog(conn: psycopg.Connection[Any], org: str, cap: int = 1000) -> int:
    row = conn.execute("select queue_pump.backlog(%s, 'agent', %s) as n", (org, cap)).fetchone()
    assert row is not None
    return int(row["n"])


def test_claim_batch_takes_up_to_n_in_claim_order_and_stops_when_none_is_due(
        db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        ids = [enqueue(conn, org) for _ in range(7)]
        enqueue(conn, org, run_at="2999-01-01T00:00:00Z")
        first = claim_batch(conn, org, "w1", 5)
        rest = claim_batch(conn, org, "w2", 5)
        assert claim_batch(conn, org, "w3", 5) == []
        assert [r["id"] for r in first] == ids[:5] and [r["id"] for r in rest] == ids[5:]
        assert {(r["status"], r["locked_by"], r["attempts"]) for r in first} == {
            ("running", "w1", 1)}
        # Fencing stays per job: another call's holder cannot complete a batch's job.
        assert conn.execute("select queue_pump.complete(%s, 'w2') as ok",
                            (ids[0],)).fetchone() == {"ok": False}
        assert conn.execute("select queue_pump.complete(%s, 'w1') as ok",
                            (ids[0],)).fetchone() == {"ok": True}


def test_claim_batch_keeps_claims_rules_an_expired_lease_first(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        old = enqueue(conn, org)
        assert claim(conn, org, "lost") is not None
        expire_lease(conn, old)
        fresh = [enqueue(conn, org) for _ in range(2)]
        rows = claim_batch(conn, org, None, 10)
    assert [r["id"] for r in rows] == [old, *fresh]
    assert rows[0]["attempts"] == 2
    # Without a worker the batch gets one holder of its own.
    assert len({r["locked_by"] for r in rows}) == 1 and rows[0]["locked_by"] != "lost"


@pytest.mark.parametrize("bad", [0, -1, 1001, None])
def test_claim_batch_refuses_a_bad_max_jobs_by_name(db_url: str, org: str, bad: Any) -> None:
    with connect(db_url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue,
                                                match="max_jobs must be between 1 and 1000"):
        claim_batch(conn, org, "w", bad)


def test_two_batches_at_once_never_share_a_job(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        for _ in range(300):
            enqueue(conn, org)
    taken: list[list[int]] = [[] for _ in range(4)]

    def worker(i: int) -> None:
        with connect(db_url) as conn:
            while rows := claim_batch(conn, org, f"w{i}", 7):
                taken[i].extend(r["id"] for r in rows)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in taken for i in ids]
    assert len(every) == len(set(every)) == 300


def test_backlog_counts_due_jobs_and_expired_leases_up_to_its_cap(
        db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        assert backlog(conn, org) == 0
        ids = [enqueue(conn, org) for _ in range(5)]
        enqueue(conn, org, run_at="2999-01-01T00:00:00Z")      # not due
        enqueue(conn, org + "-other")                          # another organization
        assert backlog(conn, org) == 5
        claim(conn, org, "w")                                  # running: not due
        assert backlog(conn, org) == 4
        expire_lease(conn, ids[0])                             # due again
        assert backlog(conn, org) == 5
        assert backlog(conn, org, cap=3) == 3                  # "at least 3"
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="cap must be between"):
            backlog(conn, org, cap=0)
        # An expired lease on the last attempt is not due: claim ends it failed.
        conn.execute("update queue_pump.jobs set max_attempts = 1 where id = %s", (ids[0],))
        assert backlog(conn, org) == 4
        assert job(conn, ids[0])["status"] == "running"


def _index_reads(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Index entries read in queue_pump.jobs's indexes so far, and its table scans, as the
    statistics system has them once this backend's pending counts are flushed."""
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select 1")  # the flush happens at the end of a transaction
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select (select sum(i.idx_tup_read) from pg_stat_user_indexes i where i.relid = t.relid)"
        " as idx_read, t.seq_scan, t.idx_tup_fetch from pg_stat_user_tables t"
        " where t.schemaname = 'queue_pump' and t.relname = 'jobs'").fetchone()
    assert row is not None
    return {k: int(v or 0) for k, v in row.items()}


def _backlog_reads(conn: psycopg.Connection[Any], org: str) -> tuple[int, dict[str, int]]:
    """The backlog and what it read of queue_pump.jobs and its indexes."""
    before = _index_reads(conn)
    n = backlog(conn, org)
    after = _index_reads(conn)
    return n, {k: after[k] - before[k] for k in after}


def test_the_backlog_reads_at_most_its_cap_with_1000_or_1000000_jobs(
        pg: kit.PgCluster, org: str) -> None:
    """Cost, counted rather than timed: at most ~cap index entries and no table scan, whatever
    the number of finished jobs or of due jobs beyond the cap."""
    url = pg.create_database(f"kit_backlog_{org[-8:]}", template="kit_template")
    reads = {}
    with connect(url) as conn:
        for total, due in ((1_000, 500), (1_000_000, 5_000)):
            have = conn.execute("select count(*) as n from queue_pump.jobs").fetchone()
            assert have is not None
            conn.execute(
                "insert into queue_pump.jobs (organization_id, queue, job_type, status, attempts,"
                " finished_at) select 'org-' || (n %% 50), 'agent', 'echo', 'done', 1, now()"
                " from generate_series(1, %s) n", (total - due - have["n"],))
            conn.execute("insert into queue_pump.jobs (organization_id, queue, job_type)"
                         " select %s, 'agent', 'echo' from generate_series(1, %s)",
                         (org, due - backlog(conn, org)))
            conn.execute("vacuum (analyze) queue_pump.jobs")
            reads[total] = _backlog_reads(conn, org)
    (n_small, small), (n_big, big) = reads[1_000], reads[1_000_000]
    assert n_small == 500 and n_big == 1000
    # A table of 1,000 rows may be read whole (the planner's right choice); 1,000,000 never is.
    assert small["seq_scan"] <= 1 and small["idx_read"] + small["idx_tup_fetch"] <= 1_100, small
    # The cap's 1,000 entries and a few more (the scan's look past its last and the lease index);
    # a count of every due job would be 5,000, a scan of the history 995,000.
    assert big["seq_scan"] == 0 and big["idx_read"] <= 1_010, big
    assert big["idx_tup_fetch"] <= 1_010, big
