"""Loopback: a free port, and HTTP to the servers the tests start.

httpx loads a TLS trust store for every client it builds (~30 ms of CPU) that a plain http://
call to 127.0.0.1 never uses; the suite built some 300 of them, about 10 s of its CPU. So: one
verifying context per process, handed to every client a test builds (``verify=tls()``), and one
shared client for one-off calls, without keep-alive (a server may be gone by the next call)."""

from __future__ import annotations

import functools
import socket
import ssl
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
