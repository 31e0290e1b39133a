"""Health of the real process: /healthz, /readyz and /metrics follow its calls; a configuration
error makes it unhealthy until a call succeeds; systemd hears READY and STOPPING; and a
neighbour flooding the health port under a lowered descriptor limit (issue 13, items 2 and 3)
starves neither the runner calls nor a real prober, with bounded descriptors and threads and no
traceback."""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from queue_pump.cli.health_client import cmd_healthcheck
from tests.support.env import TOKEN
from tests.support.net import answers, fetch, fetch_json
from tests.support.proc import Live, finish, pump_env, start, wait_until
from tests.support.runner_double import IDLE, JOB, Reply, free_port, runner_double

pytestmark = pytest.mark.e2e
FD_LIMIT = 256
FLOOD = 400  # more connections than the pump may open descriptors


def proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def limited_start(env: dict[str, str]) -> Live:
    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

    proc = subprocess.Popen([sys.executable, "-m", "queue_pump"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lower_limit)
    return Live(proc)


class Flood:
    """FLOOD connections that each send a byte of a request line every 0.5 s (resetting any
    per-read timeout), reopened when the pump closes them."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._stop = threading.Event()
        self.opened = 0
        self._socks: list[socket.socket | None] = [None] * FLOOD
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self._socks:
            if sock is not None:
                sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, sock in enumerate(self._socks):
                self._socks[i] = self._poke(sock)
            self._stop.wait(0.5)

    def _poke(self, sock: socket.socket | None) -> socket.socket | None:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", self._port), timeout=0.5)
                self.opened += 1
            sock.send(b"G")
            return sock
        except OSError:
            if sock is not None:
                sock.close()
            return None


def probe(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status)


def test_a_health_port_flood_starves_neither_the_runner_calls_nor_healthz() -> None:
    port = free_port()
    with runner_double(lambda _i: IDLE) as double:
        env = pump_env(double.url, QUEUE_PUMP_HEALTH_PORT=str(port),
                       QUEUE_PUMP_IDLE_SLEEP_MS="100", QUEUE_PUMP_CONCURRENCY="2")
        pump = limited_start(env)
        pump.wait_event("pump_started")
        double.wait_for(2)
        threads_before = proc_status(pump.proc.pid, "Threads")
        with Flood(port) as flood:
            wait_until(lambda: flood.opened >= FLOOD, timeout_s=15)
            calls_at_flood = len(double.seen)
            # a real prober, several times over, while the flood is held
            assert [probe(f"http://127.0.0.1:{port}/healthz") for _ in range(5)] == [200] * 5
            double.wait_for(calls_at_flood + 10)  # the loops keep calling the runner
            threads = proc_status(pump.proc.pid, "Threads")
            fds = open_fds(pump.proc.pid)
        pump.proc.terminate()
        code, _ = pump.finish()
    assert code == 0
    assert threads <= threads_before + 1, (threads_before, threads)  # no thread per connection
    assert fds <= 32 + 40, fds  # the held connections, the pool, the rest of the process
    assert not pump.events("call_failed")  # never "Too many open files"


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = fetch(base + "/metrics")
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
            wait_until(lambda: fetch(base + "/healthz")[0] == 200
                       and json.loads(fetch(base + "/healthz")[1])["counters"]["calls"] == 6)
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
            status, body = fetch(base + "/healthz")
            assert status == 200
            health = json.loads(body)
            assert health["state"] == "idle" and health["ready"] is True
            assert health["counters"] == {"calls": 6, "processed": 3, "idle": 1, "errors": 2}
            assert fetch(base + "/readyz")[0] == 200
            assert fetch(base + "/nope")[0] == 404
            for path in ("/healthz", "/readyz", "/metrics"):
                assert TOKEN not in fetch(base + path)[1]
        finally:
            proc.send_signal(signal.SIGTERM)
            done = finish(proc, time.monotonic())
    assert done.code == 0
    done.assert_no_secret()


@pytest.mark.e2e
def test_readyz_is_503_until_the_runneranswers() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A runner port bound but not listening, held for the whole test: connecting is refused,
    # and no other test's server can take the port meanwhile (as a merely free one could).
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    runner = f"http://127.0.0.1:{closed.getsockname()[1]}"
    proc = start(pump_env(runner, QUEUE_PUMP_HEALTH_PORT=str(port)))
    try:
        wait_until(lambda: answers(base + "/readyz"))
        wait_until(lambda: json.loads(fetch(base + "/healthz")[1])["counters"]["errors"] >= 1)
        status, body = fetch(base + "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert fetch(base + "/healthz")[0] == 200  # alive and backing off is healthy
        # Waited for, not read once: a full-jitter wait can be a few ms, and the state is
        # "working" again while the next call is in flight.
        wait_until(lambda: json.loads(fetch(base + "/healthz")[1])["state"] == "backing-off")
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc, time.monotonic())
        closed.close()


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
            wait_until(lambda: answers(base + "/healthz")
                       and fetch_json(base + "/healthz")[0] == 503)
            # Waited for: between 50 ms waits the loop is "working" on its next call.
            wait_until(lambda: fetch_json(base + "/healthz")[1]["state"] == "backing-off")
            body = fetch_json(base + "/healthz")[1]
            assert body["misconfigured"] == {"agent": "configuration:http_status"}
            assert cmd_healthcheck(["--url", base], {}) == 1
            double.script = lambda i: IDLE  # the operator fixed the token on the runner side
            wait_until(lambda: fetch_json(base + "/healthz")[0] == 200)
            assert fetch_json(base + "/healthz")[1]["problems"] == []
            assert cmd_healthcheck(["--url", base], {}) == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            done = finish(proc, time.monotonic())
    assert done.code == 0
    done.assert_no_secret()

