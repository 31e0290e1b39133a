"""Herds of loops against a runner that is down, and wake-up floods, on the real process
(issue 13, items 5 and 7): the whole process makes a bounded number of calls, not
concurrency times one loop's."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest

from queue_pump.loop.waits import WAKE_MIN_INTERVAL_S
from tests.support.fault_scenarios import backoff_bound
from tests.support.proc import Live, pump_env, start, wait_until
from tests.support.runner_double import IDLE, Reply, runner_double

pytestmark = pytest.mark.e2e
LOOPS = 64
WINDOW_S = 2.5
BASE_S, MAX_S = 0.05, 0.5


def calls_between(seen: list[float], start_s: float, end_s: float) -> int:
    return sum(1 for at in seen if start_s <= at < end_s)


def test_the_loops_of_a_queue_share_one_backoff_while_the_runner_is_down() -> None:
    down = True

    def script(_i: int) -> Reply:
        return Reply(status=503, body={"error": "down"}) if down else IDLE

    with runner_double(script) as double:
        pump = Live(start(pump_env(
            double.url, QUEUE_PUMP_CONCURRENCY=str(LOOPS), QUEUE_PUMP_IDLE_SLEEP_MS="100",
            QUEUE_PUMP_BACKOFF_BASE_MS=str(int(BASE_S * 1000)),
            QUEUE_PUMP_BACKOFF_MAX_MS=str(int(MAX_S * 1000)))))
        double.wait_for(1)
        first = double.seen[0].at
        # the window, measured by the double's clock: wait for its end, not a fixed sleep
        wait_until(lambda: time.monotonic() >= first + WINDOW_S, timeout_s=WINDOW_S + 5)
        in_window = calls_between([s.at for s in double.seen], first, first + WINDOW_S)
        down = False
        recovered_from = len(double.seen)
        double.wait_for(recovered_from + LOOPS, timeout_s=15)  # every loop is back at work
        pump.proc.send_signal(signal.SIGTERM)
        code, _ = pump.finish()
    assert code == 0
    # The first call of every loop may be in flight before any answer came back; after that,
    # one loop's backoff, whatever the concurrency. Per loop it was 64 x ~12 calls.
    bound = LOOPS + backoff_bound(WINDOW_S, BASE_S, MAX_S)
    assert in_window <= bound, (in_window, bound)
    assert pump.events("recovered")


def test_a_flood_of_wakes_is_merged_into_a_bounded_call_rate() -> None:
    loops = 4
    with runner_double(lambda _i: IDLE) as double:
        pump = Live(start(pump_env(double.url, QUEUE_PUMP_CONCURRENCY=str(loops),
                                   QUEUE_PUMP_IDLE_SLEEP_MS="60000")))
        double.wait_for(loops)
        wait_until(lambda: len(pump.events("idle")) >= 1 and all(s.answered for s in double.seen),
                   timeout_s=15)
        before = len(double.seen)
        started = time.monotonic()
        for _ in range(1000):  # ~1,000 SIGUSR1 a second, for about a second
            os.kill(pump.proc.pid, signal.SIGUSR1)
            time.sleep(0.001)
        double.wait_for(before + loops)  # the wakes did wake the loops
        elapsed = time.monotonic() - started
        calls = len(double.seen) - before
        pump.proc.send_signal(signal.SIGTERM)
        code, _ = pump.finish()
    assert code == 0
    # at most one delivered wake per interval (plus the one at its end), at most one call per
    # loop per delivered wake; it was ~3,000 calls for 1,000 signals
    bound = loops * (math.ceil(elapsed / WAKE_MIN_INTERVAL_S) + 2)
    assert loops <= calls <= bound, (calls, bound, elapsed)
