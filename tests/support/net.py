"""Loopback: a free port, and HTTP to the servers the tests start.

httpx loads a TLS trust store for every client it builds (~30 ms of CPU) that a plain http://
call to 127.0.0.1 never uses; the suite built some 300 of them, about 10 s of its CPU. So: one
verifying context per process, handed to every client a test builds (``verify=tls()``), and one
shared client for one-off calls, without keep-alive (a server may be gone by the next call)."""

from __future__ import annotations

import functools
import json
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

import httpx


@functools.cache
def tls() -> ssl.SSLContext:
    return ssl.create_default_context()


@functools.cache
def _client() -> httpx.Client:
    return httpx.Client(verify=tls(), limits=httpx.Limits(max_keepalive_connections=0))


def get(url: str, **kwargs: Any) -> httpx.Response:
    return _client().get(url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return _client().post(url, **kwargs)


def free_port() -> int:
    """A port free on 127.0.0.1 when asked (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """GET with the standard library, as a prober does: the status and the text, whatever the
    status (no client pool, no trust store)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def fetch_json(url: str, timeout_s: float = 5.0) -> tuple[int, Any]:
    status, text = fetch(url, timeout_s)
    return status, json.loads(text)


def answers(url: str) -> bool:
    """Whether something at ``url`` answers HTTP at all (any status)."""
    try:
        fetch(url)
    except OSError:
        return False
    return True


def wake(url: str, token: str | None, method: str = "POST") -> tuple[int, Any]:
    """``method`` /wake on the health endpoint at ``url``, with ``token`` as the bearer token."""
    request = urllib.request.Request(url + "/wake", method=method,
                                     data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
