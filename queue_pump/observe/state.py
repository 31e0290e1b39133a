"""What the loops did, for whoever reads it: /healthz, /metrics, the watchdog, alerts.

Loops write from the event loop; the health server reads from its own thread, so every read
and write of shared state holds one small lock. Stats records; it never decides. It keeps plain
numbers only: metrics.py turns them into Prometheus text when /metrics is asked for, so a pump
that nobody scrapes never loads prometheus_client.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .. import __version__

# How far past its planned end a call or sleep may run before the loop counts as stuck: event
# loop hiccups and GC pauses must not flap the health check.
STUCK_SLACK_S = 30.0
# Runner statuses are free text; only these become metric labels, the rest count as "other".
KNOWN_JOB_STATUSES = frozenset({"done", "completed", "succeeded", "retry", "failed", "yielded"})
# The error kind (loop.failures.ErrorKind.CONFIGURATION) that no retry can fix: only a new
# setting can.
CONFIGURATION = "configuration"
# Upper bounds of the call duration histogram's buckets, in seconds (+Inf is implied).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class LoopState(StrEnum):
    STARTING = "starting"
    WORKING = "working"
    IDLE = "idle"
    BACKING_OFF = "backing-off"
    PACED = "paced"  # waiting for the call budget
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class LoopRecord:
    name: str
    queue: str
    state: LoopState = LoopState.STARTING
    in_flight: bool = False
    deadline: float = float("inf")  # monotonic time by which the current step must end
    consecutive_failures: int = 0


StreakListener = Callable[[str, int, int], None]
Labels = tuple[str, ...]


@dataclass
class Series:
    """One labelled number, and the wall time it first appeared (Prometheus' ``_created``)."""

    value: float
    created: float


@dataclass
class Durations:
    """One queue's call durations: a count per bucket (not cumulative), their sum."""

    created: float
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total_s += seconds


@dataclass(frozen=True)
class MetricsView:
    """A consistent copy of every number /metrics shows, taken under the lock."""

    counters: dict[str, dict[Labels, Series]]
    gauges: dict[str, dict[Labels, float]]
    durations: dict[str, Durations]
    version: str


class Stats:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._loops: list[LoopRecord] = []
        self.started_at = clock()
        # Failed calls in a row, per queue: one queue's successes must not hide another's
        # outage (a 404 on one queue while another works is still an outage).
        self.streaks: dict[str, int] = {}
        self.ever_succeeded = False
        self.last_success_wall: float | None = None
        self.last_success_mono: float | None = None
        self.counts: dict[str, int] = {"calls": 0, "processed": 0, "idle": 0, "errors": 0}
        self.errors_by_kind: dict[str, int] = {}
        # Queues whose latest failure was a configuration error (401/403/404, 3xx, bad URL),
        # with its reason: a retry cannot fix those, so health fails until a call succeeds.
        self.misconfigured: dict[str, str] = {}
        # Which pump this is, for `queue-pump status` (two pumps side by side): set once by the
        # wiring, never a secret (the runner URL is redacted).
        self.worker_id: str | None = None
        self.runner: str | None = None
        self._listeners: list[StreakListener] = []

        # The numbers behind /metrics: counters by name and labels, gauges set from outside
        # the loop state (the rest are derived from it when read), call durations per queue.
        self._counters: dict[str, dict[Labels, Series]] = {}
        self._durations: dict[str, Durations] = {}
        self._in_flight: dict[str, int] = {}
        self._queues: list[str] = []
        self.idle_sleep_by_queue: dict[str, float] = {}
        # Only queues whose runner sends a backlog: a one-job runner's has no such series.
        self.backlog_by_queue: dict[str, int] = {}
        self.call_budget_per_hour = 0
        self.wakeups = 0
        self.budget_waits = 0
        for name in ("budget_waits", "budget_wait_seconds"):  # unlabelled: shown from the start
            self._inc(name, ())
            self._counters[name][()].value = 0.0

    # --- writers (event loop) -------------------------------------------------------------
    def add_loop(self, name: str, queue: str) -> LoopRecord:
        record = LoopRecord(name=name, queue=queue)
        with self._lock:
            self._loops.append(record)
            if queue not in self._in_flight:
                # A queue's series are shown from its first loop on, at zero.
                self._queues.append(queue)
                self._in_flight[queue] = 0
                self._durations[queue] = Durations(created=self._wall())
                for outcome in ("processed", "idle", "error"):
                    self._inc("calls", (queue, outcome), 0.0)
        return record

    def _move(self, record: LoopRecord, state: LoopState) -> None:
        """Change a loop's state; the caller holds the lock."""
        record.state = state

    def _inc(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        """Add to a counter; the caller holds the lock (or owns Stats alone, as __init__)."""
        series = self._counters.setdefault(name, {})
        found = series.get(labels)
        if found is None:
            series[labels] = Series(amount, self._wall())
        else:
            found.value += amount

    def subscribe(self, listener: StreakListener) -> None:
        """``listener(queue, old_streak, new_streak)`` on every change of a queue's streak."""
        self._listeners.append(listener)

    def call_started(self, loop: LoopRecord, timeout_s: float) -> None:
        with self._lock:
            self._move(loop, LoopState.WORKING)
            loop.in_flight = True
            loop.deadline = self._clock() + timeout_s + STUCK_SLACK_S
            self._in_flight[loop.queue] += 1

    def call_ended(self, loop: LoopRecord, duration_s: float, outcome: str,
                   job_status: str | None = None, error: tuple[str, str] | None = None,
                   jobs: int = 1) -> None:
        """``outcome`` is processed, idle or error; ``error`` is (kind, reason); ``jobs`` is
        how many jobs a processed call ran (a batch runner's may run many, or none)."""
        queue = loop.queue
        with self._lock:
            loop.in_flight = False
            self._in_flight[queue] -= 1
            self._durations[queue].observe(duration_s)
            self._inc("calls", (queue, outcome))
            self.counts["calls"] += 1
            old = self.streaks.get(queue, 0)
            if error is None:
                self._succeeded(loop, outcome, jobs)
            else:
                self._failed(loop, error)
            if outcome == "processed":
                status = job_status if job_status in KNOWN_JOB_STATUSES else "other"
                self._inc("jobs", (queue, status), float(jobs))
            new = self.streaks[queue]
        if new != old:
            for listener in self._listeners:
                listener(queue, old, new)

    def _succeeded(self, loop: LoopRecord, outcome: str, jobs: int) -> None:
        # "processed" counts jobs, "idle" calls: calls_total{outcome} keeps calls apart.
        self.counts[outcome] += jobs if outcome == "processed" else 1
        self.streaks[loop.queue] = 0
        loop.consecutive_failures = 0
        self.ever_succeeded = True
        self.misconfigured.pop(loop.queue, None)
        self.last_success_wall = self._wall()
        self.last_success_mono = self._clock()

    def _failed(self, loop: LoopRecord, error: tuple[str, str]) -> None:
        self.counts["errors"] += 1
        key = f"{error[0]}:{error[1]}"
        self.errors_by_kind[key] = self.errors_by_kind.get(key, 0) + 1
        if error[0] == CONFIGURATION:
            self.misconfigured[loop.queue] = key
        self.streaks[loop.queue] = self.streaks.get(loop.queue, 0) + 1
        loop.consecutive_failures += 1
        self._inc("call_errors", (loop.queue, *error))

    def sleeping(self, record: LoopRecord, state: LoopState, seconds: float) -> None:
        with self._lock:
            self._move(record, state)
            record.deadline = self._clock() + seconds + STUCK_SLACK_S

    def idle_sleep(self, queue: str, seconds: float) -> None:
        with self._lock:
            self.idle_sleep_by_queue[queue] = seconds

    def backlog(self, queue: str, jobs: int) -> None:
        """Jobs due after the runner's latest answer that said (its optional ``backlog``)."""
        with self._lock:
            self.backlog_by_queue[queue] = jobs

    def woken(self, source: str) -> None:
        with self._lock:
            self.wakeups += 1
            self._inc("wakeups", (source,))

    def schedule_event(self, name: str, event: str) -> None:
        with self._lock:
            self._inc("schedule_events", (name, event))

    def budget_wait(self, seconds: float) -> None:
        with self._lock:
            self.budget_waits += 1
            self._inc("budget_waits", ())
            self._inc("budget_wait_seconds", (), seconds)

    def call_budget(self, per_hour: int) -> None:
        """The cap on calls per hour (0: none), shown as a gauge."""
        with self._lock:
            self.call_budget_per_hour = per_hour

    def mark_stopping(self) -> int:
        """Every loop still running is now stopping; returns the calls in flight."""
        with self._lock:
            for loop in self._loops:
                if loop.state is not LoopState.STOPPED:
                    self._move(loop, LoopState.STOPPING)
            return sum(1 for loop in self._loops if loop.in_flight)

    def set_state(self, record: LoopRecord, state: LoopState) -> None:
        with self._lock:
            self._move(record, state)
            if state is LoopState.STOPPED:
                record.deadline = float("inf")

    # --- readers (any thread) -------------------------------------------------------------
    def stuck_loops(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return [loop.name for loop in self._loops if now > loop.deadline]

    def overall_state(self) -> str:
        with self._lock:
            states = {loop.state for loop in self._loops}
        # Most telling first; a stopped loop only speaks when every loop has stopped (one
        # queue drained in --drain must not make a still-working pump look stopped).
        for state in (LoopState.STOPPING, LoopState.WORKING, LoopState.BACKING_OFF,
                      LoopState.PACED, LoopState.IDLE, LoopState.STOPPED):
            if state in states:
                return state.value
        return LoopState.STARTING.value

    def metrics_view(self) -> MetricsView:
        """Every number /metrics shows, copied at one moment (metrics.py renders it)."""
        with self._lock:
            by_state = dict.fromkeys(LoopState, 0)
            for loop in self._loops:
                by_state[loop.state] += 1
            gauges: dict[str, dict[Labels, float]] = {
                "consecutive_failures": {(q,): float(self.streaks.get(q, 0))
                                         for q in self._queues},
                "last_success_timestamp_seconds": {(): self.last_success_wall or 0.0},
                "in_flight": {(q,): float(n) for q, n in self._in_flight.items()},
                "loops": {(state.value,): float(n) for state, n in by_state.items()},
                "idle_sleep_seconds": {(q,): s for q, s in self.idle_sleep_by_queue.items()},
                "backlog": {(q,): float(n) for q, n in self.backlog_by_queue.items()},
                "call_budget_per_hour": {(): float(self.call_budget_per_hour)},
            }
            counters = {name: {labels: Series(s.value, s.created) for labels, s in series.items()}
                        for name, series in self._counters.items()}
            durations = {q: Durations(d.created, list(d.counts), d.total_s)
                         for q, d in self._durations.items()}
        return MetricsView(counters, gauges, durations, __version__)

    def snapshot(self) -> dict[str, Any]:
        """The JSON body of /healthz. Counters and states only: nothing secret lives here."""
        now = self._clock()
        stuck = self.stuck_loops()
        state = self.overall_state()
        with self._lock:
            since = None if self.last_success_mono is None else round(
                now - self.last_success_mono, 3)
            problems = [f"queue {queue}: the latest failed call was a configuration error "
                        f"({key}); the call_failed log line says which and what to check"
                        for queue, key in sorted(self.misconfigured.items())]
            return {
                "status": "ok" if not stuck else "stuck",
                # status is liveness (the systemd watchdog reads it: a restart cures a wedge);
                # healthy adds what a restart cannot cure, for /healthz and the healthcheck.
                "healthy": not stuck and not problems,
                "problems": problems,
                "misconfigured": dict(self.misconfigured),
                "state": state,
                "ready": self.ever_succeeded and not any(self.streaks.values()),
                "seconds_since_last_success": since,
                "consecutive_failures": max(self.streaks.values(), default=0),
                "consecutive_failures_by_queue": dict(self.streaks),
                "in_flight": sum(1 for loop in self._loops if loop.in_flight),
                "uptime_s": round(now - self.started_at, 3),
                "counters": dict(self.counts),
                "errors": dict(self.errors_by_kind),
                "idle_sleep_s": dict(self.idle_sleep_by_queue),
                "backlog": dict(self.backlog_by_queue),
                "wakeups": self.wakeups,
                "budget_waits": self.budget_waits,
                "loops": [{"name": loop.name, "queue": loop.queue, "state": loop.state.value,
                           "in_flight": loop.in_flight,
                           "consecutive_failures": loop.consecutive_failures,
                           "stuck": loop.name in stuck} for loop in self._loops],
                "version": __version__,
                "worker_id": self.worker_id,
                "runner": self.runner,
            }
