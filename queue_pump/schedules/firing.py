"""Scheduled enqueue: POST a job on a cron schedule (UTC), once per window, safe across restarts.

Each window of an entry is sent with a dedupe key made from the window's start, so a retry, a
restart or a second pump sends the same key again and an idempotent endpoint (the reference
runner's ``POST /jobs``) keeps one job. The scheduler keeps no state on disk on purpose: after a
restart it fires the latest window at or before now once and lets the endpoint's dedupe decide.
The file and its checks are file.py beside this one; the rules are in docs/SCHEDULES.md.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from structlog.typing import FilteringBoundLogger

from ..loop import failures
from ..loop.backoff import full_jitter, next_delay
from ..loop.failures import CallError, ErrorKind
from .file import Schedule, as_utc, iso_window

COUNTERS = ("fired", "retried", "failed", "skipped")
# The wall clock can jump (suspend, NTP): never trust one long sleep to end on time.
MAX_NAP_S = 60.0
# An enqueue is a small insert; the pump's HTTP timeout (30 min) is sized for running jobs.
REQUEST_TIMEOUT_S = 30.0
# Only `created` and an error message are read from an answer.
MAX_ANSWER_BYTES = 64 * 1024
MAX_ANSWER_PIECES = 256  # and in as many reads at most: chunk framing is wire bytes too

Pause = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class FiringPolicy:
    """How hard one window is tried (app.py builds it from the settings)."""

    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    request_timeout_s: float = REQUEST_TIMEOUT_S


class Scheduler:
    """Fires every schedule's windows; everything it needs is handed in, so tests fake time.

    ``now`` is the wall clock (UTC); ``pause(seconds)`` must return early once ``stop`` is set
    (waits.stop_or_timeout). ``on_count(name, counter)`` is called on every change of ``counts``.
    """

    def __init__(self, schedules: Sequence[Schedule], http: httpx.AsyncClient,
                 headers: Mapping[str, str], *, stop: asyncio.Event,
                 now: Callable[[], datetime], pause: Pause, log: FilteringBoundLogger,
                 policy: FiringPolicy = FiringPolicy(),
                 on_count: Callable[[str, str], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self._schedules = list(schedules)
        self._http = http
        self._headers = dict(headers)
        self._stop = stop
        self._clock = now
        self._pause = pause
        self._log = log
        self._strategy = full_jitter(policy.backoff_base_s, policy.backoff_max_s)
        self._rng = rng or random.Random()
        self._backoff_max_s = policy.backoff_max_s
        self._request_timeout_s = policy.request_timeout_s
        self._on_count = on_count
        self.counts: dict[str, dict[str, int]] = {
            s.name: dict.fromkeys(COUNTERS, 0) for s in self._schedules}

    async def run(self) -> None:
        """Until ``stop`` is set. A POST in flight then finishes (bounded by request_timeout_s);
        cancelling the task instead is safe: the window is caught up on the next start."""
        async with asyncio.TaskGroup() as group:
            for schedule in self._schedules:
                group.create_task(self._run_one(schedule), name=f"schedule-{schedule.name}")

    def _now(self) -> datetime:
        return as_utc(self._clock())

    def _count(self, schedule: Schedule, counter: str) -> None:
        self.counts[schedule.name][counter] += 1
        if self._on_count is not None:
            self._on_count(schedule.name, counter)

    async def _run_one(self, schedule: Schedule) -> None:
        # The one catch-up: without state we cannot know whether the latest window was sent,
        # so send it and let the dedupe key make a repeat harmless.
        window = schedule.latest_window(self._now())
        while not self._stop.is_set():
            if window is not None:
                await self._fire(schedule, window)
            following = schedule.next_window(window if window is not None else self._now())
            if following is None:
                self._log.warning("schedule_skipped", name=schedule.name, reason="no_more_windows")
                return
            if not await self._wait_until(following):
                return
            latest = schedule.latest_window(self._now()) or following
            if latest > following:
                # Never a burst: windows missed while busy or asleep collapse into the latest.
                self._count(schedule, "skipped")
                self._log.warning("schedule_skipped", name=schedule.name,
                                  window=iso_window(following), reason="missed",
                                  firing=iso_window(latest))
            window = latest

    async def _wait_until(self, when: datetime) -> bool:
        while not self._stop.is_set():
            remaining = (when - self._now()).total_seconds()
            if remaining <= 0:
                return True
            await self._pause(min(remaining, MAX_NAP_S))
        return False

    async def _fire(self, schedule: Schedule, window: datetime) -> None:
        """POST one window until it is accepted, rejected, stopped, or the next window is due."""
        key = schedule.key_for(window)
        # Built once: every attempt sends the very same bytes, so the same key.
        content = json.dumps(schedule.body_for(window), separators=(",", ":")).encode()
        headers = httpx.Headers(self._headers)
        headers.update(schedule.headers)
        deadline = schedule.next_window(window)
        fields: dict[str, Any] = {"name": schedule.name, "window": iso_window(window),
                                  "dedupe_key": key}
        attempt = 0
        while True:
            if self._stop.is_set():
                self._count(schedule, "skipped")
                self._log.info("schedule_skipped", **fields, reason="shutdown", attempts=attempt)
                return
            attempt += 1
            result = await self._attempt(schedule.url, content, headers)
            if isinstance(result, tuple):
                status, created = result
                self._count(schedule, "fired")
                self._log.info("schedule_fired", **fields, status=status, created=created,
                               attempts=attempt)
                return
            failure = result.fields()
            if result.kind is not ErrorKind.RETRYABLE:
                self._count(schedule, "failed")
                self._log.error("schedule_failed", **fields, attempts=attempt, **failure)
                return
            # Exact: one POST per window, no herd of loops to spread (and the window's
            # deadline cuts the wait anyway).
            delay = next_delay(self._strategy, attempt, self._backoff_max_s,
                               retry_after_s=result.retry_after_s, at_cap=False, rng=self._rng,
                               spread=0.0)
            if deadline is not None:
                delay = min(delay, max(0.0, (deadline - self._now()).total_seconds()))
            self._count(schedule, "retried")
            self._log.warning("schedule_retry", **fields, attempt=attempt,
                              next_delay_s=round(delay, 3), **failure)
            await self._pause(delay)
            if deadline is not None and not self._stop.is_set() and self._now() >= deadline:
                self._count(schedule, "failed")
                self._log.error("schedule_failed", **fields, attempts=attempt,
                                **{**failure, "reason": "window_abandoned",
                                   "last_reason": result.reason},
                                hint="the next window is due; this one was not enqueued")
                return

    async def _attempt(self, url: str, content: bytes,
                       headers: httpx.Headers) -> tuple[int, bool | None] | CallError:
        """One POST: (status, created) when the window is done, else the CallError, classified
        as a runner call's would be (failures.py)."""
        try:
            async with asyncio.timeout(self._request_timeout_s):
                status, answer_headers, answer = await self._post(url, content, headers)
        except TimeoutError:
            return CallError(ErrorKind.RETRYABLE, "timeout",
                             detail=f"no answer within {self._request_timeout_s:g} s")
        except Exception as exc:  # a bug must cost one retry, not the whole schedule
            return failures.from_exception(exc, failures.SCHEDULE) or failures.internal(exc)
        if 200 <= status < 300:
            return status, _created(status, answer)
        if status == 409:
            # An enqueue endpoint that answers 409 Conflict for a known dedupe key has the job
            # already: that is this window done, not a failure to retry or to shout about.
            return status, False
        return failures.from_status(status, answer_headers, answer, failures.SCHEDULE,
                                    now=self._now())

    async def _post(self, url: str, content: bytes,
                    headers: httpx.Headers) -> tuple[int, httpx.Headers, bytes]:
        async with self._http.stream("POST", url, content=content, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            # The client asks for identity; a compressed answer anyway is not read at all, so
            # no bomb is ever inflated (it was only read for "created", which it then lacks).
            if response.headers.get("content-encoding", "identity").strip().lower() not in (
                    "", "identity"):
                return response.status_code, response.headers, b""
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_ANSWER_BYTES or len(chunks) > MAX_ANSWER_PIECES:
                    break  # what we read is enough; never buffer an unbounded answer
            return response.status_code, response.headers, b"".join(chunks)


def _created(status: int, answer: bytes) -> bool | None:
    """Whether the endpoint made a new job: its own word first, else 201; None if unknown."""
    try:
        data = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("created"), bool):
            return bool(data["created"])
        jobs = data.get("jobs")
        if isinstance(jobs, list) and jobs and all(
                isinstance(j, dict) and isinstance(j.get("created"), bool) for j in jobs):
            return any(j["created"] for j in jobs)
    return True if status == 201 else None
