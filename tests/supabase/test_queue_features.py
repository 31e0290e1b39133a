"""Issue 24 on a real PostgreSQL: priorities, concurrency and rate limits per key, jobs that wait
for other jobs, parents and trees, batch enqueue."""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any

import psycopg
import pytest

from . import kit
from .test_sql import claim, connect, enqueue, expire_lease, job

pytestmark = pytest.mark.kit


def ids(rows: list[dict[str, Any] | None]) -> list[int | None]:
    return [r["id"] if r else None for r in rows]


def complete(conn: psycopg.Connection[Any], jid: int, worker: str) -> None:
    row = conn.execute("select queue_pump.complete(%s, %s) as ok", (jid, worker)).fetchone()
    assert row == {"ok": True}


def fail(conn: psycopg.Connection[Any], jid: int, worker: str, error: str = "boom") -> str:
    row = conn.execute("select queue_pump.fail(%s, %s, %s) as r", (jid, worker, error)).fetchone()
    assert row is not None
    return str(row["r"])


def drain(conn: psycopg.Connection[Any], org: str, **kw: Any) -> list[int]:
    """Claim and complete until nothing is due; the order the jobs started in."""
    order = []
    while (row := claim(conn, org, "w", **kw)) is not None:
        order.append(row["id"])
        complete(conn, row["id"], "w")
    return order


def set_limit(conn: psycopg.Connection[Any], org: str, key: str | None, n: int | None,
              queue: str = "agent") -> None:
    conn.execute("select queue_pump.set_concurrency_limit(%s, %s, %s, %s)", (org, queue, key, n))


def set_rate(conn: psycopg.Connection[Any], org: str, key: str | None, n: int | None,
             per: str, queue: str = "agent") -> None:
    conn.execute("select queue_pump.set_rate_limit(%s, %s, %s, %s, %s::interval)",
                 (org, queue, key, n, per))


# priority ------------------------------------------------------------------------------------


def test_a_higher_priority_runs_first_then_the_oldest(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        low = enqueue(conn, org, priority=-5)
        plain_1 = enqueue(conn, org)
        high_1 = enqueue(conn, org, priority=50)
        plain_2 = enqueue(conn, org, priority=0)
        high_2 = enqueue(conn, org, priority=50)
        older_plain = enqueue(conn, org, run_at="2020-01-01T00:00:00Z")
        assert drain(conn, org) == [high_1, high_2, older_plain, plain_1, plain_2, low]


def test_a_high_priority_job_scheduled_for_later_holds_nothing_back(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        later = enqueue(conn, org, priority=100, run_at="2999-01-01T00:00:00Z")
        now_low = enqueue(conn, org, priority=-100)
        assert drain(conn, org) == [now_low]
        assert job(conn, later)["status"] == "queued"


def test_priority_is_strict_a_low_one_waits_while_higher_ones_are_due(db_url: str,
                                                                       org: str) -> None:
    """No aging (docs/SUPABASE.md): the oldest low-priority job still waits for every due
    higher one, however long it has waited."""
    with connect(db_url) as conn:
        old_low = enqueue(conn, org, priority=-1, run_at="2001-01-01T00:00:00Z")
        highs = [enqueue(conn, org, priority=1) for _ in range(20)]
        assert drain(conn, org) == [*highs, old_low]


@pytest.mark.parametrize("value", [1001, -1001])
def test_a_priority_out_of_range_is_refused_by_name(db_url: str, org: str, value: int) -> None:
    with connect(db_url) as conn, pytest.raises(
            psycopg.errors.InvalidParameterValue,
            match=r"queue_pump.enqueue: priority must be between -1000 and 1000"
                  r" \(higher runs first\)"):
        enqueue(conn, org, priority=value)


def _claim_reads(url: str, org: str) -> dict[str, Any]:
    """What one claim read of queue_pump.jobs. On a connection of its own: PostgreSQL 15's
    pg_stat_xact_* views also count what earlier transactions of the same backend did until
    they are flushed, at most once a second."""
    with connect(url) as conn, conn.transaction():
        row = claim(conn, org, "probe")
        stats = conn.execute("select seq_scan, idx_tup_fetch from pg_stat_xact_user_tables"
                             " where schemaname = 'queue_pump' and relname = 'jobs'").fetchone()
        assert row is not None and stats is not None
        return {**stats, "id": row["id"]}


def test_the_claim_reads_a_handful_of_rows_whatever_the_priorities_and_later_jobs(
        pg: kit.PgCluster, org: str) -> None:
    """Counted, not timed: 1,000,000 finished jobs, 20,000 jobs scheduled for later at the
    highest priorities, and full keys do not make a claim read more than a handful of rows."""
    url = pg.create_database(f"kit_prio_{org[-8:]}", template="kit_template")
    with connect(url) as conn:
        conn.execute("insert into queue_pump.jobs (organization_id, queue, job_type, status,"
                     " attempts, finished_at) select 'org-' || (n % 50), 'agent', 'echo', 'done',"
                     " 1, now() from generate_series(1, 1000000) n")
        conn.execute("insert into queue_pump.jobs (organization_id, queue, job_type, priority,"
                     " run_at) select %s, 'agent', 'echo', 1 + n %% 10, now() + interval '1 hour'"
                     " from generate_series(1, 20000) n", (org,))
        for n in range(3):
            enqueue(conn, org, priority=-n)
        conn.execute("vacuum (analyze) queue_pump.jobs")
    reads = _claim_reads(url, org)
    # 10 priorities with only later jobs cost a probe each (1-2 fetches); 20,000 would be a scan.
    assert reads["seq_scan"] == 0 and reads["idx_tup_fetch"] <= 30, reads


# concurrency ---------------------------------------------------------------------------------


def test_a_full_key_is_skipped_and_other_keys_run(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        set_limit(conn, org, "acme", 2)
        acme = [enqueue(conn, org, concurrency_key="acme") for _ in range(5)]
        other = [enqueue(conn, org, concurrency_key="globex") for _ in range(2)]
        plain = enqueue(conn, org)
        got = ids([claim(conn, org, f"w{i}") for i in range(6)])
        assert got == [acme[0], acme[1], *other, plain, None]
        parked = conn.execute("select count(*) as n from queue_pump.jobs where parked").fetchone()
        assert parked == {"n": 3}
        assert conn.execute("select queue_pump.due_count(%s) as n", (org,)).fetchone() == {"n": 0}
        # A slot frees: the best parked job of the key is due again, and only one.
        complete(conn, acme[0], "w0")
        assert conn.execute("select queue_pump.due_count(%s) as n", (org,)).fetchone() == {"n": 1}
        assert ids([claim(conn, org, "x"), claim(conn, org, "y")]) == [acme[2], None]


def test_a_full_key_with_many_jobs_is_not_read_one_by_one(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        set_limit(conn, org, "big", 1)
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo', concurrency_key => 'big')"
                     " from generate_series(1, 3000)", (org,))
        other = enqueue(conn, org, priority=-1)
        first = claim(conn, org, "a")
        assert first is not None and first["concurrency_key"] == "big"
        # This claim meets the full key once and parks its 2,999 queued jobs at once (1,000 a
        # statement); the next claims do not meet them again.
        assert ids([claim(conn, org, "b")]) == [other]
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo')", (org,))
    reads = _claim_reads(db_url, org)
    assert reads["seq_scan"] == 0 and reads["idx_tup_fetch"] <= 12, reads


def test_the_default_limit_holds_for_each_key_and_a_key_of_its_own_wins(
        db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        set_limit(conn, org, None, 1)
        set_limit(conn, org, "vip", 2)
        a = [enqueue(conn, org, concurrency_key="a") for _ in range(2)]
        b = [enqueue(conn, org, concurrency_key="b") for _ in range(2)]
        vip = [enqueue(conn, org, concurrency_key="vip") for _ in range(3)]
        got = ids([claim(conn, org, f"w{i}") for i in range(6)])
        assert got == [a[0], b[0], vip[0], vip[1], None, None]
        limits = conn.execute("select * from queue_pump.key_limits(%s)", (org,)).fetchall()
        assert [(r["key"], r["max_running"], r["running"], r["parked"]) for r in limits] == [
            (None, 1, 0, 0), ("a", None, 1, 1), ("b", None, 1, 1), ("vip", 2, 2, 1)]


def test_raising_or_removing_a_limit_lets_parked_jobs_run(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        set_limit(conn, org, "k", 1)
        jobs = [enqueue(conn, org, concurrency_key="k") for _ in range(4)]
        assert ids([claim(conn, org, "a"), claim(conn, org, "b")]) == [jobs[0], None]
        set_limit(conn, org, "k", 2)
        assert ids([claim(conn, org, "c"), claim(conn, org, "d")]) == [jobs[1], None]
        set_limit(conn, org, "k", None)
        assert ids([claim(conn, org, "e"), claim(conn, org, "f")]) == jobs[2:]


def _fill_key(conn: psycopg.Connection[Any], org: str, **kw: Any) -> tuple[int, int]:
    """Key k limited to 1: one job running, one parked behind it."""
    set_limit(conn, org, "k", 1)
    running = enqueue(conn, org, concurrency_key="k", **kw)
    waiting = enqueue(conn, org, concurrency_key="k")
    assert ids([claim(conn, org, "w"), claim(conn, org, "w2")]) == [running, None]
    assert job(conn, waiting)["parked"]
    return running, waiting


@pytest.mark.parametrize("ending", ["complete", "fail_retry", "fail_last", "yield",
                                    "lease_last_attempt", "cancel", "delete"])
def test_every_way_a_job_stops_running_frees_its_slot(db_url: str, org: str, ending: str) -> None:
    with connect(db_url) as conn:
        running, waiting = _fill_key(conn, org, max_attempts=1 if ending.endswith("last") or
                                     ending == "lease_last_attempt" else 5)
        if ending == "complete":
            complete(conn, running, "w")
        elif ending in ("fail_retry", "fail_last"):
            assert fail(conn, running, "w") == ("retry" if ending == "fail_retry" else "failed")
        elif ending == "yield":
            conn.execute("select queue_pump.requeue(%s, 'w', null, 60)", (running,))
        elif ending == "lease_last_attempt":
            expire_lease(conn, running)   # the next claim ends it failed (worker lost)
        elif ending == "cancel":
            # Steer's cancel of a running job asks; when its lease runs out the claim ends it.
            conn.execute("select * from queue_pump.cancel(%s, %s)", (org, running))
            expire_lease(conn, running)
        else:
            conn.execute("delete from queue_pump.jobs where id = %s", (running,))
        got = claim(conn, org, "next")
        assert got is not None and got["id"] == waiting, ending
        assert conn.execute("select count(*) as n from queue_pump.jobs where concurrency_key = 'k'"
                            " and status = 'running'").fetchone() == {"n": 1}


def test_an_expired_lease_keeps_its_slot_and_runs_again_before_a_parked_job(
        db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        running, waiting = _fill_key(conn, org)
        expire_lease(conn, running)   # presumed dead, with attempts left: it runs again
        again = claim(conn, org, "w3")
        assert again is not None and again["id"] == running and again["attempts"] == 2
        assert claim(conn, org, "w4") is None
        assert job(conn, waiting)["status"] == "queued"


def test_sixteen_claimers_never_run_more_of_a_key_than_its_limit(db_url: str, org: str) -> None:
    """Each claimer holds its job while it counts what is running for the key, so that any
    third one running at once would be seen."""
    with connect(db_url) as conn:
        set_limit(conn, org, "api", 2)
        set_limit(conn, org, None, 3)   # every other key too: many claims wait on key locks
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo', concurrency_key => 'api')"
                     " from generate_series(1, 150)", (org,))
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo',"
                     " concurrency_key => 'k' || (n %% 5)) from generate_series(1, 150) n", (org,))
    seen: list[int] = []
    done: list[int] = []
    start = threading.Barrier(16)

    def claimer(i: int) -> None:
        with connect(db_url) as c:
            start.wait()
            idle = 0
            while idle < 50:
                row = claim(c, org, f"w{i}")
                if row is None:
                    idle += 1
                    time.sleep(0.002)
                    continue
                idle = 0
                if row["concurrency_key"] == "api":
                    n = c.execute("select count(*) as n from queue_pump.jobs where"
                                  " organization_id = %s and concurrency_key = 'api'"
                                  " and status = 'running'", (org,)).fetchone()
                    assert n is not None
                    seen.append(n["n"])
                    time.sleep(0.001)
                complete(c, row["id"], f"w{i}")
                done.append(row["id"])

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(done) == 300 and len(set(done)) == 300
    assert len(seen) == 150 and max(seen) <= 2, max(seen)
    assert max(seen) == 2, "the limit was never reached: the test proves nothing"


def test_limits_are_checked_by_name(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        for call, match in [
            ("set_concurrency_limit(%s, 'agent', 'k', 0)", "max_running must be between 1"),
            ("set_concurrency_limit(%s, 'agent', '', 1)", "key must be text of 1 to 200"),
            ("set_rate_limit(%s, 'agent', 'k', 1001, '1 second')",
             "max_starts must be between 1 and 1000"),
            ("set_rate_limit(%s, 'agent', 'k', 1, '0 seconds')",
             "per must be between 1 millisecond and 1 day"),
            ("set_rate_limit(%s, 'agent', 'k', 1, null)", "per must be"),
            ("enqueue(%s, 'agent', 'echo', concurrency_key => '')",
             "concurrency_key must be text of 1 to 200"),
        ]:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=match):
                conn.execute(f"select queue_pump.{call}", (org,))


# rate ----------------------------------------------------------------------------------------


def test_the_rate_window_is_half_open_to_the_microsecond(db_url: str) -> None:
    """(at - per, at]: a start exactly `per` ago has left the window, one a microsecond
    younger has not; the window the claim uses, with the time given."""
    with connect(db_url) as conn:
        row = conn.execute(
            "select queue_pump.rate_window(array[t - interval '10 s', t - interval '9.999999 s',"
            " t - interval '1 s', t], interval '10 s', t) as w,"
            " array[t - interval '9.999999 s', t - interval '1 s', t] as expected"
            " from (select now() as t) n").fetchone()
    assert row is not None and row["w"] == row["expected"]


def test_the_rate_window_slides(db_url: str, org: str) -> None:
    """A window of 10 s holding 2 starts turns the third away and parks the key's jobs until
    it reopens; once the oldest start has left the window, one more may start."""
    with connect(db_url) as conn:
        set_rate(conn, org, "api", 2, "10 seconds")
        first = [enqueue(conn, org, concurrency_key="api") for _ in range(4)]
        assert ids([claim(conn, org, "a"), claim(conn, org, "b"), claim(conn, org, "c")]) == [
            first[0], first[1], None]
        state = conn.execute("select starts, reopen_at from queue_pump.key_state").fetchone()
        assert state is not None and len(state["starts"]) == 2
        assert state["reopen_at"] == state["starts"][0] + datetime.timedelta(seconds=10)
        assert job(conn, first[2])["parked"] and job(conn, first[3])["parked"]

        def with_starts(ago: list[str]) -> dict[str, Any] | None:
            """The window's starts moved back in time (time passing, without waiting)."""
            conn.execute("update queue_pump.key_state set starts = array(select clock_timestamp()"
                         " - x::interval from unnest(%s::text[]) x order by 1),"
                         " reopen_at = now() - interval '1 us'", (ago,))
            return claim(conn, org, "r")

        # Both still inside: the claim reopens, unparks, and parks again.
        assert with_starts(["9 seconds", "1 second"]) is None
        # The oldest has left the window: one more may start.
        got = with_starts(["10.5 seconds", "1 second"])
        assert got is not None and got["id"] == first[2]
        after = conn.execute("select starts from queue_pump.key_state").fetchone()
        assert after is not None and len(after["starts"]) == 2   # 1 s ago, and now


def test_a_rate_limited_key_waits_for_its_window_and_others_do_not(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        set_rate(conn, org, None, 1, "1 hour")   # the default for every key of the queue
        a = [enqueue(conn, org, concurrency_key="a") for _ in range(2)]
        b = enqueue(conn, org, concurrency_key="b")
        plain = enqueue(conn, org)
        assert drain(conn, org) == [a[0], b, plain]
        # The window reopens (time passing, without waiting): the next claim unparks a[1].
        conn.execute("update queue_pump.key_state set starts = array[now() - interval '2 hours'],"
                     " reopen_at = now() - interval '1 second' where concurrency_key = 'a'")
        assert drain(conn, org) == [a[1]]


# dependencies --------------------------------------------------------------------------------


def test_a_job_waits_until_everything_it_runs_after_is_done(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        a = enqueue(conn, org)
        b = enqueue(conn, org, queue="other")
        fan_in = enqueue(conn, org, after=[a, b, a], priority=10)
        assert job(conn, fan_in)["waiting_for"] == 2
        assert job(conn, fan_in)["after"] == sorted({a, b})
        assert drain(conn, org) == [a]
        assert job(conn, fan_in)["waiting_for"] == 1
        assert drain(conn, org, queue="other") == [b]
        assert drain(conn, org) == [fan_in]


def test_a_failed_dependency_ends_its_dependents_with_the_reason(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        parent = enqueue(conn, org, max_attempts=1)
        child = enqueue(conn, org, after=[parent])
        grandchild = enqueue(conn, org, after=[child])
        runs_anyway = enqueue(conn, org, after=[parent], after_failure="run")
        row = claim(conn, org, "w")
        assert row is not None and row["id"] == parent
        assert fail(conn, parent, "w", "upstream said 500") == "failed"
        for jid in (child, grandchild):
            j = job(conn, jid)
            assert j["status"] == "failed", j
            assert j["last_error"] == (f"not run: job {parent}, which it waits for (directly or"
                                       " not), ended failed: upstream said 500")
        assert drain(conn, org) == [runs_anyway]
        events = conn.execute("select kind, message from queue_pump.job_events where job_id = %s"
                              " order by seq", (grandchild,)).fetchall()
        assert [e["kind"] for e in events] == ["enqueued", "failed"]


def test_a_cancelled_dependency_cancels_its_dependents(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        parent = enqueue(conn, org, run_at="2999-01-01T00:00:00Z")
        child = enqueue(conn, org, after=[parent])
        conn.execute("select * from queue_pump.cancel(%s, %s)", (org, parent))
        assert job(conn, child)["status"] == "cancelled"
        # Enqueued after the end: it ends at once, the same way.
        late = enqueue(conn, org, after=[parent])
        assert job(conn, late)["status"] == "cancelled"
        assert "ended cancelled" in job(conn, late)["last_error"]


def test_a_retried_dependent_waits_again_for_its_unfinished_dependency(
        db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        parent = enqueue(conn, org, max_attempts=1)
        child = enqueue(conn, org, after=[parent])
        claim(conn, org, "w")
        fail(conn, parent, "w")
        assert job(conn, child)["status"] == "failed"
        conn.execute("select * from queue_pump.retry(%s, %s)", (org, child))
        assert job(conn, child)["waiting_for"] == 1 and claim(conn, org, "x") is None
        conn.execute("select * from queue_pump.retry(%s, %s)", (org, parent))
        assert drain(conn, org) == [parent, child]


def test_after_and_parent_name_only_existing_jobs_of_the_organization(
        db_url: str, org: str) -> None:
    """Every edge points to a job that exists when the new one is added, so no cycle can be
    made: a job cannot name itself or a job added after it."""
    with connect(db_url) as conn:
        mine = enqueue(conn, org)
        theirs = enqueue(conn, org + "-other")
        next_id = 2**53 - 1
        for kw, match in [
            ({"after": [mine, theirs]},
             f"after names {theirs} which is not a job of this organization"),
            ({"after": [next_id]}, f"after names {next_id} which is not"),
            ({"parent_id": theirs}, f"parent_id {theirs} is not a job of this organization"),
            ({"after_failure": "ignore"}, "after_failure must be 'end' or 'run'"),
        ]:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=match):
                enqueue(conn, org, **kw)
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match="after must be at most 1000"):
            conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo',"
                         " \"after\" => array[1, null]::bigint[])", (org,))
        # No function changes a job's `after` or parent once it is added.
        names = {r["proname"] for r in conn.execute(
            "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = 'queue_pump' and p.prosrc ~* 'set\\s+(\"after\"|parent_id)'")}
        assert names == set(), names


def test_job_tree_shows_a_job_and_its_descendants(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        root = enqueue(conn, org)
        kids = [enqueue(conn, org, parent_id=root) for _ in range(2)]
        grandkid = enqueue(conn, org, parent_id=kids[1], after=[kids[0]])
        enqueue(conn, org)   # not in the tree
        tree = conn.execute("select id, parent_id, depth, path, \"after\""
                            " from queue_pump.job_tree(%s, %s)", (org, root)).fetchall()
        # Depth first, children by id (ids say nothing about order: they are a permutation).
        assert (tree[0]["id"], tree[0]["depth"]) == (root, 0)
        assert {r["id"]: r["depth"] for r in tree} == {root: 0, kids[0]: 1, kids[1]: 1, grandkid: 2}
        assert [r["path"] for r in tree] == sorted(r["path"] for r in tree)
        assert {r["id"] for r in tree} == {root, *kids, grandkid}
        assert next(r for r in tree if r["id"] == grandkid)["path"] == [root, kids[1], grandkid]
        assert conn.execute("select * from queue_pump.job_tree(%s, %s)",
                            (org + "-x", root)).fetchall() == []


# batch ---------------------------------------------------------------------------------------


def test_enqueue_many_adds_a_batch_in_one_transaction(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        parent = enqueue(conn, org)
        batch = [{"job_type": "echo", "payload": {"n": 1}, "priority": 5},
                 {"job_type": "echo", "dedupe_key": "k1", "concurrency_key": "acme"},
                 {"job_type": "echo", "dedupe_key": "k1"},
                 {"job_type": "sleep", "queue": "other", "after": [parent], "parent_id": parent,
                  "run_at": "2026-11-28T03:00:00Z", "max_attempts": 2}]
        rows = conn.execute("select * from queue_pump.enqueue_many(%s, 'agent', %s::jsonb)",
                            (org, psycopg.types.json.Jsonb(batch))).fetchall()
        assert [(r["index"], r["created"]) for r in rows] == [(0, True), (1, True), (2, False),
                                                              (3, True)]
        assert rows[2]["id"] == rows[1]["id"]
        last = job(conn, rows[3]["id"])
        assert (last["queue"], last["job_type"], last["after"], last["parent_id"],
                last["max_attempts"], last["waiting_for"]) == ("other", "sleep", [parent], parent,
                                                               2, 1)
        assert job(conn, rows[0]["id"])["priority"] == 5


@pytest.mark.parametrize(("element", "match"), [
    ({"job_type": "echo", "priority": 2000}, r"enqueue_many: jobs\[1\]: priority must be between"),
    ({"job_type": "echo", "priority": "high"},
     r"enqueue_many: jobs\[1\]: priority must be a whole number, got string"),
    ({"job_type": "echo", "priority": 1.5}, r"jobs\[1\]: priority must be a whole number, got 1.5"),
    ({"type": "echo"}, r"jobs\[1\]: unknown field type"),
    ({"payload": {}}, r"jobs\[1\]: job_type must be text"),
    ({"job_type": "echo", "run_at": "soon"}, r"jobs\[1\]: run_at must be a time with a zone"),
    ({"job_type": "echo", "after": [1.5]}, r"jobs\[1\]: after must be an array of job ids"),
    ({"job_type": "echo", "after": [12345]}, r"jobs\[1\]: after names 12345 which is not"),
    ("echo", r"jobs\[1\]: must be an object"),
])
def test_a_bad_element_refuses_the_whole_batch_naming_index_and_field(
        db_url: str, org: str, element: Any, match: str) -> None:
    with connect(db_url) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=match):
            conn.execute("select * from queue_pump.enqueue_many(%s, 'agent', %s::jsonb)",
                         (org, psycopg.types.json.Jsonb([{"job_type": "echo"}, element])))
        assert conn.execute("select count(*) as n from queue_pump.jobs").fetchone() == {"n": 0}


def test_a_batch_holds_1_to_1000_jobs(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        rows = conn.execute("select * from queue_pump.enqueue_many(%s, 'agent', (select"
                            " jsonb_agg(jsonb_build_object('job_type', 'echo', 'payload',"
                            " jsonb_build_object('n', n))) from generate_series(1, 1000) n))",
                            (org,)).fetchall()
        assert len(rows) == 1000 and all(r["created"] for r in rows)
        # In order: the claim takes them as they were listed.
        assert drain(conn, org)[:3] == [r["id"] for r in rows[:3]]
        for bad in ([], {}, [{"job_type": "echo"}] * 1001):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="jobs must"):
                conn.execute("select * from queue_pump.enqueue_many(%s, 'agent', %s::jsonb)",
                             (org, psycopg.types.json.Jsonb(bad)))


# upgrade -------------------------------------------------------------------------------------


def test_upgrade_in_place_the_jobs_of_a_deployed_kit_run_on(pg: kit.PgCluster, org: str) -> None:
    """The kit as deployed before issue 24, with a job queued, one running and one done; then
    this migration: they keep working, at priority 0 with no key, and new jobs go first by
    priority."""
    url = pg.create_database(f"kit_qf_upgrade_{org[-12:]}".replace("-", "_"))
    at = [m.name for m in kit.MIGRATIONS].index("20261208000000_queue_features.sql")
    before, this = kit.MIGRATIONS[:at], kit.MIGRATIONS[at]
    with connect(url) as conn:
        for path in before:
            with conn.transaction():
                conn.execute(path.read_text())  # type: ignore[arg-type]
        done = enqueue(conn, org)
        running = enqueue(conn, org)
        queued = enqueue(conn, org, dedupe_key="k")
        claim(conn, org, "old")
        complete(conn, done, "old")
        assert claim(conn, org, "old-2") is not None
        with conn.transaction():
            conn.execute(this.read_text())  # type: ignore[arg-type]
        assert {(r["priority"], r["concurrency_key"], r["parked"], r["waiting_for"])
                for r in conn.execute("select * from queue_pump.jobs").fetchall()} == {
                    (0, None, False, 0)}
        complete(conn, running, "old-2")
        urgent = enqueue(conn, org, priority=1)
        assert drain(conn, org) == [urgent, queued]
        again = conn.execute("select * from queue_pump.enqueue_job(%s, 'agent', 'echo',"
                             " dedupe_key => 'k')", (org,)).fetchone()
        assert again == {"id": queued, "created": False}
