"""The whole queue on real parts: pumps as processes -> Deno functions -> PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ..conftest import TOKEN
from ..support import proc
from . import kit

pytestmark = [pytest.mark.kit, pytest.mark.e2e]


@contextlib.contextmanager
def functions(deno: Path, name: str, db_url: str, count: int = 1,
              **env: str) -> Iterator[list[kit.DenoFunction]]:
    started: list[kit.DenoFunction] = []
    try:
        for _ in range(count):
            started.append(kit.DenoFunction(
                deno, name, {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": db_url, **env}))
        yield started
    finally:
        for fn in started:
            fn.stop()


def query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(sql, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def try_query(url: str, sql: str, *args: Any) -> list[dict[str, Any]] | None:
    """None while the database is down (a test stopped it)."""
    try:
        return query(url, sql, *args)
    except psycopg.OperationalError:
        return None


def enqueue_many(url: str, org: str, n: int, job_type: str = "echo",
                 payload: str = "{}") -> None:
    query(url, "select queue_pump.enqueue(%s, 'agent', %s, %s::jsonb)"
               " from generate_series(1, %s)", org, job_type, payload, n)


def post(url: str, body: Any, token: str = TOKEN, org: str = "org-1",
         method: str = "POST") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "X-Agent-Token": token, "X-Organization-Id": org, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def pump(fn: kit.DenoFunction, org: str, *args: str, **env: str) -> proc.Live:
    full = proc.pump_env(fn.base_url, ORGANIZATION_ID=org, QUEUE_PUMP_TICK_SLEEP_MS="0",
                         QUEUE_PUMP_IDLE_SLEEP_MS="200", QUEUE_PUMP_BACKOFF_BASE_MS="100",
                         QUEUE_PUMP_BACKOFF_MAX_MS="1000", **env)
    return proc.Live(proc.start(full, *args))


def stop(live: proc.Live) -> int:
    if live.proc.poll() is None:
        live.proc.terminate()
    code, _ = live.finish(timeout_s=30)
    return code


@pytest.mark.parametrize("batch", [1, 10])
def test_three_pumps_of_eight_drain_1500_jobs_over_two_functions_each_once(
        deno_bin: Path, db_url: str, org: str, batch: int) -> None:
    enqueue_many(db_url, org, 1500)
    with functions(deno_bin, "ai-job-runner", db_url, count=2, DB_POOL_MAX="12",
                   JOB_BATCH_SIZE=str(batch)) as fns:
        pumps = [pump(fns[i % 2], org, "--drain", QUEUE_PUMP_CONCURRENCY="8",
                      QUEUE_PUMP_WORKER_ID=f"pump-{i}") for i in range(3)]
        codes = [p.finish(timeout_s=180)[0] for p in pumps]
    assert codes == [0, 0, 0]
    rows = query(db_url, "select status, attempts, count(*) as n from queue_pump.jobs"
                         " where organization_id = %s group by 1, 2", org)
    assert rows == [{"status": "done", "attempts": 1, "n": 1500}]
    # Calls that ran work (calls less idle and failed ones); a call runs up to `batch` jobs.
    per_pump = [sum(e["calls"] - e["idle"] - e["errors"] for e in p.events("pump_stopped"))
                for p in pumps]
    if batch == 1:
        assert sum(per_pump) == 1500, per_pump
    else:
        assert 1500 / batch <= sum(per_pump) < 1500, per_pump
    assert all(n > 0 for n in per_pump), f"a pump got no work: {per_pump}"
    assert sum(1 for f in fns for _ in f.events("listening")) == 2


def test_a_job_whose_function_is_killed_is_run_again_after_its_lease(
        deno_bin: Path, db_url: str, org: str) -> None:
    [jid] = [r["id"] for r in query(
        db_url, "select queue_pump.enqueue(%s, 'agent', 'sleep', '{\"ms\": 30000}') as id", org)]
    with functions(deno_bin, "ai-job-runner", db_url, count=2, JOB_LEASE_SECONDS="3") as fns:
        first = pump(fns[0], org, QUEUE_PUMP_WORKER_ID="first")
        kit.wait_until(lambda: query(db_url, "select 1 from queue_pump.jobs where id = %s"
                                             " and status = 'running'", jid), 30, "the claim")
        fns[0].kill()  # SIGKILL in the middle of the job: nothing is written
        # The rerun must not sleep a minute too; the job's data is the test's to change.
        query(db_url, "update queue_pump.jobs set payload = '{\"ms\": 10}' where id = %s", jid)
        second = pump(fns[1], org, QUEUE_PUMP_WORKER_ID="second")
        done = kit.wait_until(lambda: query(
            db_url, "select * from queue_pump.jobs where id = %s and status = 'done'", jid),
            30, "the rerun")
        assert stop(second) == 0
        assert stop(first) == 0
    assert done[0]["attempts"] == 2 and done[0]["result"] == {"slept_ms": 10}
    assert second.events("pump_stopped")[0]["processed"] == 1
    failed = first.events("call_failed")
    assert failed and failed[0]["kind"] == "retryable", failed[:1]


def test_postgres_down_then_up_the_pump_backs_off_and_every_job_finishes(
        deno_bin: Path, pg_bin: Path, org: str) -> None:
    with kit.cluster(pg_bin) as pg:
        pg.create_roles()
        url = pg.create_database("outage")
        kit.apply_migrations(url)
        enqueue_many(url, org, 300, "sleep", '{"ms": 20}')
        # DB_RECONNECT_MS=0: answer 503 at once rather than wait for the database to return
        # (test_hardening_functions.py tests the wait).
        with functions(deno_bin, "ai-job-runner", url, JOB_LEASE_SECONDS="3",
                       DB_RETRY_AFTER_SECONDS="2", DB_RECONNECT_MS="0") as fns:
            live = pump(fns[0], org, QUEUE_PUMP_CONCURRENCY="4")
            kit.wait_until(lambda: query(url, "select 1 from queue_pump.jobs"
                                              " where status = 'done' offset 30"), 60, "30 jobs")
            pg.stop("fast")
            failed = kit.wait_until(
                lambda: [e for e in live.events("call_failed") if e["status"] == 503], 30,
                "a 503 from the function")
            pg.start()
            kit.wait_until(lambda: try_query(
                url, "select 1 from queue_pump.jobs where status <> 'done' limit 1") == [],
                120, "every job done")
            assert stop(live) == 0
        rows = query(url, "select status, count(*) as n from queue_pump.jobs group by 1")
    assert rows == [{"status": "done", "n": 300}]
    # Retry-After starts at 1 s for a fresh outage and grows to DB_RETRY_AFTER_SECONDS.
    assert failed[0]["kind"] == "retryable" and 1 <= failed[0]["retry_after_s"] <= 2
    assert failed[0]["next_delay_s"] >= failed[0]["retry_after_s"], "Retry-After is a floor"
    assert TOKEN not in "".join(fns[0].lines)


def test_a_wrong_token_is_a_401_and_the_pump_names_the_setting(
        deno_bin: Path, db_url: str, org: str) -> None:
    enqueue_many(db_url, org, 1)
    with functions(deno_bin, "ai-job-runner", db_url) as [fn]:
        env = proc.pump_env(fn.base_url, ORGANIZATION_ID=org, AGENT_TOKEN="not-the-token-0123")
        result = proc.run(env, "--once", timeout_s=30)
    assert result.code == 1
    [failed] = result.named("call_failed")
    assert failed["status"] == 401 and failed["kind"] == "configuration"
    assert "AGENT_TOKEN" in failed["hint"]
    assert "X-Agent-Token" in failed["detail"]
    assert query(db_url, "select status from queue_pump.jobs where organization_id = %s",
                 org) == [{"status": "queued"}]


def test_the_runner_answers_the_contract_for_odd_calls(
        deno_bin: Path, db_url: str, org: str) -> None:
    with functions(deno_bin, "ai-job-runner", db_url,
                   ALLOWED_ORGANIZATION_IDS=f"{org},other") as [fn]:
        assert post(fn.url, {}, org=org) == (200, {"processed": False})
        assert post(fn.url, {}, org="intruder")[0] == 403
        assert post(fn.url, {}, org="")[0] == 401
        assert post(fn.url, None, org=org, method="GET")[0] == 405
        assert post(fn.base_url + "/functions/v1/elsewhere", {}, org=org)[0] == 404
        status, body = post(fn.url + "?queue=bad%20queue", {}, org=org)
        assert status == 400 and "queue must be" in body["error"]
        query(db_url, "select queue_pump.enqueue(%s, 'q2', 'fail', max_attempts => 2)", org)
        status, body = post(fn.url + "?queue=q2", {"queue": "ignored"}, org=org)
        assert status == 200 and body["status"] == "retry" and body["processed"] is True
        assert "always fails" in body["error"]
        query(db_url, "select queue_pump.enqueue(%s, 'q3', 'no-such-type', max_attempts => 1)",
              org)
        status, body = post(fn.url, {"queue": "q3"}, org=org)
        assert (status, body["status"]) == (200, "failed")
        assert "no handler" in body["error"]


def test_enqueue_function_dedupes_and_refuses_bad_bodies(
        deno_bin: Path, db_url: str, org: str) -> None:
    job = {"type": "echo", "payload": {"n": 1}, "dedupeKey": "k-1", "maxAttempts": 2}
    with functions(deno_bin, "enqueue", db_url) as [fn]:
        first = post(fn.url, job, org=org)
        again = post(fn.url, {**job, "payload": {"n": 2}}, org=org)
        other_org = post(fn.url, job, org=org + "-b")
        bad = [post(fn.url, body, org=org) for body in (
            {"payload": {}}, {"type": "echo", "dedupe_key": "x"},
            {"type": "echo", "runAt": "tomorrow"}, {"type": "echo", "maxAttempts": 0}, [1])]
        wrong = post(fn.url, job, token="nope", org=org)
    assert first[0] == 201 and first[1]["created"] is True
    assert again == (200, {"id": first[1]["id"], "created": False})
    assert other_org[0] == 201 and other_org[1]["id"] != first[1]["id"]
    assert [s for s, _ in bad] == [400] * 5
    for _, body in bad:
        assert "\n" not in body["error"] and len(body["error"]) < 200
    assert "dedupe_key" in bad[1][1]["error"] and "dedupeKey" in bad[1][1]["error"]
    assert wrong[0] == 401
    rows = query(db_url, "select payload, max_attempts from queue_pump.jobs"
                         " where organization_id = %s", org)
    assert rows == [{"payload": {"n": 1}, "max_attempts": 2}]


def test_a_schedule_fires_into_the_enqueue_function_once_across_two_pumps(
        deno_bin: Path, db_url: str, org: str, tmp_path: Path) -> None:
    with functions(deno_bin, "enqueue", db_url) as [enq], \
            functions(deno_bin, "ai-job-runner", db_url) as [runner]:
        schedules = tmp_path / "schedules.toml"
        schedules.write_text(
            '[[schedule]]\nname = "minutely"\ncron = "* * * * *"\n'
            f'url = "{enq.url}"\n'
            'body = { type = "echo", queue = "agent", payload = { for = "{window}" },'
            ' priority = 50, concurrencyKey = "nightly" }\n')
        pumps = [pump(runner, org, QUEUE_PUMP_SCHEDULES=str(schedules),
                      QUEUE_PUMP_WORKER_ID=f"p{i}") for i in range(2)]
        for p in pumps:
            p.wait_event("schedule_fired", timeout_s=30)
        kit.wait_until(lambda: query(
            db_url, "select 1 from queue_pump.jobs where organization_id = %s"
                    " and status = 'done'", org), 30, "the scheduled job done")
        codes = [stop(p) for p in pumps]
    assert codes == [0, 0]
    fired = [e for p in pumps for e in p.events("schedule_fired")]
    jobs = query(db_url, "select dedupe_key, payload, status, priority, concurrency_key"
                         " from queue_pump.jobs where organization_id = %s", org)
    # Two pumps sent each window (usually one; two if a minute began meanwhile): the function
    # made one job per window and told the other sender it existed.
    windows = {e["window"] for e in fired}
    assert len(jobs) == len(windows) >= 1
    for window in windows:
        created = sorted(e["created"] for e in fired if e["window"] == window)
        assert created[-1] is True and created.count(True) == 1, (window, created)
    assert {j["dedupe_key"] for j in jobs} == {f"minutely:{w}" for w in windows}
    assert {j["payload"]["for"] for j in jobs} == windows
    # Issue 24: a schedule's body sets the job's priority and concurrency key.
    assert {(j["priority"], j["concurrency_key"]) for j in jobs} == {(50, "nightly")}


def test_sigterm_lets_the_call_in_flight_finish_then_the_function_exits(
        deno_bin: Path, db_url: str, org: str) -> None:
    query(db_url, "select queue_pump.enqueue(%s, 'agent', 'sleep', '{\"ms\": 1500}')", org)
    answers: list[tuple[int, Any]] = []
    with functions(deno_bin, "ai-job-runner", db_url) as [fn]:
        caller = threading.Thread(target=lambda: answers.append(post(fn.url, {}, org=org)))
        caller.start()
        kit.wait_until(lambda: query(db_url, "select 1 from queue_pump.jobs"
                                             " where status = 'running'"), 30, "the claim")
        fn.proc.send_signal(signal.SIGTERM)
        caller.join(timeout=30)
        code = fn.proc.wait(timeout=30)
    assert code == 0
    assert answers and answers[0][0] == 200 and answers[0][1]["status"] == "done"
    assert query(db_url, "select status from queue_pump.jobs") == [{"status": "done"}]


@pytest.mark.parametrize(("env", "expected"), [
    ({"AGENT_TOKEN": "short"}, "AGENT_TOKEN is 5 characters; use at least 16"),
    ({"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": "postgresql://u:TopSecretPw@[::1:5432/db"},
     "SUPABASE_DB_URL is not a postgresql:// URL"),
    ({"AGENT_TOKEN": TOKEN, "JOB_LEASE_SECONDS": "soon"},
     'JOB_LEASE_SECONDS must be a whole number from 2 to 86400, got "soon"'),
    ({"AGENT_TOKEN": TOKEN, "JOB_BATCH_SIZE": "101"},
     'JOB_BATCH_SIZE must be a whole number from 1 to 100, got "101"'),
    ({"AGENT_TOKEN": TOKEN, "DB_RETRY_AFTER_SECONDS": "0"},
     'DB_RETRY_AFTER_SECONDS must be a whole number from 1 to 3600, got "0"'),
])
def test_a_misconfigured_function_says_one_line_and_exits_2(
        deno_bin: Path, env: dict[str, str], expected: str) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    full.update({"NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "PORT": str(kit.free_port()),
                 "SUPABASE_DB_URL": "postgresql://u:TopSecretPw@127.0.0.1:1/db", **env})
    out = subprocess.run([str(deno_bin), "run", "-A", "--no-prompt",
                          str(kit.FUNCTIONS / "ai-job-runner" / "index.ts")],
                         env=full, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ai-job-runner: {expected}"), lines
    assert "TopSecretPw" not in out.stderr + out.stdout
