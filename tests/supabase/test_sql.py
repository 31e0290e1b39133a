"""The migration on a real PostgreSQL: claims, leases, retries, dedupe, security, claim cost."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from . import kit

pytestmark = pytest.mark.kit


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def enqueue(conn: psycopg.Connection[Any], org: str, job_type: str = "echo", **kw: Any) -> int:
    args = {"organization_id": org, "queue": kw.pop("queue", "agent"), "job_type": job_type, **kw}
    names = ", ".join(f"{k} => %({k})s" for k in args)
    row = conn.execute(f"select queue_pump.enqueue({names}) as id", args).fetchone()
    assert row is not None
    return int(row["id"])


def claim(conn: psycopg.Connection[Any], org: str, worker: str, lease: int = 60,
          queue: str = "agent") -> dict[str, Any] | None:
    return conn.execute(
        "select * from queue_pump.claim(organization_id => %s, queue => %s, worker => %s,"
        " lease_seconds => %s)", (org, queue, worker, lease)).fetchone()


def job(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    row = conn.execute("select * from queue_pump.jobs where id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def expire_lease(conn: psycopg.Connection[Any], job_id: int) -> None:
    """Time passing, without waiting: the lease ended a second ago."""
    conn.execute("update queue_pump.jobs set lease_expires_at = now() - interval '1 second'"
                 " where id = %s", (job_id,))


def test_sixteen_claimers_take_each_of_2000_jobs_exactly_once(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo', jsonb_build_object('n', n))"
                     " from generate_series(1, 2000) n", (org,))
    taken: list[list[int]] = [[] for _ in range(16)]
    start = threading.Barrier(16)

    def claimer(i: int) -> None:
        with connect(db_url) as c:
            start.wait()
            while (row := claim(c, org, f"w{i}")) is not None:
                taken[i].append(row["id"])
                assert c.execute("select queue_pump.complete(%s, %s, null) as ok",
                                 (row["id"], f"w{i}")).fetchone() == {"ok": True}

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    ids = [i for per in taken for i in per]
    assert len(ids) == 2000 and len(set(ids)) == 2000
    assert sum(1 for per in taken if per) > 1, "the work was not shared at all"
    with connect(db_url) as conn:
        rows = conn.execute("select status, attempts, count(*) as n from queue_pump.jobs"
                            " group by 1, 2").fetchall()
    assert rows == [{"status": "done", "attempts": 1, "n": 2000}]


def test_claim_takes_the_oldest_due_job_and_leaves_future_ones(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        later = enqueue(conn, org, run_at="2999-01-01T00:00:00Z")
        first = enqueue(conn, org)
        second = enqueue(conn, org)
        other_queue = enqueue(conn, org, queue="other")
        other_org = enqueue(conn, org + "-x")
        got = [claim(conn, org, "w") for _ in range(3)]
        assert [r["id"] if r else None for r in got] == [first, second, None]
        assert got[0] is not None and got[0]["status"] == "running" and got[0]["attempts"] == 1
        assert job(conn, later)["status"] == "queued"
        assert job(conn, other_queue)["status"] == "queued"
        assert job(conn, other_org)["status"] == "queued"


def test_an_expired_lease_hands_the_job_to_the_next_claimer(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        jid = enqueue(conn, org)
        assert claim(conn, org, "dead-worker") is not None
        assert claim(conn, org, "b") is None, "a live lease must not be taken"
        due = "select queue_pump.due_count(%s) as n"
        assert conn.execute(due, (org,)).fetchone() == {"n": 0}
        expire_lease(conn, jid)
        assert conn.execute(due, (org,)).fetchone() == {"n": 1}
        again = claim(conn, org, "b")
        assert again is not None and again["id"] == jid and again["attempts"] == 2
        assert again["locked_by"] == "b"


def test_a_worker_that_lost_its_lease_changes_nothing(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        jid = enqueue(conn, org)
        claim(conn, org, "a")
        expire_lease(conn, jid)
        claim(conn, org, "b")
        before = job(conn, jid)
        q = "select queue_pump.{}(%s, 'a'{}) as r"
        lost = conn.execute(q.format("complete", ", '{}'::jsonb"), (jid,)).fetchone()
        assert lost == {"r": False}
        assert conn.execute(q.format("fail", ", 'late'"), (jid,)).fetchone() == {"r": None}
        assert conn.execute(q.format("requeue", ""), (jid,)).fetchone() == {"r": None}
        assert conn.execute(q.format("heartbeat", ", 60"), (jid,)).fetchone() == {"r": None}
        assert job(conn, jid) == before
        assert conn.execute(q.replace("'a'", "'b'").format("complete", ", '{\"ok\":1}'::jsonb"),
                            (jid,)).fetchone() == {"r": True}
        done = job(conn, jid)
        assert done["status"] == "done" and done["result"] == {"ok": 1}
        assert done["locked_by"] is None and done["finished_at"] is not None


def test_failures_back_off_then_end_failed(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        jid = enqueue(conn, org, "fail", max_attempts=3)
        delays = []
        for attempt in (1, 2, 3):
            row = claim(conn, org, f"w{attempt}")
            assert row is not None and row["attempts"] == attempt
            status = conn.execute("select queue_pump.fail(%s, %s, 'boom') as s",
                                  (jid, f"w{attempt}")).fetchone()
            after = job(conn, jid)
            if attempt < 3:
                assert status == {"s": "retry"} and after["status"] == "queued"
                delay = conn.execute("select extract(epoch from run_at - now())::float as d"
                                     " from queue_pump.jobs where id = %s", (jid,)).fetchone()
                assert delay is not None
                delays.append(delay["d"])
                assert claim(conn, org, "early") is None, "a backed-off job is not due yet"
                conn.execute("update queue_pump.jobs set run_at = now() where id = %s", (jid,))
            else:
                assert status == {"s": "failed"} and after["status"] == "failed"
                assert after["finished_at"] is not None and after["last_error"] == "boom"
        assert 5 < delays[0] < delays[1] <= 3600


def test_an_expired_lease_on_the_last_attempt_ends_failed(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        jid = enqueue(conn, org, max_attempts=1)
        claim(conn, org, "dies")
        expire_lease(conn, jid)
        assert claim(conn, org, "next") is None
        gone = job(conn, jid)
        assert gone["status"] == "failed" and gone["attempts"] == 1
        assert "lease expired" in gone["last_error"]


def test_many_dead_jobs_on_their_last_attempt_never_run_again(db_url: str, org: str) -> None:
    """A mass crash (a deploy with 150 jobs running on their last attempt): none runs a 4th time,
    though one claim fails at most 100 of them."""
    with connect(db_url) as conn:
        conn.execute(
            "insert into queue_pump.jobs (organization_id, queue, job_type, status, attempts,"
            " max_attempts, locked_by, lease_expires_at) select %s, 'agent', 'echo', 'running',"
            " 3, 3, 'dead-' || g, now() - interval '1 hour' + g * interval '1 second'"
            " from generate_series(1, 150) g", (org,))
        assert claim(conn, org, "w1") is None
        assert claim(conn, org, "w2") is None
        rows = conn.execute("select status, max(attempts) as a, count(*) as n"
                            " from queue_pump.jobs group by 1").fetchall()
        stats = conn.execute("select due, queue_pump.due_count(%s) as n"
                             " from queue_pump.stats(%s, 'agent')", (org, org)).fetchone()
    assert rows == [{"status": "failed", "a": 3, "n": 150}]
    assert stats == {"due": 0, "n": 0}


def test_a_claim_without_a_worker_name_gets_a_lease_of_its_own(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        enqueue(conn, org)
        enqueue(conn, org)
        a = conn.execute("select * from queue_pump.claim(%s)", (org,)).fetchone()
        b = conn.execute("select * from queue_pump.claim(%s)", (org,)).fetchone()
        assert a is not None and b is not None and a["locked_by"] != b["locked_by"]
        assert conn.execute("select queue_pump.complete(%s, %s) as ok",
                            (a["id"], b["locked_by"])).fetchone() == {"ok": False}
        assert conn.execute("select queue_pump.complete(%s, %s) as ok",
                            (a["id"], a["locked_by"])).fetchone() == {"ok": True}


def test_a_job_that_only_ever_yields_ends_failed(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        jid = enqueue(conn, org, max_attempts=2)
        outcomes = []
        for n in range(10):
            if claim(conn, org, f"w{n}") is None:
                break
            row = conn.execute("select queue_pump.requeue(%s, %s, %s::jsonb, 0, 3) as s",
                               (jid, f"w{n}", f'{{"n": {n}}}')).fetchone()
            assert row is not None
            outcomes.append(row["s"])
        final = job(conn, jid)
    # 3 free yields, then each yield is an attempt: 2 more and max_attempts is spent.
    assert outcomes == ["yielded"] * 4 + ["failed"]
    assert final["status"] == "failed" and final["yields"] == 5 and final["attempts"] == 2
    assert final["progress"] == {"n": 4} and "yielded more than 3 times" in final["last_error"]


def test_requeue_and_fail_clamp_their_delays(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        a, b = enqueue(conn, org), enqueue(conn, org)
        claim(conn, org, "w")
        claim(conn, org, "w")
        conn.execute("select queue_pump.requeue(%s, 'w', null, 'Infinity'::float8)", (a,))
        conn.execute("select queue_pump.fail(%s, 'w', 'x', -5)", (b,))
        delays = conn.execute("select extract(epoch from run_at - now())::float as d"
                              " from queue_pump.jobs order by created_at").fetchall()
    assert 86000 < delays[0]["d"] <= 86400 and delays[1]["d"] <= 0


def test_heartbeat_extends_the_lease_and_keeps_progress(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        jid = enqueue(conn, org)
        claim(conn, org, "a", lease=5)
        until = conn.execute("select queue_pump.heartbeat(%s, 'a', 3600, '{\"step\": 2}')"
                             " - now() as left", (jid,)).fetchone()
        assert until is not None and until["left"].total_seconds() > 3000
        assert job(conn, jid)["progress"] == {"step": 2}


def test_requeue_saves_progress_and_gives_the_attempt_back(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        jid = enqueue(conn, org, max_attempts=1)
        claim(conn, org, "a")
        assert conn.execute("select queue_pump.requeue(%s, 'a', '{\"page\": 7}') as ok",
                            (jid,)).fetchone() == {"ok": "yielded"}
        again = claim(conn, org, "b")
        assert again is not None and again["id"] == jid
        assert again["progress"] == {"page": 7} and again["attempts"] == 1


def test_dedupe_returns_the_existing_job_per_organization_and_queue(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        first = enqueue(conn, org, dedupe_key="nightly:2026-11-28")
        assert enqueue(conn, org, "other-type", dedupe_key="nightly:2026-11-28") == first
        created = conn.execute(
            "select * from queue_pump.enqueue_job(organization_id => %s, queue => 'agent',"
            " job_type => 'echo', dedupe_key => 'nightly:2026-11-28')", (org,)).fetchone()
        assert created == {"id": first, "created": False}
        assert enqueue(conn, org, dedupe_key="nightly:2026-11-28", queue="q2") != first
        assert enqueue(conn, org + "-b", dedupe_key="nightly:2026-11-28") != first
        count = conn.execute("select count(*) as n from queue_pump.jobs where organization_id = %s",
                             (org,)).fetchone()
        assert count == {"n": 2}
        assert job(conn, first)["job_type"] == "echo", "a known key changes nothing"


def test_concurrent_enqueues_of_one_key_make_one_job(db_url: str, org: str) -> None:
    ids: list[int] = []
    start = threading.Barrier(8)

    def put() -> None:
        with connect(db_url) as c:
            start.wait()
            ids.append(enqueue(c, org, dedupe_key="same"))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(ids) == 8 and len(set(ids)) == 1


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_anon_and_authenticated_see_and_run_nothing(db_url: str, org: str, role: str) -> None:
    with connect(db_url) as conn:
        enqueue(conn, org)
    for statement in ("select * from queue_pump.jobs",
                      "select queue_pump.enqueue('o', 'agent', 'echo')",
                      "select * from queue_pump.claim('o', 'agent', 'w', 60)",
                      "select * from queue_pump.stats('o', 'agent')"):
        with connect(db_url) as conn:
            conn.execute(f"set role {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with connect(db_url) as conn:
        # Even a grant slipped in later reads no row: RLS is on with no policy.
        conn.execute(f"grant usage on schema queue_pump to {role}")
        conn.execute(f"grant select on queue_pump.jobs to {role}")
        conn.execute(f"set role {role}")
        assert conn.execute("select count(*) as n from queue_pump.jobs").fetchone() == {"n": 0}


def test_service_role_runs_the_functions_but_cannot_read_the_table(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        conn.execute("set role service_role")
        jid = enqueue(conn, org)
        row = claim(conn, org, "w")
        assert row is not None and row["id"] == jid
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from queue_pump.jobs")


WAYS_IN = {"enqueue", "enqueue_job", "claim", "heartbeat", "complete", "fail", "requeue",
           "stats", "due_since", "due_count", "purge", "new_job_id",
           # the see-and-steer migration (issue 22)
           "add_job", "heartbeat_job", "cancel_requested", "job_log", "complete_job",
           "list_jobs", "job_detail", "job_history", "cancel", "retry", "retry_failed", "hung",
           "cancel_hung", "purge_organization", "summary",
           # issue 24
           "enqueue_many", "set_concurrency_limit", "set_rate_limit", "key_limits", "job_tree",
           # issue 25
           "claim_batch", "backlog"}
# Helpers that hold no right of their own: they run as their caller (the functions above, or
# service_role calling them directly, with no right it does not already have: the ones that
# write, add_event, cancel_one, retry_one and forget_history, then fail on the tables).
HELPERS = {"max_json_bytes", "check_run_at", "check_text", "json_problem", "check_json",
           "forget_payload_bytes", "forget_history", "max_events", "max_event_bytes",
           "clip_message", "clip_data", "add_event", "iso", "job_json", "event_json",
           "check_org", "cancel_one", "retry_one",
           # issue 24: checks, the key and dependency machinery, its triggers
           "key_lock", "park", "unpark", "admit", "key_freed", "after_ended", "into_queue",
           "check_new_job", "insert_job", "batch_text", "batch_int", "rate_window"}


def test_functions_are_security_definer_with_an_empty_search_path(db_url: str) -> None:
    with connect(db_url) as conn:
        rows = conn.execute(
            "select p.proname, p.prosecdef, p.proconfig from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'queue_pump'"
        ).fetchall()
    assert {r["proname"] for r in rows} == WAYS_IN | HELPERS
    for r in rows:
        if r["proname"] in WAYS_IN:
            # lock_timeout: a table lock held elsewhere fails a call in 5 s instead of hanging.
            # backlog also turns bitmap scans off: they read every due entry past its cap.
            extra = ["enable_bitmapscan=off"] if r["proname"] == "backlog" else []
            assert r["prosecdef"] and r["proconfig"] == [
                'search_path=""', "lock_timeout=5s", *extra], r
        else:
            # Only the JSON check sets anything: floats written in their shortest exact form.
            assert not r["prosecdef"], r
            assert r["proconfig"] == (["extra_float_digits=3"]
                                      if r["proname"] == "json_problem" else None), r


def test_stats_counts_and_the_age_of_the_oldest_due_job(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        for _ in range(3):
            enqueue(conn, org)
        enqueue(conn, org, run_at="2999-01-01T00:00:00Z")
        conn.execute("update queue_pump.jobs set run_at = now() - interval '90 seconds'"
                     " where organization_id = %s and run_at < now()", (org,))
        row = claim(conn, org, "a")
        assert row is not None
        conn.execute("select queue_pump.complete(%s, 'a')", (row["id"],))
        claim(conn, org, "b")
        stats = conn.execute("select * from queue_pump.stats(%s, 'agent')", (org,)).fetchone()
    assert stats is not None
    with connect(db_url) as conn:
        due = conn.execute("select queue_pump.due_count(%s, 'agent') as n", (org,)).fetchone()
    assert due == {"n": stats["due"]}
    age = stats.pop("oldest_due_age_seconds")
    assert stats == {"queued": 2, "running": 1, "done": 1, "failed": 0, "due": 1}
    assert 89 <= age < 300


def test_purge_deletes_only_old_finished_jobs_in_batches(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        ids = [enqueue(conn, org) for _ in range(5)]
        for jid in ids[:4]:
            claim(conn, org, "w")
            conn.execute("select queue_pump.complete(%s, 'w')", (jid,))
        conn.execute("update queue_pump.jobs set finished_at = now() - interval '8 days'"
                     " where id = any(%s)", (ids[:3],))
        assert conn.execute("select queue_pump.purge(interval '7 days', 2) as n"
                            ).fetchone() == {"n": 2}
        assert conn.execute("select queue_pump.purge(interval '7 days', 2) as n"
                            ).fetchone() == {"n": 1}
        left = conn.execute("select id, status from queue_pump.jobs where organization_id = %s"
                            " order by created_at", (org,)).fetchall()
    assert left == [{"id": ids[3], "status": "done"}, {"id": ids[4], "status": "queued"}]


def test_bad_lease_is_refused_with_a_named_error(db_url: str, org: str) -> None:
    with connect(db_url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue,
                                                match="lease_seconds must be between"):
        claim(conn, org, "w", lease=0)


def _claim_reads(conn: psycopg.Connection[Any], org: str) -> dict[str, Any]:
    """What one claim read of queue_pump.jobs, from the transaction's own statistics."""
    counted = ("select seq_scan, seq_tup_read, idx_tup_fetch from pg_stat_xact_user_tables"
               " where schemaname = 'queue_pump' and relname = 'jobs'")
    with conn.transaction():
        # The view also holds counts of earlier statements not yet flushed (PostgreSQL 15
        # flushes them at most once a second, later under load): the claim's are a difference.
        # A lease of an hour: filling the table with 1,000,000 rows takes more than a minute on a
        # loaded machine, and an expired lease would hand the same job out again.
        before = conn.execute(counted).fetchone()
        row = claim(conn, org, "probe", lease=3600)
        after = conn.execute(counted).fetchone()
        assert row is not None and before is not None and after is not None
        return {k: after[k] - before[k] for k in after}


def test_a_claim_reads_the_same_few_rows_with_1000_or_1000000_in_the_table(
        pg: kit.PgCluster, org: str) -> None:
    """Cost, counted rather than timed: the claim never scans the table and fetches the same
    handful of rows whatever the number of finished jobs (timings: bench/supabase_kit.py)."""
    url = pg.create_database(f"kit_big_{org[-8:]}", template="kit_template")
    reads = {}
    with connect(url) as conn:
        for total in (1_000, 1_000_000):
            have = conn.execute("select count(*) as n from queue_pump.jobs").fetchone()
            assert have is not None
            conn.execute(
                "insert into queue_pump.jobs (organization_id, queue, job_type, status, attempts,"
                " finished_at) select 'org-' || (n %% 50), 'agent', 'echo', 'done', 1, now()"
                " from generate_series(1, %s) n", (total - 200 - have["n"],))
            conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo')"
                         " from generate_series(1, 200)", (org,))
            # vacuum too: the index entry a previous claim left behind (its job no longer queued)
            # is otherwise fetched and found dead, or not, as hint bits happen to fall: 4 or 5.
            conn.execute("vacuum (analyze) queue_pump.jobs")
            reads[total] = _claim_reads(conn, org)
    big, small = reads[1_000_000], reads[1_000]
    # A table of 1,000 rows may be read whole (the planner's right choice); 1,000,000 never is.
    # "A handful" is at most 8 fetches: the job taken, the next index entries, and entries of
    # jobs that earlier claims moved on whose removal depends on when vacuum and hint bits run
    # (4 or 5 seen on the same code). A scan of the finished jobs would be 999,800.
    assert big["seq_scan"] == 0 and big["idx_tup_fetch"] <= 8, big
    assert small["seq_tup_read"] + small["idx_tup_fetch"] <= 1_000, small
    with connect(url) as conn:
        statuses = Counter(r["status"] for r in conn.execute(
            "select status from queue_pump.jobs where organization_id = %s", (org,)).fetchall())
    assert statuses == {"queued": 398, "running": 2}
