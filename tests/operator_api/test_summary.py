"""The summary: counts per status and queue, the oldest due job's age, done and failed per
minute, the newest failures with their errors (OPERATOR_API.md §9)."""

from __future__ import annotations

import itertools
from datetime import datetime

from .target import Api, Target

COUNTS = ("queued", "running", "done", "failed", "cancelled", "due", "oldestDueAgeSeconds")


def test_an_empty_organization(api: Api) -> None:
    stats = api.stats()
    assert stats["queues"] == [] and stats["recentFailures"] == []
    assert stats["total"] == {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0,
                              "due": 0, "oldestDueAgeSeconds": None}
    assert len(stats["perMinute"]) == 61
    assert all(m["done"] == 0 and m["failed"] == 0 for m in stats["perMinute"])


def test_counts_ages_rates_and_failures(api: Api, target: Target) -> None:
    for _ in range(3):
        api.add("echo")
    api.failing("the reason it failed")
    api.run_all()
    cancelled = api.add("echo", queue="q2")
    api.post(f"/{cancelled['id']}/cancel")
    due = api.add("echo")
    target.backdate(due["id"], 30)
    api.add("echo", delaySeconds=3600)  # queued, not due
    stats = api.stats()
    assert [q["queue"] for q in stats["queues"]] == ["agent", "q2"]
    agent = stats["queues"][0]
    assert {k: agent[k] for k in COUNTS[:-1]} == {"queued": 2, "running": 0, "done": 3,
                                                  "failed": 1, "cancelled": 0, "due": 1}
    assert 29 <= agent["oldestDueAgeSeconds"] < 3600
    assert stats["total"]["cancelled"] == 1 and stats["total"]["done"] == 3
    minutes = stats["perMinute"]
    assert len(minutes) == 61
    starts = [datetime.fromisoformat(m["minute"]) for m in minutes]
    assert all((b - a).total_seconds() == 60 for a, b in itertools.pairwise(starts))
    assert sum(m["done"] for m in minutes) == 3 and sum(m["failed"] for m in minutes) == 1
    assert [f["error"] for f in stats["recentFailures"]] == [
        stats["recentFailures"][0]["error"]]
    assert "the reason it failed" in stats["recentFailures"][0]["error"]
    only = api.stats(queue="q2")
    assert [q["queue"] for q in only["queues"]] == ["q2"]
    assert only["total"]["cancelled"] == 1 and only["total"]["done"] == 0
