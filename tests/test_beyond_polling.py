"""Adaptive idle, wake-ups, several queues and the call budget: rules in fake time, then the
real process over loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import structlog

from queue_pump.config import ConfigError, from_mapping
from queue_pump.loop.budget import TokenBucket
from queue_pump.loop.client import IDLE, Outcome, Processed
from queue_pump.loop.pump import Lane, Policy, Pump
from queue_pump.loop.waits import Waker, stop_or_timeout
from queue_pump.observe.health import HealthConfig, HealthServer
from queue_pump.observe.state import Stats
from tests.support.env import BASE_ENV, FakeTime
from tests.support.proc import finish, pump_env, start
from tests.support.reference_process import reference_runner
from tests.support.runner_double import JOB, Reply, free_port, runner_double

ADAPTIVE = Policy(idle_sleep_s=10.0, idle_max_sleep_s=60.0, tick_sleep_s=0.25, backoff_base_s=1.0,
                  backoff_max_s=60.0, http_timeout_s=1800.0, shutdown_grace_s=30.0, log_every=10)
DONE = Processed(job_id="j", job_type="t", status="done")


def scripted(items: list[Outcome], stop: asyncio.Event, left: list[int]) -> Any:
    """Answers from ``items``; the run stops once every lane's script is used up."""
    async def call() -> Outcome:
        if not items:
            return IDLE
        item = items.pop(0)
        left[0] -= 1
        if left[0] == 0:
            stop.set()
        return item
    return call


def run_lanes(lanes: dict[str, list[Outcome]], fake: FakeTime, policy: Policy = ADAPTIVE,
              budget: TokenBucket | None = None,
              logs: bool = False) -> tuple[Pump, Stats]:
    async def go() -> tuple[Pump, Stats]:
        stop = asyncio.Event()
        stats = Stats(clock=fake.clock)
        left = [sum(len(items) for items in lanes.values())]
        pump = Pump([Lane(q, 1, scripted(items, stop, left)) for q, items in lanes.items()],
                    policy,
                    stats, structlog.get_logger(), stop=stop, pause=fake.pause,
                    clock=fake.clock, rng=random.Random(5), budget=budget)
        await pump.run()
        return pump, stats
    return asyncio.run(go())


# --- adaptive idle ------------------------------------------------------------------------

def test_idle_sleep_doubles_per_idle_answer_up_to_the_max() -> None:
    assert [ADAPTIVE.idle_pause_s(n) for n in range(1, 7)] == [10, 20, 40, 60, 60, 60]
    off = Policy(**{**ADAPTIVE.__dict__, "idle_max_sleep_s": 10.0})
    assert {off.idle_pause_s(n) for n in range(1, 50)} == {10.0}
    assert ADAPTIVE.idle_pause_s(10_000) == 60.0  # no overflow on a long quiet spell


def test_a_processed_job_snaps_back_to_tick_pace(fake_time: FakeTime) -> None:
    _, stats = run_lanes({"agent": [IDLE, IDLE, IDLE, IDLE, DONE, IDLE, DONE]}, fake_time)
    p = fake_time.pauses
    bases = [10, 20, 40, 60]
    assert all(b * 0.9 <= got <= b * 1.1 for b, got in zip(bases, p[:4], strict=True))
    assert p[4] == 0.25  # the job: tick pace
    assert 9 <= p[5] <= 11  # and the idle streak starts over
    assert stats.snapshot()["idle_sleep_s"] == {"agent": 10.0}


def test_only_idle_sleeps_are_wakeable(fake_time: FakeTime) -> None:
    from queue_pump.loop.failures import CallError, ErrorKind

    async def go() -> None:
        stop = asyncio.Event()
        items: list[Any] = [IDLE, DONE, CallError(ErrorKind.RETRYABLE, "connect"), DONE]

        async def call() -> Outcome:
            item = items.pop(0)
            if not items:
                stop.set()
            if isinstance(item, Exception):
                raise item
            return item  # type: ignore[no-any-return]

        await Pump([Lane("agent", 1, call)], ADAPTIVE, Stats(clock=fake_time.clock),
                   structlog.get_logger(), stop=stop, pause=fake_time.pause,
                   clock=fake_time.clock).run()

    asyncio.run(go())
    assert fake_time.wakeable == [True, False, False, False]  # idle, tick, backoff, tick


def test_each_queue_keeps_its_own_idle_streak(fake_time: FakeTime) -> None:
    _, stats = run_lanes({"quiet": [IDLE] * 4, "busy": [DONE, DONE, DONE, IDLE]}, fake_time)
    assert stats.snapshot()["idle_sleep_s"] == {"quiet": 60.0, "busy": 10.0}


# --- wake-ups -------------------------------------------------------------------------------

def test_a_wake_ends_wakeable_pauses_at_once_and_only_those() -> None:
    async def go() -> tuple[float, float]:
        stop, waker = asyncio.Event(), Waker()
        pause = stop_or_timeout(stop, waker)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, waker.wake)
        t0 = loop.time()
        await asyncio.gather(pause(30, wakeable=True), pause(30, wakeable=True))
        woken = loop.time() - t0
        loop.call_later(0.05, waker.wake)
        t0 = loop.time()
        await pause(0.3)  # a backoff: the wake must not cut it short
        return woken, loop.time() - t0

    woken, backoff = asyncio.run(go())
    assert woken < 1.0 and backoff >= 0.29


def test_a_wake_during_a_call_is_not_lost(fake_time: FakeTime) -> None:
    async def go() -> int:
        stop, waker, calls = asyncio.Event(), Waker(), 0

        async def call() -> Outcome:
            nonlocal calls
            calls += 1
            if calls == 1:
                waker.wake()  # the insert's trigger fires while this call is answering idle
            if calls == 2:
                stop.set()
            return IDLE

        await Pump([Lane("agent", 1, call)], ADAPTIVE, Stats(clock=fake_time.clock),
                   structlog.get_logger(), stop=stop, pause=fake_time.pause,
                   clock=fake_time.clock, waker=waker).run()
        return calls

    assert asyncio.run(go()) == 2
    assert len(fake_time.pauses) == 1  # no idle sleep between the woken call and the next


def wake_request(url: str, token: str | None, method: str = "POST") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + "/wake", method=method, data=b"" if method == "POST"
                                     else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_wake_endpoint_needs_the_token_and_exists_only_with_one() -> None:
    token = "w" * 24
    woken: list[int] = []
    server = HealthServer(Stats(), HealthConfig("127.0.0.1", 0, wake_token=token),
                          wake=lambda: woken.append(1))
    server.start()
    closed = HealthServer(Stats(), HealthConfig("127.0.0.1", 0), wake=lambda: woken.append(1))
    closed.start()
    try:
        assert wake_request(server.url, None)[0] == 401
        assert wake_request(server.url, "w" * 23)[0] == 401
        assert wake_request(server.url, token + "x")[0] == 401
        assert wake_request(server.url, token, method="GET")[0] == 405
        assert woken == []
        assert wake_request(server.url, token) == (202, {"woken": True})
        assert woken == [1]
        assert wake_request(closed.url, token)[0] == 404  # no token configured: no endpoint
        assert woken == [1]
    finally:
        server.close()
        closed.close()


# --- call budget ------------------------------------------------------------------------------

def test_the_budget_paces_calls_and_logs_once_when_it_bites(
        fake_time: FakeTime, logs: list[dict[str, Any]]) -> None:
    policy = Policy(**{**ADAPTIVE.__dict__, "tick_sleep_s": 0.0})
    bucket = TokenBucket(per_hour=360, capacity=1, clock=fake_time.clock)  # one call per 10 s
    run_lanes({"agent": [DONE] * 6}, fake_time, policy=policy, budget=bucket)
    paced = [p for p in fake_time.pauses if p > 0]
    assert paced == pytest.approx([10.0] * 5)
    assert len([e for e in logs if e["event"] == "budget_limiting"]) == 1


# --- configuration ------------------------------------------------------------------------------

def test_queues_parse_and_replace_the_single_queue() -> None:
    s = from_mapping({**BASE_ENV, "QUEUE_PUMP_QUEUES": "agent:2, render:1,mail"})
    assert s.lanes == (("agent", 2), ("render", 1), ("mail", 1))
    assert s.total_concurrency == 4
    assert from_mapping(BASE_ENV).lanes == (("agent", 1),)


@pytest.mark.parametrize("env,needle", [
    ({"QUEUE_PUMP_QUEUES": "agent:2", "QUEUE_PUMP_QUEUE": "x"},
     "QUEUE_PUMP_QUEUES is set together with QUEUE_PUMP_QUEUE"),
    ({"QUEUE_PUMP_QUEUES": "agent:2", "QUEUE_PUMP_CONCURRENCY": "3"}, "together with"),
    ({"QUEUE_PUMP_QUEUES": "agent:0"}, "QUEUE_PUMP_QUEUES has 'agent:0'"),
    ({"QUEUE_PUMP_QUEUES": "agent:x"}, "expected name:concurrency"),
    ({"QUEUE_PUMP_QUEUES": "a b:1"}, "QUEUE_PUMP_QUEUES has 'a b:1'"),
    ({"QUEUE_PUMP_QUEUES": "agent:1,agent:2"}, "names 'agent' twice"),
    ({"QUEUE_PUMP_QUEUES": "a:200,b:100"}, "adds up to 300 loops"),
    ({"QUEUE_PUMP_IDLE_MAX_SLEEP_MS": "5000"}, "QUEUE_PUMP_IDLE_MAX_SLEEP_MS=5000 is below"),
    ({"QUEUE_PUMP_WAKE_TOKEN": "short"}, "QUEUE_PUMP_WAKE_TOKEN is 5 characters long"),
    ({"QUEUE_PUMP_MAX_CALLS_PER_HOUR": "-1"}, "QUEUE_PUMP_MAX_CALLS_PER_HOUR='-1' is out of range"),
])
def test_beyond_polling_config_errors(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({**BASE_ENV, **env})
    assert len(info.value.problems) == 1 and needle in info.value.problems[0]


def test_defaults_keep_the_node_pumps_behaviour() -> None:
    s = from_mapping(BASE_ENV)
    assert s.idle_max_sleep_s == s.idle_sleep_s == 10.0
    assert (s.max_calls_per_hour, s.wake_token, s.schedules) == (0, "", "")


# --- the real process ------------------------------------------------------------------------

@pytest.mark.e2e
def test_adaptive_idle_doubles_the_sleep_after_each_idle_answer() -> None:
    # 100 ms -> 1.6 s: the gaps between idle calls are at least 90, 180, 360, 720 ms (the
    # sleeps less their 10 % jitter). Lower bounds only: a busy machine makes gaps longer, never
    # shorter, but for when the double's thread gets to note a call's arrival: 50 ms of that
    # is allowed, which still fails a pump polling every 100 ms from the third gap on. How many
    # calls that saves over fixed polling is measured in bench/ (modes).
    with runner_double(lambda i: Reply()) as adaptive:
        proc = start(pump_env(adaptive.url, QUEUE_PUMP_IDLE_SLEEP_MS="100",
                              QUEUE_PUMP_IDLE_MAX_SLEEP_MS="1600"))
        try:
            deadline = time.monotonic() + 30
            while len(adaptive.seen) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert finish(proc, 0).code == 0
    at = [seen.at for seen in adaptive.seen[:5]]
    assert len(at) == 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(at)]
    for n, gap in enumerate(gaps):
        assert gap >= 0.9 * 0.1 * 2**n - 0.05, gaps


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["http", "signal"])
def test_a_wake_makes_an_idle_pump_claim_a_new_job_before_its_idle_sleep_ends(
        how: str, tmp_path: Path) -> None:
    # The pump sleeps 60 s when idle: a job claimed well before that was claimed by the wake.
    # How fast (tens of ms) is a timing, measured in bench/ (modes, wake latencies).
    token = "wake-token-0123456789"
    health = free_port()
    with reference_runner(free_port(), str(tmp_path / "jobs.sqlite3")) as runner:
        pump = start(pump_env(runner.url, QUEUE_PUMP_IDLE_SLEEP_MS="60000",
                              QUEUE_PUMP_HEALTH_PORT=str(health), QUEUE_PUMP_WAKE_TOKEN=token))
        try:
            deadline = time.monotonic() + 10
            while runner.stats()["calls"]["idle"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            job_id = runner.enqueue([{"type": "urgent"}])["jobs"][0]["id"]
            woke_at = time.time()
            if how == "http":
                assert wake_request(f"http://127.0.0.1:{health}", token)[0] == 202
            else:
                pump.send_signal(signal.SIGUSR1)
            while runner.job(job_id)["startedAt"] is None and time.time() - woke_at < 30:
                time.sleep(0.01)
            pickup_s = runner.job(job_id)["startedAt"] - woke_at
        finally:
            pump.send_signal(signal.SIGTERM)
            done = finish(pump, time.monotonic())
    assert pickup_s < 30, f"picked up {pickup_s:.1f} s after the wake: not by the wake"
    assert done.code == 0


@pytest.mark.e2e
def test_two_queues_drain_independently() -> None:
    # 'stuck' always answers 503; 'flow' has 5 jobs. One process pumps both: flow must drain
    # while stuck backs off on its own.
    flow_jobs = iter(range(5))

    def by_queue(i: int) -> Reply:
        path = double.seen[i].path
        if "queue=stuck" in path:
            return Reply(status=503)
        return JOB if next(flow_jobs, None) is not None else Reply()

    with runner_double(by_queue) as double:
        env = pump_env(double.url, QUEUE_PUMP_QUEUES="stuck:1,flow:2",
                       QUEUE_PUMP_TICK_SLEEP_MS="0", QUEUE_PUMP_BACKOFF_BASE_MS="200",
                       QUEUE_PUMP_BACKOFF_MAX_MS="400")
        done = finish(start(env, "--drain"), time.monotonic(), timeout_s=30)
    paths = [s.path for s in double.seen]
    assert sum("queue=flow" in p for p in paths) >= 6  # 5 jobs and the idle answer
    assert done.named("queue_drained")[0]["queue"] == "flow"
    failed = done.named("call_failed")
    assert failed and {e["queue"] for e in failed} == {"stuck"}
    assert done.code == 1  # stuck gave up after 5 failures, as --drain does


@pytest.mark.e2e
def test_the_call_budget_holds_under_load() -> None:
    with runner_double(lambda i: JOB) as double:
        env = pump_env(double.url, QUEUE_PUMP_CONCURRENCY="4", QUEUE_PUMP_TICK_SLEEP_MS="0",
                       QUEUE_PUMP_MAX_CALLS_PER_HOUR="7200")  # 2 calls/s
        proc = start(env)
        double.wait_for(1)
        t0 = time.monotonic()
        time.sleep(2.0)
        calls = len(double.seen)
        elapsed = time.monotonic() - t0
        proc.send_signal(signal.SIGTERM)
        done = finish(proc, time.monotonic())
    # A burst of 4 (one per loop), then 2/s; without the budget this runner allows thousands.
    assert calls <= 4 + 2 * elapsed + 2
    assert calls >= 4
    assert len(done.named("budget_limiting")) == 1
    assert done.code == 0


def test_wakes_within_an_interval_are_merged_into_one_at_its_end() -> None:
    async def go() -> list[int]:
        waker = Waker(min_interval_s=0.05)
        seen = []
        first = waker.current()
        for _ in range(1000):
            waker.wake()
        seen.append(waker.generation)  # the first is delivered at once, the rest wait
        assert first.is_set()
        await waker.current().wait()  # the merged one, at the end of the interval
        seen.append(waker.generation)
        waker.wake()  # within the next interval again: one more, later
        seen.append(waker.generation)
        await waker.current().wait()
        seen.append(waker.generation)
        return seen

    assert asyncio.run(go()) == [1, 2, 2, 3]
