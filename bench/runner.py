"""A stand-in runner for benchmarks: as little work per request as HTTP/1.1 allows.

Raw asyncio protocol (no framework), keep-alive, one or more processes on one port
(SO_REUSEPORT), and one shared state block so every worker claims from the same queue:

    POST <anything else>        a runner call: {"processed": true, ...} while jobs remain (after
                                sleeping job_ms), then {"processed": false}
    POST /_bench/reset?jobs=N&job_ms=MS    new queue of N jobs; counters to zero
    POST /_bench/enqueue?jobs=K            add K jobs now and note the time (pickup latency)
    GET  /_bench/stats                     counters and times as JSON

Times are wall-clock (time.time()), so the harness in another process can compare them with
its own: the arrival of the first request (start-up), of the first and last claim (throughput),
and enqueue -> claim (pickup latency).

    python bench/runner.py --port 0 --workers 1     # prints "listening <port>" when ready
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from queue_pump.reference_runner import contract

# Shared state: one array of doubles, one lock, inherited by forked workers.
FIELDS = ("remaining", "processed", "idle", "requests", "first_request", "first_claim",
          "last_claim", "job_ms", "enqueued_at", "pickups", "pickup_sum", "last_pickup",
          "last_idle_at", "first_idle_at")
IX = {name: i for i, name in enumerate(FIELDS)}
MAX_PICKUPS = 1024  # individual pickup latencies kept, for medians

def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


# The contract's answers as every runner here writes them; a job's body is cut once around its
# id, so a claim costs a concatenation, not a JSON encoding.
IDLE_BODY = _json(contract.IDLE)
_JOB_HEAD, _JOB_TAIL = _json(contract.processed(0, "bench", "done")).split(b'"jobId":0', 1)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


class State:
    def __init__(self) -> None:
        self.values = mp.RawArray("d", len(FIELDS))
        self.pickups = mp.RawArray("d", MAX_PICKUPS)
        self.lock = mp.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {name: self.values[i] for name, i in IX.items()}
            n = int(out["pickups"])
            out["pickup_list"] = list(self.pickups[: min(n, MAX_PICKUPS)])
        return out


class RunnerProtocol(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = b""
        self.busy = False  # a delayed answer is pending: keep later requests in order
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        while self.buf and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            method, target, _ = lines[0].split(" ", 2)
            self._handle(method, target)

    def _reply(self, body: bytes, status: bytes = b"200 OK") -> None:
        assert self.transport is not None
        head = HEAD % len(body)
        if status != b"200 OK":
            head = head.replace(b"200 OK", status, 1)
        self.transport.write(head + body)

    def _handle(self, method: str, target: str) -> None:
        now = time.time()
        values = self.state.values
        if target.startswith("/_bench/"):
            self._control(method, target, now)
            return
        with self.state.lock:
            values[IX["requests"]] += 1
            if not values[IX["first_request"]]:
                values[IX["first_request"]] = now
            claimed = values[IX["remaining"]] >= 1
            if claimed:
                values[IX["remaining"]] -= 1
                values[IX["processed"]] += 1
                number = int(values[IX["processed"]])
                if not values[IX["first_claim"]]:
                    values[IX["first_claim"]] = now
                values[IX["last_claim"]] = now
                if values[IX["enqueued_at"]]:
                    latency = now - values[IX["enqueued_at"]]
                    n = int(values[IX["pickups"]])
                    if n < MAX_PICKUPS:
                        self.state.pickups[n] = latency
                    values[IX["pickups"]] = n + 1
                    values[IX["pickup_sum"]] += latency
                    values[IX["last_pickup"]] = latency
                    values[IX["enqueued_at"]] = 0.0
            else:
                values[IX["idle"]] += 1
                values[IX["last_idle_at"]] = now
                if not values[IX["first_idle_at"]]:
                    values[IX["first_idle_at"]] = now
            job_ms = values[IX["job_ms"]]
        if not claimed:
            self._reply(IDLE_BODY)
            return
        body = b'%s"jobId":%d%s' % (_JOB_HEAD, number, _JOB_TAIL)
        if job_ms > 0:
            self.busy = True
            asyncio.get_running_loop().call_later(job_ms / 1000, self._finish_delayed, body)
        else:
            self._reply(body)

    def _finish_delayed(self, body: bytes) -> None:
        self.busy = False
        if self.transport is not None and not self.transport.is_closing():
            self._reply(body)
            self._drain()

    def _control(self, method: str, target: str, now: float) -> None:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        values = self.state.values
        if parts.path == "/_bench/reset":
            with self.state.lock:
                for i in range(len(FIELDS)):
                    values[i] = 0.0
                values[IX["remaining"]] = float(query.get("jobs", "0"))
                values[IX["job_ms"]] = float(query.get("job_ms", "0"))
            self._reply(b'{"ok":true}')
        elif parts.path == "/_bench/enqueue":
            with self.state.lock:
                values[IX["remaining"]] += float(query.get("jobs", "1"))
                values[IX["enqueued_at"]] = now
            self._reply(b'{"ok":true}')
        elif parts.path == "/_bench/stats":
            self._reply(json.dumps(self.state.snapshot()).encode())
        else:
            self._reply(b'{"error":"no such control path"}', b"404 Not Found")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def serve(sock: socket.socket, state: State) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(lambda: RunnerProtocol(state), sock=sock)
        async with server:
            await stop.wait()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="exit by itself after this long, whatever happens")
    args = parser.parse_args(argv)
    state = State()
    first = bound_socket(args.port)
    port = first.getsockname()[1]
    socks = [first] + [bound_socket(port) for _ in range(args.workers - 1)]
    children = []
    for sock in socks[1:]:
        child = mp.get_context("fork").Process(target=serve, args=(sock, state), daemon=True)
        child.start()
        children.append(child)
    print(f"listening {port}", flush=True)

    def on_alarm(_sig: int, _frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(args.max_seconds)))
    try:
        serve(first, state)
    finally:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
            child.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
