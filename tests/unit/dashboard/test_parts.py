"""The dashboard's pure parts as tables: the chart's axis and bars, the session guard with an
injected clock, the Host and Origin checks, the timeline's grouping."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import aiohttp
import pytest

from queue_pump.dashboard import chart, security
from queue_pump.dashboard.fmt import ago, clip, compact, short_duration
from queue_pump.dashboard.views import _attempts


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (11, 20),
                                            (50, 50), (51, 100), (999, 1000)])
def test_the_axis_top_is_one_two_or_five_times_ten_to_a_power(value: int, top: int) -> None:
    assert chart._nice_top(value) == top


def test_the_chart_draws_a_bar_per_busy_minute_and_escapes_its_labels() -> None:
    minutes = [{"minute": f"2026-12-06T08:{m:02d}:00Z", "done": m % 3, "failed": int(m == 5)}
               for m in range(60)] + [{"minute": "<script>", "done": 1, "failed": 0}]
    svg = str(chart.per_minute_svg(minutes))
    assert svg.count('class="done"') == sum(1 for m in minutes if m["done"])
    assert svg.count('class="failed"') == 1
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert re.search(r"<desc[^>]*>\d+ done and 1 failed in the last 61 minutes", svg)
    assert str(chart.per_minute_svg([])).count("<rect") == 0


def test_a_session_logs_out_after_its_time_and_the_oldest_go_first() -> None:
    now = [0.0]
    guard = security.Guard("a-password-of-16+chars", clock=lambda: now[0])
    guard.log_in("a")
    assert guard.logged_in("a") and not guard.logged_in("b") and not guard.logged_in(None)
    now[0] = security.SESSION_S + 1
    assert not guard.logged_in("a")
    for i in range(security.MAX_SESSIONS + 1):
        guard.log_in(str(i))
    assert not guard.logged_in("0") and guard.logged_in(str(security.MAX_SESSIONS))
    guard.log_out("1")
    assert not guard.logged_in("1")
    assert guard.password_ok("a-password-of-16+chars") and not guard.password_ok("a-password")


def test_csrf_tokens_belong_to_their_session_and_their_process() -> None:
    one, two = security.Guard(""), security.Guard("")
    token = one.csrf_token("s1")
    assert one.csrf_ok("s1", token)
    assert not one.csrf_ok("s2", token) and not two.csrf_ok("s1", token)
    assert not one.csrf_ok(None, token) and not one.csrf_ok("s1", None)
    assert one.logged_in(None)  # no password: nothing to log in to


@pytest.mark.parametrize(("host", "loopback", "ok"), [
    ("127.0.0.1:8765", True, True), ("localhost:8765", True, True), ("[::1]:8765", True, True),
    ("app.localhost", True, True), ("evil.example:8765", True, False), (None, True, False),
    ("evil.example", False, True)])
def test_on_loopback_only_loopback_names_are_served(host: str | None, loopback: bool,
                                                    ok: bool) -> None:
    assert security.host_allowed(host, loopback) is ok


def test_an_origin_must_be_this_server_when_sent() -> None:
    assert security.same_origin(None, "127.0.0.1:1", "http")
    assert security.same_origin("http://127.0.0.1:1", "127.0.0.1:1", "http")
    assert not security.same_origin("http://127.0.0.1:2", "127.0.0.1:1", "http")
    assert not security.same_origin("null", "127.0.0.1:1", "http")


def test_the_timeline_groups_events_by_attempt_and_operator_retry() -> None:
    kinds = ["enqueued", "claimed", "failed", "claimed", "log", "failed", "retried", "claimed",
             "completed"]
    events = [{"kind": k, "attempt": i} for i, k in enumerate(kinds)]
    groups = _attempts(events)
    assert [h for h, _ in groups] == ["Enqueued", "Attempt 1", "Attempt 3",
                                      "Retried by an operator", "Attempt 7"]
    assert [len(e) for _, e in groups] == [1, 2, 3, 1, 2]
    assert _attempts([]) == []


def test_times_and_values_as_the_pages_write_them() -> None:
    assert [short_duration(s) for s in (None, 4.25, 42, 600, 7200, 86400 * 3)] == [
        "-", "4.2 s", "42 s", "10 min", "2.0 h", "3.0 d"]
    assert ago(None) == "-" and ago("not a time") == "not a time"
    assert ago("2999-01-01T00:00:00Z").startswith("in ")
    assert clip("a\nb  c") == "a b c" and clip("x" * 10, 5) == "xxxx\u2026" and clip(None) == ""
    assert compact({"b": 1, "a": "<"}) == '{"a": "<", "b": 1}'


def test_a_server_that_leaves_fields_out_still_gets_its_pages_rendered() -> None:
    from queue_pump.dashboard.app import templates

    env = templates()
    base = {"csrf_token": "t", "where": "w", "needs_login": False, "refresh_ms": 2000,
            "path": "/", "here": "/", "CSRF_FIELD": "csrf_token"}
    job = env.get_template("job_live.html").render(
        job={"id": 7, "status": "failed"}, notice=None, problem=None, timeline=[], **base)
    assert "Job #7" in job and "Retry" in job and "Progress" not in job
    overview = env.get_template("overview_live.html").render(
        stats={"total": {"queued": 1}, "perMinute": [], "queues": []}, pumps=[("u", {})],
        statuses=("queued", "done"), **base)
    assert 'data-status="queued"' in overview and "No failed jobs." in overview


class _SlowBackend:
    """A Backend double counting the stats calls (the operator API's answers are the
    conformance suite's; here only how many calls the dashboard makes)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def call(self, method: str, path: str = "", *, params: Any = None,
             body: Any = None) -> dict[str, Any]:
        self.calls += 1
        self.release.wait(10)
        return {"queues": [], "total": {}, "perMinute": [], "recentFailures": []}

    def pump_health(self, url: str) -> dict[str, Any] | str:
        return "none"


def test_tabs_refreshing_at_once_share_one_stats_call() -> None:
    from queue_pump.dashboard import DashboardConfig, start_dashboard

    backend = _SlowBackend()

    async def scenario() -> list[int]:
        served = await start_dashboard(DashboardConfig(where="w"), backend)
        try:
            async with aiohttp.ClientSession() as session:
                async def get() -> int:
                    async with session.get(served.url + "/", headers={"X-Live": "1"}) as r:
                        await r.read()
                        return r.status

                tabs = [asyncio.ensure_future(get()) for _ in range(5)]
                server = served.runner.server
                assert server is not None
                for _ in range(20_000):  # every tab's request is in (a guard, not a bound)
                    if server.requests_count >= 5 and backend.calls:
                        break
                    await asyncio.sleep(0.001)
                for _ in range(50):  # and its handler is waiting on the one call: no I/O
                    await asyncio.sleep(0)  # stands between the two, only loop turns
                backend.release.set()
                statuses = await asyncio.gather(*tabs)
                again = await get()  # the call ended: the next refresh asks anew
                return [*statuses, again]
        finally:
            await served.close()

    assert asyncio.run(scenario()) == [200] * 6
    assert backend.calls == 2
