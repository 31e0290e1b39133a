"""What the loops did, for whoever reads it: /healthz, /metrics, the watchdog, alerts.

Loops write from the event loop; the health server reads from its own thread, so every read
and write of shared state holds one small lock. Stats records; it never decides.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .. import __version__

# How far past its planned end a call or sleep may run before the loop counts as stuck: event
# loop hiccups and GC pauses must not flap the health check.
STUCK_SLACK_S = 30.0
# Runner statuses are free text; only these become metric labels, the rest count as "other".
KNOWN_JOB_STATUSES = frozenset({"done", "completed", "succeeded", "retry", "failed", "yielded"})
# The error kind (client.ErrorKind.CONFIGURATION) that no retry can fix: only a new setting can.
CONFIGURATION = "configuration"


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

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.m_calls = Counter("queue_pump_calls", "Runner calls by outcome.",
                               ["queue", "outcome"], registry=r)
        self.m_errors = Counter("queue_pump_call_errors",
                                "Failed runner calls by error kind and reason.",
                                ["queue", "kind", "reason"], registry=r)
        self.m_jobs = Counter("queue_pump_jobs", "Processed jobs by the status the runner gave.",
                              ["queue", "status"], registry=r)
        self.m_duration = Histogram(
            "queue_pump_call_duration_seconds", "Runner call duration.", ["queue"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))
        self.m_streak = Gauge("queue_pump_consecutive_failures",
                              "Failed calls in a row, per queue.", ["queue"], registry=r)
        self.m_last_success = Gauge("queue_pump_last_success_timestamp_seconds",
                                    "Unix time of the last call that did not fail.", registry=r)
        self.m_in_flight = Gauge("queue_pump_in_flight", "Calls in flight.", ["queue"],
                                 registry=r)
        self.m_loops = Gauge("queue_pump_loops", "Loops by state.", ["state"], registry=r)
        self.m_idle_sleep = Gauge("queue_pump_idle_sleep_seconds",
                                  "Current idle sleep (before jitter); grows with adaptive idle.",
                                  ["queue"], registry=r)
        self.m_wakeups = Counter("queue_pump_wakeups", "Wake-ups of idle loops by source.",
                                 ["source"], registry=r)
        self.m_budget_waits = Counter("queue_pump_budget_waits",
                                      "Calls that waited for the call budget.", registry=r)
        self.m_budget_wait_s = Counter("queue_pump_budget_wait_seconds",
                                       "Seconds loops waited for the call budget.", registry=r)
        self.m_schedule = Counter("queue_pump_schedule_events",
                                  "Scheduled enqueues by schedule and event "
                                  "(fired, retried, failed, skipped).",
                                  ["schedule", "event"], registry=r)
        self.m_budget = Gauge("queue_pump_call_budget_per_hour",
                              "QUEUE_PUMP_MAX_CALLS_PER_HOUR (0: no cap).", registry=r)
        # Label children are looked up once, not per call: labels() takes a lock and a dict
        # lookup every time, and the per-call path should cost next to nothing.
        self._state_gauges = {state: self.m_loops.labels(state.value) for state in LoopState}
        self._per_queue: dict[str, dict[str, Any]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.idle_sleep_by_queue: dict[str, float] = {}
        self.wakeups = 0
        self.budget_waits = 0
        Info("queue_pump_build", "Version of the pump.", registry=r).info(
            {"version": __version__, "python": platform.python_version()})

    # --- writers (event loop) -------------------------------------------------------------
    def add_loop(self, name: str, queue: str) -> LoopRecord:
        record = LoopRecord(name=name, queue=queue)
        with self._lock:
            self._loops.append(record)
        if queue not in self._per_queue:
            self._per_queue[queue] = {
                "in_flight": self.m_in_flight.labels(queue),
                "duration": self.m_duration.labels(queue),
                "processed": self.m_calls.labels(queue, "processed"),
                "idle": self.m_calls.labels(queue, "idle"),
                "error": self.m_calls.labels(queue, "error"),
                "streak": self.m_streak.labels(queue),
            }
            self._per_queue[queue]["streak"].set(0)
        self._state_gauges[record.state].inc()
        return record

    def _move(self, record: LoopRecord, state: LoopState) -> None:
        """Change a loop's state; the caller holds the lock."""
        old = record.state
        if old is not state:
            record.state = state
            self._state_gauges[old].dec()
            self._state_gauges[state].inc()

    def subscribe(self, listener: StreakListener) -> None:
        """``listener(queue, old_streak, new_streak)`` on every change of a queue's streak."""
        self._listeners.append(listener)

    def call_started(self, loop: LoopRecord, timeout_s: float) -> None:
        with self._lock:
            self._move(loop, LoopState.WORKING)
            loop.in_flight = True
            loop.deadline = self._clock() + timeout_s + STUCK_SLACK_S
        self._per_queue[loop.queue]["in_flight"].inc()

    def call_ended(self, loop: LoopRecord, duration_s: float, outcome: str,
                   job_status: str | None = None, error: tuple[str, str] | None = None) -> None:
        """``outcome`` is processed, idle or error; ``error`` is (kind, reason)."""
        queue = loop.queue
        with self._lock:
            loop.in_flight = False
            self.counts["calls"] += 1
            old = self.streaks.get(queue, 0)
            if error is None:
                self.counts[outcome] += 1
                self.streaks[queue] = 0
                loop.consecutive_failures = 0
                self.ever_succeeded = True
                self.misconfigured.pop(queue, None)
                self.last_success_wall = self._wall()
                self.last_success_mono = self._clock()
            else:
                self.counts["errors"] += 1
                key = f"{error[0]}:{error[1]}"
                self.errors_by_kind[key] = self.errors_by_kind.get(key, 0) + 1
                if error[0] == CONFIGURATION:
                    self.misconfigured[queue] = key
                self.streaks[queue] = old + 1
                loop.consecutive_failures += 1
            new = self.streaks[queue]
        metrics = self._per_queue[queue]
        metrics["in_flight"].dec()
        metrics["duration"].observe(duration_s)
        metrics[outcome].inc()
        if error is not None:
            self._child(self.m_errors, queue, *error).inc()
        else:
            self.m_last_success.set(self.last_success_wall or 0)
        if outcome == "processed":
            status = job_status if job_status in KNOWN_JOB_STATUSES else "other"
            self._child(self.m_jobs, queue, status).inc()
        if new != old:
            metrics["streak"].set(new)
            for listener in self._listeners:
                listener(queue, old, new)

    def _child(self, metric: Any, *labels: str) -> Any:
        """A label child, looked up once: both label sets are small and bounded."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def sleeping(self, record: LoopRecord, state: LoopState, seconds: float) -> None:
        with self._lock:
            self._move(record, state)
            record.deadline = self._clock() + seconds + STUCK_SLACK_S

    def idle_sleep(self, queue: str, seconds: float) -> None:
        with self._lock:
            self.idle_sleep_by_queue[queue] = seconds
        self.m_idle_sleep.labels(queue).set(seconds)

    def woken(self, source: str) -> None:
        with self._lock:
            self.wakeups += 1
        self.m_wakeups.labels(source).inc()

    def schedule_event(self, name: str, event: str) -> None:
        self.m_schedule.labels(name, event).inc()

    def budget_wait(self, seconds: float) -> None:
        with self._lock:
            self.budget_waits += 1
        self.m_budget_waits.inc()
        self.m_budget_wait_s.inc(seconds)

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
