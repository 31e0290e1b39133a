"""Issue 20 on a real PostgreSQL, through the SQL functions: each finding of the attack that
lives in SQL, and the upgrade of a deployed kit by the new migration."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from . import kit
from .test_sql import claim, connect, enqueue, job

pytestmark = pytest.mark.kit

# A probe, installed by the tests that need it (the kit has no such thing): an insert whose ON
# CONFLICT gave way pauses for `pause_s` seconds, which opens the window between enqueue's
# insert and its look-up that a purge fell into 27 times in 81,300 calls.
PAUSE_ON_CONFLICT = """
create table public.probe (pause_s float8 not null);
insert into public.probe values (0);
create function public.pause_on_conflict() returns trigger language plpgsql as $$
begin
  if not exists (select 1 from inserted) then
    perform pg_sleep((select pause_s from public.probe));
  end if;
  return null;
end $$;
create trigger pause_on_conflict after insert on queue_pump.jobs
  referencing new table as inserted for each statement execute function public.pause_on_conflict();
"""


def install_pause(url: str, seconds: float) -> None:
    with connect(url) as conn:
        conn.execute(PAUSE_ON_CONFLICT)
        conn.execute("update public.probe set pause_s = %s", (seconds,))


def finished_job_with_key(conn: psycopg.Connection[Any], org: str, key: str) -> int:
    """A done job holding ``key``, old enough for any purge."""
    jid = enqueue(conn, org, dedupe_key=key)
    row = claim(conn, org, "w")
    assert row is not None and row["id"] == jid
    conn.execute("select queue_pump.complete(%s, 'w')", (jid,))
    conn.execute("update queue_pump.jobs set finished_at = now() - interval '1 day'"
                 " where id = %s", (jid,))
    return jid


def wait_for_pause(url: str) -> None:
    def paused() -> list[dict[str, Any]]:
        with connect(url) as conn:  # this test's database only: others pause too
            return conn.execute("select 1 from pg_stat_activity where wait_event = 'PgSleep'"
                                " and datname = current_database()").fetchall()

    kit.wait_until(paused, 30, "the enqueue paused after its insert gave way")


@pytest.mark.parametrize("remover", ["purge", "delete"])
def test_enqueue_with_a_key_whose_job_is_removed_meanwhile_returns_a_job(
        db_url: str, org: str, remover: str) -> None:
    """Finding 1: enqueue returned NULL and no job existed (on 2ffcb6a: `id` is None)."""
    with connect(db_url) as conn:
        old = finished_job_with_key(conn, org, "nightly")
    install_pause(db_url, 1.0)
    got: list[dict[str, Any] | None] = []

    def enqueue_again() -> None:
        with connect(db_url) as c:
            got.append(c.execute(
                "select * from queue_pump.enqueue_job(%s, 'agent', 'echo',"
                " dedupe_key => 'nightly')", (org,)).fetchone())

    caller = threading.Thread(target=enqueue_again)
    caller.start()
    wait_for_pause(db_url)
    with connect(db_url) as conn:
        if remover == "purge":  # the housekeeping of the snippet, every 5 minutes
            assert conn.execute("select queue_pump.purge(interval '1 hour', 100) as n"
                                ).fetchone() == {"n": 1}
        else:  # an operator cancelling the job by hand
            conn.execute("delete from queue_pump.jobs where id = %s", (old,))
    caller.join(timeout=30)
    assert got and got[0] is not None and got[0]["id"] is not None, got
    assert got[0]["created"] is True and got[0]["id"] != old
    with connect(db_url) as conn:
        assert job(conn, got[0]["id"])["dedupe_key"] == "nightly"


def test_enqueue_with_a_key_racing_completion_returns_the_holder(db_url: str, org: str) -> None:
    """A job that finishes meanwhile still holds its key: the same job comes back."""
    with connect(db_url) as conn:
        jid = enqueue(conn, org, dedupe_key="k")
        row = claim(conn, org, "w")
        assert row is not None
    install_pause(db_url, 0.5)
    got: list[dict[str, Any] | None] = []
    def enqueue_again() -> None:
        with connect(db_url) as c:
            got.append(c.execute("select * from queue_pump.enqueue_job(%s, 'agent', 'echo',"
                                 " dedupe_key => 'k')", (org,)).fetchone())

    caller = threading.Thread(target=enqueue_again)
    caller.start()
    wait_for_pause(db_url)
    with connect(db_url) as conn:
        conn.execute("select queue_pump.complete(%s, 'w')", (jid,))
    caller.join(timeout=30)
    assert got == [{"id": jid, "created": False}]


@pytest.mark.parametrize(("payload", "number"), [
    ('{"id": 9007199254740993}', "9007199254740993"),
    ('{"id": 12345678901234567891}', "12345678901234567891"),
    ('{"huge": 1e400}', "10000000000000000000... (401 characters)"),
    ('{"tiny": [1e-400]}', "0.000000000000000000... (402 characters)"),
])
def test_numbers_a_handler_would_not_read_exactly_are_refused(
        db_url: str, org: str, payload: str, number: str) -> None:
    """Finding 3: 9007199254740993 reached the handler as ...992 (on 2ffcb6a: stored)."""
    with connect(db_url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        enqueue(conn, org, payload=payload)
    assert str(err.value).splitlines()[0] == (
        f"queue_pump.enqueue: payload holds the number {number}, which JavaScript would not"
        " read exactly (send it as a string)")


def test_numbers_a_handler_reads_exactly_are_kept_as_written(db_url: str, org: str) -> None:
    exact = ('{"a": 0.1, "b": 1.10, "c": 9007199254740991, "d": -9007199254740991,'
             ' "e": 1e-310, "f": 5e-324, "g": 1.7976931348623157e308,'
             ' "h": 12345678901234567000, "i": "12345678901234567891", "j": 123456789012345}')
    with connect(db_url) as conn:
        jid = enqueue(conn, org, payload=exact)
        stored = conn.execute("select payload = %s::jsonb as same from queue_pump.jobs"
                              " where id = %s", (exact, jid)).fetchone()
    assert stored == {"same": True}


def test_one_payload_limit_in_sql(db_url: str, org: str) -> None:
    """Finding 4: SQL accepted payloads of any size (on 2ffcb6a: 1 MiB + 1 stored)."""
    at_limit = "jsonb_build_object('s', repeat('x', 1048576 - 9))"  # {"s": "..."}: 9 bytes
    with connect(db_url) as conn:
        jid = conn.execute(f"select queue_pump.enqueue(%s, 'agent', 'echo', {at_limit}) as id",
                           (org,)).fetchone()
        assert jid is not None
        size = conn.execute("select octet_length(payload::text) as n from queue_pump.jobs"
                            " where id = %s", (jid["id"],)).fetchone()
        assert size == {"n": 1048576}
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match="payload is 1048577 bytes of JSON, over the limit of 1048576"):
            conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo',"
                         " jsonb_build_object('s', repeat('x', 1048576 - 8)))", (org,))
        row = claim(conn, org, "w")
        assert row is not None
        for call in ("heartbeat(%s, 'w', 60, {})", "requeue(%s, 'w', {})",
                     "complete(%s, 'w', {})"):
            big = "jsonb_build_object('s', repeat('x', 1048576))"
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="over the limit"):
                conn.execute(f"select queue_pump.{call.format(big)}", (row["id"],))


def test_a_job_too_big_to_hand_out_ends_failed_without_being_claimed(
        db_url: str, org: str) -> None:
    """Finding 4: a 24 MB payload went to the runner and crashed it. Such a job (stored before
    the limit, or written around the functions) is failed by the claim, which takes the next."""
    with connect(db_url) as conn:
        conn.execute("insert into queue_pump.jobs (organization_id, job_type, payload)"
                     " values (%s, 'echo', jsonb_build_object('s', repeat('x', 3000000)))",
                     (org,))
        # Enqueued small (its size recorded), then made big by a direct update.
        grown = enqueue(conn, org)
        conn.execute("update queue_pump.jobs set payload = jsonb_build_object('s',"
                     " repeat('y', 2000000)) where id = %s", (grown,))
        small = enqueue(conn, org)
        row = claim(conn, org, "w")
        big = conn.execute("select * from queue_pump.jobs where organization_id = %s"
                           " and id <> %s order by created_at", (org, small)).fetchall()
    assert row is not None and row["id"] == small
    assert [(b["status"], b["attempts"], b["last_error"]) for b in big] == [
        ("failed", 0, "not run: its payload is 3000009 bytes of JSON, over the limit of 1048576"),
        ("failed", 0, "not run: its payload is 2000009 bytes of JSON, over the limit of 1048576")]


@pytest.mark.parametrize(("call", "message"), [
    ("enqueue(%s, 'agent', 'echo', run_at => '-infinity')",
     "queue_pump.enqueue: run_at must be from 2000-01-01 to 9999-12-31 UTC, got -infinity"),
    ("enqueue(%s, 'agent', 'echo', run_at => '4713-01-01 BC')",
     "queue_pump.enqueue: run_at must be from 2000-01-01 to 9999-12-31 UTC, got"
     " 4713-01-01 00:00:00+00 BC"),
    ("enqueue(%s, 'agent', 'echo', run_at => '10000-01-01 00:00:00+00')",
     "queue_pump.enqueue: run_at must be from 2000-01-01 to 9999-12-31 UTC, got"
     " 10000-01-01 00:00:00+00"),
    ("enqueue(%s, 'agent', 'echo', max_attempts => 0)",
     "queue_pump.enqueue: max_attempts must be between 1 and 1000, got 0"),
    ("enqueue(%s, 'agent', null)",
     "queue_pump.enqueue: job_type must be text of 1 to 200 characters, got null"),
    ("enqueue(%s, repeat('q', 101), 'echo')",
     "queue_pump.enqueue: queue must be text of 1 to 100 characters, got 101 characters"),
    ("enqueue(%s, 'agent', 'echo', dedupe_key => '')",
     "queue_pump.enqueue: dedupe_key must be text of 1 to 500 characters, got 0 characters"),
    ("purge(interval '-1000 years') where %s::text is not null",
     "queue_pump.purge: older_than must be between 0 and 100 years, got -1000 years"),
    ("purge(interval '1000000 years') where %s::text is not null",
     "queue_pump.purge: older_than must be between 0 and 100 years, got 1000000 years"),
    ("purge(null) where %s::text is not null",
     "queue_pump.purge: older_than must be between 0 and 100 years, got null"),
    ("purge(interval '7 days', null) where %s::text is not null",
     "queue_pump.purge: max_rows must be between 1 and 1000000, got null"),
])
def test_sql_arguments_are_refused_at_the_door_by_name(
        db_url: str, org: str, call: str, message: str) -> None:
    """Finding 9 (on 2ffcb6a each call was accepted, or failed later with another error)."""
    with connect(db_url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute(f"select queue_pump.{call}", (org,))
    assert str(err.value).splitlines()[0] == message


def test_stats_keep_working_for_a_queue_given_odd_times(db_url: str, org: str) -> None:
    """Finding 9: after run_at => '-infinity', stats() failed for that queue (22008)."""
    with connect(db_url) as conn:
        for when in ("-infinity", "4713-01-01 BC", "infinity"):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                enqueue(conn, org, run_at=when)
        enqueue(conn, org, run_at="2000-01-01T00:00:00Z")
        stats = conn.execute("select * from queue_pump.stats(%s)", (org,)).fetchone()
    assert stats is not None and stats["due"] == 1
    assert 8e8 < stats["oldest_due_age_seconds"] < 1e10


@pytest.mark.parametrize("lease", [None, 0, 86401, -5])
@pytest.mark.parametrize("function", ["claim", "heartbeat"])
def test_every_lease_refuses_null_and_out_of_range_alike(
        db_url: str, org: str, function: str, lease: int | None) -> None:
    """Finding 9: heartbeat(lease_seconds => null) granted a 24 h lease (on 2ffcb6a)."""
    with connect(db_url) as conn:
        jid = enqueue(conn, org)
        claim(conn, org, "w")
        call = ("select * from queue_pump.claim(%s, 'agent', 'w2', %s)" if function == "claim"
                else "select queue_pump.heartbeat(%s, 'w', %s)")
        with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
            conn.execute(call, (org if function == "claim" else jid, lease))
    shown = "null" if lease is None else str(lease)
    assert str(err.value).splitlines()[0] == (
        f"queue_pump.{function}: lease_seconds must be between 1 and 86400, got {shown}")


def test_a_job_never_runs_past_max_attempts(db_url: str, org: str) -> None:
    """Finding 9: requeue(max_free_yields => null) let a max_attempts=1 job run 5 times and
    stay queued (on 2ffcb6a: 5 claims)."""
    runs = 0
    with connect(db_url) as conn:
        jid = enqueue(conn, org, max_attempts=1)
        for n in range(5):
            if claim(conn, org, f"w{n}") is None:
                break
            runs += 1
            try:
                conn.execute("select queue_pump.requeue(%s, %s, null, 0, null)", (jid, f"w{n}"))
            except psycopg.errors.InvalidParameterValue as err:
                assert "max_free_yields must be between 0 and 1000000, got null" in str(err)
                conn.execute("select queue_pump.fail(%s, %s, 'gave up')", (jid, f"w{n}"))
        final = job(conn, jid)
        # The table keeps it so too: a queued job always has an attempt left.
        with pytest.raises(psycopg.errors.CheckViolation, match="jobs_queued_has_attempts_left"):
            conn.execute("update queue_pump.jobs set status = 'queued', finished_at = null"
                         " where id = %s", (jid,))
    assert runs == 1 and final["status"] == "failed" and final["attempts"] == 1


def test_job_ids_reveal_no_count_across_organizations(db_url: str, org: str) -> None:
    """Finding 7: ids came from one counter, so organization A counted B's enqueues by the gap
    between its own ids (on 2ffcb6a: the gap was exactly B's 100 jobs + 1)."""
    with connect(db_url) as conn:
        mine = [enqueue(conn, org)]
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo') from generate_series(1, 100)",
                     (org + "-b",))
        mine += [enqueue(conn, org) for _ in range(40)]
        ids = [r["id"] for r in conn.execute("select id from queue_pump.jobs").fetchall()]
    assert len(set(ids)) == 141
    assert all(2**52 <= i < 2**53 for i in ids), "bigint, and exact in JavaScript"
    gaps = [b - a for a, b in itertools.pairwise(mine)]
    # Consecutive ids of one organization are spread over the whole range: no gap counts.
    assert sum(1 for g in gaps if abs(g) < 2**40) <= 1, gaps
    assert sum(1 for g in gaps if g < 0) >= 5, "not even the order says anything"


def test_jobs_due_at_one_instant_are_taken_in_the_order_they_were_enqueued(
        db_url: str, org: str) -> None:
    """Ids no longer follow the enqueue order; a batch enqueued in one statement (one now())
    is still taken first in, first out."""
    with connect(db_url) as conn:
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo', jsonb_build_object('n', g))"
                     " from generate_series(1, 30) g", (org,))
        taken = [claim(conn, org, f"w{i}") for i in range(30)]
    assert [t["payload"]["n"] if t else None for t in taken] == list(range(1, 31))


def test_the_id_key_is_readable_by_no_role(db_url: str) -> None:
    for role in kit.SUPABASE_ROLES:
        with connect(db_url) as conn:
            conn.execute(f"set role {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from queue_pump.id_key")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select nextval('queue_pump.job_counter')")


def test_the_migrations_refuse_a_database_that_is_not_utf8(pg: kit.PgCluster, org: str) -> None:
    """Finding 2: under SQL_ASCII PostgreSQL stores bytes unchecked, and the functions'
    UTF-8 clients read two different keys as one (on 2ffcb6a: applied)."""
    name = f"kit_ascii_{org[-12:]}".replace("-", "_")
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {name} encoding 'SQL_ASCII' lc_collate 'C'"
                     " lc_ctype 'C' template template0")
    with pytest.raises(psycopg.errors.RaiseException, match="encoding is SQL_ASCII, the kit"
                                                            " needs UTF8"):
        kit.apply_migrations(pg.url(name))


def test_upgrade_in_place_keeps_the_jobs_of_a_deployed_kit(pg: kit.PgCluster, org: str) -> None:
    """The first migration deployed with jobs in every state, then this one applied: the jobs
    keep their ids and work on; what the old functions let in is put right (a job with no
    attempt left, a run_at of -infinity, a 3 MB payload, a number a handler would misread)."""
    url = pg.create_database(f"kit_upgrade_{org[-12:]}".replace("-", "_"))
    first, *rest = kit.MIGRATIONS
    assert rest, "the hardening migration"
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        with conn.transaction():
            conn.execute(first.read_text())  # type: ignore[arg-type]
        queued = enqueue(conn, org, dedupe_key="k-queued")
        running = enqueue(conn, org)
        assert claim(conn, org, "old-worker") is not None  # takes `queued`
        assert claim(conn, org, "old-worker-2") is not None  # takes `running`
        conn.execute("select queue_pump.complete(%s, 'old-worker')", (queued,))
        # What the old functions let through: a queued job with no attempts left (requeue with
        # max_free_yields null), a run_at of -infinity, and a payload of 3 MB.
        stuck = enqueue(conn, org, max_attempts=1)
        assert claim(conn, org, "w") is not None  # takes `stuck`
        conn.execute("select queue_pump.requeue(%s, 'w', null, 0, null)", (stuck,))
        waiting = enqueue(conn, org, dedupe_key="k-waiting")
        never = enqueue(conn, org, run_at="-infinity")
        huge = conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo',"
                            " jsonb_build_object('s', repeat('x', 3000000))) as id",
                            (org,)).fetchone()
        misread = enqueue(conn, org, payload='{"id": 9007199254740993}')
        assert huge is not None and job(conn, stuck)["status"] == "queued"
        for path in rest:
            with conn.transaction():
                conn.execute(path.read_text())  # type: ignore[arg-type]
        assert job(conn, stuck)["status"] == "failed"
        assert "no attempts left" in job(conn, stuck)["last_error"]
        # Jobs a handler would get changed, or should not get at all, end failed with the reason.
        assert (job(conn, huge["id"])["status"], job(conn, huge["id"])["last_error"]) == (
            "failed", "not run: its payload is 3000009 bytes of JSON, over the limit of 1048576")
        assert job(conn, misread)["status"] == "failed"
        assert "holds the number 9007199254740993" in job(conn, misread)["last_error"]
        assert job(conn, never)["run_at"].year == 2000
        # Old ids go on working: the lease of a job running across the upgrade, dedupe keys.
        assert conn.execute("select queue_pump.complete(%s, 'old-worker-2') as ok",
                            (running,)).fetchone() == {"ok": True}
        again = conn.execute("select * from queue_pump.enqueue_job(%s, 'agent', 'echo',"
                             " dedupe_key => 'k-waiting')", (org,)).fetchone()
        assert again == {"id": waiting, "created": False}
        new = enqueue(conn, org)
        assert 2**52 <= new < 2**53 and max(queued, running, waiting, stuck) < 2**52
        taken = [claim(conn, org, f"n{i}") for i in range(4)]
        stats = conn.execute("select * from queue_pump.stats(%s)", (org,)).fetchone()
    assert [t["id"] if t else None for t in taken] == [never, waiting, new, None]
    assert stats is not None and (stats["running"], stats["done"], stats["failed"]) == (3, 2, 3)
