"""Alerts: one webhook post per outage and one on recovery, to a real receiver; a failing
webhook never disturbs the pump."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog

from queue_pump.app import start_alerter
from queue_pump.config import from_mapping
from queue_pump.observe.state import Stats
from tests.support.env import BASE_ENV
from tests.support.runner_double import free_port


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.posts.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def run_alerts(url: str, streak: list[tuple[str, str | None]]) -> list[str]:
    settings = from_mapping({**BASE_ENV, "QUEUE_PUMP_ALERT_WEBHOOK_URL": url,
                             "QUEUE_PUMP_ALERT_AFTER": "3"})

    async def go() -> list[str]:
        stats = Stats()
        alerter = start_alerter(settings, stats, structlog.get_logger())
        assert alerter is not None
        loop = stats.add_loop("agent-0", "agent")
        for outcome, reason in streak:
            stats.call_started(loop, 1.0)
            stats.call_ended(loop, 0.01, outcome,
                             error=("retryable", reason) if reason else None)
        await alerter.close()
        return alerter.sent

    return asyncio.run(go())


def test_one_alert_per_outage_and_one_on_recovery() -> None:
    receiver = Receiver()
    fail, ok = ("error", "connect"), ("idle", None)
    sent = run_alerts(receiver.url, [ok, fail, fail, ok, *[fail] * 7, ok, ok, fail])
    assert sent == ["outage", "recovered"]
    assert [p["event"] for p in receiver.posts] == ["outage", "recovered"]
    assert receiver.posts[0]["consecutive_failures"] == 3
    assert receiver.posts[1]["failures"] == 7
    assert "text" in receiver.posts[0]
    receiver.server.shutdown()


@pytest.mark.parametrize("status", [500, None])
def test_a_failing_webhook_never_disturbs_the_pump(status: int | None,
                                                   logs: list[dict[str, Any]]) -> None:
    url = Receiver(status).url if status else f"http://127.0.0.1:{free_port()}/hook"
    fail = ("error", "connect")
    assert run_alerts(url, [fail] * 4 + [("idle", None)]) == ["outage", "recovered"]
    assert [e["alert"] for e in logs if e["event"] == "alert_failed"] == ["outage", "recovered"]


def test_one_queues_outage_is_not_hidden_by_anothers_successes() -> None:
    receiver = Receiver()
    settings = from_mapping({**BASE_ENV, "QUEUE_PUMP_ALERT_WEBHOOK_URL": receiver.url,
                             "QUEUE_PUMP_ALERT_AFTER": "3", "QUEUE_PUMP_QUEUES": "ok:1,broken:1"})

    async def go() -> tuple[Stats, list[str]]:
        stats = Stats()
        alerter = start_alerter(settings, stats, structlog.get_logger())
        assert alerter is not None
        ok, broken = stats.add_loop("ok-0", "ok"), stats.add_loop("broken-0", "broken")
        for _ in range(4):  # interleaved: the working queue succeeds between every failure
            for loop, error in ((ok, None), (broken, ("configuration", "http_status"))):
                stats.call_started(loop, 1.0)
                stats.call_ended(loop, 0.01, "error" if error else "idle", error=error)
        await alerter.close()
        return stats, alerter.sent

    stats, sent = asyncio.run(go())
    assert sent == ["outage"]
    assert receiver.posts[0]["queue"] == "broken"
    snapshot = stats.snapshot()
    assert snapshot["consecutive_failures"] == 4 and snapshot["ready"] is False
    assert snapshot["consecutive_failures_by_queue"] == {"ok": 0, "broken": 4}
    receiver.server.shutdown()
