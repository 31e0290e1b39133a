"""/metrics: the loop state (state.py) as Prometheus text, rendered when asked for.

Imported by the health endpoint at the first scrape, so a pump that nobody scrapes never loads
prometheus_client (about 1.5 MB of a ~40 MB process). The families are built from a copy of the
numbers taken under Stats' lock, in the order, with the names, help texts and label names the
pump has always exposed; prometheus_client renders them.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)

from ..config import env_of
from .state import DURATION_BUCKETS, MetricsView, Stats

PREFIX = "queue_pump_"
# (kind, name without the prefix, help, label names), in the order they are exposed.
FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("counter", "calls", "Runner calls by outcome.", ("queue", "outcome")),
    ("counter", "call_errors", "Failed runner calls by error kind and reason.",
     ("queue", "kind", "reason")),
    ("counter", "jobs", "Processed jobs by the status the runner gave (a call that ran n jobs "
     "counts n).", ("queue", "status")),
    ("histogram", "call_duration_seconds", "Runner call duration.", ("queue",)),
    ("gauge", "consecutive_failures", "Failed calls in a row, per queue.", ("queue",)),
    ("gauge", "last_success_timestamp_seconds", "Unix time of the last call that did not fail.",
     ()),
    ("gauge", "in_flight", "Calls in flight.", ("queue",)),
    ("gauge", "loops", "Loops by state.", ("state",)),
    ("gauge", "idle_sleep_seconds",
     "Current idle sleep (before jitter); grows with adaptive idle.", ("queue",)),
    ("gauge", "backlog",
     "Jobs due after the runner's latest answer that said (runners may cap it: the Supabase "
     "kit at 1000, meaning at least that many).", ("queue",)),
    ("counter", "wakeups", "Wake-ups of idle loops by source.", ("source",)),
    ("counter", "budget_waits", "Calls that waited for the call budget.", ()),
    ("counter", "budget_wait_seconds", "Seconds loops waited for the call budget.", ()),
    ("counter", "schedule_events",
     "Scheduled enqueues by schedule and event (fired, retried, failed, skipped).",
     ("schedule", "event")),
    ("gauge", "call_budget_per_hour", f"{env_of('max_calls_per_hour')} (0: no cap).", ()),
)


class _Collector:
    """What prometheus_client's renderer reads: ``collect()`` yields the metric families."""

    def __init__(self, view: MetricsView) -> None:
        self._view = view

    def collect(self) -> Iterator[Any]:
        view = self._view
        for kind, name, help_text, labels in FAMILIES:
            family: Any
            if kind == "counter":
                family = CounterMetricFamily(PREFIX + name, help_text, labels=labels)
                for values, series in view.counters.get(name, {}).items():
                    family.add_metric(values, series.value, created=series.created)
            elif kind == "gauge":
                family = GaugeMetricFamily(PREFIX + name, help_text, labels=labels)
                for values, value in view.gauges[name].items():
                    family.add_metric(values, value)
            else:
                family = _durations(PREFIX + name, help_text, labels, view)
            yield family
        yield InfoMetricFamily(PREFIX + "build", "Version of the pump.",
                               value={"version": view.version,
                                      "python": platform.python_version()})


def _durations(name: str, help_text: str, labels: tuple[str, ...], view: MetricsView) -> Any:
    family = HistogramMetricFamily(name, help_text, labels=labels)
    bounds = [_bound(b) for b in DURATION_BUCKETS] + ["+Inf"]
    for queue, durations in view.durations.items():
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, durations.counts, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        family.add_metric([queue], buckets, durations.total_s)
        family.add_sample(name + "_created", {"queue": queue}, durations.created)
    return family


def _bound(seconds: float) -> str:
    # As prometheus_client writes a bucket's bound: 1 as "1.0", 0.005 as "0.005".
    return repr(float(seconds))


def exposition(stats: Stats) -> tuple[str, bytes]:
    """The content type and body of a /metrics answer."""
    return CONTENT_TYPE_LATEST, generate_latest(_Collector(stats.metrics_view()))
