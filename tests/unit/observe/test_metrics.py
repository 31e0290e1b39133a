"""/metrics as Prometheus text, read back with prometheus_client's own parser; and the library
is loaded only when metrics are asked for."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from queue_pump.observe.metrics import exposition
from queue_pump.observe.state import LoopState, Stats

WALL = 1_700_000_000.0


def samples(stats: Stats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    content_type, body = exposition(stats)
    assert content_type.startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_every_family_is_there_from_the_start_at_zero() -> None:
    stats = Stats(clock=lambda: 5.0, wall=lambda: WALL)
    stats.add_loop("agent-0", "agent")
    m = samples(stats)
    q = (("queue", "agent"),)
    for outcome in ("processed", "idle", "error"):
        assert m[("queue_pump_calls_total", (("outcome", outcome), *q))] == 0
        assert m[("queue_pump_calls_created", (("outcome", outcome), *q))] == WALL
    assert m[("queue_pump_call_duration_seconds_count", q)] == 0
    assert m[("queue_pump_call_duration_seconds_created", q)] == WALL
    assert m[("queue_pump_consecutive_failures", q)] == 0
    assert m[("queue_pump_in_flight", q)] == 0
    assert m[("queue_pump_loops", (("state", "starting"),))] == 1
    assert m[("queue_pump_loops", (("state", "idle"),))] == 0
    assert m[("queue_pump_budget_waits_total", ())] == 0
    assert m[("queue_pump_budget_wait_seconds_total", ())] == 0
    assert m[("queue_pump_call_budget_per_hour", ())] == 0
    assert m[("queue_pump_last_success_timestamp_seconds", ())] == 0
    # A one-job runner sends no backlog: no series, rather than a zero that would be a claim.
    assert not [key for key in m if key[0] == "queue_pump_backlog"]


def test_the_numbers_follow_the_writes() -> None:
    stats = Stats(clock=lambda: 5.0, wall=lambda: WALL)
    a, r = stats.add_loop("agent-0", "agent"), stats.add_loop("render-0", "render")
    stats.call_started(a, 30)
    stats.call_ended(a, 0.02, "processed", job_status="done")
    stats.call_started(a, 30)
    stats.call_ended(a, 0.3, "processed", job_status="no such status")
    b = stats.add_loop("batch-0", "batch")
    stats.call_started(b, 30)
    stats.call_ended(b, 0.02, "processed", job_status="done", jobs=10)  # a call ran ten jobs
    stats.set_state(b, LoopState.STOPPED)
    stats.backlog("batch", 1000)
    stats.call_started(r, 30)
    stats.call_ended(r, 7.0, "error", error=("retryable", "http_status"))
    stats.call_started(r, 30)  # still in flight
    stats.sleeping(a, LoopState.IDLE, 10)
    stats.idle_sleep("agent", 10.0)
    stats.woken("http")
    stats.schedule_event("nightly", "fired")
    stats.budget_wait(1.5)
    stats.call_budget(120)
    m = samples(stats)
    agent, render = (("queue", "agent"),), (("queue", "render"),)
    assert m[("queue_pump_calls_total", (("outcome", "processed"), *agent))] == 2
    batch = (("queue", "batch"),)
    assert m[("queue_pump_calls_total", (("outcome", "processed"), *batch))] == 1
    assert m[("queue_pump_jobs_total", (*batch, ("status", "done")))] == 10
    assert m[("queue_pump_backlog", batch)] == 1000
    assert ("queue_pump_backlog", agent) not in m
    assert m[("queue_pump_calls_total", (("outcome", "error"), *render))] == 1
    assert m[("queue_pump_jobs_total", (*agent, ("status", "done")))] == 1
    assert m[("queue_pump_jobs_total", (*agent, ("status", "other")))] == 1
    assert m[("queue_pump_call_errors_total",
              (("kind", "retryable"), *render, ("reason", "http_status")))] == 1
    # Buckets are cumulative: 0.02 s is under 0.025, 0.3 s under 0.5, both under +Inf.
    assert m[("queue_pump_call_duration_seconds_bucket", (("le", "0.01"), *agent))] == 0
    assert m[("queue_pump_call_duration_seconds_bucket", (("le", "0.025"), *agent))] == 1
    assert m[("queue_pump_call_duration_seconds_bucket", (("le", "0.5"), *agent))] == 2
    assert m[("queue_pump_call_duration_seconds_bucket", (("le", "+Inf"), *agent))] == 2
    assert m[("queue_pump_call_duration_seconds_sum", agent)] == 0.32
    assert m[("queue_pump_consecutive_failures", render)] == 1
    assert m[("queue_pump_in_flight", render)] == 1
    assert m[("queue_pump_loops", (("state", "idle"),))] == 1
    assert m[("queue_pump_loops", (("state", "working"),))] == 1
    assert m[("queue_pump_idle_sleep_seconds", agent)] == 10
    assert m[("queue_pump_wakeups_total", (("source", "http"),))] == 1
    fired = (("event", "fired"), ("schedule", "nightly"))
    assert m[("queue_pump_schedule_events_total", fired)] == 1
    assert m[("queue_pump_budget_wait_seconds_total", ())] == 1.5
    assert m[("queue_pump_call_budget_per_hour", ())] == 120
    assert m[("queue_pump_last_success_timestamp_seconds", ())] == WALL


LAZY = textwrap.dedent("""
    import json, sys, urllib.request
    from queue_pump.observe.health import HealthConfig, HealthServer
    from queue_pump.observe.state import Stats
    server = HealthServer(Stats(), HealthConfig("127.0.0.1", 0))
    server.start()
    urllib.request.urlopen(server.url + "/healthz").read()
    before = "prometheus_client" in sys.modules
    urllib.request.urlopen(server.url + "/metrics").read()
    print(json.dumps([before, "prometheus_client" in sys.modules]))
    server.close()
""")


def test_prometheus_client_is_loaded_at_the_first_scrape_not_before() -> None:
    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[false, true]"
