"""Adaptive idle, wake-ups, several queues and the call budget on the real process over loopback."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.net import wake
from tests.support.proc import Live, finish, pump_env, start, wait_until
from tests.support.reference_process import reference_runner
from tests.support.runner_double import JOB, Reply, free_port, runner_double


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
                assert wake(f"http://127.0.0.1:{health}", token)[0] == 202
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
def test_an_idle_queue_costs_one_loops_calls_at_concurrency_8(tmp_path: Path) -> None:
    # Counted, not timed: every call's debug line names its loop. While the queue is empty,
    # the calls after each loop's first are one loop's (the prober's), so N idle periods cost
    # about N calls, not 8 N; then a burst with a backlog brings every loop back.
    with reference_runner(free_port(), str(tmp_path / "jobs.sqlite3")) as runner:
        live = Live(start(pump_env(runner.url, QUEUE_PUMP_CONCURRENCY="8",
                                   QUEUE_PUMP_IDLE_SLEEP_MS="100", QUEUE_PUMP_TICK_SLEEP_MS="0",
                                   QUEUE_PUMP_LOG_LEVEL="debug")))
        try:
            wait_until(lambda: runner.stats()["calls"]["idle"] >= 8 + 30)
            runner.enqueue([{"type": "demo", "payload": {"duration_ms": 50}}] * 40)
            wait_until(lambda: runner.stats()["done"] >= 40)
        finally:
            live.proc.send_signal(signal.SIGTERM)
            code, _ = live.finish()
    calls = live.events("call")
    first_work = next(i for i, e in enumerate(calls) if e["outcome"] == "processed")
    assert Counter(e["loop"] for e in calls[:8]) == Counter(f"agent-{i}" for i in range(8))
    # After each loop's first call, one loop probes: consecutive idle calls come from the same
    # loop. Loops that each polled on their own (main) switch at nearly every call; a hand-over
    # (an idle answer slow enough to look like a job running lets one loop out) is rare.
    probes = [e["loop"] for e in calls[8:first_work]]
    switches = sum(a != b for a, b in itertools.pairwise(probes))
    assert len(probes) >= 30 - 8
    assert switches <= len(probes) // 5, probes
    assert len({e["loop"] for e in calls[first_work:] if e["outcome"] == "processed"}) == 8
    assert code == 0


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
