"""The health endpoint: /healthz, /readyz, /metrics (and /wake), a WSGI app served by
``http_server.Acceptor`` in one thread of its own.

Its own thread on purpose: if the event loop wedges, /healthz still answers, and answers 503
because the loops' deadlines pass. It reads Stats and never touches the pump.

/healthz is 503 when a loop is stuck, and also while a queue's latest failure was a
configuration error (no retry fixes a bad token or URL, so a container must not look healthy);
the body's ``problems`` says why. Backing off from 5xx stays 200.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .http_server import Acceptor
from .state import Stats

StartResponse = Callable[..., Any]
JSON = "application/json"


class _HealthApp:
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
            # Loaded at the first scrape: a pump nobody scrapes never imports prometheus_client.
            from .metrics import exposition

            content_type, body = exposition(self._stats)
            start_response("200 OK", [("Content-Type", content_type),
                                      ("Content-Length", str(len(body)))])
            return [body]
        snapshot = self._stats.snapshot()
        if path == "/healthz":
            ok = snapshot["healthy"]
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


@dataclass(frozen=True)
class HealthConfig:
    """Where the endpoint listens, and the token that opens /wake (app.py builds it)."""

    host: str
    port: int  # 0: any free port (tests); the wiring never starts it for a configured 0
    wake_token: str = ""  # empty: no /wake


class HealthServer:
    """The endpoint's socket and its one thread; requests are served by ``http_server.Acceptor``."""

    def __init__(self, stats: Stats, config: HealthConfig, *,
                 wake: Callable[[], None] | None = None, **limits: Any) -> None:
        self._app = _HealthApp(stats, wake=wake, wake_token=config.wake_token)
        self._host = config.host
        self._port = config.port
        self._limits = limits  # max_connections, deadline_s: tests shrink them
        self._acceptor: Acceptor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind now, so a port in use fails start-up instead of a background thread."""
        self._acceptor = Acceptor(self._host, self._port, self._app, **self._limits)
        self._thread = threading.Thread(target=self._acceptor.serve, name="health", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        return self._acceptor.port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.stop()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._acceptor = None
