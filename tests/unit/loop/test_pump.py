"""The loop, in fake time: every rule of call -> outcome -> sleep/backoff, in milliseconds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
import structlog

from queue_pump.loop.client import IDLE, Outcome, Processed
from queue_pump.loop.failures import CallError, ErrorKind
from queue_pump.loop.pump import ExitCode, Lane, Mode, Policy, Pump
from queue_pump.loop.waits import stop_or_timeout
from queue_pump.observe.state import Stats
from tests.support.env import FakeTime

POLICY = Policy(idle_sleep_s=10.0, idle_max_sleep_s=10.0, tick_sleep_s=0.25, backoff_base_s=1.0,
                backoff_max_s=60.0,
                http_timeout_s=1800.0, shutdown_grace_s=30.0, log_every=10)
JOB = Processed(job_id="j1", job_type="t", status="done")


def err(reason: str = "http_status", kind: ErrorKind = ErrorKind.RETRYABLE,
        status: int | None = 500, retry_after: float | None = None) -> CallError:
    return CallError(kind, reason, status, retry_after)


class Script:
    """Answers calls from a list; when it runs out it sets stop, like an operator would."""

    def __init__(self, items: Sequence[Outcome | Exception], stop: asyncio.Event,
                 time: FakeTime | None = None, call_s: float = 0.0) -> None:
        self.items = list(items)
        self.stop = stop
        self.calls = 0
        self.time = time
        self.call_s = call_s

    async def __call__(self) -> Outcome:
        self.calls += 1
        if self.time:
            self.time.now += self.call_s
        if not self.items:
            self.stop.set()
            return IDLE
        item = self.items.pop(0)
        if not self.items:
            self.stop.set()
        if isinstance(item, Exception):
            raise item
        return item


def make_pump(script: Script, fake_time: FakeTime, stop: asyncio.Event, *,
              policy: Policy = POLICY, concurrency: int = 1, stats: Stats | None = None,
              rng: random.Random | None = None) -> Pump:
    return Pump([Lane("agent", concurrency, script)], policy,
                stats or Stats(clock=fake_time.clock), structlog.get_logger(),
                stop=stop, pause=fake_time.pause, clock=fake_time.clock,
                rng=rng or random.Random(3))


def run(items: Sequence[Outcome | Exception], fake_time: FakeTime, mode: Mode = Mode.FOREVER,
        **kw: Any) -> tuple[ExitCode, Script, Pump]:
    async def go() -> tuple[ExitCode, Script, Pump]:
        stop = asyncio.Event()
        script = Script(items, stop, fake_time)
        pump = make_pump(script, fake_time, stop, **kw)
        return await pump.run(mode), script, pump

    return asyncio.run(go())


def test_processed_sleeps_tick_idle_sleeps_jittered_idle(fake_time: FakeTime) -> None:
    code, script, _ = run([JOB, JOB, IDLE, JOB], fake_time)
    assert code is ExitCode.OK
    assert script.calls == 4
    tick, tick2, idle = fake_time.pauses[:3]
    assert tick == tick2 == 0.25
    assert 9.0 <= idle <= 11.0 and idle != 10.0


def test_errors_back_off_with_full_jitter_and_reset_on_success(fake_time: FakeTime) -> None:
    code, _, _ = run([err(), err(), err(), err(), JOB, err()], fake_time, rng=random.Random(11))
    assert code is ExitCode.OK
    backoffs = fake_time.pauses
    for attempt, delay in enumerate(backoffs[:4], start=1):
        assert 0 <= delay <= min(60.0, 2 ** (attempt - 1))
    assert backoffs[4] == 0.25
    assert backoffs[5] <= 1.0  # the streak was reset by the success


def test_retry_after_beats_the_cap(fake_time: FakeTime) -> None:
    run([err(status=429, retry_after=120.0), err(status=503, retry_after=3.0)], fake_time)
    first, second = fake_time.pauses[:2]
    assert 120.0 <= first <= 150.0 and 3.0 <= second <= 3.75  # the floor, and some jitter


@pytest.mark.parametrize("status", [401, 403, 404])
def test_configuration_errors_wait_the_cap_and_say_why(
        fake_time: FakeTime, logs: list[dict[str, Any]], status: int) -> None:
    error = CallError(ErrorKind.CONFIGURATION, "http_status", status, hint="check AGENT_TOKEN")
    run([error, error, error], fake_time)
    assert fake_time.pauses[:2] == [60.0, 60.0]
    failed = [e for e in logs if e["event"] == "call_failed"]
    assert failed[0]["log_level"] == "error"
    assert failed[0]["status"] == status and failed[0]["hint"] == "check AGENT_TOKEN"
    assert [e["attempt"] for e in failed] == [1, 2, 3]


def test_failure_lines_carry_attempt_and_next_delay_then_recovered(
        fake_time: FakeTime, logs: list[dict[str, Any]]) -> None:
    run([err(reason="connect", status=None), err(reason="timeout", status=None), JOB], fake_time)
    failed = [e for e in logs if e["event"] == "call_failed"]
    assert [(e["reason"], e["attempt"]) for e in failed] == [("connect", 1), ("timeout", 2)]
    assert all(isinstance(e["next_delay_s"], float) for e in failed)
    recovered = [e for e in logs if e["event"] == "recovered"]
    assert recovered and recovered[0]["after_failures"] == 2


def test_an_unexpected_exception_does_not_kill_the_loop(fake_time: FakeTime,
                                                         logs: list[dict[str, Any]]) -> None:
    code, script, _ = run([RuntimeError("bug"), JOB, IDLE], fake_time)
    assert code is ExitCode.OK and script.calls == 3
    assert any(e.get("reason") == "internal" for e in logs)


def test_progress_every_n_jobs_and_every_yielded_job(fake_time: FakeTime,
                                                      logs: list[dict[str, Any]]) -> None:
    policy = Policy(**{**POLICY.__dict__, "log_every": 3})
    yielded = Processed(job_id="y", job_type="t", status="done", yielded=True)
    run([JOB, JOB, JOB, yielded, JOB, JOB], fake_time, policy=policy)
    progress = [e for e in logs if e["event"] == "progress"]
    assert [e["processed"] for e in progress] == [3, 4, 6]
    assert progress[1]["yielded"] is True and progress[1]["job_id"] == "y"
    assert {"rate_per_s", "job_type", "job_status", "queue"} <= progress[0].keys()


def test_idle_lines_are_throttled(fake_time: FakeTime, logs: list[dict[str, Any]]) -> None:
    # 20 idle answers at ~10 s each span ~200 s: the first line, then about one a minute.
    run([JOB] + [IDLE] * 20 + [JOB, IDLE], fake_time)
    idle = [e for e in logs if e["event"] == "idle"]
    assert 3 <= len(idle) <= 6
    assert idle[-1]["idle_calls"] == 1  # the first idle after new work is always logged


def test_once_makes_exactly_one_call(fake_time: FakeTime) -> None:
    code, script, _ = run([JOB, JOB], fake_time, mode=Mode.ONCE, concurrency=4)
    assert (code, script.calls) == (ExitCode.OK, 1)
    code, script, _ = run([IDLE], fake_time, mode=Mode.ONCE)
    assert (code, script.calls) == (ExitCode.OK, 1)
    code, script, _ = run([err(), JOB], fake_time, mode=Mode.ONCE)
    assert (code, script.calls) == (ExitCode.CALL_FAILED, 1)


def test_drain_stops_at_the_first_idle(fake_time: FakeTime) -> None:
    code, script, _ = run([JOB, JOB, err(), JOB, IDLE, JOB, JOB], fake_time, mode=Mode.DRAIN)
    assert (code, script.calls) == (ExitCode.OK, 5)


def test_drain_gives_up_on_configuration_error_or_long_outage(fake_time: FakeTime) -> None:
    auth = CallError(ErrorKind.CONFIGURATION, "http_status", 401)
    code, script, _ = run([JOB, auth, JOB], fake_time, mode=Mode.DRAIN)
    assert (code, script.calls) == (ExitCode.CALL_FAILED, 2)
    code, script, _ = run([err()] * 8, fake_time, mode=Mode.DRAIN)
    assert (code, script.calls) == (ExitCode.CALL_FAILED, 5)


def test_concurrency_runs_loops_side_by_side() -> None:
    async def go() -> tuple[int, int]:
        stop = asyncio.Event()
        in_flight = peak = calls = 0

        async def call() -> Outcome:
            nonlocal in_flight, peak, calls
            calls += 1
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            if calls >= 40:
                stop.set()
            return JOB

        pump = Pump([Lane("agent", 8, call)], POLICY, Stats(), structlog.get_logger(),
                    stop=stop, pause=lambda s, wakeable=False, until=None: asyncio.sleep(0))
        await pump.run()
        return peak, calls

    peak, calls = asyncio.run(go())
    assert peak == 8 and 40 <= calls <= 48  # no call starts once stop is set


def test_stop_wakes_a_sleeping_loop_at_once() -> None:
    async def go() -> float:
        stop = asyncio.Event()
        pump = Pump([Lane("agent", 2, lambda: _idle())], POLICY, Stats(),
                    structlog.get_logger(), stop=stop)  # real pause: a 10 s idle sleep
        task = asyncio.create_task(pump.run())
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stop.set()
        assert await asyncio.wait_for(task, 2) is ExitCode.OK
        return loop.time() - t0

    assert asyncio.run(go()) < 0.5


async def _idle() -> Outcome:
    return IDLE


def test_calls_in_flight_finish_inside_the_grace_and_are_cancelled_after() -> None:
    async def go(grace_s: float, call_s: float) -> tuple[ExitCode, list[str]]:
        stop = asyncio.Event()
        events: list[str] = []

        async def call() -> Outcome:
            events.append("start")
            await asyncio.sleep(call_s)
            events.append("end")
            return JOB

        policy = Policy(**{**POLICY.__dict__, "shutdown_grace_s": grace_s})
        pump = Pump([Lane("agent", 1, call)], policy, Stats(), structlog.get_logger(),
                    stop=stop)
        task = asyncio.create_task(pump.run())
        await asyncio.sleep(0.02)
        stop.set()
        return await task, events

    code, events = asyncio.run(go(grace_s=2.0, call_s=0.1))
    assert code is ExitCode.OK and events == ["start", "end"]
    code, events = asyncio.run(go(grace_s=0.05, call_s=5.0))
    assert code is ExitCode.GRACE_EXPIRED and events == ["start"]


def test_stop_or_timeout_returns_early_on_stop() -> None:
    async def go() -> float:
        stop = asyncio.Event()
        pause = stop_or_timeout(stop)
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, stop.set)
        t0 = loop.time()
        await pause(30)
        await pause(30)  # already stopped: returns at once
        return loop.time() - t0

    assert asyncio.run(go()) < 1.0


def test_stats_follow_the_calls(fake_time: FakeTime) -> None:
    stats = Stats(clock=fake_time.clock)
    run([JOB, err(), err(), IDLE, err()], fake_time, stats=stats)
    snap = stats.snapshot()
    assert snap["counters"] == {"calls": 5, "processed": 1, "idle": 1, "errors": 3}
    assert snap["consecutive_failures"] == 1
    assert snap["errors"] == {"retryable:http_status": 3}
    assert snap["loops"][0]["state"] == "stopped"


def test_a_loop_that_dies_of_a_bug_stops_the_pump_with_exit_1(
        fake_time: FakeTime, logs: list[dict[str, Any]]) -> None:
    class BrokenStats(Stats):
        def sleeping(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

    code, script, _ = run([JOB] * 10, fake_time, stats=BrokenStats(clock=fake_time.clock),
                          concurrency=3)
    assert code is ExitCode.CALL_FAILED
    assert script.calls == 1  # the crash stopped the pump: no other loop started a call
    crashed = [e for e in logs if e["event"] == "loop_crashed"]
    assert crashed and crashed[0]["error"] == "RuntimeError: boom"


def test_a_crash_is_reported_even_when_the_grace_then_runs_out() -> None:
    async def go() -> ExitCode:
        stop = asyncio.Event()
        calls = 0

        async def call() -> Outcome:
            nonlocal calls
            calls += 1
            # The first call ends (and its loop then crashes) while the other loop's long call
            # is still in flight, and outlives the grace.
            await asyncio.sleep(0.05 if calls == 1 else 5)
            return JOB

        class CrashOnce(Stats):
            crashed = False

            def call_ended(self, loop: Any, *args: Any, **kwargs: Any) -> None:
                if not CrashOnce.crashed:
                    CrashOnce.crashed = True
                    raise RuntimeError("bug in stats")
                super().call_ended(loop, *args, **kwargs)

        policy = Policy(**{**POLICY.__dict__, "shutdown_grace_s": 0.05})
        pump = Pump([Lane("agent", 2, call)], policy, CrashOnce(), structlog.get_logger(),
                    stop=stop)
        code = await pump.run()
        assert pump.cancelled_calls == 1
        return code

    assert asyncio.run(go()) is ExitCode.CALL_FAILED
