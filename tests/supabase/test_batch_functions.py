"""ai-job-runner with JOB_BATCH_SIZE under a real Deno on a real PostgreSQL: a call runs several
jobs at once, records each as it ends, and one job's failure is that job's alone."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from ..conftest import TOKEN
from . import kit
from .test_kit_e2e import functions, post, query

pytestmark = [pytest.mark.kit, pytest.mark.e2e]

CONTRACT_FIELDS = {"processed", "jobId", "jobType", "status", "yielded", "attempt"}


def enqueue(url: str, org: str, job_type: str, payload: str = "{}", **kw: Any) -> int:
    extra = "".join(f", {k} => %s" for k in kw)
    [row] = query(url, f"select queue_pump.enqueue(%s, 'agent', %s, %s::jsonb{extra}) as id",
                  org, job_type, payload, *kw.values())
    return int(row["id"])


def test_one_call_runs_a_batch_at_once_and_records_each_job_as_it_ends(
        deno_bin: Path, db_url: str, org: str, tmp_path: Path) -> None:
    copy = tmp_path / "functions"
    shutil.copytree(kit.FUNCTIONS, copy, ignore=shutil.ignore_patterns("node_modules"))
    handlers = copy / "ai-job-runner" / "handlers.ts"
    # A handler that crashes as badly as JavaScript allows: it throws something not an Error.
    handlers.write_text(handlers.read_text().replace(
        "export const handlers: Record<string, Handler> = { echo, sleep, fail };",
        "const crash: Handler = () => { throw null; };\n"
        "export const handlers: Record<string, Handler> = { echo, sleep, fail, crash };"))
    slow = [enqueue(db_url, org, "sleep", '{"ms": 900}') for _ in range(2)]
    quick = enqueue(db_url, org, "echo", '{"n": 1}')
    failing = enqueue(db_url, org, "fail", max_attempts=1)
    crashing = enqueue(db_url, org, "crash", max_attempts=1)
    unknown = enqueue(db_url, org, "no-such-type", max_attempts=1)
    left = [enqueue(db_url, org, "echo") for _ in range(3)]
    enqueue(db_url, org, "echo", run_at="2999-01-01T00:00:00Z")  # not due: not in the backlog
    fn = kit.DenoFunction(deno_bin, "ai-job-runner",
                          {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": db_url,
                           "JOB_BATCH_SIZE": "6"}, functions=copy)
    try:
        status, answer = post(fn.url, {}, org=org)
    finally:
        fn.stop()
    assert status == 200, answer
    assert answer["processed"] is True and answer["jobs"] == 6 and answer["backlog"] == 3
    assert set(answer) == {"processed", "jobs", "backlog", "results"}
    by_id = {r["jobId"]: r for r in answer["results"]}
    assert sorted(by_id) == sorted([*slow, quick, failing, crashing, unknown])
    assert {i: by_id[i]["status"] for i in by_id} == {
        slow[0]: "done", slow[1]: "done", quick: "done", failing: "failed",
        crashing: "failed", unknown: "failed"}
    assert "always fails" in by_id[failing]["error"] and "no handler" in by_id[unknown]["error"]
    rows = {r["id"]: r for r in query(
        db_url, "select id, status, attempts, result, started_at, finished_at"
                " from queue_pump.jobs where organization_id = %s", org)}
    assert rows[quick]["result"] == {"echo": {"n": 1}} and rows[quick]["attempts"] == 1
    assert all(rows[i]["status"] == "queued" for i in left)
    # At once: both sleeps started with the claim and ended less than one sleep apart.
    ends = sorted(rows[i]["finished_at"] for i in slow)
    assert rows[slow[0]]["started_at"] == rows[slow[1]]["started_at"]
    assert (ends[1] - ends[0]).total_seconds() < 0.9
    # Each recorded as it ended: the quick job long before the sleeps.
    assert (ends[0] - rows[quick]["finished_at"]).total_seconds() > 0.5


def test_at_batch_one_the_answer_is_a_one_job_runners_plus_the_counts(
        deno_bin: Path, db_url: str, org: str) -> None:
    first = enqueue(db_url, org, "echo")
    enqueue(db_url, org, "echo")
    with functions(deno_bin, "ai-job-runner", db_url, JOB_BATCH_SIZE="1") as [fn]:
        status, answer = post(fn.url, {}, org=org)
        idle_org = post(fn.url, {}, org=org + "-idle")
    assert status == 200
    assert set(answer) == CONTRACT_FIELDS | {"jobs", "backlog"}
    assert (answer["jobId"], answer["status"], answer["jobs"], answer["backlog"]) == (
        first, "done", 1, 1)
    assert idle_org == (200, {"processed": False})


def test_sigterm_lets_a_whole_batch_in_flight_finish(
        deno_bin: Path, db_url: str, org: str) -> None:
    for _ in range(3):
        enqueue(db_url, org, "sleep", '{"ms": 1500}')
    answers: list[tuple[int, Any]] = []
    with functions(deno_bin, "ai-job-runner", db_url, JOB_BATCH_SIZE="5") as [fn]:
        caller = threading.Thread(target=lambda: answers.append(post(fn.url, {}, org=org)))
        caller.start()
        kit.wait_until(lambda: query(db_url, "select 1 from queue_pump.jobs"
                                             " where status = 'running' offset 2"), 30,
                       "the batch's claim")
        fn.proc.send_signal(signal.SIGTERM)
        caller.join(timeout=30)
        code = fn.proc.wait(timeout=30)
    assert code == 0
    assert answers and answers[0][0] == 200 and answers[0][1]["jobs"] == 3, answers
    assert query(db_url, "select status, count(*) as n from queue_pump.jobs group by 1") == [
        {"status": "done", "n": 3}]


def test_each_job_of_a_batch_keeps_cancel_children_and_its_claimed_fields(
        deno_bin: Path, db_url: str, org: str) -> None:
    """At the default JOB_BATCH_SIZE: an operator's cancel of one job of a running batch ends
    that job `cancelled` (seen by the poll, its signal aborted) while the others run on; a
    handler's ctx.enqueue records it as the parent; ctx.job has what the claim returned."""
    doomed = enqueue(db_url, org, "sleep", '{"ms": 60000}')
    sleeper = enqueue(db_url, org, "sleep", '{"ms": 1500}')
    parent = enqueue(db_url, org, "fanout", '{"children": 2}')
    who = enqueue(db_url, org, "whoami", priority=-1, concurrency_key="acme")
    answers: list[tuple[int, Any]] = []
    with functions(deno_bin, "ai-job-runner", db_url, JOB_CANCEL_POLL_MS="100") as [fn]:
        caller = threading.Thread(target=lambda: answers.append(post(fn.url, {}, org=org)))
        caller.start()
        kit.wait_until(lambda: query(db_url, "select 1 from queue_pump.jobs where id = %s"
                                             " and status = 'running'", doomed), 30, "the claim")
        [cancelled] = query(db_url, "select outcome from queue_pump.cancel(%s, %s)", org, doomed)
        caller.join(timeout=30)
    assert cancelled["outcome"] == "requested", cancelled
    assert answers and answers[0][0] == 200, answers
    answer = answers[0][1]
    assert answer["jobs"] == 4 and set(answer) == {"processed", "jobs", "backlog", "results"}
    by_id = {r["jobId"]: r for r in answer["results"]}
    assert {i: r["status"] for i, r in by_id.items()} == {
        doomed: "cancelled", sleeper: "done", parent: "done", who: "done"}
    rows = {r["id"]: r for r in query(
        db_url, "select id, status, result, parent_id from queue_pump.jobs"
                " where organization_id = %s", org)}
    assert rows[doomed]["status"] == "cancelled"
    assert rows[who]["result"] == {"priority": -1, "concurrencyKey": "acme"}
    children = [r for r in rows.values() if r["parent_id"] == parent]
    assert len(children) == 3   # two echoes and their collect
    events = query(db_url, "select kind from queue_pump.job_events where job_id = %s order by seq",
                   doomed)
    assert [e["kind"] for e in events][-1] == "cancelled", events
