"""Scheduled enqueue: windows and templates, the firing rules in injected time, the file's
validation, and end to end against the reference runner's POST /jobs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

import queue_pump.schedules
from queue_pump.app import contract_headers, http_config
from queue_pump.config import ConfigError, from_mapping
from queue_pump.loop.waits import stop_or_timeout
from queue_pump.reference_runner import start_runner
from queue_pump.schedules.file import Schedule, describe, iso_window, load_schedules
from queue_pump.schedules.firing import FiringPolicy, Scheduler
from queue_pump.transport import build_http_client
from tests.support.env import ANON, BASE_ENV, TOKEN

Logs = list[dict[str, Any]]
URL = "https://runner.example/jobs"
D = datetime(2026, 11, 24, tzinfo=UTC)  # a Tuesday


def at(hh: int, mm: int = 0, ss: int = 0, day: int = 0) -> datetime:
    return D + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def sched(**kw: Any) -> Schedule:
    values: dict[str, Any] = {"name": "digest", "cron": "0 * * * *", "url": URL,
                              "body": {"type": "digest"}}
    values.update(kw)
    return Schedule(**values)


class Wall:
    """A wall clock that moves only when the scheduler pauses, and stops it at ``until``."""

    def __init__(self, start: datetime, until: datetime | None = None) -> None:
        self.t = start
        self.until = until
        self.stop = asyncio.Event()
        self.pauses: list[float] = []
        self.sleepers: list[datetime] = []

    def now(self) -> datetime:
        return self.t

    async def pause(self, seconds: float) -> None:
        if self.stop.is_set():
            return
        self.pauses.append(seconds)
        wake = self.t + timedelta(seconds=max(seconds, 0))
        self.sleepers.append(wake)
        try:
            # Several entries sleep at once: time moves to the earliest wake-up, never faster.
            while self.t < wake and not self.stop.is_set():
                if wake == min(self.sleepers):
                    self.t = wake
                await asyncio.sleep(0)
        finally:
            self.sleepers.remove(wake)
        if self.until is not None and self.t >= self.until:
            self.stop.set()
        await asyncio.sleep(0)


Answer = int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], Any] | Exception


class Endpoint:
    """An httpx.MockTransport handler that records every POST and plays scripted answers."""

    def __init__(self, wall: Wall, *answers: Answer,
                 then: Callable[[datetime], Answer] | None = None) -> None:
        self.wall = wall
        self.script = list(answers)
        self.then = then or (lambda _t: (201, {}, {"jobs": [{"created": True}]}))
        self.seen: list[tuple[datetime, bytes, httpx.Headers]] = []

    @property
    def keys(self) -> list[str]:
        return [json.loads(body)["dedupeKey"] for _, body, _ in self.seen]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((self.wall.t, request.content, request.headers))
        answer = self.script.pop(0) if self.script else self.then(self.wall.t)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            answer = (answer, {})
        status, headers, *rest = answer
        return httpx.Response(status, headers=headers, json=rest[0] if rest else {"error": "x"})


def run_scheduler(schedules: list[Schedule], wall: Wall, endpoint: Endpoint,
                  **kw: Any) -> Scheduler:
    async def main() -> Scheduler:
        async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as http:
            scheduler = Scheduler(schedules, http, {"X-Agent-Token": TOKEN}, stop=wall.stop,
                                  now=wall.now, pause=wall.pause, log=structlog.get_logger(),
                                  policy=FiringPolicy(**{"backoff_base_s": 1.0,
                                                         "backoff_max_s": 60.0, **kw}))
            await scheduler.run()
            return scheduler

    return asyncio.run(asyncio.wait_for(main(), timeout=10))


def events(logs: Logs, name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- windows and templates ----------------------------------------------------------------------


@pytest.mark.parametrize(("cron", "now", "latest", "following"), [
    ("0 3 * * *", at(5, 17, 30), at(3), at(3, day=1)),
    ("0 3 * * *", at(3), at(3), at(3, day=1)),  # a window starting now is "at or before"
    ("0 3 * * *", at(3) - timedelta(microseconds=1), at(3, day=-1), at(3)),
    ("*/15 * * * *", at(10, 44, 59), at(10, 30), at(10, 45)),
    ("0 0 * * MON", at(12), at(0, day=-1), at(0, day=6)),
    ("0 0 1 * *", at(12), datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
])
def test_latest_window_at_or_before_now_and_the_next_strictly_after(
        cron: str, now: datetime, latest: datetime, following: datetime) -> None:
    s = sched(cron=cron)
    assert s.latest_window(now) == latest
    assert s.next_window(now) == following
    assert s.next_window(latest) == following


def test_windows_are_utc_whatever_clock_is_given() -> None:
    s = sched(cron="0 3 * * *")
    plus2 = timezone(timedelta(hours=2))
    assert s.latest_window(datetime(2026, 11, 24, 5, 30, tzinfo=plus2)) == at(3)  # 03:30 UTC
    assert s.latest_window(datetime(2026, 11, 24, 4, 30, tzinfo=plus2)) == at(3, day=-1)
    assert s.latest_window(datetime(2026, 11, 24, 3, 30)) == at(3)  # naive is UTC
    assert iso_window(datetime(2026, 11, 24, 5, 0, tzinfo=plus2)) == "2026-11-24T03:00:00Z"


def test_key_and_body_templates() -> None:
    s = sched(name="nightly", body={"type": "digest", "payload": {"for": "{window}",
                                                                  "by": "{name}", "raw": "{{x}}"}})
    assert s.key_for(at(3)) == "nightly:2026-11-24T03:00:00Z"  # the default "{name}:{window}"
    assert s.body_for(at(3)) == {
        "type": "digest", "dedupeKey": "nightly:2026-11-24T03:00:00Z",
        "payload": {"for": "2026-11-24T03:00:00Z", "by": "nightly", "raw": "{x}"}}
    # A body that says where the key goes gets no dedupeKey of its own.
    placed = sched(dedupe_key="d-{window}", body={"jobs": [{"type": "t", "key": "{dedupe_key}"}]})
    assert placed.body_for(at(3)) == {"jobs": [{"type": "t", "key": "d-2026-11-24T03:00:00Z"}]}
    # The template is not mutated by rendering.
    assert s.body == {"type": "digest", "payload": {"for": "{window}", "by": "{name}",
                                                    "raw": "{{x}}"}}


def test_describe_shows_next_window_and_no_headers() -> None:
    s = sched(url="https://user:pw@runner.example/jobs", headers={"X-Secret": "hush"})
    [view] = describe([s], at(5, 30))
    assert view == {"name": "digest", "cron": "0 * * * *", "url": "https://***@runner.example/jobs",
                    "next_window": "2026-11-24T06:00:00Z"}
    assert "hush" not in repr(s)


# -- when windows fire ----------------------------------------------------------------------------


def test_start_fires_the_latest_window_once() -> None:
    wall = Wall(at(5, 30), until=at(5, 59))
    endpoint = Endpoint(wall)
    scheduler = run_scheduler([sched()], wall, endpoint)
    assert endpoint.keys == ["digest:2026-11-24T05:00:00Z"]
    assert scheduler.counts["digest"] == {"fired": 1, "retried": 0, "failed": 0, "skipped": 0}


def test_restart_after_missed_windows_catches_up_exactly_one() -> None:
    first = Wall(at(0, 10), until=at(1, 10))
    endpoint = Endpoint(first)
    run_scheduler([sched()], first, endpoint)
    assert endpoint.keys == ["digest:2026-11-24T00:00:00Z", "digest:2026-11-24T01:00:00Z"]
    # Down from 01:10 to 07:45: six windows (02:00 .. 07:00) missed, one fired.
    second = Wall(at(7, 45), until=at(7, 59))
    endpoint.wall = second
    run_scheduler([sched()], second, endpoint)
    assert endpoint.keys[2:] == ["digest:2026-11-24T07:00:00Z"]


def test_each_window_fires_once_and_on_time() -> None:
    wall = Wall(at(0, 7), until=at(3, 1))
    endpoint = Endpoint(wall)
    run_scheduler([sched(cron="*/15 * * * *")], wall, endpoint)
    windows = [at(0) + timedelta(minutes=15 * i) for i in range(13)]  # 00:00 .. 03:00
    assert endpoint.keys == [f"digest:{iso_window(w)}" for w in windows]
    # Every window after the catch-up went out at its start, not late and not early.
    assert [t for t, _, _ in endpoint.seen[1:]] == windows[1:]
    assert max(wall.pauses) <= 60  # long waits are cut to re-read the wall clock


def test_two_entries_run_independently() -> None:
    wall = Wall(at(0, 30), until=at(2, 40))
    endpoint = Endpoint(wall)
    run_scheduler([sched(name="a"), sched(name="b", cron="30 * * * *")], wall, endpoint)
    assert sorted(endpoint.keys) == sorted([
        "a:2026-11-24T00:00:00Z", "a:2026-11-24T01:00:00Z", "a:2026-11-24T02:00:00Z",
        "b:2026-11-24T00:30:00Z", "b:2026-11-24T01:30:00Z", "b:2026-11-24T02:30:00Z"])


def test_a_clock_jump_collapses_missed_windows_into_one(logs: Logs) -> None:
    class Jumpy(Wall):
        async def pause(self, seconds: float) -> None:
            if self.t == at(0, 59):
                self.t = at(4, 20) - timedelta(seconds=seconds)  # suspended for hours
            await super().pause(seconds)

    wall = Jumpy(at(0, 30), until=at(4, 30))
    endpoint = Endpoint(wall)
    scheduler = run_scheduler([sched()], wall, endpoint)
    assert endpoint.keys == ["digest:2026-11-24T00:00:00Z", "digest:2026-11-24T04:00:00Z"]
    [skipped] = events(logs, "schedule_skipped")
    assert skipped["window"] == "2026-11-24T01:00:00Z" and skipped["reason"] == "missed"
    assert skipped["firing"] == "2026-11-24T04:00:00Z"
    assert scheduler.counts["digest"]["skipped"] == 1


# -- retries ---------------------------------------------------------------------------------------


def test_failed_posts_are_retried_with_the_same_key(logs: Logs) -> None:
    wall = Wall(at(5, 0, 3), until=at(5, 30))
    req = httpx.Request("POST", URL)
    endpoint = Endpoint(wall, 503, httpx.ConnectError("refused", request=req),
                        httpx.ReadTimeout("slow", request=req), 500)
    scheduler = run_scheduler([sched()], wall, endpoint, backoff_base_s=2.0, backoff_max_s=5.0)
    assert len(endpoint.seen) == 5
    assert set(endpoint.keys) == {"digest:2026-11-24T05:00:00Z"}
    assert len({body for _, body, _ in endpoint.seen}) == 1  # the very same bytes each time
    retries = events(logs, "schedule_retry")
    assert [r["reason"] for r in retries] == ["http_status", "connect", "timeout", "http_status"]
    # Full jitter: uniform in [0, min(cap, base * 2^(n-1))].
    for n, delay in enumerate(wall.pauses[:4], start=1):
        assert 0 <= delay <= min(5.0, 2.0 * 2 ** (n - 1))
    assert scheduler.counts["digest"] == {"fired": 1, "retried": 4, "failed": 0, "skipped": 0}
    [fired] = events(logs, "schedule_fired")
    assert fired["attempts"] == 5 and fired["status"] == 201


def test_retry_after_is_honoured_above_the_backoff_cap() -> None:
    wall = Wall(at(5, 0, 3), until=at(5, 30))
    date = format_datetime(wall.t + timedelta(seconds=20), usegmt=True)
    endpoint = Endpoint(wall, (429, {"Retry-After": "7"}), (503, {"Retry-After": date}))
    run_scheduler([sched()], wall, endpoint, backoff_base_s=0.5, backoff_max_s=1.0)
    assert wall.pauses[:2] == [7.0, 13.0]  # the date is 20 s after the first attempt
    assert [t for t, _, _ in endpoint.seen] == [at(5, 0, 3), at(5, 0, 10), at(5, 0, 23)]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    wall = Wall(at(5), until=at(5, 30))
    endpoint = Endpoint(wall, status)
    scheduler = run_scheduler([sched()], wall, endpoint)
    assert scheduler.counts["digest"]["retried"] == 1 and len(endpoint.seen) == 2


@pytest.mark.parametrize(("status", "hint"), [
    (400, "body"), (401, "AGENT_TOKEN"), (403, "ORGANIZATION_ID"), (404, "url"),
    (422, "body"), (301, "redirects"),
])
def test_other_4xx_and_3xx_are_not_retried(logs: Logs, status: int, hint: str) -> None:
    wall = Wall(at(5, 30), until=at(6, 30))
    endpoint = Endpoint(wall, (status, {"location": "https://elsewhere.example/"},
                               {"error": "body.type is required"}))
    scheduler = run_scheduler([sched()], wall, endpoint)
    # Window 05:00 is given up after one answer; window 06:00 still fires.
    assert endpoint.keys == ["digest:2026-11-24T05:00:00Z", "digest:2026-11-24T06:00:00Z"]
    [failed] = events(logs, "schedule_failed")
    assert failed["status"] == status and hint in failed["hint"]
    assert failed["detail"] == "body.type is required" and failed["log_level"] == "error"
    assert not events(logs, "schedule_retry")
    assert scheduler.counts["digest"] == {"fired": 1, "retried": 0, "failed": 1, "skipped": 0}


def test_the_next_window_abandons_a_stuck_retry(logs: Logs) -> None:
    wall = Wall(at(0, 0, 10), until=at(0, 9))
    endpoint = Endpoint(wall, then=lambda t: 503 if t < at(0, 5) else 201)
    scheduler = run_scheduler([sched(cron="*/5 * * * *")], wall, endpoint, backoff_max_s=30.0)
    old = [t for (t, _, _), key in zip(endpoint.seen, endpoint.keys, strict=True)
           if key == "digest:2026-11-24T00:00:00Z"]
    assert len(old) > 3 and max(old) < at(0, 5)  # no attempt for 00:00 once 00:05 is due
    assert endpoint.keys[len(old):] == ["digest:2026-11-24T00:05:00Z"]
    assert endpoint.seen[len(old)][0] == at(0, 5)
    [failed] = events(logs, "schedule_failed")
    assert failed["reason"] == "window_abandoned" and failed["window"] == "2026-11-24T00:00:00Z"
    assert scheduler.counts["digest"]["failed"] == 1
    assert scheduler.counts["digest"]["fired"] == 1


def test_a_retry_after_past_the_next_window_is_cut_to_it(logs: Logs) -> None:
    wall = Wall(at(0, 1), until=at(0, 6))
    endpoint = Endpoint(wall, (503, {"Retry-After": "3600"}))
    run_scheduler([sched(cron="*/5 * * * *")], wall, endpoint)
    assert wall.pauses[0] == 240.0
    assert events(logs, "schedule_failed")[0]["reason"] == "window_abandoned"
    assert endpoint.keys == ["digest:2026-11-24T00:00:00Z", "digest:2026-11-24T00:05:00Z"]


def test_stop_during_backoff_ends_at_once(logs: Logs) -> None:
    """Real time and the pump's own pause: a stop wakes a 30 s backoff immediately."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, headers={"Retry-After": "30"})

    async def main() -> float:
        stop = asyncio.Event()
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            scheduler = Scheduler([sched()], http, {}, stop=stop, now=lambda: datetime.now(UTC),
                                  pause=stop_or_timeout(stop), log=structlog.get_logger(),
                                  policy=FiringPolicy(backoff_base_s=1.0, backoff_max_s=1.0))
            asyncio.get_running_loop().call_later(0.2, stop.set)
            started = time.monotonic()
            await scheduler.run()
            return time.monotonic() - started

    elapsed = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert elapsed < 2.0
    assert len(seen) == 1
    [skipped] = events(logs, "schedule_skipped")
    assert skipped["reason"] == "shutdown"


def test_created_is_read_from_the_answer(logs: Logs) -> None:
    wall = Wall(at(5), until=at(8, 30))
    endpoint = Endpoint(wall, (201, {}, {"jobs": [{"created": True}]}),
                        (200, {}, {"jobs": [{"created": False}]}), (200, {}, ["not", "dict"]),
                        (200, {}, {"created": True}))
    run_scheduler([sched()], wall, endpoint)
    assert [(e["status"], e["created"]) for e in events(logs, "schedule_fired")] == [
        (201, True), (200, False), (200, None), (200, True)]


def test_a_409_for_a_known_key_counts_as_fired_not_failed(logs: Logs) -> None:
    wall = Wall(at(5), until=at(5, 30))
    endpoint = Endpoint(wall, (409, {}, {"error": "duplicate dedupeKey"}))
    run_scheduler([sched()], wall, endpoint)
    assert [(e["status"], e["created"]) for e in events(logs, "schedule_fired")] == [
        (409, False)]
    assert not events(logs, "schedule_failed") and len(endpoint.seen) == 1


def test_headers_carry_the_contract_and_extras_but_logs_never_do(logs: Logs) -> None:
    settings = from_mapping({**BASE_ENV, "SUPABASE_ANON_KEY": ANON}, hostname="h")
    wall = Wall(at(5), until=at(5, 30))
    endpoint = Endpoint(wall, 503)
    counted: list[tuple[str, str]] = []

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as http:
            entry = sched(headers={"X-Extra": "yes", "APIKEY": "k2"})
            await Scheduler([entry], http, contract_headers(settings), stop=wall.stop,
                            now=wall.now, pause=wall.pause, log=structlog.get_logger(),
                            on_count=lambda n, c: counted.append((n, c))).run()

    asyncio.run(asyncio.wait_for(main(), timeout=10))
    headers = endpoint.seen[0][2]
    assert headers["x-agent-token"] == TOKEN and headers["x-organization-id"] == "org-1"
    assert headers["authorization"] == f"Bearer {ANON}"
    assert headers.get_list("apikey") == ["k2"]  # an entry's header replaces the pump's
    assert headers["x-extra"] == "yes" and headers["content-type"] == "application/json"
    assert TOKEN not in repr(logs) and ANON not in repr(logs)
    assert counted == [("digest", "retried"), ("digest", "fired")]


# -- the file ------------------------------------------------------------------------------------

GOOD = """
[[schedule]]
name = "nightly-digest"
cron = "0 3 * * *"
url = "https://proj.supabase.co/functions/v1/enqueue"
body = { type = "digest", queue = "agent", payload = { scope = "all" } }
dedupe_key = "nightly-digest:{window}"
headers = { X-Tenant = "t1" }

[[schedule]]
name = "local"
cron = "*/5 * * * *"
url = "http://127.0.0.1:8000/jobs"
[schedule.body]
type = "sweep"
"""


def load(tmp_path: Path, text: str, **kw: Any) -> list[Schedule]:
    path = tmp_path / "schedules.toml"
    path.write_text(text)
    return load_schedules(str(path), **kw)


def problems(tmp_path: Path, text: str, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kw)
    return [line.replace(f"{tmp_path}/", "") for line in info.value.problems]


def test_a_good_file_loads(tmp_path: Path) -> None:
    first, second = load(tmp_path, GOOD)
    assert first == Schedule(name="nightly-digest", cron="0 3 * * *",
                             url="https://proj.supabase.co/functions/v1/enqueue",
                             body={"type": "digest", "queue": "agent",
                                   "payload": {"scope": "all"}},
                             dedupe_key="nightly-digest:{window}", headers={"X-Tenant": "t1"})
    assert second.dedupe_key == "{name}:{window}" and second.body == {"type": "sweep"}


ENTRY = 'name = "n1"\ncron = "0 3 * * *"\nurl = "https://h.example/jobs"\nbody = { type = "t" }\n'


@pytest.mark.parametrize(("change", "field", "needle"), [
    ({"cron": '"0 3 * *"'}, "cron", "5-field"),
    ({"cron": '"0 0 3 * * *"'}, "cron", "5-field"),
    ({"cron": '"61 * * * *"'}, "cron", "Bad minute"),
    ({"cron": '"0 0 30 2 *"'}, "cron", "not valid"),
    ({"cron": "5"}, "cron", "5-field"),
    ({"url": None}, "url", "missing"),
    ({"body": None}, "body", "missing"),
    ({"cron": None}, "cron", "missing"),
    ({"body": '"text"'}, "body", "expected a table"),
    ({"url": '"ftp://h.example/x"'}, "url", "not an http(s) URL"),
    ({"url": '"https://h.example:99999/x"'}, "url", "bad port"),
    ({"url": '"http://h.example/jobs"'}, "url", "plain http"),
    ({"dedupe_key": '"{day}"'}, "dedupe_key", "bad template"),
    ({"dedupe_key": '"{window.year}"'}, "dedupe_key", "bad template"),
    ({"dedupe_key": '"{window:%Y}"'}, "dedupe_key", "bad template"),
    ({"dedupe_key": '"key-{"'}, "dedupe_key", "bad template"),
    ({"dedupe_key": '"static"'}, "dedupe_key", "lacks {window}"),
    ({"dedupe_key": "3"}, "dedupe_key", "expected a string"),
    ({"body": '{ type = "t", payload = { x = "{oops}" } }'}, "body.payload.x", "bad template"),
    ({"body": '{ type = "t", at = 2026-11-24T03:00:00Z }'}, "body.at", "quote dates"),
    ({"body": '{ type = "t", n = nan }'}, "body.n", "no inf or nan"),
    ({"body": '{ type = "t", dedupeKey = "k" }'}, "body.dedupeKey", "set dedupe_key instead"),
    ({"dedupeKey": '"k-{window}"'}, "'dedupeKey'", "unknown key"),
    ({"name": '"a b"'}, "name", "not accepted"),
    ({"name": None}, "name", "missing"),
    ({"headers": '{ "X-Bad" = "a\\nb" }'}, "headers.X-Bad", "single-line"),
    ({"headers": '{ "Bad Name" = "v" }'}, "headers", "not a header name"),
    ({"headers": '"x"'}, "headers", "table of strings"),
])
def test_each_bad_field_is_one_line_naming_entry_and_field(
        tmp_path: Path, change: dict[str, str | None], field: str, needle: str) -> None:
    lines = dict(line.split(" = ", 1) for line in ENTRY.strip().splitlines())
    for key, value in change.items():
        if value is None:
            lines.pop(key)
        else:
            lines[key] = value
    text = "[[schedule]]\n" + "\n".join(f"{k} = {v}" for k, v in lines.items()) + "\n"
    [line] = problems(tmp_path, text)
    assert "schedules.toml: schedule #1" in line
    if "name" in lines and field != "name":
        assert "'n1'" in line
    assert field in line and needle in line, line


def test_file_level_problems(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_schedules(missing)
    assert info.value.problems == [f"QUEUE_PUMP_SCHEDULES={missing!r} cannot be read: "
                                   "No such file or directory"]
    [line] = problems(tmp_path, "[[schedule]\n")
    assert "is not valid TOML" in line
    [line] = problems(tmp_path, "# nothing yet\n")
    assert "no [[schedule]] entries" in line
    assert problems(tmp_path, "other = 1\n" + "[[schedule]]\n" + ENTRY) == [
        "schedules.toml: unknown top-level key(s) 'other'; expected only [[schedule]] entries"]


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = ("[[schedule]]\n" + ENTRY + "[[schedule]]\n" + ENTRY.replace("0 3", "0 99")
            + "[[schedule]]\n" + ENTRY.replace("https", "http"))
    lines = problems(tmp_path, text)
    assert len(lines) == 4, lines
    assert lines[0].startswith("schedules.toml: schedule #2 'n1': name is used by schedule #1")
    assert lines[1].startswith("schedules.toml: schedule #2 'n1': cron")
    assert lines[2].startswith("schedules.toml: schedule #3 'n1': name is used")
    assert lines[3].startswith("schedules.toml: schedule #3 'n1': url")


def test_plain_http_allowed_when_asked_and_header_values_never_shown(tmp_path: Path) -> None:
    text = "[[schedule]]\n" + ENTRY.replace("https", "http")
    assert load(tmp_path, text, allow_insecure_http=True)[0].url == "http://h.example/jobs"
    secret = "Bearer sk-live-hush"
    [line] = problems(tmp_path, "[[schedule]]\n" + ENTRY + f'headers = {{ "Authorization" = '
                                f'"{secret}\\n" }}\n')
    assert "headers.Authorization" in line and "hush" not in line


# -- end to end: the reference runner's POST /jobs -----------------------------------------------


def test_e2e_once_per_window_across_restarts(tmp_path: Path, logs: Logs) -> None:
    path = tmp_path / "schedules.toml"

    async def main() -> None:
        async with await start_runner(token=TOKEN, organization_id="org-1") as runner:
            path.write_text(f"""
[[schedule]]
name = "nightly-digest"
cron = "0 3 * * *"
url = "{runner.url}/jobs"
body = {{ type = "digest", queue = "agent", payload = {{ scope = "all", for = "{{window}}" }} }}
dedupe_key = "nightly-digest:{{window}}"
""")
            schedules = load_schedules(str(path))
            settings = from_mapping({**BASE_ENV, "QUEUE_PUMP_ENDPOINT": runner.runner_url})

            async def one_run(start: datetime, until: datetime) -> None:
                wall = Wall(start, until)
                async with build_http_client(http_config(settings)) as http:
                    await Scheduler(schedules, http, contract_headers(settings), stop=wall.stop,
                                    now=wall.now, pause=wall.pause,
                                    log=structlog.get_logger()).run()

            await one_run(at(3, 0, 5), at(3, 10))       # fires the 03:00 window
            await one_run(at(9, 0), at(9, 1))           # restart later that day: the same key
            await one_run(at(2, 59, day=1), at(3, 1, day=1))  # runs into the next window
            assert runner.store.stats()["total"] == 2
            first, second = runner.store.get(1), runner.store.get(2)
            assert first is not None and second is not None
            assert first.dedupe_key == "nightly-digest:2026-11-24T03:00:00Z"
            assert first.type == "digest" and first.queue == "agent"
            assert first.payload == {"scope": "all", "for": "2026-11-24T03:00:00Z"}
            assert second.dedupe_key == "nightly-digest:2026-11-25T03:00:00Z"

    asyncio.run(asyncio.wait_for(main(), timeout=20))
    fired = events(logs, "schedule_fired")
    assert [(e["window"], e["status"], e["created"]) for e in fired] == [
        ("2026-11-24T03:00:00Z", 201, True),
        ("2026-11-24T03:00:00Z", 200, False),  # the runner's dedupe: no second job
        ("2026-11-24T03:00:00Z", 200, False),  # the third run's catch-up
        ("2026-11-25T03:00:00Z", 201, True),
    ]
    assert not events(logs, "schedule_failed") and not events(logs, "schedule_retry")
    assert TOKEN not in repr(logs)


def test_e2e_a_body_the_runner_rejects_is_one_error_not_a_retry_loop(logs: Logs) -> None:
    async def main() -> int:
        async with await start_runner(token=TOKEN, organization_id="org-1") as runner:
            wall = Wall(at(3, 0, 5), until=at(3, 10))
            # The reference runner takes `priority` since issue 24; `urgency` it never knew.
            bad = sched(url=f"{runner.url}/jobs", body={"type": "digest", "urgency": 1})
            settings = from_mapping({**BASE_ENV, "QUEUE_PUMP_ENDPOINT": runner.runner_url})
            async with build_http_client(http_config(settings)) as http:
                await Scheduler([bad], http, contract_headers(settings), stop=wall.stop,
                                now=wall.now, pause=wall.pause, log=structlog.get_logger()).run()
            total: int = runner.store.stats()["total"]
            return total

    assert asyncio.run(asyncio.wait_for(main(), timeout=20)) == 0
    [failed] = events(logs, "schedule_failed")
    assert failed["status"] == 400 and "urgency" in failed["detail"]
    assert not events(logs, "schedule_retry")


def test_checking_a_schedules_file_loads_no_http_client() -> None:
    """`queue-pump config` checks the file through the package's face; firing, and httpx with
    it, is loaded only when Scheduler is first named."""
    probe = ("import sys, queue_pump.schedules as s; before = 'httpx' in sys.modules; "
             "s.Scheduler; print(before, 'httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.split() == ["False", "True"]
    with pytest.raises(AttributeError):
        _ = queue_pump.schedules.Nothing  # type: ignore[attr-defined]
