"""HTTP/1.1 for the health port: one thread, one selector, a bounded number of connections.

The health port is open to neighbours, so what one of them can hold is bounded here, not by
luck: the standard library's threading server gave every connection a thread and a descriptor,
with a per-read timeout a client reset by sending a byte every few seconds; about 1,020 such
connections starved the pump of descriptors, and under a systemd TasksMax every other /healthz
failed with a traceback. Here:

- at most ``MAX_CONNECTIONS`` are held; a new one past that closes the oldest, so a prober that
  sends its request at once is answered while a flood of slow clients is held;
- one deadline per connection, from accept to the last byte of the answer, whatever the client
  trickles;
- no thread per connection: requests are tiny and answered from memory, one at a time;
- a request is at most ``MAX_REQUEST_BYTES``; every answer closes the connection;
- out of descriptors, the oldest connection is closed, or accepting pauses, instead of spinning;
- nothing a client sends prints a traceback: a bad request is a 400, an app failure a 500.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_CONNECTIONS = 32
REQUEST_DEADLINE_S = 5.0
MAX_REQUEST_BYTES = 8192
_ACCEPT_PAUSE_S = 0.1  # out of descriptors with none of our own to free: wait, don't spin
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class _Conn:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytes = b""


class Acceptor:
    def __init__(self, host: str, port: int, app: WsgiApp, *,
                 max_connections: int = MAX_CONNECTIONS, deadline_s: float = REQUEST_DEADLINE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._app = app
        self._max_connections = max_connections
        self._deadline_s = deadline_s
        self._clock = clock
        self._conns: dict[socket.socket, _Conn] = {}  # insertion order: oldest first
        self._selector = selectors.DefaultSelector()
        self._waker_r, self._waker_w = socket.socketpair()
        self._selector.register(self._waker_r, selectors.EVENT_READ, "stop")
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._paused_until = 0.0
        self._running = True

    def serve(self) -> None:
        try:
            while self._running:
                self._turn()
        finally:
            self._close_all()

    def stop(self) -> None:
        self._running = False
        with contextlib.suppress(OSError):  # already closed: the thread is gone anyway
            self._waker_w.send(b"x")

    def _turn(self) -> None:
        now = self._clock()
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        waits = [c.deadline - now for c in self._conns.values()]
        if self._paused_until:
            waits.append(self._paused_until - now)
        timeout = max(0.0, min([0.5, *waits]))
        for key, _events in self._selector.select(timeout):
            if key.data == "accept":
                self._accept()
            elif key.data != "stop":
                self._service(key.data, key.events)
        self._expire(self._clock())

    def _accept(self) -> None:
        try:
            sock, _addr = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._out_of_descriptors()
            return
        if len(self._conns) >= self._max_connections:
            self._drop(next(iter(self._conns.values())))
        sock.setblocking(False)
        conn = _Conn(sock, self._clock() + self._deadline_s)
        self._conns[sock] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _out_of_descriptors(self) -> None:
        if self._conns:
            self._drop(next(iter(self._conns.values())))
            return
        self._selector.unregister(self._listener)
        self._paused_until = self._clock() + _ACCEPT_PAUSE_S

    def _service(self, conn: _Conn, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE:
                self._send(conn)
            else:
                self._receive(conn)
        except OSError:
            self._drop(conn)

    def _receive(self, conn: _Conn) -> None:
        data = conn.sock.recv(4096)
        if not data:
            self._drop(conn)
            return
        conn.inbox += data
        request = _parse(bytes(conn.inbox))
        if request is None and len(conn.inbox) <= MAX_REQUEST_BYTES:
            return  # not all there yet
        status, headers, body = (413, [], b"") if request is None else self._run(request)
        conn.outbox = _render(status, headers, body, request)
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._send(conn)

    def _send(self, conn: _Conn) -> None:
        sent = conn.sock.send(conn.outbox)
        conn.outbox = conn.outbox[sent:]
        if not conn.outbox:
            self._drop(conn)

    def _run(self, request: _Request | int) -> tuple[int, list[tuple[str, str]], bytes]:
        if isinstance(request, int):
            return request, [], b""
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answer["status"], answer["headers"] = int(status.split()[0]), headers

        try:
            body = b"".join(self._app(request.environ(), start_response))
        except Exception:  # a bug answers 500; the pump's health must not print tracebacks
            return 500, [], b""
        return answer["status"], answer["headers"], body

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is not None:
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._selector.close()
        for sock in (self._listener, self._waker_r, self._waker_w):
            sock.close()


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: dict[str, str]

    def environ(self) -> dict[str, Any]:
        path, _, query = self.target.partition("?")
        env: dict[str, Any] = {"REQUEST_METHOD": self.method, "PATH_INFO": path,
                               "QUERY_STRING": query}
        for name, value in self.headers.items():
            env["HTTP_" + name.upper().replace("-", "_")] = value
        return env


def _parse(raw: bytes) -> _Request | int | None:
    """The request in ``raw``; None while incomplete; a status for one that is not HTTP."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                return 400
            headers[name.strip().lower()] = value.strip()
    except ValueError:
        return 400
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        return 400
    length = headers.get("content-length", "0")
    if not length.isdigit():
        return 400
    if len(rest) < int(length):
        return None  # the body is still coming (bounded by MAX_REQUEST_BYTES)
    return _Request(method, target, headers)


def _render(status: int, headers: list[tuple[str, str]], body: bytes,
            request: _Request | int | None) -> bytes:
    if not headers:
        headers = [("Content-Length", str(len(body)))]
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", *(
        f"{name}: {value}" for name, value in headers), "Connection: close", "", ""]
    head = "\r\n".join(lines).encode("latin-1")
    if isinstance(request, _Request) and request.method == "HEAD":
        return head
    return head + body
