"""A neighbour floods the health port of the real process, under a lowered descriptor limit
(issue 13, items 2 and 3): the pump keeps calling its runner, /healthz keeps answering a real
prober, the process holds a bounded number of descriptors and threads, prints no traceback."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.support.proc import Live, pump_env, wait_until
from tests.support.runner_double import IDLE, free_port, runner_double

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
