"""See and steer on the kit's own parts (issue 22): the history's bound in bytes, the claim that
never reads the history, the summary against a recount after every kind of change, histories
purged with their jobs, cancel requests met by a lease's end and by a checkpoint, ctx.log and
progress in the history, and the tokens each function takes. (What the reference runner does
too is the conformance suite's: tests/operator_api/, run against the kit by its kit driver.)"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from ..conftest import TOKEN
from . import kit
from .test_hardening_functions import functions_with_handlers, send
from .test_kit_e2e import functions, query

pytestmark = pytest.mark.kit

ADMIN = "admin-token-for-the-kit-0123456789"


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def one(conn: psycopg.Connection[dict[str, Any]], sql: str, *args: Any) -> dict[str, Any]:
    row = conn.execute(sql, args).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row


def add(conn: psycopg.Connection[dict[str, Any]], org: str, job_type: str = "echo",
        **kw: Any) -> int:
    names = ", ".join(f"{k} => %s" for k in kw)
    extra = f", {names}" if names else ""
    row = one(conn, f"select id from queue_pump.add_job(%s, 'agent', %s{extra})", org, job_type,
              *kw.values())
    return int(row["id"])


def claim(conn: psycopg.Connection[dict[str, Any]], org: str, worker: str) -> int | None:
    row = conn.execute("select id from queue_pump.claim(%s, 'agent', %s, 60)",
                       (org, worker)).fetchone()
    return None if row is None else int(row["id"])


def events(conn: psycopg.Connection[dict[str, Any]], job_id: int) -> list[dict[str, Any]]:
    return conn.execute("select * from queue_pump.job_events where job_id = %s order by seq",
                        (job_id,)).fetchall()


# --- the summary agrees with a recount -----------------------------------------------------------

def _agrees(conn: psycopg.Connection[dict[str, Any]], org: str, step: str) -> None:
    summary = one(conn, "select queue_pump.summary(%s) as s", org)["s"]
    recount = Counter({r["status"]: r["n"] for r in conn.execute(
        "select status, count(*) as n from queue_pump.jobs where organization_id = %s"
        " group by 1", (org,)).fetchall()})
    due = one(conn, "select count(*) as n from queue_pump.jobs where organization_id = %s and ("
                    " (status = 'queued' and run_at <= now()) or (status = 'running' and"
                    " lease_expires_at < now() and attempts < max_attempts"
                    " and not cancel_requested))", org)["n"]
    total = summary["total"]
    for status in ("queued", "running", "done", "failed", "cancelled"):
        assert total[status] == recount[status], (step, status, total, recount)
    assert total["due"] == due, (step, total, due)
    per_queue = sum(q["queued"] + q["running"] + q["done"] + q["failed"] + q["cancelled"]
                    for q in summary["queues"])
    assert per_queue == sum(recount.values()), step
    failures = conn.execute("select id from queue_pump.jobs where organization_id = %s and"
                            " status = 'failed' order by finished_at desc, id desc limit 10",
                            (org,)).fetchall()
    assert [f["id"] for f in summary["recentFailures"]] == [f["id"] for f in failures], step


def test_the_summary_agrees_with_a_recount_after_every_kind_of_change(
        db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        check = lambda step: _agrees(conn, org, step)  # noqa: E731
        check("empty")
        jobs = [add(conn, org, max_attempts=1) for _ in range(6)]
        later = add(conn, org, run_at="2999-01-01T00:00:00Z")
        check("enqueued")
        a, b, c = (claim(conn, org, f"w{i}") for i in range(3))
        check("claimed")
        assert one(conn, "select queue_pump.complete_job(%s, 'w0') as s", a)["s"] == "done"
        check("completed")
        assert one(conn, "select queue_pump.fail(%s, 'w1', 'boom') as s", b)["s"] == "failed"
        check("failed")
        assert one(conn, "select outcome from queue_pump.cancel(%s, %s)", org, c)["outcome"] \
            == "requested"
        check("cancel requested")
        assert one(conn, "select queue_pump.complete_job(%s, 'w2') as s", c)["s"] == "cancelled"
        check("ended cancelled")
        assert one(conn, "select outcome from queue_pump.cancel(%s, %s)", org, later)[
            "outcome"] == "cancelled"
        check("cancelled while queued")
        d = claim(conn, org, "w3")
        assert one(conn, "select queue_pump.requeue(%s, 'w3') as s", d)["s"] == "yielded"
        check("yielded")
        assert one(conn, "select outcome from queue_pump.retry(%s, %s)", org, b)["outcome"] \
            == "retried"
        check("retried")
        e = claim(conn, org, "w4")
        conn.execute("update queue_pump.jobs set lease_expires_at = now() - interval '1 s',"
                     " heartbeat_at = now() - interval '1 h' where id = %s", (e,))
        check("lease expired")
        assert one(conn, "select cancelled from queue_pump.cancel_hung(%s, 60)", org)[
            "cancelled"] == 1
        check("hung cancelled")
        claim(conn, org, "w5")  # the sweep ends the expired, cancel-requested job
        check("swept")
        conn.execute("select queue_pump.fail(id, locked_by, 'x') from queue_pump.jobs"
                     " where organization_id = %s and status = 'running'", (org,))
        check("failed again")
        assert one(conn, "select retried from queue_pump.retry_failed(%s)", org)["retried"] >= 1
        check("bulk retried")
        while (job := claim(conn, org, "drain")) is not None:
            conn.execute("select queue_pump.complete_job(%s, 'drain')", (job,))
        conn.execute("update queue_pump.jobs set finished_at = finished_at - interval '2 days'"
                     " where organization_id = %s", (org,))
        assert one(conn, "select deleted from queue_pump.purge_organization(%s, '1 day')",
                   org)["deleted"] >= len(jobs)
        check("purged")
        assert one(conn, "select count(*) as n from queue_pump.job_events e where not exists"
                         " (select 1 from queue_pump.jobs j where j.id = e.job_id)")["n"] == 0


# --- the history ---------------------------------------------------------------------------------

def test_the_history_is_bounded_in_bytes_and_keeps_the_end(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        job = add(conn, org)
        claim(conn, org, "w")
        line = "x" * 3000  # clipped to 2,000 characters
        for _ in range(200):
            assert one(conn, "select queue_pump.job_log(%s, 'w', %s) as ok", job, line)["ok"]
        assert one(conn, "select queue_pump.complete_job(%s, 'w') as s", job)["s"] == "done"
        kept = events(conn, job)
        logs = [e for e in kept if e["kind"] == "log"]
        assert all(len(e["message"]) == 2000 for e in logs)
        size = sum(len(e["kind"]) + len(e["worker"] or "") + len(e["message"] or "")
                   + len(json.dumps(e["data"], separators=(",", ":")) if e["data"] else "")
                   for e in kept if e["kind"] != "dropped")
        assert size <= 256 * 1024 + 4096  # the bound, and the ending kept past it
        [dropped] = [e for e in kept if e["kind"] == "dropped"]
        assert dropped["data"]["dropped"] == 200 - len(logs)
        assert kept[-1]["kind"] == "completed"
        row = one(conn, "select history_events, history_dropped from queue_pump.jobs"
                        " where id = %s", job)
        assert row == {"history_events": len(kept), "history_dropped": 200 - len(logs)}


def test_the_claim_never_reads_the_history(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        busy = add(conn, org)
        claim(conn, org, "w")
        for n in range(150):
            conn.execute("select queue_pump.job_log(%s, 'w', %s)", (busy, f"line {n}"))
        conn.execute("insert into queue_pump.job_events (job_id, seq, kind)"
                     " select -n, 1, 'log' from generate_series(1, 20000) n")
        conn.execute("vacuum analyze queue_pump.job_events")
        for _ in range(3):
            add(conn, org)
        counted = ("select seq_scan, coalesce(idx_scan, 0) as idx_scan, n_tup_ins"
                   " from pg_stat_xact_user_tables where schemaname = 'queue_pump'"
                   " and relname = 'job_events'")
        with conn.transaction():
            # the view may hold counts not yet flushed from earlier statements: a difference
            before = one(conn, counted)
            assert claim(conn, org, "probe") is not None
            after = one(conn, counted)
        stats = {k: after[k] - before[k] for k in after}
        # written (the `claimed` event), never read: no scan of the table or its index
        assert stats == {"seq_scan": 0, "idx_scan": 0, "n_tup_ins": 1}, stats


def test_purges_take_the_histories_with_their_jobs(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        ids = [add(conn, org) for _ in range(3)]
        while (job := claim(conn, org, "w")) is not None:
            conn.execute("select queue_pump.complete_job(%s, 'w')", (job,))
        conn.execute("update queue_pump.jobs set finished_at = now() - interval '9 days'"
                     " where id = %s", (ids[0],))
        assert one(conn, "select queue_pump.purge('7 days') as n")["n"] == 1
        assert events(conn, ids[0]) == [] and len(events(conn, ids[1])) == 3
        conn.execute("update queue_pump.jobs set finished_at = now() - interval '2 hours'"
                     " where organization_id = %s", (org,))
        assert one(conn, "select deleted from queue_pump.purge_organization(%s, '1 hour')",
                   org)["deleted"] == 2
        assert one(conn, "select count(*) as n from queue_pump.job_events where job_id = any(%s)",
                   ids)["n"] == 0


def test_a_cancel_request_met_by_a_lease_end_ends_cancelled_not_retried(
        db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        job = add(conn, org, max_attempts=5)
        claim(conn, org, "lost")
        conn.execute("select queue_pump.cancel(%s, %s)", (org, job))
        conn.execute("update queue_pump.jobs set lease_expires_at = now() - interval '1 s'"
                     " where id = %s", (job,))
        assert one(conn, "select queue_pump.due_count(%s) as n", org)["n"] == 0
        assert claim(conn, org, "next") is None
        row = one(conn, "select status, attempts from queue_pump.jobs where id = %s", job)
        assert row == {"status": "cancelled", "attempts": 1}
        assert [e["kind"] for e in events(conn, job)][-2:] == ["lease_expired", "cancelled"]


def test_service_role_cannot_write_the_history_directly(db_url: str, org: str) -> None:
    with connect(db_url) as conn:
        job = add(conn, org)
        conn.execute("set role service_role")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select queue_pump.add_event(%s, 'completed')", (job,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from queue_pump.job_events")
        assert one(conn, "select queue_pump.job_detail(%s, %s) as j", org, job)["j"]["id"] == job
        assert one(conn, "select queue_pump.job_detail(%s, %s) as j", org + "x", job)["j"] is None


# --- the functions -------------------------------------------------------------------------------

CHATTY = """
handlers.chatty = async (ctx) => {
  await ctx.log("step one", { n: 1 });
  ctx.log("the token is " + Deno.env.get("AGENT_TOKEN"));
  await ctx.checkpoint({ done: 1 });
  for (let i = 0; i < 300; i++) ctx.log(`line ${i}`);
  return { ok: true };
};
handlers.patient = async (ctx) => {
  // checkpoints until cancelled; ignores ctx.signal on purpose
  for (let i = 0; i < 600; i++) {
    await ctx.checkpoint({ i });
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { finished: true };
};
"""


def test_ctx_log_and_progress_go_into_the_history(
        deno_bin: Path, db_url: str, org: str, tmp_path: Path) -> None:
    query(db_url, "select queue_pump.enqueue(%s, 'agent', 'chatty')", org)
    with functions_with_handlers(tmp_path, CHATTY) as copy:
        fn = kit.DenoFunction(deno_bin, "ai-job-runner",
                              {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": db_url}, functions=copy)
        try:
            status, body, _ = send(fn.url, b"{}", org)
        finally:
            fn.stop()
    assert status == 200 and body["status"] == "done", body
    [job] = query(db_url, "select id from queue_pump.jobs where organization_id = %s", org)
    with connect(db_url) as conn:
        kept = events(conn, job["id"])
    kinds = [e["kind"] for e in kept]
    # the first line was awaited; the second was not, so the checkpoint may come before it
    assert kinds[:3] == ["enqueued", "claimed", "log"] and sorted(kinds[3:5]) == [
        "log", "progress"], kinds
    assert (kept[2]["message"], kept[2]["data"]) == ("step one", {"n": 1})
    [token_line] = [e for e in kept[3:5] if e["kind"] == "log"]
    assert TOKEN not in token_line["message"] and "***" in token_line["message"]
    [progress] = [e for e in kept[3:5] if e["kind"] == "progress"]
    assert progress["data"] == {"progress": {"done": 1}}
    # 200 lines a run are sent; the history keeps its 200 events and the end
    assert kinds.count("log") <= 200 and kinds[-1] == "completed"
    assert kinds.count("dropped") == 1
    # every log line of the function carries its time
    assert all("ts" in json.loads(line) for line in fn.lines if line.startswith("{"))


def test_a_checkpoint_sees_a_cancel_and_the_run_ends_cancelled(
        deno_bin: Path, db_url: str, org: str, tmp_path: Path) -> None:
    query(db_url, "select queue_pump.enqueue(%s, 'agent', 'patient', max_attempts => 5)", org)
    with functions_with_handlers(tmp_path, CHATTY) as copy:
        # no poll: only the checkpoint can see the request
        fn = kit.DenoFunction(deno_bin, "ai-job-runner",
                              {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": db_url,
                               "JOB_CANCEL_POLL_MS": "600000"}, functions=copy)
        try:
            with contextlib.ExitStack() as stack:
                import concurrent.futures

                pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(1))
                answer = pool.submit(send, fn.url, b"{}", org)
                kit.wait_until(lambda: query(db_url, "select 1 from queue_pump.job_events"
                                                     " where kind = 'progress'"), 30, "progress")
                [job] = query(db_url, "select id from queue_pump.jobs")
                query(db_url, "select queue_pump.cancel(%s, %s)", org, job["id"])
                status, body, _ = answer.result(timeout=30)
        finally:
            fn.stop()
    assert status == 200 and body["status"] == "cancelled", body
    assert query(db_url, "select status, attempts from queue_pump.jobs") == [
        {"status": "cancelled", "attempts": 1}]


def _start(deno: Path, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    full.update({"NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "PORT": str(kit.free_port()),
                 "SUPABASE_DB_URL": "postgresql://u:pw@127.0.0.1:1/db", **env})
    return subprocess.run([str(deno), "run", "-A", "--no-prompt",
                           str(kit.FUNCTIONS / name / "index.ts")],
                          env=full, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["jobs", "ai-job-runner", "enqueue"])
def test_no_function_starts_when_the_two_tokens_are_one(deno_bin: Path, name: str) -> None:
    out = _start(deno_bin, name, {"AGENT_TOKEN": TOKEN, "ADMIN_TOKEN": TOKEN})
    assert out.returncode == 2
    assert "AGENT_TOKEN and ADMIN_TOKEN must differ" in out.stderr and TOKEN not in out.stderr


def _call(url: str, org: str, headers: dict[str, str], method: str = "GET",
          body: Any = None) -> tuple[int, dict[str, Any]]:
    response = httpx.request(method, url, json=body, timeout=30,
                             headers={"X-Organization-Id": org, **headers})
    return response.status_code, response.json()


def test_each_function_takes_only_its_own_token(deno_bin: Path, db_url: str, org: str) -> None:
    env = {"ADMIN_TOKEN": ADMIN}
    with functions(deno_bin, "enqueue", db_url, **env) as [enq], \
            functions(deno_bin, "jobs", db_url, **env) as [jobs]:
        assert _call(enq.url, org, {"X-Agent-Token": ADMIN}, "POST", {"type": "echo"})[0] == 401
        assert _call(enq.url, org, {"X-Admin-Token": ADMIN}, "POST", {"type": "echo"})[0] == 401
        status, created = _call(enq.url, org, {"X-Agent-Token": TOKEN}, "POST", {"type": "echo"})
        assert status == 201
        assert _call(jobs.url, org, {"X-Agent-Token": TOKEN})[0] == 401
        assert _call(jobs.url, org, {"X-Admin-Token": TOKEN})[0] == 401
        status, body = _call(f"{jobs.url}/{created['id']}", org, {"X-Admin-Token": ADMIN})
        assert status == 200 and body["job"]["history"][0]["data"] == {"by": "enqueue"}


def test_without_an_admin_token_the_operator_api_is_off(
        deno_bin: Path, db_url: str, org: str) -> None:
    with functions(deno_bin, "jobs", db_url) as [jobs]:
        status, body = _call(jobs.url, org, {"X-Admin-Token": TOKEN})
        # said once, in the function's log (read by a thread of its own: waited for)
        kit.wait_until(lambda: jobs.events("operator_api_off"), 30, "operator_api_off")
    assert status == 503 and "ADMIN_TOKEN" in body["error"]
