"""Health, metrics, status, the systemd notify protocol and alerts, each against the real thing:
a real HTTP endpoint, prometheus_client's own parser, a real datagram socket, a real receiver."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from queue_pump.app import start_alerter
from queue_pump.cli.health_client import cmd_healthcheck, cmd_status
from queue_pump.config import from_mapping
from queue_pump.observe.health import HealthConfig, HealthServer
from queue_pump.observe.state import STUCK_SLACK_S, LoopState, Stats
from queue_pump.observe.systemd import Notifier, watchdog, watchdog_interval_s
from tests.support.env import BASE_ENV, TOKEN, FakeTime
from tests.support.proc import finish, pump_env, start, wait_until
from tests.support.runner_double import IDLE, JOB, Reply, free_port, runner_double


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.e2e
def test_metrics_and_health_of_a_running_pump_follow_its_calls() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = [JOB, JOB, JOB, Reply(status=503), Reply(status=500)]
    with runner_double(lambda i: script[i] if i < len(script) else IDLE) as double:
        proc = start(pump_env(double.url, QUEUE_PUMP_HEALTH_PORT=str(port),
                              QUEUE_PUMP_TICK_SLEEP_MS="0", QUEUE_PUMP_BACKOFF_BASE_MS="1",
                              QUEUE_PUMP_IDLE_SLEEP_MS="60000"))
        try:
            double.wait_for(6)
            wait_until(lambda: get(base + "/healthz")[0] == 200
                       and json.loads(get(base + "/healthz")[1])["counters"]["calls"] == 6)
            m = metrics(base)
            q = (("queue", "agent"),)
            assert m[("queue_pump_calls_total", (("outcome", "processed"), *q))] == 3
            assert m[("queue_pump_calls_total", (("outcome", "idle"), *q))] == 1
            assert m[("queue_pump_calls_total", (("outcome", "error"), *q))] == 2
            assert m[("queue_pump_call_errors_total",
                      (("kind", "retryable"), *q, ("reason", "http_status")))] == 2
            assert m[("queue_pump_jobs_total", (*q, ("status", "done")))] == 3
            assert m[("queue_pump_call_duration_seconds_count", q)] == 6
            assert m[("queue_pump_consecutive_failures", q)] == 0
            assert m[("queue_pump_last_success_timestamp_seconds", ())] > time.time() - 60
            assert m[("queue_pump_in_flight", q)] == 0
            loops = {labels[0][1]: v for (name, labels), v in m.items()
                     if name == "queue_pump_loops"}
            assert loops["idle"] == 1 and sum(loops.values()) == 1
            assert ("queue_pump_build_info", (("python", platform.python_version()),
                                              ("version", "0.1.0"))) in m
            status, body = get(base + "/healthz")
            assert status == 200
            health = json.loads(body)
            assert health["state"] == "idle" and health["ready"] is True
            assert health["counters"] == {"calls": 6, "processed": 3, "idle": 1, "errors": 2}
            assert get(base + "/readyz")[0] == 200
            assert get(base + "/nope")[0] == 404
            for path in ("/healthz", "/readyz", "/metrics"):
                assert TOKEN not in get(base + path)[1]
        finally:
            proc.send_signal(signal.SIGTERM)
            done = finish(proc, time.monotonic())
    assert done.code == 0
    done.assert_no_secret()


@pytest.mark.e2e
def test_readyz_is_503_until_the_runner_answers() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A runner port bound but not listening, held for the whole test: connecting is refused,
    # and no other test's server can take the port meanwhile (as a merely free one could).
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    runner = f"http://127.0.0.1:{closed.getsockname()[1]}"
    proc = start(pump_env(runner, QUEUE_PUMP_HEALTH_PORT=str(port)))
    try:
        wait_until(lambda: _answers(base + "/readyz"))
        wait_until(lambda: json.loads(get(base + "/healthz")[1])["counters"]["errors"] >= 1)
        status, body = get(base + "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert get(base + "/healthz")[0] == 200  # alive and backing off is healthy
        # Waited for, not read once: a full-jitter wait can be a few ms, and the state is
        # "working" again while the next call is in flight.
        wait_until(lambda: json.loads(get(base + "/healthz")[1])["state"] == "backing-off")
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc, time.monotonic())
        closed.close()


def _answers(url: str) -> bool:
    try:
        get(url)
        return True
    except OSError:
        return False


@pytest.fixture
def served_stats() -> Iterator[tuple[Stats, FakeTime, str]]:
    fake = FakeTime()
    stats = Stats(clock=fake.clock)
    server = HealthServer(stats, HealthConfig("127.0.0.1", 0))
    server.start()
    try:
        yield stats, fake, server.url
    finally:
        server.close()


def test_a_stuck_loop_turns_healthz_503(served_stats: tuple[Stats, FakeTime, str]) -> None:
    stats, fake, base = served_stats
    loop = stats.add_loop("agent-0", "agent")
    stats.call_started(loop, timeout_s=10.0)
    fake.now += 10.0 + STUCK_SLACK_S - 1
    assert get(base + "/healthz")[0] == 200
    fake.now += 2
    status, body = get(base + "/healthz")
    assert status == 503
    data = json.loads(body)
    assert data["status"] == "stuck" and data["loops"][0]["stuck"] is True
    # a sleep that overruns its plan is stuck too
    stats.call_ended(loop, 1.0, "idle")
    stats.sleeping(loop, loop.state, 5.0)
    assert get(base + "/healthz")[0] == 200
    fake.now += 5.0 + STUCK_SLACK_S + 1
    assert get(base + "/healthz")[0] == 503


def test_status_and_healthcheck_commands(served_stats: tuple[Stats, FakeTime, str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    stats, fake, base = served_stats
    loop = stats.add_loop("agent-0", "agent")
    stats.call_started(loop, 10.0)
    stats.call_ended(loop, 0.1, "processed", job_status="done")
    stats.call_started(loop, 10.0)
    stats.call_ended(loop, 0.1, "error", error=("retryable", "connect"))
    assert cmd_status(["--url", base], {}) == 0
    out = capsys.readouterr().out
    assert "calls 2: processed 1, idle 0, errors 1" in out
    assert "1 failures in a row" in out and "retryable:connect 1" in out
    assert cmd_healthcheck(["--url", base], {}) == 0
    fake.now += 1000
    assert cmd_healthcheck(["--url", base], {}) == 1
    assert "stuck loops: agent-0" in capsys.readouterr().err
    assert cmd_healthcheck(["--url", f"http://127.0.0.1:{free_port()}"], {}) == 1
    assert cmd_status(["--url", f"http://127.0.0.1:{free_port()}"], {}) == 1
    assert "no pump answers" in capsys.readouterr().err


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    path = os.path.join(tempfile.mkdtemp(), "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def test_notifier_speaks_the_datagram_protocol(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    assert Notifier.from_environ({"NOTIFY_SOCKET": path}).send("READY=1")
    assert sock.recv(100) == b"READY=1"
    assert not Notifier.from_environ({}).send("READY=1")
    assert not Notifier.from_environ({"NOTIFY_SOCKET": path + ".gone"}).send("READY=1")


def test_watchdog_pings_at_half_the_interval_only_while_healthy(
        notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    assert watchdog_interval_s(env) == 0.1
    assert watchdog_interval_s({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None
    fake = FakeTime()
    stats = Stats(clock=fake.clock)
    loop = stats.add_loop("agent-0", "agent")

    waits: list[float] = []

    async def go() -> tuple[list[bytes], list[bytes]]:
        healthy_seen, resume, stuck_seen = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def pause(seconds: float) -> None:
            # Fake time: no real sleep; the test decides when each phase ends.
            waits.append(seconds)
            fake.now += seconds
            if len(waits) == 4:
                healthy_seen.set()
                await resume.wait()
            if len(waits) == 7:
                stuck_seen.set()
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.create_task(watchdog(Notifier.from_environ(env), stats, env,
                                            pause=pause))
        await healthy_seen.wait()
        sock.setblocking(False)
        healthy = _drain(sock)
        stats.call_started(loop, 1.0)
        fake.now += 1000  # the loop is now stuck: pings must stop, the status says so
        resume.set()
        await stuck_seen.wait()
        task.cancel()
        return healthy, _drain(sock)

    healthy, stuck = asyncio.run(go())
    assert waits == [0.1] * 7  # half of WATCHDOG_USEC
    assert len(healthy) == 4
    assert all(m.startswith(b"WATCHDOG=1\nSTATUS=") for m in healthy)
    assert b"0 processed, 0 idle, 0 errors" in healthy[0]
    assert stuck and not any(b"WATCHDOG=1" in m for m in stuck)
    assert all(m.startswith(b"STATUS=") and m.endswith(b"STUCK") for m in stuck)


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(200))
        except BlockingIOError:
            return got


def test_healthcheck_says_when_the_endpoint_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_healthcheck([], {"QUEUE_PUMP_HEALTH_PORT": "0"}) == 1
    assert "the health endpoint is off" in capsys.readouterr().err
    assert cmd_status([], {"QUEUE_PUMP_HEALTH_PORT": "0"}) == 1


@pytest.mark.e2e
def test_the_process_reports_ready_and_stopping(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with runner_double(lambda i: IDLE) as double:
        proc = start(pump_env(double.url, NOTIFY_SOCKET=path))
        assert sock.recv(100) == b"READY=1"
        assert sock.recv(200).startswith(b"STATUS=")
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(100) == b"STOPPING=1"
        assert finish(proc, time.monotonic()).code == 0


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
        assert get(server.url + "/healthz")[0] == 200  # a prompt request still is
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
            assert get(server.url + "/healthz")[0] == 200
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


def test_healthcheck_finds_the_port_in_dot_env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                               served_stats: tuple[Stats, FakeTime, str]) -> None:
    _, _, base = served_stats
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"QUEUE_PUMP_HEALTH_PORT={base.rsplit(':', 1)[1]}\n")
    assert cmd_healthcheck([], {}) == 0


def test_shutdown_marks_loops_stopping_and_a_drained_queue_does_not_look_stopped() -> None:
    stats = Stats()
    busy, drained = stats.add_loop("a-0", "a"), stats.add_loop("b-0", "b")
    stats.call_started(busy, 10)
    stats.set_state(drained, LoopState.STOPPED)
    assert stats.overall_state() == "working"
    assert stats.mark_stopping() == 1
    assert stats.overall_state() == "stopping"
    assert [loop["state"] for loop in stats.snapshot()["loops"]] == ["stopping", "stopped"]


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
