"""Issue 24 through the real Deno functions and real pumps: the enqueue function's new fields and
array body, ctx.enqueue in a handler (the example handlers fanout, collect, whoami), and a key's
limit held across pumps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import kit
from .test_kit_e2e import functions, post, pump, query, stop

pytestmark = [pytest.mark.kit, pytest.mark.e2e]


def jobs_of(db_url: str, org: str) -> list[dict[str, Any]]:
    return query(db_url, "select * from queue_pump.jobs where organization_id = %s"
                         " order by created_at", org)


def all_done(db_url: str, org: str, n: int) -> None:
    kit.wait_until(lambda: query(db_url, "select count(*) as n from queue_pump.jobs where"
                                         " organization_id = %s and status = 'done'", org)
                   == [{"n": n}], 120, f"{n} jobs done", step_s=0.2)


def test_the_enqueue_function_takes_the_new_fields_and_a_batch(
        deno_bin: Path, db_url: str, org: str) -> None:
    with functions(deno_bin, "enqueue", db_url) as (fn,):
        status, first = post(fn.url, {"type": "echo", "priority": 50, "concurrencyKey": "acme"},
                             org=org)
        assert status == 201, first
        status, second = post(fn.url, {"type": "echo", "after": [first["id"]],
                                       "afterFailure": "run", "parentId": first["id"]}, org=org)
        assert status == 201, second
        status, batch = post(fn.url + "?queue=bulk", [
            {"type": "echo", "dedupeKey": "d1", "priority": -3},
            {"type": "echo", "dedupeKey": "d1"},
            {"type": "sleep", "payload": {"ms": 1}, "runAt": "2026-11-28T03:00:00.123456Z"},
        ], org=org)
        assert status == 201, batch
        assert [j["created"] for j in batch["jobs"]] == [True, False, True]
        assert batch["jobs"][0]["id"] == batch["jobs"][1]["id"]
        # Nothing new: 200, and the same ids.
        status, again = post(fn.url, [{"type": "echo", "queue": "bulk", "dedupeKey": "d1"}],
                             org=org)
        assert (status, again) == (200, {"jobs": [{"id": batch["jobs"][0]["id"],
                                                   "created": False}]})

        # One bad element refuses the whole batch, naming it; so does what only SQL knows.
        for body, expected in [
            ([{"type": "echo"}, {"type": "echo", "priority": 5000}],
             "jobs[1].priority must be a whole number from -1000 to 1000 (higher runs first)"),
            ([{"type": "echo"}, {"type": "echo", "after": [123]}],
             "queue_pump.enqueue_many: jobs[1]: after names 123 which is not a job of this"
             " organization"),
            ({"type": "echo", "after": [123]},
             "queue_pump.enqueue: after names 123 which is not a job of this organization"),
            ([], "an array body must hold 1 to 1000 jobs"),
            ([{"type": "echo"}] * 1001, "an array body must hold 1 to 1000 jobs"),
            ({"type": "echo", "priority": "high"},
             "priority must be a whole number from -1000 to 1000 (higher runs first)"),
        ]:
            assert post(fn.url, body, org=org) == (400, {"error": expected})
    rows = {r["id"]: r for r in jobs_of(db_url, org)}
    assert len(rows) == 4
    assert (rows[first["id"]]["priority"], rows[first["id"]]["concurrency_key"]) == (50, "acme")
    s = rows[second["id"]]
    assert (s["after"], s["after_failure"], s["parent_id"], s["waiting_for"]) == (
        [first["id"]], "run", first["id"], 1)
    b = rows[batch["jobs"][0]["id"]]
    assert (b["queue"], b["priority"]) == ("bulk", -3)
    timed = query(db_url, "select run_at = '2026-11-28T03:00:00.123456Z'::timestamptz as exact"
                          " from queue_pump.jobs where id = %s", batch["jobs"][2]["id"])
    assert timed == [{"exact": True}]


def test_a_handler_fans_out_with_ctx_enqueue_and_the_fan_in_runs_last(
        deno_bin: Path, db_url: str, org: str) -> None:
    """The example handlers, run by a real pump: `fanout` enqueues 20 children and a `collect`
    job after all of them; `whoami` says the priority and key it was started with."""
    with functions(deno_bin, "enqueue", db_url) as (enq,):
        status, root = post(enq.url, {"type": "fanout", "payload": {
            "children": 20, "priority": 7, "concurrencyKey": "acme"}}, org=org)
        assert status == 201
        status, who = post(enq.url, {"type": "whoami", "priority": -2, "concurrencyKey": "k"},
                           org=org)
        assert status == 201
    with functions(deno_bin, "ai-job-runner", db_url) as (fn,):
        # Not --drain: that stops at the first idle answer, and the fan-in is not due (so the
        # queue answers idle) while the last children run.
        live = pump(fn, org, QUEUE_PUMP_CONCURRENCY="4")
        all_done(db_url, org, 23)   # fanout, whoami, 20 children, collect
        assert stop(live) == 0
    rows = jobs_of(db_url, org)
    assert {r["status"] for r in rows} == {"done"}, [(r["job_type"], r["last_error"]) for r in rows]
    children = [r for r in rows if r["job_type"] == "echo"]
    (fan_in,) = [r for r in rows if r["job_type"] == "collect"]
    assert len(children) == 20
    assert all((c["parent_id"], c["priority"], c["concurrency_key"]) == (root["id"], 7, "acme")
               for c in children)
    assert fan_in["parent_id"] == root["id"]
    assert sorted(fan_in["after"]) == sorted(c["id"] for c in children)
    assert fan_in["started_at"] >= max(c["finished_at"] for c in children)
    assert fan_in["result"] == {"after": fan_in["after"], "parent": root["id"]}
    (whoami,) = [r for r in rows if r["id"] == who["id"]]
    assert whoami["result"] == {"priority": -2, "concurrencyKey": "k"}
    tree = query(db_url, "select id, depth from queue_pump.job_tree(%s, %s)", org, root["id"])
    assert {r["id"]: r["depth"] for r in tree} == {
        root["id"]: 0, fan_in["id"]: 1, **{c["id"]: 1 for c in children}}
    # Each child's history says a handler added it.
    events = query(db_url, "select e.data from queue_pump.job_events e where e.job_id = %s"
                           " and e.seq = 1", children[0]["id"])
    assert events == [{"data": {"by": "handler"}}]


def test_a_key_limited_to_2_never_runs_3_across_pumps_and_other_keys_run(
        deno_bin: Path, db_url: str, org: str) -> None:
    """From the history (each job's `claimed` to its `completed` event, stamped with the clock
    inside the transactions that start and end it, so one that starts after another ended is
    never seen before it): at no instant did 3 jobs of the key run at once, though 2 pumps of 4
    loops could have run 8."""
    query(db_url, "select queue_pump.set_concurrency_limit(%s, 'agent', 'api', 2)", org)
    query(db_url, "select queue_pump.enqueue(%s, 'agent', 'sleep', '{\"ms\": 40}'::jsonb,"
                  " concurrency_key => 'api') from generate_series(1, 30)", org)
    query(db_url, "select queue_pump.enqueue(%s, 'agent', 'sleep', '{\"ms\": 40}'::jsonb,"
                  " concurrency_key => 'other') from generate_series(1, 30)", org)
    with functions(deno_bin, "ai-job-runner", db_url) as (fn,):
        pumps = [pump(fn, org, QUEUE_PUMP_CONCURRENCY="4") for _ in range(2)]
        all_done(db_url, org, 60)
        assert [stop(p) for p in pumps] == [0, 0]
    rows = jobs_of(db_url, org)
    assert {(r["status"], r["attempts"]) for r in rows} == {("done", 1)}

    def most_at_once(key: str) -> int:
        events = query(db_url, "select e.at, e.kind from queue_pump.job_events e"
                               " join queue_pump.jobs j on j.id = e.job_id"
                               " where j.organization_id = %s and j.concurrency_key = %s"
                               " and e.kind in ('claimed', 'completed')", org, key)
        assert len(events) == 60
        edges = sorted((e["at"], 1 if e["kind"] == "claimed" else -1) for e in events)
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        return peak

    assert most_at_once("api") == 2
    assert most_at_once("other") > 2, "the unlimited key was held back too"
