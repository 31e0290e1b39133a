"""The health endpoint: /healthz, /readyz, /metrics, served by the standard library's WSGI server.

It runs in its own thread on purpose: if the event loop wedges, /healthz still answers, and
answers 503 because the loops' deadlines pass. It reads Stats and never touches the pump.
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .stats import Stats

StartResponse = Callable[..., Any]
JSON = "application/json"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # A client that connects and says nothing must not hold a thread and a descriptor forever.
    timeout = 10
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would drown the pump's own log


class HealthApp:
    def __init__(self, stats: Stats, *, wake: Callable[[], None] | None = None,
                 wake_token: str = "") -> None:
        self._stats = stats
        # /wake exists only with a token: an open wake endpoint would let anyone raise the bill.
        self._wake = wake if wake_token else None
        self._expected = f"Bearer {wake_token}".encode()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/wake" and self._wake is not None:
            return self._wake_up(environ, method, start_response)
        if path not in ("/healthz", "/readyz", "/metrics"):
            return _reply(start_response, "404 Not Found", {"error": "not found",
                          "paths": ["/healthz", "/readyz", "/metrics"]})
        if method not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", {"error": "use GET"})
        if path == "/metrics":
            body = generate_latest(self._stats.registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                      ("Content-Length", str(len(body)))])
            return [body]
        snapshot = self._stats.snapshot()
        if path == "/healthz":
            ok = snapshot["status"] == "ok"
        else:
            ok = snapshot["ready"]
            snapshot = {"ready": ok, "state": snapshot["state"],
                        "consecutive_failures": snapshot["consecutive_failures"]}
        return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", snapshot)


    def _wake_up(self, environ: dict[str, Any], method: str,
                 start_response: StartResponse) -> list[bytes]:
        if method != "POST":
            return _reply(start_response, "405 Method Not Allowed", {"error": "use POST"})
        sent = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if not hmac.compare_digest(sent, self._expected):
            return _reply(start_response, "401 Unauthorized",
                          {"error": "send the wake token as 'Authorization: Bearer <token>'"})
        assert self._wake is not None
        self._wake()
        return _reply(start_response, "202 Accepted", {"woken": True})


def _reply(start_response: StartResponse, status: str, data: dict[str, Any]) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", JSON), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]


class HealthServer:
    def __init__(self, stats: Stats, host: str, port: int, *,
                 wake: Callable[[], None] | None = None, wake_token: str = "") -> None:
        self._app = HealthApp(stats, wake=wake, wake_token=wake_token)
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind now, so a port in use fails start-up instead of a background thread."""
        server_class = _Server6 if ":" in self._host else _Server
        self._server = make_server(self._host, self._port, self._app,
                                   server_class=server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health",
                                        kwargs={"poll_interval": 0.5}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
