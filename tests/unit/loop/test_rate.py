"""The progress line's rate: over the last minute, not since start (issue 22)."""

from __future__ import annotations

import pytest

from queue_pump.loop.client import Processed, classify
from queue_pump.loop.rate import RecentRate


def test_a_burst_after_an_idle_hour_reads_as_the_bursts_pace() -> None:
    rate = RecentRate(60, started=0.0)
    rate.add(1.0)
    now = 3600.0
    for i in range(120):  # 120 jobs in the last 30 s
        rate.add(now - 30 + i * 0.25)
    assert rate.per_second(now) == pytest.approx(120 / 60)
    # since start it would have been 121 / 3600: thirty times lower


@pytest.mark.parametrize(("events", "now", "expected"), [
    ([], 10.0, 0.0),
    ([0.5, 1.5, 2.5], 3.0, 1.0),  # shorter than the window: over the time since start
    ([10.0] * 6, 70.5, 0.1),  # 6 jobs, all in the window's first second
    ([10.0] * 6, 71.5, 0.0),  # ... which has left the window
])
def test_rate_table(events: list[float], now: float, expected: float) -> None:
    rate = RecentRate(60, started=0.0)
    for at in events:
        rate.add(at)
    assert rate.per_second(now) == pytest.approx(expected)


def test_memory_is_bounded_by_the_window() -> None:
    rate = RecentRate(60, started=0.0)
    for second in range(10_000):
        rate.add(float(second), 5)
    assert len(rate._buckets) <= 61
    assert rate.per_second(10_000.0) == pytest.approx(5.0, rel=0.05)


def test_a_failed_runs_error_reaches_the_outcome_clipped() -> None:
    body = (b'{"processed": true, "jobId": 1, "jobType": "t", "status": "failed", "error": "'
            + b"x" * 5000 + b'"}')
    outcome = classify(200, {}, body)
    assert isinstance(outcome, Processed) and outcome.error == "x" * 300
    done = classify(200, {}, b'{"processed": true, "status": "done"}')
    assert isinstance(done, Processed) and done.error is None
