"""A programmable runner double: real HTTP on loopback, in a thread of the test process. Its
answers are the contract's, as the reference runner and the bench's stand-in write them
(queue_pump/reference_runner/contract.py).

The reference runner is the contract; this double exists for what a runner should never do on
purpose (drop connections, send half a body, stall) and for exact per-request scripting.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from queue_pump.reference_runner import contract

from .net import free_port

__all__ = ["IDLE", "JOB", "Reply", "RunnerDouble", "Seen", "free_port", "runner_double"]


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: dict(contract.IDLE))  # dict/list -> JSON
    raw: bytes | None = None  # sent as-is instead of body
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering
    partial: bool = False  # promise more bytes than are sent, then close
    stream_bytes: int = 0  # send this many bytes, chunked, generated as they go (never in memory)
    # send this many chunks of one data byte behind 8 kB of chunk extensions (a framing flood)
    ext_chunks: int = 0


JOB = Reply(body=contract.processed("j", "t", "done"))
IDLE = Reply(body=dict(contract.IDLE))


@dataclass
class Seen:
    at: float
    path: str
    headers: httpx.Headers  # case-insensitive, as HTTP headers are
    body: bytes
    answered: bool = False
    sent_bytes: int = 0  # body bytes written on the wire (framing included), for floods


class RunnerDouble:
    """``script(i)`` answers the i-th call; assign ``double.script`` to change it mid-run.

    With ``listen=False`` the port is bound but not listening, so connecting is refused until
    ``listen()`` is called (a runner that comes back on the same address).
    """

    def __init__(self, script: Callable[[int], Reply], *, listen: bool = True) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, each answer would wait
            # ~40 ms for the client's delayed ACK and hide how fast the pump really calls.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                seen = Seen(time.monotonic(), self.path, httpx.Headers(list(self.headers.items())),
                            self.rfile.read(length))
                with double._lock:
                    double.seen.append(seen)
                    index = len(double.seen) - 1
                reply = double.script(index)
                try:
                    self._answer(reply, seen)
                except (BrokenPipeError, ConnectionResetError):
                    # The pump hung up first (its timeout, or a body over its cap): expected.
                    self.close_connection = True

            def _answer(self, reply: Reply, seen: Seen) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if "content-type" not in {k.lower() for k in reply.headers}:
                    self.send_header("Content-Type", "application/json")
                if reply.ext_chunks:
                    self._flood(reply, seen)
                    return
                if reply.stream_bytes:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"x" * 65536
                    left = reply.stream_bytes
                    while left > 0:
                        piece = chunk[:left]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        left -= len(piece)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    seen.answered = True
                    return
                self.send_header("Content-Length", str(len(payload) * (3 if reply.partial else 1)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                if reply.partial:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                seen.answered = True

            def _flood(self, reply: Reply, seen: Seen) -> None:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                # 64 chunks per write: 1 data byte each, behind an 8000-byte extension.
                block = (b"1;e=" + b"a" * 8000 + b"\r\nx\r\n") * 64
                for _ in range(reply.ext_chunks // 64):
                    self.wfile.write(block)
                    seen.sent_bytes += len(block)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                seen.answered = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        # A pump with hundreds of loops connects all at once: the default backlog of 5 would
        # drop SYNs, and measure the double's kernel queue instead of the pump.
        self.server.request_queue_size = 1024
        self.server.server_bind()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._listen_now = listen

    def listen(self) -> None:
        """Start accepting connections (and serving) on the bound port."""
        if not self._thread.is_alive():
            self.server.server_activate()
            self._thread.start()

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(self.seen)} calls, wanted {count}")
            time.sleep(0.01)

    @contextmanager
    def running(self) -> Iterator[RunnerDouble]:
        if self._listen_now:
            self.listen()
        try:
            yield self
        finally:
            if self._thread.is_alive():
                self.server.shutdown()
            self.server.server_close()


@contextmanager
def runner_double(script: Callable[[int], Reply]) -> Iterator[RunnerDouble]:
    with RunnerDouble(script).running() as double:
        yield double
