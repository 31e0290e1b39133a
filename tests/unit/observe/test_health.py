"""The health endpoint, in process against a real socket: /healthz turns 503 for a stuck loop and
for a configuration error (not for backing off from 5xx), and its bounded HTTP server cuts a
trickling client, bounds held connections and answers nonsense with a 400."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from queue_pump.cli.health_client import cmd_healthcheck
from queue_pump.observe.health import HealthConfig, HealthServer
from queue_pump.observe.state import STUCK_SLACK_S, Stats
from queue_pump.observe.systemd import status_line
from tests.support.env import FakeTime
from tests.support.net import fetch, fetch_json, wake
from tests.support.proc import wait_until


def test_a_stuck_loop_turns_healthz_503(served_stats: tuple[Stats, FakeTime, str]) -> None:
    stats, fake, base = served_stats
    loop = stats.add_loop("agent-0", "agent")
    stats.call_started(loop, timeout_s=10.0)
    fake.now += 10.0 + STUCK_SLACK_S - 1
    assert fetch(base + "/healthz")[0] == 200
    fake.now += 2
    status, body = fetch(base + "/healthz")
    assert status == 503
    data = json.loads(body)
    assert data["status"] == "stuck" and data["loops"][0]["stuck"] is True
    # a sleep that overruns its plan is stuck too
    stats.call_ended(loop, 1.0, "idle")
    stats.sleeping(loop, loop.state, 5.0)
    assert fetch(base + "/healthz")[0] == 200
    fake.now += 5.0 + STUCK_SLACK_S + 1
    assert fetch(base + "/healthz")[0] == 503


def test_a_client_that_trickles_is_cut_at_one_deadline_for_the_whole_request() -> None:
    # The old server's timeout was per read: a byte every few seconds held it forever. Here a
    # complete request trickled over ~3 s against a 0.5 s deadline must never be answered.
    server = HealthServer(Stats(), HealthConfig("127.0.0.1", 0), deadline_s=0.5)
    server.start()
    request = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 40 + b"\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            try:
                for piece in request:
                    sock.sendall(bytes([piece]))
                    time.sleep(0.05)  # the trickle itself, not a wait for the server
                answer = sock.recv(100)
            except OSError:  # reset: closed while we were still sending
                answer = b""
        assert answer == b""  # closed at the deadline, never answered
        assert fetch(server.url + "/healthz")[0] == 200  # a prompt request still is
    finally:
        server.close()


def test_held_connections_are_bounded_and_a_prober_is_still_answered() -> None:
    before = threading.active_count()
    server = HealthServer(Stats(), HealthConfig("127.0.0.1", 0), max_connections=8)
    server.start()
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the end of the request
        assert threading.active_count() == before + 1  # the server's one thread, no more
        for _ in range(3):
            assert fetch(server.url + "/healthz")[0] == 200
        # the oldest held connections were closed to make room: at most 8 are still open
        wait_until(lambda: sum(_closed_by_peer(s) for s in held) >= 40 - 8)
    finally:
        for sock in held:
            sock.close()
        server.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_nonsense_on_the_health_port_is_a_400_not_a_traceback(
        served_stats: tuple[Stats, FakeTime, str], capfd: pytest.CaptureFixture[str]) -> None:
    _, _, base = served_stats
    port = int(base.rsplit(":", 1)[1])
    for junk in (b"\x00\xff garbage\r\n\r\n", b"GET nothing\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n",
                 b"POST /wake HTTP/1.1\r\nContent-Length: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(junk)
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 9000)
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
    assert "Traceback" not in capfd.readouterr().err


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
    status, body = fetch_json(base + "/healthz")
    assert status == 503
    assert body["healthy"] is False and body["misconfigured"] == {
        "agent": "configuration:http_status"}
    assert "queue agent" in body["problems"][0] and "configuration error" in body["problems"][0]
    assert cmd_healthcheck(["--url", base], {}) == 1
    assert "unhealthy: HTTP 503" in capsys.readouterr().err
    # A 5xx afterwards does not make it healthy: the 401 has not been answered by a success.
    _call(stats, loop, ("retryable", "http_status"))
    assert fetch_json(base + "/healthz")[0] == 503
    _call(stats, loop, None)
    status, body = fetch_json(base + "/healthz")
    assert status == 200 and body["healthy"] is True and body["problems"] == []
    assert cmd_healthcheck(["--url", base], {}) == 0


def test_backing_off_from_5xx_stays_healthy(served: tuple[Stats, str]) -> None:
    stats, base = served
    loop = stats.add_loop("agent-0", "agent")
    for _ in range(5):
        _call(stats, loop, ("retryable", "http_status"))
    status, body = fetch_json(base + "/healthz")
    assert status == 200 and body["healthy"] is True and body["consecutive_failures"] == 5
    assert fetch_json(base + "/readyz")[0] == 503  # not ready, though: it is in a failure streak


def test_one_misconfigured_queue_is_enough_and_the_watchdog_still_sees_a_live_pump(
        served: tuple[Stats, str]) -> None:
    stats, base = served
    good, bad = stats.add_loop("agent-0", "agent"), stats.add_loop("render-0", "render")
    _call(stats, good, None)
    _call(stats, bad, ("configuration", "redirect"))
    status, body = fetch_json(base + "/healthz")
    assert status == 503 and list(body["misconfigured"]) == ["render"]
    snapshot = stats.snapshot()
    # The systemd watchdog pings on status == "ok": restarting cannot fix a bad URL.
    assert snapshot["status"] == "ok" and "STUCK" not in status_line(snapshot)


def test_wake_endpoint_needs_the_token_and_exists_only_with_one() -> None:
    token = "w" * 24
    woken: list[int] = []
    server = HealthServer(Stats(), HealthConfig("127.0.0.1", 0, wake_token=token),
                          wake=lambda: woken.append(1))
    server.start()
    closed = HealthServer(Stats(), HealthConfig("127.0.0.1", 0), wake=lambda: woken.append(1))
    closed.start()
    try:
        assert wake(server.url, None)[0] == 401
        assert wake(server.url, "w" * 23)[0] == 401
        assert wake(server.url, token + "x")[0] == 401
        assert wake(server.url, token, method="GET")[0] == 405
        assert woken == []
        assert wake(server.url, token) == (202, {"woken": True})
        assert woken == [1]
        assert wake(closed.url, token)[0] == 404  # no token configured: no endpoint
        assert woken == [1]
    finally:
        server.close()
        closed.close()
