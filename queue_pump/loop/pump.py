"""The loops: call -> outcome -> record -> sleep or back off -> call, until told to stop.

The pump builds nothing: it is handed the calls, the pause (a wait that ends early on stop), the
clock, the stop event, the stats and the logger, so tests drive it in fake time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from ..exits import ExitCode, Mode
from ..observe.state import LoopRecord, LoopState, Stats
from .backoff import (
    QueueGate,
    adaptive_idle,
    full_jitter,
    idle_delay,
    next_delay,
)
from .budget import TokenBucket
from .client import Idle, Outcome, Processed
from .failures import CallError, ErrorKind, internal
from .idle_gate import IdleGate, loops_wanted
from .rate import RecentRate
from .waits import Bell, Pause, Waker, stop_or_timeout

CallFn = Callable[[], Awaitable[Outcome]]


IDLE_LOG_INTERVAL_S = 60.0
# A runner's absurd optional fields (a negative backlog, "jobs": "ten"): one warning per queue
# per this interval, with how many were ignored since the last, however many calls bring them.
IGNORED_LOG_INTERVAL_S = 60.0
# A call to an idle queue that takes longer than this many times the queue's usual idle answer
# (at least LONG_CALL_MIN_S) is taken for a job running (idle_gate.py: on_long_call).
LONG_CALL_FACTOR = 4.0
LONG_CALL_MIN_S = 0.25
# The weight of the newest idle answer's duration in that usual one (a moving average).
IDLE_CALL_WEIGHT = 0.2
# The progress line's rate: jobs per second over the last minute, not since start.
RATE_WINDOW_S = 60.0
# A --drain pass run from cron must end even when the runner is down, or passes pile up.
DRAIN_MAX_FAILURES = 5


@dataclass(frozen=True)
class Lane:
    """One queue and the loops that pump it."""

    queue: str
    concurrency: int
    call: CallFn
    url: str | None = None  # the runner's URL, redacted: shown with configuration errors


@dataclass(frozen=True)
class Policy:
    """What the loops need of the settings, under the settings' own names (app.py builds it)."""

    idle_sleep_s: float
    idle_max_sleep_s: float
    tick_sleep_s: float
    backoff_base_s: float
    backoff_max_s: float
    http_timeout_s: float
    shutdown_grace_s: float
    log_every: int

    def idle_pause_s(self, idle_streak: int) -> float:
        """The idle sleep after ``idle_streak`` idle answers in a row (adaptive idle)."""
        if self.idle_max_sleep_s <= self.idle_sleep_s:
            return self.idle_sleep_s
        return adaptive_idle(self.idle_sleep_s, self.idle_max_sleep_s).bound(idle_streak)

    @property
    def park_s(self) -> float:
        """How long a parked loop waits before it asks its queue's gate again (a release ends
        the wait sooner): the longest idle sleep, so a parked loop is never taken for stuck."""
        return max(self.idle_sleep_s, self.idle_max_sleep_s)


@dataclass(frozen=True)
class _RunRules:
    """The once/drain rules in one place: which loops run, when a loop ends, what the run
    exits with. FOREVER ends only on stop; ONCE makes one call on one loop; DRAIN calls until
    the queue answers idle, and gives up on a failure that will not fix itself."""

    mode: Mode

    def lanes(self, lanes: Sequence[Lane]) -> list[Lane]:
        if self.mode is Mode.ONCE:
            return [Lane(lanes[0].queue, 1, lanes[0].call, lanes[0].url)]
        return list(lanes)

    def gives_up(self, error: CallError, failures: int) -> bool:
        if self.mode is Mode.ONCE:
            return True
        return self.mode is Mode.DRAIN and (
            error.kind is ErrorKind.CONFIGURATION or failures >= DRAIN_MAX_FAILURES)

    def ends_after_processed(self) -> bool:
        return self.mode is Mode.ONCE

    def ends_when_idle(self) -> bool:
        return self.mode is not Mode.FOREVER

    def exit_code(self, *, crashed: int, cancelled: int, results: Sequence[bool]) -> ExitCode:
        if crashed:  # the bug is the news, even if the grace ran out after it
            return ExitCode.CALL_FAILED
        if cancelled:
            return ExitCode.GRACE_EXPIRED
        if self.mode is not Mode.FOREVER and not all(results):
            return ExitCode.CALL_FAILED
        return ExitCode.OK


@dataclass(frozen=True)
class _Step:
    """What one call gave: an outcome or an error, how long it took, and the wake generation
    seen before it started."""

    outcome: Outcome | None
    error: CallError | None
    duration_s: float
    woken_before: int


@dataclass(frozen=True)
class Next:
    """What a loop does after a step: pause (``None``: call again at once), or end with
    ``result`` (True: its work is done; False: it failed)."""

    pause_s: float | None = None
    wakeable: bool = False  # an idle sleep: a wake ends it, and so does work found by a loop
    end: bool = False
    result: bool = True


@dataclass
class _LoopState:
    lane: Lane
    record: LoopRecord
    gate: QueueGate
    idle: IdleGate
    bell: Bell  # rung when the queue has work again: parked loops ask the idle gate anew
    failures: int = 0


class Pump:
    def __init__(self, lanes: Sequence[Lane], policy: Policy, stats: Stats,
                 log: FilteringBoundLogger, *,
                 stop: asyncio.Event, pause: Pause | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, budget: TokenBucket | None = None,
                 waker: Waker | None = None) -> None:
        self._lanes = list(lanes)
        self._policy = policy
        self._stats = stats
        self._log = log
        self._stop = stop
        self._pause = pause or stop_or_timeout(stop, waker)
        self._waker = waker
        self._budget = budget
        self._budget_biting = False
        self._idle_streak: dict[str, int] = {lane.queue: 0 for lane in lanes}
        self._clock = clock
        self._rng = rng or random.Random()
        self._strategy = full_jitter(policy.backoff_base_s, policy.backoff_max_s)
        self._gates = {lane.queue: QueueGate(policy.backoff_base_s, self._rng) for lane in lanes}
        self._idle_gates = {lane.queue: IdleGate() for lane in lanes}
        self._bells = {lane.queue: Bell() for lane in lanes}
        self._ignored: dict[str, tuple[float, int]] = {}  # queue: (last line, ignored since)
        self._idle_call_s: dict[str, float] = {}  # queue: how long an idle answer takes
        self._drained: set[str] = set()
        self._processed = 0
        self._started = clock()
        self._rate = RecentRate(RATE_WINDOW_S, self._started)
        self._last_idle_log: dict[str, float] = {}
        self._idle_since_log: dict[str, int] = {}
        self._quiet: set[str] = set()  # queues whose idle state was already announced
        self.cancelled_calls = 0
        self.crashed = 0  # loops that died of a bug: the process must exit non-zero
        self.stop_seen_at: float | None = None  # monotonic; the shutdown grace runs from here

    async def run(self, mode: Mode = Mode.FOREVER) -> ExitCode:
        rules = _RunRules(mode)
        tasks = [asyncio.create_task(self._loop(lane, i, rules), name=f"{lane.queue}-{i}")
                 for lane in rules.lanes(self._lanes) for i in range(lane.concurrency)]
        # asyncio.wait, not gather: it never raises, so a call cancelled at the end of the grace
        # leaves no "exception was never retrieved" traceback behind.
        all_done: asyncio.Future[Any] = asyncio.ensure_future(asyncio.wait(tasks))
        stop_wait: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({all_done, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not all_done.done():
                self.stop_seen_at = self._clock()
                await self._drain_in_flight(tasks)
        finally:
            stop_wait.cancel()
            all_done.cancel()
        results = [t.result() for t in tasks if t.done() and not t.cancelled()]
        return rules.exit_code(crashed=self.crashed, cancelled=self.cancelled_calls,
                               results=results)

    async def _drain_in_flight(self, tasks: list[asyncio.Task[bool]]) -> None:
        """After the stop: sleeping loops are already awake and leaving; calls get the grace."""
        in_flight = self._stats.mark_stopping()
        self._log.info("shutdown_started", in_flight=in_flight,
                       grace_s=self._policy.shutdown_grace_s)
        _, pending = await asyncio.wait(tasks, timeout=self._policy.shutdown_grace_s)
        if pending:
            self.cancelled_calls = len(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self, lane: Lane, index: int, rules: _RunRules) -> bool:
        """Until stop, or until ``rules`` end it: step, handle, pause. True: done; False: it
        gave up or crashed."""
        record = self._stats.add_loop(f"{lane.queue}-{index}", lane.queue)
        state = _LoopState(lane, record, self._gates[lane.queue], self._idle_gates[lane.queue],
                           self._bells[lane.queue])
        state.idle.join(record.name)
        try:
            while not self._stop.is_set() and lane.queue not in self._drained:
                if state.gate.given_up:
                    return False
                if await self._parked(state):
                    continue
                if await self._held(state.gate, record):
                    continue
                if self._budget is not None:
                    await self._wait_for_budget(lane, record)
                    if self._stop.is_set():
                        break
                after = self._handle(await self._step(state), state, rules)
                if after.end:
                    return after.result
                if after.pause_s is not None and after.wakeable:
                    await self._pause(after.pause_s, wakeable=True, until=state.bell.current())
                elif after.pause_s is not None:
                    await self._pause(after.pause_s)
            return True
        except Exception as exc:
            # A bug outside the call. Crash-only: stop the whole pump (the other loops finish
            # their calls) and exit non-zero, so the supervisor restarts a clean process
            # instead of leaving a pump that quietly runs with fewer loops.
            self.crashed += 1
            self._log.error("loop_crashed", loop=record.name,
                            error=f"{type(exc).__name__}: {exc}"[:300])
            self._stop.set()
            return False
        finally:
            state.gate.leave(record.name)
            if state.idle.leave(record.name):
                state.bell.ring()  # a parked loop takes over the probing
            self._stats.set_state(record, LoopState.STOPPED)

    def _handle(self, step: _Step, state: _LoopState, rules: _RunRules) -> Next:
        if step.error is not None:
            return self._on_error(step.error, step.duration_s, state, rules)
        state.gate.succeeded()
        if state.failures:
            self._log.info("recovered", queue=state.lane.queue, loop=state.record.name,
                           after_failures=state.failures)
            state.failures = 0
        outcome = step.outcome
        if isinstance(outcome, Processed | Idle):
            if outcome.backlog is not None:
                self._stats.backlog(state.lane.queue, outcome.backlog)
            if outcome.ignored:
                self._note_ignored(state.lane, outcome.ignored)
        if isinstance(outcome, Processed):
            return self._on_processed(outcome, step.duration_s, state, rules)
        return self._on_idle(step, state, rules)

    def _on_error(self, error: CallError, duration_s: float, state: _LoopState,
                  rules: _RunRules) -> Next:
        state.failures += 1
        delay = self._after_failure(state.lane, state.record, error, state.failures,
                                    rules.gives_up(error, state.failures), duration_s)
        if delay is None:
            if rules.mode is Mode.DRAIN and not state.gate.given_up:
                why = ("a configuration error" if error.kind is ErrorKind.CONFIGURATION
                       else f"{state.failures} failed calls in a row")
                self._log.error("drain_gave_up", queue=state.lane.queue, reason=error.reason,
                                status=error.status, why=why)
            state.gate.given_up = True
            return Next(end=True, result=False)
        return Next(pause_s=delay)

    def _on_processed(self, outcome: Processed, duration_s: float, state: _LoopState,
                      rules: _RunRules) -> Next:
        self._idle_streak[state.lane.queue] = 0
        self._stats.call_ended(state.record, duration_s, "processed",
                               job_status=str(outcome.status), jobs=outcome.jobs)
        self._note_processed(state.lane, outcome)
        if rules.ends_after_processed():
            return Next(end=True)
        wanted = loops_wanted(outcome.backlog, outcome.jobs, len(state.idle.members))
        if state.idle.on_work(state.record.name, wanted):
            state.bell.ring()
        self._stats.sleeping(state.record, LoopState.WORKING, self._policy.tick_sleep_s)
        return Next(pause_s=self._policy.tick_sleep_s)

    def _on_idle(self, step: _Step, state: _LoopState, rules: _RunRules) -> Next:
        queue = state.lane.queue
        self._stats.call_ended(state.record, step.duration_s, "idle")
        if rules.ends_when_idle():
            self._drained.add(queue)
            self._log.info("queue_drained", queue=queue, processed=self._processed)
            return Next(end=True)
        usual = self._idle_call_s.get(queue, step.duration_s)
        self._idle_call_s[queue] = usual + IDLE_CALL_WEIGHT * (step.duration_s - usual)
        if not state.idle.on_idle(state.record.name):
            return Next()  # another loop probes this queue: this one parks (the loop's top)
        self._idle_streak[queue] += 1
        base = self._policy.idle_pause_s(self._idle_streak[queue])
        if self._waker and self._waker.generation != step.woken_before:
            return Next()  # woken while the call was in flight: the news is newer
        delay = idle_delay(base, self._rng)
        self._note_idle(state.lane, delay)
        self._stats.idle_sleep(queue, base)
        self._stats.sleeping(state.record, LoopState.IDLE, delay)
        return Next(pause_s=delay, wakeable=True)

    async def _parked(self, state: _LoopState) -> bool:
        """Wait while another loop probes this idle queue; True if it waited. The wait ends
        when the queue's bell rings (work found, or the prober left), on stop, or after
        ``park_s``, and the loop then asks the gate again: no call in between."""
        if state.idle.may_call(state.record.name):
            return False
        released = state.bell.current()
        self._stats.sleeping(state.record, LoopState.IDLE, self._policy.park_s)
        await self._pause(self._policy.park_s, until=released)
        return True

    async def _held(self, gate: QueueGate, record: LoopRecord) -> bool:
        """Wait while another loop probes this queue's failing runner; True if it waited."""
        wait = gate.hold(record.name, self._clock())
        if wait <= 0:
            return False
        self._stats.sleeping(record, LoopState.BACKING_OFF, wait)
        await self._pause(wait)
        return True

    async def _step(self, state: _LoopState) -> _Step:
        """One call: its outcome or its error, and how long it took."""
        lane, record = state.lane, state.record
        woken_before = self._waker.generation if self._waker else 0
        self._stats.call_started(record, self._policy.http_timeout_s)
        started = self._clock()
        outcome: Outcome | None = None
        error: CallError | None = None
        try:
            outcome = await (self._watched(state) if state.idle.parked else lane.call())
        except CallError as exc:
            error = exc
        except asyncio.CancelledError:
            self._log.warning("call_cancelled", queue=lane.queue, loop=record.name,
                              reason="shutdown grace expired")
            raise
        except Exception as exc:  # a bug in one call must not kill the loop for good
            error = internal(exc)
        duration = self._clock() - started
        self._log.debug("call", queue=lane.queue, loop=record.name,
                        outcome="error" if error else type(outcome).__name__.lower(),
                        duration_ms=round(duration * 1000, 2),
                        backlog=getattr(outcome, "backlog", None))
        return _Step(outcome, error, duration, woken_before)

    async def _watched(self, state: _LoopState) -> Outcome:
        """The call, while other loops of its queue are parked: an answer to an empty queue
        comes in milliseconds, so a call still in flight after ``_long_call_s`` is running a job
        (a runner may run it before answering, for minutes). Then the loops calling double, up
        to all of them, without waiting for that answer: a burst after a quiet spell is not
        left to one loop for the length of a job."""
        call = asyncio.ensure_future(state.lane.call())
        if isinstance(call, asyncio.Task):
            call.set_name(state.record.name)  # its loop's, as a call's task is otherwise
        answered = asyncio.Event()
        call.add_done_callback(lambda _: answered.set())
        try:
            await self._pause(self._long_call_s(state.lane.queue), until=answered)
            long = not call.done() and not self._stop.is_set()
            if long and state.idle.on_long_call(state.record.name):
                state.bell.ring()
            return await call
        except asyncio.CancelledError:
            call.cancel()
            raise

    def _long_call_s(self, queue: str) -> float:
        return max(LONG_CALL_MIN_S, LONG_CALL_FACTOR * self._idle_call_s.get(queue, 0.0))

    def _after_failure(self, lane: Lane, record: LoopRecord, error: CallError, failures: int,
                       gives_up: bool, duration: float) -> float | None:
        """Record and log a failed call; the wait before the next one, None to give up."""
        self._stats.call_ended(record, duration, "error", error=(error.kind.value, error.reason))
        delay = next_delay(self._strategy, failures, self._policy.backoff_max_s,
                           retry_after_s=error.retry_after_s,
                           at_cap=error.kind is ErrorKind.CONFIGURATION, rng=self._rng)
        self._log_failure(lane, record, error, failures, None if gives_up else delay)
        if gives_up:
            return None
        self._gates[lane.queue].failed(record.name, self._clock(), delay)
        self._stats.sleeping(record, LoopState.BACKING_OFF, delay)
        return delay

    async def _wait_for_budget(self, lane: Lane, record: LoopRecord) -> None:
        assert self._budget is not None
        wait = self._budget.reserve()
        if wait <= 0:
            self._budget_biting = False
            return
        if not self._budget_biting:
            # Once per stretch of pacing, not once per call: the metric has the detail.
            self._budget_biting = True
            self._log.warning("budget_limiting", queue=lane.queue,
                              max_calls_per_hour=self._budget.per_hour,
                              wait_s=round(wait, 3))
        self._stats.budget_wait(wait)
        self._stats.sleeping(record, LoopState.PACED, wait)
        await self._pause(wait)

    # --- log policy ------------------------------------------------------------------------
    def _note_processed(self, lane: Lane, outcome: Processed) -> None:
        before = self._processed
        self._processed += outcome.jobs
        self._quiet.discard(lane.queue)
        # A job's own failure is a 200 to the pump, but an operator must see it without
        # /metrics: every job that ended failed, and every retry, gets its own line.
        now = self._clock()
        self._rate.add(now, outcome.jobs)
        if outcome.status in ("failed", "retry"):
            # With the runner's own words for why (clipped, and masked like every line).
            log = self._log.warning if outcome.status == "failed" else self._log.info
            log(f"job_{outcome.status}", queue=lane.queue, job_id=outcome.job_id,
                job_type=outcome.job_type, error=outcome.error)
        every = self._policy.log_every
        # Every ``every`` jobs: a call that ran ten jobs may step over a multiple.
        if outcome.yielded or (every and self._processed // every > before // every):
            self._log.info("progress", queue=lane.queue, processed=self._processed,
                           job_id=outcome.job_id, job_type=outcome.job_type,
                           job_status=outcome.status, yielded=outcome.yielded,
                           jobs=outcome.jobs, backlog=outcome.backlog,
                           rate_per_s=round(self._rate.per_second(now), 2),
                           rate_window_s=RATE_WINDOW_S)

    def _note_ignored(self, lane: Lane, ignored: tuple[str, ...]) -> None:
        """The runner sent an optional field the pump cannot use: one warning per queue per
        interval, however often it comes (it would come with every call)."""
        now = self._clock()
        last, count = self._ignored.get(lane.queue, (None, 0))
        count += 1
        if last is not None and now - last < IGNORED_LOG_INTERVAL_S:
            self._ignored[lane.queue] = (last, count)
            return
        self._log.warning("runner_field_ignored", queue=lane.queue, fields=list(ignored),
                          answers=count, interval_s=IGNORED_LOG_INTERVAL_S)
        self._ignored[lane.queue] = (now, 0)

    def _note_idle(self, lane: Lane, next_sleep_s: float) -> None:
        """Per queue: the first idle answer after work, then about once a minute."""
        queue = lane.queue
        self._idle_since_log[queue] = self._idle_since_log.get(queue, 0) + 1
        now = self._clock()
        last = self._last_idle_log.get(queue)
        if queue not in self._quiet or last is None or now - last >= IDLE_LOG_INTERVAL_S:
            self._log.info("idle", queue=queue, idle_calls=self._idle_since_log[queue],
                           processed=self._processed, next_sleep_s=round(next_sleep_s, 3))
            self._last_idle_log[queue] = now
            self._idle_since_log[queue] = 0
            self._quiet.add(queue)

    def _log_failure(self, lane: Lane, record: LoopRecord, error: CallError, failures: int,
                     next_delay_s: float | None) -> None:
        # Every key on every line, None when it does not apply: stable keys for log queries.
        fields: dict[str, Any] = {
            "queue": lane.queue, "loop": record.name, "kind": error.kind.value,
            "reason": error.reason, "status": error.status, "attempt": failures,
            "next_delay_s": None if next_delay_s is None else round(next_delay_s, 3),
            "retry_after_s": error.retry_after_s, "detail": error.detail or None,
            "hint": error.hint or None,
            "url": lane.url if error.kind is ErrorKind.CONFIGURATION else None,
        }
        if error.kind is ErrorKind.CONFIGURATION:
            self._log.error("call_failed", **fields)
        else:
            self._log.warning("call_failed", **fields)
