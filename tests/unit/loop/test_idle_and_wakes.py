"""Adaptive idle, wake-ups, several queues and the call budget: rules in fake time, then the
real process over loopback."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import structlog

from queue_pump.loop.budget import TokenBucket
from queue_pump.loop.client import IDLE, Outcome, Processed
from queue_pump.loop.pump import Lane, Policy, Pump
from queue_pump.loop.waits import Waker, stop_or_timeout
from queue_pump.observe.state import Stats
from tests.support.env import FakeTime

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


# --- the real process ------------------------------------------------------------------------


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
