"""The reference runner over real HTTP on loopback: auth, claim and run, retries, enqueue and
dedupe, stats, every fault knob, graceful close and lease recovery."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from queue_pump.reference_runner import (
    RUNNER_PATH,
    Faults,
    JobStore,
    RunningRunner,
    start_runner,
)
from tests.support.net import tls

TOKEN = "runner-SECRET-91c2"  # recognisable, so tests can assert it never leaks
ORG = "org-test"
AUTH = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG}


def run(fn: Callable[[], Awaitable[None]]) -> None:
    # A guard against a hang, not a speed bound: 400 calls take ~2 s, and far longer traced
    # for coverage on a loaded 2-core machine.
    asyncio.run(asyncio.wait_for(fn(), timeout=120))


@asynccontextmanager
async def runner(
    seed: int = 0, **kwargs: Any
) -> AsyncIterator[tuple[RunningRunner, httpx.AsyncClient]]:
    async with await start_runner(
        token=TOKEN, organization_id=ORG, rng=random.Random(seed), **kwargs
    ) as r, httpx.AsyncClient(base_url=r.url, headers=AUTH, timeout=5.0, verify=tls()) as client:
        yield r, client


async def call(
    client: httpx.AsyncClient, queue: str | None = "agent", worker: str = "w-1", **kw: Any
) -> httpx.Response:
    params = {"worker": "1"} if queue is None else {"worker": "1", "queue": queue}
    kw.setdefault("json", {"worker": True, "queue": queue} if queue else {"worker": True})
    return await client.post(RUNNER_PATH, params=params, headers={"X-Worker-Id": worker}, **kw)


async def enqueue(client: httpx.AsyncClient, body: Any) -> list[dict[str, Any]]:
    resp = await client.post("/jobs", json=body)
    assert resp.status_code in (200, 201), resp.text
    jobs: list[dict[str, Any]] = resp.json()["jobs"]
    return jobs


async def stats(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    resp = await client.get("/jobs/stats", params=params)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "missing X-Agent-Token"),
        ({"X-Organization-Id": ORG}, "missing X-Agent-Token"),
        ({"X-Agent-Token": TOKEN}, "missing X-Organization-Id"),
        ({"X-Agent-Token": "wrong", "X-Organization-Id": ORG}, "X-Agent-Token is not valid"),
        ({"X-Agent-Token": TOKEN + "x", "X-Organization-Id": ORG}, "X-Agent-Token is not valid"),
        ({"X-Agent-Token": TOKEN, "X-Organization-Id": "other"}, "X-Organization-Id"),
    ],
)
def test_bad_credentials_get_401_and_claim_nothing(headers: dict[str, str], needle: str) -> None:
    async def body() -> None:
        async with runner() as (r, client):
            await enqueue(client, {"type": "t"})
            async with httpx.AsyncClient(base_url=r.url, timeout=5.0, verify=tls()) as anon:
                for method, path in [
                    ("POST", RUNNER_PATH + "?worker=1&queue=agent"),
                    ("POST", "/jobs"),
                    ("GET", "/jobs/stats"),
                    ("GET", "/jobs/1"),
                    ("GET", "/_faults"),
                    ("POST", "/_faults"),
                ]:
                    resp = await anon.request(method, path, headers=headers, json={"type": "t"})
                    assert resp.status_code == 401, (path, resp.text)
                    assert needle in resp.json()["error"]
                    assert TOKEN not in resp.text
            s = await stats(client)
            assert s["queued"] == 1 and s["total"] == 1  # the POST /jobs above was refused
            assert s["calls"]["unauthorized"] == 1
            assert s["calls"]["total"] == 1

    run(body)


def test_healthz_needs_no_credentials() -> None:
    async def body() -> None:
        async with runner() as (r, _), httpx.AsyncClient(base_url=r.url, verify=tls()) as anon:
            resp = await anon.get("/healthz")
            assert resp.status_code == 200 and resp.json() == {"ok": True}

    run(body)


# -- claim and run ----------------------------------------------------------------------------


def test_idle_answer_when_queue_is_empty() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            await enqueue(client, {"type": "t", "queue": "other"})
            resp = await call(client, "agent")
            assert resp.status_code == 200
            assert resp.json() == {"processed": False, "jobs": 0, "backlog": 0}
            calls = (await stats(client))["calls"]
            assert (calls["total"], calls["idle"], calls["processed"]) == (1, 1, 0)

    run(body)


def test_claims_oldest_first_runs_and_records_worker() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            ids = [j["id"] for j in await enqueue(client, [{"type": f"t{i}"} for i in range(3)])]
            seen = []
            for i in range(3):
                resp = await call(client, worker=f"pump-{i}")
                data = resp.json()
                assert resp.status_code == 200
                assert data["processed"] is True
                assert data["status"] == "done" and data["yielded"] is False
                assert data["jobType"] == f"t{i}"
                assert (data["jobs"], data["backlog"]) == (1, 2 - i)  # the contract's counts
                seen.append(data["jobId"])
            assert seen == ids
            assert (await call(client)).json() == {"processed": False, "jobs": 0, "backlog": 0}
            job = (await client.get(f"/jobs/{ids[1]}")).json()
            assert job["status"] == "done" and job["attempts"] == 1
            assert job["workerId"] == "pump-1"
            assert job["startedAt"] <= job["finishedAt"]
            s = await stats(client)
            assert (s["done"], s["queued"], s["running"], s["total"]) == (3, 0, 0, 3)
            assert s["calls"]["processed"] == 3 and s["calls"]["idle"] == 1

    run(body)


def test_queue_from_query_wins_then_body_then_default() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            await enqueue(client, [{"type": "a", "queue": "qa"}, {"type": "b", "queue": "qb"},
                                   {"type": "d"}])
            resp = await client.post(RUNNER_PATH, params={"worker": "1", "queue": "qa"},
                                     json={"worker": True, "queue": "qb"})
            assert resp.json()["jobType"] == "a"
            resp = await client.post(RUNNER_PATH, params={"worker": "1"},
                                     json={"worker": True, "queue": "qb"})
            assert resp.json()["jobType"] == "b"
            resp = await client.post(RUNNER_PATH, params={"worker": "1"})  # no body at all
            assert resp.json()["jobType"] == "d"
            assert resp.json()["queue"] == "agent"

    run(body)


def test_duration_ms_sleeps_without_blocking_other_calls() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            await enqueue(client, [{"type": "slow", "queue": "slow",
                                    "payload": {"duration_ms": 1000}},
                                   {"type": "fast", "queue": "fast"}])
            started = time.monotonic()
            slow = asyncio.create_task(call(client, "slow"))
            await asyncio.sleep(0.05)
            mid = await stats(client)
            assert mid["running"] == 1 and mid["calls"]["inFlight"] == 1
            fast = await call(client, "fast")
            assert fast.json()["status"] == "done"
            assert not slow.done()  # the fast call was answered while the slow one slept
            slow_resp = await slow
            assert slow_resp.json()["status"] == "done"
            assert time.monotonic() - started >= 1.0  # and the slow one did sleep its 1000 ms

    run(body)


def test_fail_times_retries_then_succeeds() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            (job,) = await enqueue(client, {"type": "flaky", "payload": {"fail_times": 2}})
            answers = [(await call(client)).json() for _ in range(3)]
            assert [a["status"] for a in answers] == ["retry", "retry", "done"]
            assert [a["attempt"] for a in answers] == [1, 2, 3]
            assert "fail_times" in answers[0]["error"]
            assert all(a["jobId"] == job["id"] for a in answers)
            stored = (await client.get(f"/jobs/{job['id']}")).json()
            assert stored["status"] == "done" and stored["attempts"] == 3

    run(body)


def test_failures_past_max_attempts_end_failed() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            (job,) = await enqueue(client, {"type": "bad", "maxAttempts": 2,
                                            "payload": {"fail_times": 10}})
            statuses = [(await call(client)).json()["status"] for _ in range(2)]
            assert statuses == ["retry", "failed"]
            assert (await call(client)).json() == {"processed": False, "jobs": 0, "backlog": 0}
            stored = (await client.get(f"/jobs/{job['id']}")).json()
            assert stored["status"] == "failed" and stored["attempts"] == 2
            assert "fail_times" in stored["lastError"]
            assert (await stats(client))["failed"] == 1

    run(body)


def test_default_max_attempts_is_three() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            await enqueue(client, {"type": "bad", "payload": {"fail_rate": 1.0}})
            statuses = [(await call(client)).json()["status"] for _ in range(3)]
            assert statuses == ["retry", "retry", "failed"]

    run(body)


def test_fail_rate_is_reproducible_with_a_seeded_rng() -> None:
    async def outcomes(seed: int) -> list[str]:
        async with runner(seed=seed) as (_, client):
            await enqueue(client, [{"type": "coin", "maxAttempts": 1,
                                    "payload": {"fail_rate": 0.5}} for _ in range(40)])
            return [(await call(client)).json()["status"] for _ in range(40)]

    async def body() -> None:
        first, again, other = await outcomes(7), await outcomes(7), await outcomes(8)
        assert first == again
        assert first != other
        assert 8 <= first.count("failed") <= 32 and set(first) == {"done", "failed"}

    run(body)


def test_yield_flag_is_echoed() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            await enqueue(client, [{"type": "y", "payload": {"yield": True}}, {"type": "n"}])
            assert (await call(client)).json()["yielded"] is True
            assert (await call(client)).json()["yielded"] is False

    run(body)


# -- enqueue ----------------------------------------------------------------------------------


def test_enqueue_accepts_one_object_a_jobs_list_or_a_plain_list() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            resp = await client.post("/jobs", json={"type": "one", "payload": {"x": 1},
                                                    "queue": "q1", "maxAttempts": 5})
            assert resp.status_code == 201
            (job,) = resp.json()["jobs"]
            assert job == {"id": job["id"], "queue": "q1", "type": "one", "status": "queued",
                           "dedupeKey": None, "created": True}
            stored = (await client.get(f"/jobs/{job['id']}")).json()
            assert stored["payload"] == {"x": 1} and stored["maxAttempts"] == 5
            assert len(await enqueue(client, {"jobs": [{"type": "a"}, {"type": "b"}]})) == 2
            assert len(await enqueue(client, [{"type": "c"}])) == 1
            assert (await stats(client))["total"] == 4

    run(body)


def test_dedupe_key_makes_enqueue_idempotent_per_queue() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            first = await client.post("/jobs", json={"type": "t", "dedupeKey": "k1"})
            again = await client.post("/jobs", json={"type": "t", "dedupeKey": "k1",
                                                     "payload": {"ignored": True}})
            assert (first.status_code, again.status_code) == (201, 200)
            (a,), (b,) = first.json()["jobs"], again.json()["jobs"]
            assert a["created"] is True and b["created"] is False
            assert a["id"] == b["id"] and b["dedupeKey"] == "k1"
            other_queue = await enqueue(client, {"type": "t", "dedupeKey": "k1", "queue": "q2"})
            assert other_queue[0]["created"] is True and other_queue[0]["id"] != a["id"]
            batch = await enqueue(client, [{"type": "t", "dedupeKey": "k2"},
                                           {"type": "t", "dedupeKey": "k2"},
                                           {"type": "t", "dedupeKey": "k1"}])
            assert [j["created"] for j in batch] == [True, False, False]
            assert batch[0]["id"] == batch[1]["id"] and batch[2]["id"] == a["id"]
            assert (await stats(client))["total"] == 3
            # A job that already ran is still "the" job for its key.
            await call(client)
            done = await enqueue(client, {"type": "t", "dedupeKey": "k1"})
            assert done[0]["status"] == "done" and done[0]["created"] is False

    run(body)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("", "body is empty"),
        ("{not json", "not valid JSON"),
        ("42", "body must be a job object"),
        ("[]", "body is empty: nothing to enqueue"),
        ('{"jobs": []}', "jobs is empty"),
        ('{"jobs": {}}', "jobs must be a JSON list"),
        ('{"jobs": [], "type": "x"}', "no other field"),
        ("{}", "job.type is required"),
        ('{"type": ""}', "job.type must be a non-empty string"),
        ('{"type": 5}', "job.type must be a non-empty string"),
        ('{"type": "t", "payload": [1]}', "job.payload must be a JSON object"),
        ('{"type": "t", "queue": ""}', "job.queue"),
        ('{"type": "t", "dedupeKey": 7}', "job.dedupeKey"),
        ('{"type": "t", "maxAttempts": 0}', "job.maxAttempts"),
        ('{"type": "t", "maxAttempts": "3"}', "job.maxAttempts"),
        ('{"type": "t", "maxAttempts": true}', "job.maxAttempts"),
        ('{"type": "t", "dedupe_key": "k"}', "unknown field(s) dedupe_key"),
        ('{"type": "t", "payload": {"duration_ms": -1}}', "job.payload.duration_ms"),
        ('{"type": "t", "payload": {"duration_ms": "5"}}', "job.payload.duration_ms"),
        ('{"type": "t", "payload": {"fail_rate": 1.5}}', "job.payload.fail_rate"),
        ('{"type": "t", "payload": {"fail_times": 1.5}}', "job.payload.fail_times"),
        ('{"type": "t", "payload": {"yield": "yes"}}', "job.payload.yield"),
        ('[{"type": "ok"}, {"type": "t", "maxAttempts": -1}]', "body[1].maxAttempts"),
        ('{"jobs": [{"type": "ok"}, "nope"]}', "jobs[1] must be a JSON object"),
    ],
)
def test_bad_enqueue_input_is_a_400_naming_the_problem(raw: str, needle: str) -> None:
    async def body() -> None:
        async with runner() as (_, client):
            resp = await client.post("/jobs", content=raw,
                                     headers={"Content-Type": "application/json"})
            assert resp.status_code == 400
            assert "\n" not in resp.text
            assert needle in resp.json()["error"]
            assert (await stats(client))["total"] == 0  # a bad batch adds nothing at all

    run(body)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [("{oops", "not valid JSON"), ("[1]", "body must be a JSON object"),
     ('{"queue": 5}', "body.queue"), ('{"queue": ""}', "body.queue")],
)
def test_bad_runner_call_body_is_a_400_and_claims_nothing(raw: str, needle: str) -> None:
    async def body() -> None:
        async with runner() as (_, client):
            await enqueue(client, {"type": "t"})
            resp = await client.post(RUNNER_PATH, params={"worker": "1"}, content=raw)
            assert resp.status_code == 400
            assert needle in resp.json()["error"]
            s = await stats(client)
            assert s["queued"] == 1 and s["calls"]["badRequest"] == 1

    run(body)


# -- stats and lookups ------------------------------------------------------------------------


def test_stats_by_queue_and_filtered() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            await enqueue(client, [{"type": "t", "queue": "a"}, {"type": "t", "queue": "a"},
                                   {"type": "t", "queue": "b", "maxAttempts": 1,
                                    "payload": {"fail_times": 1}}])
            await call(client, "a")
            await call(client, "b")
            s = await stats(client)
            assert (s["queued"], s["done"], s["failed"], s["total"]) == (1, 1, 1, 3)
            assert s["byQueue"]["a"] == {"queued": 1, "running": 0, "done": 1, "failed": 0,
                                         "cancelled": 0,
                                         "total": 2}
            assert s["byQueue"]["b"]["failed"] == 1
            only_b = await stats(client, queue="b")
            assert list(only_b["byQueue"]) == ["b"] and only_b["total"] == 1
            empty = await stats(client, queue="nothing-here")
            assert empty["total"] == 0 and empty["byQueue"] == {
                "nothing-here": {"queued": 0, "running": 0, "done": 0, "failed": 0,
                                 "cancelled": 0,
                                 "total": 0}}
            assert s["faults"]["error_rate"] == 0.0

    run(body)


def test_get_job_and_json_errors_for_unknown_things() -> None:
    async def body() -> None:
        async with runner() as (_, client):
            missing = await client.get("/jobs/999")
            assert missing.status_code == 404 and "999" in missing.json()["error"]
            assert (await client.get("/jobs/" + "9" * 30)).status_code == 404
            nowhere = await client.get("/no/such/path")
            assert nowhere.status_code == 404 and "error" in nowhere.json()
            wrong_method = await client.get(RUNNER_PATH)
            assert wrong_method.status_code == 405 and "error" in wrong_method.json()

    run(body)


# -- faults -----------------------------------------------------------------------------------


def test_error_fault_answers_error_status_and_claims_nothing() -> None:
    async def body() -> None:
        async with runner(faults=Faults(error_rate=1.0, error_status=500)) as (r, client):
            await enqueue(client, {"type": "t"})
            resp = await call(client)
            assert resp.status_code == 500 and "Retry-After" not in resp.headers
            assert "injected" in resp.json()["error"]
            r.faults.error_status = 503
            r.faults.retry_after_s = 2
            resp = await call(client)
            assert resp.status_code == 503 and resp.headers["Retry-After"] == "2"
            s = await stats(client)
            assert s["queued"] == 1 and s["running"] == 0
            assert s["calls"]["faulted"] == 2 and s["calls"]["faultedByKind"]["error"] == 2

    run(body)


def test_rate_limit_fault_answers_429_with_retry_after() -> None:
    async def body() -> None:
        async with runner(faults=Faults(rate_limit_rate=1.0)) as (r, client):
            await enqueue(client, {"type": "t"})
            resp = await call(client)
            assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
            r.faults.retry_after_s = 0
            resp = await call(client)
            assert resp.status_code == 429 and resp.headers["Retry-After"] == "0"
            r.faults.retry_after_s = 1.2  # HTTP has whole seconds only: rounded up, never down
            resp = await call(client)
            assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
            s = await stats(client)
            assert s["queued"] == 1 and s["calls"]["faultedByKind"]["rateLimit"] == 3

    run(body)


def test_stall_fault_hangs_then_answers_504_and_claims_nothing() -> None:
    async def body() -> None:
        async with runner(faults=Faults(stall_rate=1.0, stall_s=0.2)) as (_, client):
            await enqueue(client, {"type": "t"})
            started = time.monotonic()
            resp = await call(client)
            assert time.monotonic() - started >= 0.2
            assert resp.status_code == 504
            s = await stats(client)
            assert s["queued"] == 1 and s["calls"]["faultedByKind"]["stall"] == 1
            with pytest.raises(httpx.ReadTimeout):
                await call(client, timeout=0.05)  # what a pump with a short timeout sees

    run(body)


def test_drop_fault_closes_the_connection_without_answering() -> None:
    async def body() -> None:
        async with runner(faults=Faults(drop_rate=1.0)) as (r, client):
            await enqueue(client, {"type": "t"})
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await call(client)
            r.faults.drop_rate = 0.0
            assert (await call(client)).json()["processed"] is True  # the server survived
            s = await stats(client)
            assert s["done"] == 1 and s["calls"]["faultedByKind"]["drop"] == 1

    run(body)


def test_fault_shares_follow_the_rates_and_the_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        faults = Faults(error_rate=0.3, rate_limit_rate=0.2)
        async with runner(seed=seed, faults=faults) as (_, client):
            return [(await call(client)).status_code for _ in range(200)]

    async def body() -> None:
        first, again = await statuses(3), await statuses(3)
        assert first == again
        assert 40 <= first.count(503) <= 80
        assert 20 <= first.count(429) <= 60
        assert first.count(200) + first.count(503) + first.count(429) == 200

    run(body)


def test_faults_can_be_read_and_changed_at_run_time() -> None:
    async def body() -> None:
        async with runner() as (r, client):
            await enqueue(client, {"type": "t"})
            resp = await client.post("/_faults", json={"error_rate": 1.0, "retry_after_s": 3})
            assert resp.status_code == 200 and resp.json()["error_rate"] == 1.0
            assert r.faults.error_rate == 1.0 and r.faults.error_status == 503
            assert (await call(client)).headers["Retry-After"] == "3"
            for bad, needle in [
                ({"error_rate": 2}, "error_rate must be between 0 and 1"),
                ({"error_rate": "0.1"}, "error_rate must be a number"),
                ({"error_status": 200}, "error_status must be between 400 and 599"),
                ({"drop_rate": 0.5}, "must not exceed 1"),
                ({"stall_s": -1}, "stall_s"),
                ({"bogus": 1}, "unknown fault setting(s): bogus"),
                ([], "body must be a JSON object"),
            ]:
                resp = await client.post("/_faults", json=bad)
                assert resp.status_code == 400, bad
                assert needle in resp.json()["error"]
            assert (await client.get("/_faults")).json() == r.faults.to_json()
            assert r.faults.error_rate == 1.0 and r.faults.drop_rate == 0.0  # nothing changed
            resp = await client.post("/_faults", json={"error_rate": 0})
            assert (await call(client)).json()["processed"] is True

    run(body)


def test_faults_are_validated_at_construction() -> None:
    with pytest.raises(ValueError, match="rate_limit_rate"):
        Faults(rate_limit_rate=-0.1)
    with pytest.raises(ValueError, match="must not exceed 1"):
        Faults(error_rate=0.5, stall_rate=0.6)


# -- shutdown and crash recovery --------------------------------------------------------------


def test_close_lets_runs_in_flight_finish() -> None:
    async def body() -> None:
        store = JobStore()
        r = await start_runner(db=store, token=TOKEN, organization_id=ORG)
        try:
            async with httpx.AsyncClient(base_url=r.url, headers=AUTH, verify=tls()) as client:
                await enqueue(client, {"type": "t", "payload": {"duration_ms": 200}})
                pending = asyncio.create_task(call(client))
                await asyncio.sleep(0.05)
                await r.close()
                resp = await pending
            assert resp.status_code == 200 and resp.json()["status"] == "done"
            s = store.stats()
            assert (s["done"], s["running"]) == (1, 0)
        finally:
            await r.close()
            store.close()

    run(body)


def test_close_gives_back_runs_that_outlast_the_drain_timeout() -> None:
    async def body() -> None:
        store = JobStore()
        r = await start_runner(db=store, token=TOKEN, organization_id=ORG, drain_timeout_s=0.1)
        try:
            async with httpx.AsyncClient(base_url=r.url, headers=AUTH, verify=tls()) as client:
                await enqueue(client, {"type": "t", "payload": {"duration_ms": 10_000}})
                pending = asyncio.create_task(call(client))
                await asyncio.sleep(0.05)
                started = time.monotonic()
                await r.close()
                assert time.monotonic() - started < 2
                resp = await pending
            assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
            job = store.get(1)
            assert job is not None
            assert (job.status, job.attempts) == ("queued", 0)  # the interrupted try is not held
        finally:
            store.close()

    run(body)


def test_expired_running_jobs_are_requeued_at_start_and_before_claims(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.sqlite3")
    long_ago = time.time() - 3600
    dead = JobStore(db, clock=lambda: long_ago)  # a runner that claimed, then died
    dead.enqueue("orphan")
    dead.enqueue("orphan-2")
    assert dead.claim("agent", "dead-runner") is not None
    dead.close()

    async def body() -> None:
        async with runner(db=db, lease_s=60) as (_, client):
            s = await stats(client)
            assert (s["queued"], s["running"]) == (2, 0)  # recovered at start-up
            # A runner sharing the file claims job 1 again and dies while we are up.
            other = JobStore(db, clock=lambda: long_ago)
            claimed = other.claim("agent", "dead-runner")
            other.close()
            assert claimed is not None and claimed.id == 1
            assert (await stats(client))["running"] == 1
            first = (await call(client)).json()
            assert (first["jobId"], first["attempt"], first["status"]) == (1, 3, "done")
            second = (await call(client)).json()
            assert (second["jobId"], second["attempt"]) == (2, 1)

    run(body)


def test_enqueue_refuses_runs_longer_than_the_lease() -> None:
    async def body() -> None:
        async with runner(lease_s=2) as (_, client):
            jobs = [{"type": "ok", "payload": {"duration_ms": 1999}},
                    {"type": "t", "payload": {"duration_ms": 2000}}]
            resp = await client.post("/jobs", json=jobs)
            assert resp.status_code == 400
            assert "body[1].payload.duration_ms must be shorter than the runner's lease (2 s" in (
                resp.json()["error"])

    run(body)


def test_runner_on_a_file_keeps_jobs_across_restarts(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.sqlite3")

    async def body() -> None:
        async with runner(db=db) as (_, client):
            await enqueue(client, [{"type": "a", "dedupeKey": "x"}, {"type": "b"}])
            await call(client)
        async with runner(db=db) as (_, client):
            again = await enqueue(client, {"type": "a", "dedupeKey": "x"})
            assert again[0]["created"] is False and again[0]["status"] == "done"
            assert (await call(client)).json()["jobType"] == "b"

    run(body)


def test_error_bodies_are_one_line_json() -> None:
    async def body() -> None:
        async with runner(faults=Faults(error_rate=1.0)) as (_, client):
            for resp in [await call(client), await client.post("/jobs", content="nope")]:
                assert resp.headers["Content-Type"].startswith("application/json")
                assert "\n" not in resp.text
                assert set(json.loads(resp.text)) == {"error"}

    run(body)


def test_a_store_failure_is_a_json_500_the_pump_can_retry() -> None:
    async def body() -> None:
        store = JobStore()
        async with runner(db=store) as (r, client):
            store.close()  # every claim now raises inside the runner
            resp = await call(client)
            assert resp.status_code == 500
            assert resp.json()["error"].startswith("internal error: ProgrammingError")
            assert r.counters.internal_error == 1 and r.counters.processed == 0

    run(body)
