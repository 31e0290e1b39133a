"""Idle cost independent of concurrency: one loop probes an idle queue, the others park; the
first answer with work lets as many back as it says are useful. The gate as a table, then the
loops in virtual time (an idle hour in milliseconds), through the real client with respx."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx
import structlog

from queue_pump.app import http_config
from queue_pump.config import from_mapping
from queue_pump.loop.client import IDLE, Idle, Outcome, Processed
from queue_pump.loop.failures import CallError, ErrorKind
from queue_pump.loop.idle_gate import IdleGate, loops_wanted
from queue_pump.loop.pump import Lane, Policy, Pump
from queue_pump.loop.waits import Waker
from queue_pump.observe.state import Stats
from queue_pump.transport import build_http_client
from tests.support.env import BASE_ENV, runner_client
from tests.support.virtual_time import VirtualTime

FIXED = Policy(idle_sleep_s=10.0, idle_max_sleep_s=10.0, tick_sleep_s=0.25, backoff_base_s=1.0,
               backoff_max_s=60.0, http_timeout_s=1800.0, shutdown_grace_s=30.0, log_every=10)
ADAPTIVE = Policy(**{**FIXED.__dict__, "idle_sleep_s": 1.0, "idle_max_sleep_s": 60.0})
URL = "https://proj.supabase.co/functions/v1/ai-job-runner"
HOUR = 3600.0
# respx mocks httpx's own transport (httpcore): the respx tests pin it (as test_client.py does).
HTTPX_ENV = {**BASE_ENV, "QUEUE_PUMP_HTTP_TRANSPORT": "httpx"}


# --- the gate, as a table ---------------------------------------------------------------------

@pytest.mark.parametrize("backlog,jobs,loops,wanted", [
    (None, 1, 8, 8),      # a one-job runner says nothing: every loop
    (0, 1, 8, 1),         # nothing left: the loop that got the job goes on alone
    (3, 1, 8, 3),
    (999, 1, 8, 8),
    (1000, 10, 64, 64),   # the kit's cap: at least 1000, ten a call
    (25, 10, 8, 3),
    (5, 0, 8, 5),         # a call that ran none still counts as one job per call
])
def test_loops_wanted(backlog: int | None, jobs: int, loops: int, wanted: int) -> None:
    assert loops_wanted(backlog, jobs, loops) == wanted


def test_the_gate_parks_all_but_the_prober_and_releases_on_work() -> None:
    gate = IdleGate()
    for name in "abcd":
        gate.join(name)
    assert all(gate.may_call(n) for n in "abcd")  # busy at start: everyone calls
    assert gate.on_idle("a") is True              # the first idle answer: a probes
    assert [gate.on_idle(n) for n in "bcd"] == [False] * 3
    assert [gate.may_call(n) for n in "abcd"] == [True, False, False, False]
    assert gate.on_work("a", wanted=2) == 1       # a goes on, one more is let out
    assert sorted(n for n in "bcd" if gate.may_call(n)) == ["b"]
    assert gate.on_work("b", wanted=4) == 2
    assert gate.may_call("c") and gate.may_call("d") and gate.active == 4


def test_work_found_by_another_loop_parks_the_sleeping_prober_until_let_out() -> None:
    gate = IdleGate()
    for name in "ab":
        gate.join(name)
    assert gate.on_idle("a")            # a probes, sleeping
    assert gate.on_work("b", wanted=1) == 0  # b (in flight) found the last job
    assert gate.may_call("a") is False  # a woke from its sleep: parked, b works
    assert gate.on_idle("b")            # b's next answer is idle: b probes now
    assert gate.may_call("a") is False


def test_a_leaving_prober_hands_over() -> None:
    gate = IdleGate()
    for name in "abc":
        gate.join(name)
    gate.on_idle("a")
    gate.on_idle("b")
    gate.on_idle("c")
    assert gate.leave("a") is True  # nobody calls any more: one parked loop is let out
    assert [gate.may_call(n) for n in "bc"].count(True) == 1


def test_a_gate_with_every_loop_parked_and_no_prober_lets_the_first_to_ask_probe() -> None:
    # Defensive: should every loop be parked with nobody probing, the queue is not forgotten.
    gate = IdleGate()
    for name in "ab":
        gate.join(name)
    gate.parked = {"a", "b"}
    assert gate.may_call("b") is True and gate.prober == "b"
    assert gate.may_call("a") is False


# --- the loops, in virtual time ---------------------------------------------------------------

@dataclass
class Queue:
    """A runner in memory: ``due`` jobs, one per call, with or without a backlog in answers."""

    due: int = 0
    says_backlog: bool = False
    fail: list[CallError] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)  # by loop (task) name
    job_s: float = 0.0  # how long a job runs before the answer (on ``time``)
    time: VirtualTime | None = None
    started: dict[str, float] = field(default_factory=dict)  # loop: its first job's start

    async def call(self) -> Outcome:
        task = asyncio.current_task()
        name = task.get_name() if task else "?"
        self.calls[name] += 1
        if self.fail:
            raise self.fail.pop(0)
        if self.due <= 0:
            return Idle(backlog=0) if self.says_backlog else IDLE
        self.due -= 1
        if self.time is not None:
            self.started.setdefault(name, self.time.now)
            await self.time.sleep(self.job_s)
        return Processed(job_id=1, job_type="t", status="done",
                         backlog=self.due if self.says_backlog else None)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class Harness:
    def __init__(self, call: Callable[[], Any], loops: int, policy: Policy = FIXED) -> None:
        self.time = VirtualTime()
        self.stop = asyncio.Event()
        self.waker = Waker(min_interval_s=0.0, clock=self.time.clock)
        self.stats = Stats(clock=self.time.clock)
        self.pump = Pump([Lane("agent", loops, call)], policy, self.stats,
                         structlog.get_logger(), stop=self.stop,
                         pause=self.time.pause_for(self.stop, self.waker),
                         clock=self.time.clock, rng=random.Random(7), waker=self.waker)
        self.task = asyncio.create_task(self.pump.run())

    async def finish(self, calls_for_s: float = 0.0) -> None:
        """Stop; the loops must be gone with the clock standing still, or once calls in
        flight had ``calls_for_s`` (of the grace) to end."""
        self.stop.set()
        await self.time.settle()
        if calls_for_s:
            await self.time.run_until(self.task.done, step_s=1.0, limit_s=calls_for_s)
        assert self.task.done(), "loops still running after stop, with the clock standing still"
        await self.task


def idle_calls(loops: int, policy: Policy, hours: float = 1.0) -> int:
    async def go() -> int:
        queue = Queue()
        harness = Harness(queue.call, loops, policy)
        await harness.time.advance(hours * HOUR)
        await harness.finish()
        return queue.total

    return asyncio.run(go())


@pytest.mark.parametrize("policy,hours", [(FIXED, 0.25), (ADAPTIVE, 1.0)],
                         ids=["fixed-10s", "adaptive-1-60s"])
def test_an_idle_hour_costs_one_loops_calls_at_any_concurrency(policy: Policy,
                                                               hours: float) -> None:
    one = idle_calls(1, policy, hours)
    assert one >= 55  # 90 in a quarter hour at a fixed 10 s, ~65 an hour adaptive
    for loops in (8, 64):
        # The first call of each loop is the only extra: they all start at once.
        assert idle_calls(loops, policy, hours) <= 1.1 * one + (loops - 1), loops


@respx.mock
def test_idle_through_the_real_client_one_loop_calls() -> None:
    route = respx.post(URL).respond(200, json={"processed": False, "backlog": 0})
    settings = from_mapping({**HTTPX_ENV, "QUEUE_PUMP_CONCURRENCY": "8"}, hostname="box-1")

    async def go() -> tuple[int, dict[str, Any]]:
        async with build_http_client(http_config(settings)) as http:
            client = runner_client(http, settings)
            harness = Harness(client.call, 8)
            await harness.time.advance(600.0)  # ten minutes at 10 s: 60 probes
            await harness.finish()
            return route.call_count, harness.stats.snapshot()

    calls, snap = asyncio.run(go())
    assert 8 + 55 <= calls <= 8 + 62
    assert snap["backlog"] == {"agent": 0}


def test_work_after_idle_without_a_backlog_wakes_every_loop() -> None:
    async def go() -> Queue:
        queue = Queue()
        harness = Harness(queue.call, 8)
        await harness.time.advance(HOUR)
        queue.calls.clear()
        queue.due = 200
        await harness.time.run_until(lambda: queue.due == 0, step_s=0.1)
        await harness.finish()
        return queue

    queue = asyncio.run(go())
    assert len(queue.calls) == 8  # every loop took part in the burst
    assert queue.total <= 200 + 8 + 8  # and each came back to the empty queue about once


def test_a_lone_job_with_backlog_zero_costs_no_extra_call() -> None:
    async def go() -> tuple[Queue, int]:
        queue = Queue(says_backlog=True)
        harness = Harness(queue.call, 64)
        await harness.time.advance(600.0)
        before = queue.total
        queue.due = 1
        await harness.time.advance(30.0)
        assert queue.due == 0
        await harness.finish()
        return queue, queue.total - before

    queue, during = asyncio.run(go())
    # Found by the prober within ~10 s, then its next call at tick pace (idle), then probing
    # at 10 s: about 4 calls, not 64.
    assert during <= 6
    assert len([n for n, c in queue.calls.items() if c > 1]) == 1  # one loop did all of that


def test_a_backlog_lets_out_as_many_loops_as_it_needs() -> None:
    async def go() -> Queue:
        queue = Queue(says_backlog=True)
        harness = Harness(queue.call, 8)
        await harness.time.advance(600.0)
        queue.calls.clear()
        queue.due = 3  # the prober takes one, says backlog 2: it and one more loop take them
        await harness.time.run_until(lambda: queue.due == 0, step_s=0.1)
        await harness.time.advance(1.0)
        await harness.finish()
        return queue

    queue = asyncio.run(go())
    assert len(queue.calls) == 2
    burst = asyncio.run(_burst(says_backlog=True))
    assert len(burst.calls) == 8  # a backlog of 99 after the first job: every loop


async def _burst(says_backlog: bool) -> Queue:
    queue = Queue(says_backlog=says_backlog)
    harness = Harness(queue.call, 8)
    await harness.time.advance(600.0)
    queue.calls.clear()
    queue.due = 100
    await harness.time.run_until(lambda: queue.due == 0, step_s=0.1)
    await harness.finish()
    return queue


def test_a_wake_makes_the_prober_call_and_the_burst_brings_the_rest() -> None:
    async def go() -> tuple[int, int, float]:
        queue = Queue(says_backlog=True)
        harness = Harness(queue.call, 8, policy=Policy(**{**FIXED.__dict__,
                                                          "idle_sleep_s": 3600.0,
                                                          "idle_max_sleep_s": 3600.0}))
        await harness.time.advance(10.0)
        before = queue.total
        harness.waker.wake()  # an idle wake: one call (the prober's), not eight
        await harness.time.settle()
        woken_idle = queue.total - before
        queue.due = 50
        started = harness.time.now
        harness.waker.wake()
        await harness.time.run_until(lambda: queue.due == 0, step_s=0.05)
        await harness.finish()
        return woken_idle, len(queue.calls), harness.time.now - started

    woken_idle, loops, took = asyncio.run(go())
    assert woken_idle == 1
    assert loops == 8
    assert took < 60.0  # the hour-long idle sleep was not slept out


def test_a_long_job_after_idle_doubles_the_loops_without_waiting_for_its_answer() -> None:
    # A runner that runs a 30 s job before answering, and says nothing of its backlog: the
    # first answer comes 30 s late, but a call that long is a job running.
    async def go() -> Queue:
        queue = Queue()
        harness = Harness(queue.call, 8)
        queue.time, queue.job_s = harness.time, 30.0
        await harness.time.advance(600.0)
        queue.due = 100
        await harness.time.run_until(lambda: len(queue.started) == 8, step_s=0.05,
                                     limit_s=60.0)
        await harness.finish(calls_for_s=30.0)
        return queue

    queue = asyncio.run(go())
    starts = sorted(queue.started.values())
    # 1 -> 2 -> 4 -> 8 at a long call's threshold (0.25 s) each: about 0.75 s, not 30 s.
    assert starts[-1] - starts[0] <= 1.5, starts


def test_a_lone_long_job_costs_one_extra_call() -> None:
    async def go() -> tuple[Queue, int]:
        queue = Queue(says_backlog=True)
        harness = Harness(queue.call, 64)
        queue.time, queue.job_s = harness.time, 30.0
        await harness.time.advance(600.0)
        queue.calls.clear()
        queue.due = 1
        await harness.time.advance(45.0)
        await harness.finish()
        return queue, queue.total

    queue, during = asyncio.run(go())
    # The job's call, the one loop let out when it ran long (which then probes the queue at
    # the idle pace while the job runs: a second job would not wait for the first), and the
    # tick call after the job: 6 here, where 64 loops polling on their own made 64 x 4.
    assert during <= 7
    assert len(queue.calls) == 2, queue.calls


def test_errors_while_idle_back_off_on_the_prober_alone() -> None:
    async def go() -> Queue:
        queue = Queue()
        harness = Harness(queue.call, 8)
        await harness.time.advance(60.0)
        queue.calls.clear()
        queue.fail = [CallError(ErrorKind.RETRYABLE, "http_status", 503)] * 5
        await harness.time.advance(600.0)
        await harness.finish()
        return queue

    queue = asyncio.run(go())
    assert len(queue.calls) == 1  # the prober failed, backed off and probed on; nobody else


def test_stop_ends_parked_loops_at_once() -> None:
    async def go() -> None:
        harness = Harness(Queue().call, 64)
        await harness.time.advance(60.0)
        await harness.finish()  # asserts every loop left with the clock standing still
        assert {loop["state"] for loop in harness.stats.snapshot()["loops"]} == {"stopped"}

    asyncio.run(go())


# --- jobs and backlog in the answer -----------------------------------------------------------

def test_a_call_that_ran_ten_jobs_counts_ten(logs: list[dict[str, Any]]) -> None:
    answers = [Processed(job_id=i, status="done", jobs=10, backlog=40 - 10 * i)
               for i in range(4)]

    async def call() -> Outcome:
        return answers.pop(0) if answers else Idle(backlog=0)

    async def go() -> Stats:
        harness = Harness(call, 1, policy=Policy(**{**FIXED.__dict__, "log_every": 25}))
        await harness.time.advance(20.0)
        await harness.finish()
        return harness.stats

    stats = asyncio.run(go())
    snap = stats.snapshot()
    assert snap["counters"]["processed"] == 40
    assert snap["backlog"] == {"agent": 0}
    view = stats.metrics_view()
    assert view.counters["calls"][("agent", "processed")].value == 4
    assert view.counters["jobs"][("agent", "done")].value == 40
    progress = [e for e in logs if e["event"] == "progress"]
    assert [e["processed"] for e in progress] == [30]  # crossed 25 at the third call
    assert progress[0]["jobs"] == 10 and progress[0]["backlog"] == 20


def test_absurd_fields_are_ignored_with_one_warning_a_minute(
        logs: list[dict[str, Any]]) -> None:
    async def call() -> Outcome:
        return Processed(job_id=1, status="done", jobs=1, ignored=("backlog=-5 is not ...",))

    async def go() -> Stats:
        harness = Harness(call, 1, policy=Policy(**{**FIXED.__dict__, "tick_sleep_s": 1.0}))
        await harness.time.advance(150.0)  # ~150 answers, each with a bad backlog
        await harness.finish()
        return harness.stats

    stats = asyncio.run(go())
    warned = [e for e in logs if e["event"] == "runner_field_ignored"]
    assert len(warned) == 3  # at 0, 60 and 120 s
    assert warned[1]["answers"] >= 59 and warned[0]["fields"] == ["backlog=-5 is not ..."]
    assert stats.snapshot()["backlog"] == {}  # nothing trusted


@respx.mock
@pytest.mark.parametrize("body,expected", [
    ({"processed": True, "jobs": 10, "backlog": 1000},
     Processed(jobs=10, backlog=1000)),
    ({"processed": True, "jobs": 0, "backlog": 0}, Processed(jobs=0, backlog=0)),
    ({"processed": False, "backlog": 7}, Idle(backlog=7)),
    ({"processed": False, "jobs": 0}, IDLE),
    ({"processed": True, "jobs": -1}, Processed(ignored=(
        "jobs=-1 is not a whole number in 0..100000",))),
    ({"processed": True, "jobs": 2.5, "backlog": "many"}, Processed(ignored=(
        "jobs=2.5 is not a whole number in 0..100000",
        "backlog='many' is not a whole number in 0..1000000000"))),
    ({"processed": True, "jobs": True}, Processed(ignored=(
        "jobs=True is not a whole number in 0..100000",))),
    ({"processed": False, "backlog": 10**30}, Idle(ignored=(
        f"backlog='{10**30}' is not a whole number in 0..1000000000",))),
    ({"processed": True, "jobs": None, "backlog": None}, Processed()),
])
def test_the_optional_counts_are_read_or_ignored(body: dict[str, Any],
                                                 expected: Outcome) -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, json=body))
    settings = from_mapping(HTTPX_ENV, hostname="box-1")

    async def go() -> Outcome:
        async with build_http_client(http_config(settings)) as http:
            return await runner_client(http, settings).call()

    assert asyncio.run(go()) == expected
