"""Scheduled enqueue: POST a job on a cron schedule (UTC), once per window, safe across restarts.

Each window of an entry is sent with a dedupe key made from the window's start, so a retry, a
restart or a second pump sends the same key again and an idempotent endpoint (the reference
runner's ``POST /jobs``) keeps one job. The scheduler keeps no state on disk on purpose: after a
restart it fires the latest window at or before now once and lets the endpoint's dedupe decide.
The file format and the rules are in docs/SCHEDULES.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import string
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from cronsim import CronSim, CronSimError

from .backoff import full_jitter, next_delay, parse_retry_after
from .client import runner_message
from .config import ConfigError, is_loopback_host, redact_url

ENV = "QUEUE_PUMP_SCHEDULES"
DEFAULT_DEDUPE_KEY = "{name}:{window}"
BODY_KEY = "dedupeKey"  # the reference runner's field
COUNTERS = ("fired", "retried", "failed", "skipped")
# The wall clock can jump (suspend, NTP): never trust one long sleep to end on time.
MAX_NAP_S = 60.0
# An enqueue is a small insert; the pump's HTTP timeout (30 min) is sized for running jobs.
REQUEST_TIMEOUT_S = 30.0
# Only `created` and an error message are read from an answer.
MAX_ANSWER_BYTES = 64 * 1024

_ENTRY_KEYS = ("name", "cron", "url", "body", "dedupe_key", "headers")
_KEY_FIELDS = frozenset({"name", "window"})
_BODY_FIELDS = frozenset({"name", "window", "dedupe_key"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
_HINTS = {
    401: "the endpoint rejected the credentials: check AGENT_TOKEN and ORGANIZATION_ID (and "
         "SUPABASE_ANON_KEY, or this schedule's headers)",
    403: "the endpoint refused this caller: check ORGANIZATION_ID and the token's rights",
    404: "nothing answers at this URL: check this schedule's url",
}

Pause = Callable[[float], Awaitable[None]]


def iso_window(window: datetime) -> str:
    """A window as it appears in keys and logs: UTC, whole seconds, 'Z'."""
    return _utc(window).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(dt: datetime) -> datetime:
    # A naive time is taken as UTC rather than local: schedules are UTC by definition.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _first(it: Iterator[datetime]) -> datetime | None:
    # cronsim gives up (StopIteration) after 50 years without a match.
    return next(it, None)


def _template_fields(text: str, allowed: frozenset[str]) -> set[str]:
    """The fields a template uses; ValueError unless every one is a plain allowed {name}."""
    used: set[str] = set()
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            # Attribute access, indexes and format specs are refused: the template is data.
            raise ValueError(f"{{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a known field")
        used.add(name)
    return used


def _strings(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every leaf of a body with its dotted path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
    else:
        yield path, value


def _render(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(values)
    if isinstance(value, dict):
        return {key: _render(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, values) for item in value]
    return value


@dataclass(frozen=True)
class Schedule:
    """One validated entry of the schedules file."""

    name: str
    cron: str
    url: str
    body: Mapping[str, Any]
    dedupe_key: str = DEFAULT_DEDUPE_KEY
    # Extra headers may carry credentials: kept out of repr, never logged.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def latest_window(self, now: datetime) -> datetime | None:
        """The start of the latest window at or before ``now``."""
        # CronSim never yields its start instant; a microsecond later makes "at" count.
        it = CronSim(self.cron, _utc(now) + timedelta(microseconds=1), reverse=True)
        return _first(it)

    def next_window(self, after: datetime) -> datetime | None:
        """The start of the first window strictly after ``after``."""
        return _first(CronSim(self.cron, _utc(after)))

    def key_for(self, window: datetime) -> str:
        return self.dedupe_key.format_map({"name": self.name, "window": iso_window(window)})

    def body_for(self, window: datetime) -> dict[str, Any]:
        """The JSON body of one window: templates filled, the dedupe key in place."""
        key = self.key_for(window)
        body: dict[str, Any] = _render(
            self.body, {"name": self.name, "window": iso_window(window), "dedupe_key": key})
        if not self.places_key:
            body[BODY_KEY] = key
        return body

    @property
    def places_key(self) -> bool:
        """True when some body string says where the key goes ({dedupe_key})."""
        return any(isinstance(v, str) and "dedupe_key" in _template_fields(v, _BODY_FIELDS)
                   for _, v in _strings(self.body, "body"))


def load_schedules(path: str, *, allow_insecure_http: bool = False) -> list[Schedule]:
    """Read and validate a schedules file; ConfigError lists every problem, one line each."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{ENV}={path!r} cannot be read: "
                           f"{exc.strerror or type(exc).__name__}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{ENV}={path!r} is not valid TOML: {exc}"]) from None
    return parse_schedules(data, source=path, allow_insecure_http=allow_insecure_http)


def parse_schedules(data: Mapping[str, Any], *, source: str = "schedules",
                    allow_insecure_http: bool = False) -> list[Schedule]:
    """Validate an already-parsed schedules document (see load_schedules)."""
    problems: list[str] = []
    extra = sorted(set(data) - {"schedule"})
    if extra:
        problems.append(f"{source}: unknown top-level key(s) {', '.join(map(repr, extra))}; "
                        "expected only [[schedule]] entries")
    entries = data.get("schedule", [])
    if not isinstance(entries, list) or not entries:
        problems.append(f"{source}: no [[schedule]] entries; expected at least one "
                        "(unset QUEUE_PUMP_SCHEDULES to run without schedules)")
        raise ConfigError(problems)
    schedules: list[Schedule] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        schedule = _parse_entry(entry, number, source, seen, allow_insecure_http, problems)
        if schedule is not None:
            schedules.append(schedule)
    if problems:
        raise ConfigError(problems)
    return schedules


def _parse_entry(entry: Any, number: int, source: str, seen: dict[str, int],
                 allow_insecure_http: bool, problems: list[str]) -> Schedule | None:
    if not isinstance(entry, dict):
        problems.append(f"{source}: schedule #{number} is not a table; expected [[schedule]] "
                        "with name, cron, url, body")
        return None
    name = entry.get("name")
    label = f"{source}: schedule #{number}" + (f" {name!r}" if isinstance(name, str) else "")
    before = len(problems)

    def problem(text: str) -> None:
        problems.append(f"{label}: {text}")

    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        problem(f"unknown key(s) {', '.join(map(repr, unknown))}; expected "
                + ", ".join(_ENTRY_KEYS))
    for key in ("name", "cron", "url", "body"):
        if key not in entry:
            problem(f"{key} is missing")

    if "name" in entry:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problem(f"name {name!r} is not accepted; expected 1-64 letters, digits, '.', '_' "
                    "or '-', starting with a letter or digit")
        elif name in seen:
            problem(f"name is used by schedule #{seen[name]} too; expected unique names")
        else:
            seen[name] = number

    cron = entry.get("cron")
    if "cron" in entry:
        if not isinstance(cron, str) or len(cron.split()) != 5:
            # cronsim would also take 6 fields (seconds first) where croniter puts seconds
            # last: only the classic 5 fields mean the same thing everywhere.
            problem(f"cron {cron!r} is not a 5-field cron expression; expected "
                    f"{_CRON_FIELDS}, in UTC (e.g. '0 3 * * *')")
        else:
            try:
                if _first(CronSim(cron, datetime.now(UTC))) is None:
                    problem(f"cron {cron!r} never matches in the next 50 years")
            except CronSimError as exc:
                problem(f"cron {cron!r} is not valid ({exc}); expected {_CRON_FIELDS}, in UTC")

    url = entry.get("url")
    if "url" in entry:
        parts = urlsplit(url) if isinstance(url, str) else None
        shown = repr(redact_url(url)) if isinstance(url, str) else repr(url)
        try:
            port_ok = parts is not None and (parts.port or 0) >= 0
        except ValueError:
            port_ok = False
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            problem(f"url {shown} is not an http(s) URL; expected e.g. "
                    "https://proj.supabase.co/functions/v1/enqueue")
        elif not port_ok:
            problem(f"url {shown} has a bad port; expected a number from 1 to 65535")
        elif (parts.scheme == "http" and not allow_insecure_http
              and not is_loopback_host(parts.hostname)):
            problem(f"url {shown} uses plain http to a host that is not loopback (the token "
                    "would travel in clear); use https, or set QUEUE_PUMP_ALLOW_INSECURE_HTTP=1")

    body = entry.get("body")
    if "body" in entry:
        if not isinstance(body, dict):
            problem(f"body is a {type(body).__name__}; expected a table, e.g. "
                    "body = { type = \"digest\" }")
        else:
            _check_body(body, problem)

    dedupe_key = entry.get("dedupe_key", DEFAULT_DEDUPE_KEY)
    if not isinstance(dedupe_key, str):
        problem(f"dedupe_key is a {type(dedupe_key).__name__}; expected a string such as "
                f"{DEFAULT_DEDUPE_KEY!r}")
    else:
        try:
            used = _template_fields(dedupe_key, _KEY_FIELDS)
        except ValueError as exc:
            problem(f"dedupe_key {dedupe_key!r} is a bad template ({exc}); expected text with "
                    "{window} and optionally {name} ({{ and }} for literal braces)")
        else:
            if "window" not in used:
                problem(f"dedupe_key {dedupe_key!r} lacks {{window}}; every window needs its own "
                        "key, or only the first would ever be enqueued")

    headers = entry.get("headers", {})
    if not isinstance(headers, dict):
        problem(f"headers is a {type(headers).__name__}; expected a table of strings")
    else:
        for key, value in headers.items():
            # Values are never shown: a header is where a credential would go.
            if not _HEADER_NAME.fullmatch(key):
                problem(f"headers: {key!r} is not a header name")
            elif not isinstance(value, str) or any(ch in value for ch in "\r\n\x00"):
                problem(f"headers.{key} is not a single-line string")

    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(cron, str) and isinstance(url, str)
    assert isinstance(body, dict) and isinstance(dedupe_key, str) and isinstance(headers, dict)
    return Schedule(name=name, cron=cron, url=url, body=body, dedupe_key=dedupe_key,
                    headers=dict(headers))


def _check_body(body: dict[str, Any], problem: Callable[[str], None]) -> None:
    for path, value in _strings(body, "body"):
        if isinstance(value, str):
            try:
                _template_fields(value, _BODY_FIELDS)
            except ValueError as exc:
                problem(f"{path} {value!r} is a bad template ({exc}); expected {{name}}, "
                        "{window} or {dedupe_key}, and {{ }} for literal braces")
        elif isinstance(value, float) and not math.isfinite(value):
            problem(f"{path} is {value}; JSON has no inf or nan")
        elif not isinstance(value, bool | int | float):
            # TOML dates and times have no JSON form.
            problem(f"{path} is a TOML {type(value).__name__}; expected a string, number, "
                    "boolean, array or table (quote dates)")
    literal = body.get(BODY_KEY)
    if BODY_KEY in body and not (isinstance(literal, str) and "{dedupe_key}" in literal):
        problem(f"body.{BODY_KEY} is set; set dedupe_key instead (the pump puts the key in the "
                f"body as {BODY_KEY}), or write \"{{dedupe_key}}\" where the key belongs")


@dataclass(frozen=True)
class _Failure:
    retryable: bool
    reason: str
    status: int | None = None
    retry_after_s: float | None = None
    detail: str = ""
    hint: str = ""


class Scheduler:
    """Fires every schedule's windows; everything it needs is handed in, so tests fake time.

    ``now`` is the wall clock (UTC); ``pause(seconds)`` must return early once ``stop`` is set
    (pump.stop_or_timeout). ``on_count(name, counter)`` is called on every change of ``counts``.
    """

    def __init__(self, schedules: Sequence[Schedule], http: httpx.AsyncClient,
                 headers: Mapping[str, str], *, stop: asyncio.Event,
                 now: Callable[[], datetime], pause: Pause, log: Any,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 60.0,
                 request_timeout_s: float = REQUEST_TIMEOUT_S,
                 on_count: Callable[[str, str], None] | None = None) -> None:
        self._schedules = list(schedules)
        self._http = http
        self._headers = dict(headers)
        self._stop = stop
        self._clock = now
        self._pause = pause
        self._log = log
        self._strategy = full_jitter(backoff_base_s, backoff_max_s)
        self._backoff_max_s = backoff_max_s
        self._request_timeout_s = request_timeout_s
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
        return _utc(self._clock())

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
            failure = _failure_fields(result)
            if not result.retryable:
                self._count(schedule, "failed")
                self._log.error("schedule_failed", **fields, attempts=attempt, **failure)
                return
            delay = next_delay(self._strategy, attempt, self._backoff_max_s,
                               retry_after_s=result.retry_after_s, at_cap=False)
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
                       headers: httpx.Headers) -> tuple[int, bool | None] | _Failure:
        try:
            async with asyncio.timeout(self._request_timeout_s):
                status, answer_headers, answer = await self._post(url, content, headers)
        except TimeoutError:
            return _Failure(True, "timeout",
                            detail=f"no answer within {self._request_timeout_s:g} s")
        except httpx.ConnectError as exc:
            return _Failure(True, "connect", detail=str(exc)[:300] or type(exc).__name__)
        except httpx.TransportError as exc:
            return _Failure(True, "network", detail=str(exc)[:300] or type(exc).__name__)
        except Exception as exc:  # a bug must cost one retry, not the whole schedule
            return _Failure(True, "internal", detail=f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return status, _created(status, answer)
        if status == 409:
            # An enqueue endpoint that answers 409 Conflict for a known dedupe key has the job
            # already: that is this window done, not a failure to retry or to shout about.
            return status, False
        detail = runner_message(answer)
        if 300 <= status < 400:
            location = redact_url(answer_headers.get("location", "")) or "(no Location)"
            return _Failure(False, "redirect", status, detail=detail,
                            hint=f"the endpoint redirects to {location}; use the final URL "
                                 "(redirects are not followed, they would resend the token)")
        retry_after = (parse_retry_after(answer_headers.get("retry-after"), self._now())
                       if status in (429, 503) else None)
        if status >= 500 or status in (408, 429):
            return _Failure(True, "http_status", status, retry_after, detail)
        return _Failure(False, "http_status", status, detail=detail, hint=_HINTS.get(
            status, "the endpoint rejects the request as sent: check this schedule's body "
                    "against what the endpoint accepts"))

    async def _post(self, url: str, content: bytes,
                    headers: httpx.Headers) -> tuple[int, httpx.Headers, bytes]:
        async with self._http.stream("POST", url, content=content, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_ANSWER_BYTES:
                    break  # what we read is enough; never buffer an unbounded answer
            return response.status_code, response.headers, b"".join(chunks)


def _failure_fields(failure: _Failure) -> dict[str, Any]:
    fields: dict[str, Any] = {"reason": failure.reason}
    if failure.status is not None:
        fields["status"] = failure.status
    if failure.retry_after_s is not None:
        fields["retry_after_s"] = failure.retry_after_s
    if failure.detail:
        fields["detail"] = failure.detail
    if failure.hint:
        fields["hint"] = failure.hint
    return fields


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


def describe(schedules: Sequence[Schedule], now: datetime) -> list[dict[str, Any]]:
    """What a start line or `queue-pump config` can show: no headers, URL credentials masked."""
    out = []
    for s in schedules:
        following = s.next_window(now)
        out.append({"name": s.name, "cron": s.cron, "url": redact_url(s.url),
                    "next_window": iso_window(following) if following else None})
    return out
