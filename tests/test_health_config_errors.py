"""Issue 15, item 3: a pump whose calls are refused for its configuration is not healthy.

A 401/403/404 or a redirect will not go away by retrying, so /healthz (and therefore
`queue-pump healthcheck` and Docker's health status) fails until a call succeeds. Backing off
from 5xx stays healthy, and the systemd watchdog (liveness: a restart cures a wedge, not a bad
token) keeps pinging.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from queue_pump.cli.health_client import cmd_healthcheck
from queue_pump.observe.health import HealthConfig, HealthServer
from queue_pump.observe.state import Stats
from queue_pump.observe.systemd import status_line
from tests.support.env import FakeTime
from tests.support.proc import finish, pump_env, start, wait_until
from tests.support.runner_double import IDLE, Reply, free_port, runner_double


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def served() -> Iterator[tuple[Stats, str]]:
    stats = Stats(clock=FakeTime().clock)
    server = HealthServer(stats, HealthConfig("127.0.0.1", 0))
    server.start()
    try:
        yield stats, server.url
    finally:
        server.close()


def _call(stats: Stats, loop: Any, error: tuple[str, str] | None) -> None:
    stats.call_started(loop, 10.0)
    stats.call_ended(loop, 0.01, "error" if error else "idle", error=error)


def test_a_configuration_error_fails_healthz_until_a_call_succeeds(
        served: tuple[Stats, str], capsys: pytest.CaptureFixture[str]) -> None:
    stats, base = served
    loop = stats.add_loop("agent-0", "agent")
    _call(stats, loop, ("configuration", "http_status"))
    status, body = get(base + "/healthz")
    assert status == 503
    assert body["healthy"] is False and body["misconfigured"] == {
        "agent": "configuration:http_status"}
    assert "queue agent" in body["problems"][0] and "configuration error" in body["problems"][0]
    assert cmd_healthcheck(["--url", base], {}) == 1
    assert "unhealthy: HTTP 503" in capsys.readouterr().err
    # A 5xx afterwards does not make it healthy: the 401 has not been answered by a success.
    _call(stats, loop, ("retryable", "http_status"))
    assert get(base + "/healthz")[0] == 503
    _call(stats, loop, None)
    status, body = get(base + "/healthz")
    assert status == 200 and body["healthy"] is True and body["problems"] == []
    assert cmd_healthcheck(["--url", base], {}) == 0


def test_backing_off_from_5xx_stays_healthy(served: tuple[Stats, str]) -> None:
    stats, base = served
    loop = stats.add_loop("agent-0", "agent")
    for _ in range(5):
        _call(stats, loop, ("retryable", "http_status"))
    status, body = get(base + "/healthz")
    assert status == 200 and body["healthy"] is True and body["consecutive_failures"] == 5
    assert get(base + "/readyz")[0] == 503  # not ready, though: it is in a failure streak


def test_one_misconfigured_queue_is_enough_and_the_watchdog_still_sees_a_live_pump(
        served: tuple[Stats, str]) -> None:
    stats, base = served
    good, bad = stats.add_loop("agent-0", "agent"), stats.add_loop("render-0", "render")
    _call(stats, good, None)
    _call(stats, bad, ("configuration", "redirect"))
    status, body = get(base + "/healthz")
    assert status == 503 and list(body["misconfigured"]) == ["render"]
    snapshot = stats.snapshot()
    # The systemd watchdog pings on status == "ok": restarting cannot fix a bad URL.
    assert snapshot["status"] == "ok" and "STUCK" not in status_line(snapshot)


@pytest.mark.e2e
def test_a_real_pump_answered_401_is_unhealthy_until_the_runner_accepts_it() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with runner_double(lambda i: Reply(status=401, body={"error": "bad token"})) as double:
        proc = start(pump_env(double.url, QUEUE_PUMP_HEALTH_PORT=str(port),
                              QUEUE_PUMP_BACKOFF_BASE_MS="10",
                              QUEUE_PUMP_BACKOFF_MAX_MS="50", QUEUE_PUMP_IDLE_SLEEP_MS="60000"))
        try:
            double.wait_for(2)
            wait_until(lambda: _answers(base) and get(base + "/healthz")[0] == 503)
            # Waited for: between 50 ms waits the loop is "working" on its next call.
            wait_until(lambda: get(base + "/healthz")[1]["state"] == "backing-off")
            body = get(base + "/healthz")[1]
            assert body["misconfigured"] == {"agent": "configuration:http_status"}
            assert cmd_healthcheck(["--url", base], {}) == 1
            double.script = lambda i: IDLE  # the operator fixed the token on the runner side
            wait_until(lambda: get(base + "/healthz")[0] == 200)
            assert get(base + "/healthz")[1]["problems"] == []
            assert cmd_healthcheck(["--url", base], {}) == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            done = finish(proc, time.monotonic())
    assert done.code == 0
    done.assert_no_secret()


def _answers(base: str) -> bool:
    try:
        get(base + "/healthz")
        return True
    except OSError:
        return False
