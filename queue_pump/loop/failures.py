"""The one failure vocabulary: every failed HTTP call, a runner call or a schedule POST, becomes
a ``CallError`` here, with a ``kind`` the caller acts on, a stable ``reason`` label for metrics
and logs, and a ``hint`` for the operator.

Pure: an exception or a complete answer in, a CallError out. No I/O, no clock but ``now``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import httpx

from ..config import env_of, redact_url
from .backoff import parse_retry_after

# Statuses that mean "the runner or something in front of it is busy or down: try again".
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
MAX_MESSAGE = 300
_MESSAGE_KEYS = ("error", "message", "msg", "detail")
_CHAIN_DEPTH = 10


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"
    CONFIGURATION = "configuration"


@dataclass
class CallError(Exception):
    """A failed call: ``reason`` is a short stable label for metrics and logs."""

    kind: ErrorKind
    reason: str
    status: int | None = None
    retry_after_s: float | None = None
    detail: str = ""
    hint: str = field(default="")

    def __str__(self) -> str:
        code = f" {self.status}" if self.status else ""
        return f"{self.reason}{code}: {self.detail}" if self.detail else f"{self.reason}{code}"

    def fields(self) -> dict[str, object]:
        """The error as log fields: only those that apply."""
        out: dict[str, object] = {"reason": self.reason}
        for key in ("status", "retry_after_s"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("detail", "hint"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Hints:
    """What to tell the operator, worded for who made the call (the runner, or a schedule)."""

    target: str  # "the runner", "the endpoint"
    bad_url: str  # where the URL is set
    not_found: str  # 404
    credentials: str  # 401
    rejected: str  # any other 4xx

    def for_status(self, status: int) -> str:
        if status == 401:
            return f"{self.target} rejected the credentials: {self.credentials}"
        if status == 403:
            return (f"{self.target} refused this caller: check {env_of('organization_id')} and the "
                    "token's rights")
        if status == 404:
            return f"nothing answers at this URL: {self.not_found}"
        return f"{self.target} rejects the request as sent: {self.rejected}"


_RUNNER_URL = f"check {env_of('supabase_url')} or {env_of('endpoint_override')}"
_CREDENTIALS = f"check {env_of('agent_token')} and {env_of('organization_id')}"
RUNNER = Hints(
    target="the runner", bad_url=_RUNNER_URL,
    not_found=f"{_RUNNER_URL}, and that the function is deployed",
    credentials=f"{_CREDENTIALS} (and {env_of('anon_key')} if the function verifies JWTs)",
    rejected="check the URL and the runner's version")
SCHEDULE = Hints(
    target="the endpoint", bad_url="check this schedule's url",
    not_found="check this schedule's url",
    credentials=f"{_CREDENTIALS} (and {env_of('anon_key')}, or this schedule's headers)",
    rejected="check this schedule's body against what the endpoint accepts")


_OPERATOR_URL = f"check {env_of('supabase_url')} or {env_of('jobs_url')}"
OPERATOR = Hints(
    target="the operator API", bad_url=_OPERATOR_URL,
    not_found=f"{_OPERATOR_URL}, and that the jobs function is deployed",
    credentials=f"check {env_of('admin_token')} and {env_of('organization_id')} (the pump's "
                f"{env_of('agent_token')} is refused there; and {env_of('anon_key')} if the "
                "function verifies JWTs)",
    rejected="check the command's arguments, and the server's version")


def from_status(status: int, headers: Mapping[str, str], body: bytes, hints: Hints, *,
                now: datetime | None = None) -> CallError:
    """The CallError for a complete answer that is not a 2xx."""
    message = _runner_message(body)
    if 300 <= status < 400:
        location = redact_url(headers.get("location", "")) or "(no Location)"
        return CallError(ErrorKind.CONFIGURATION, "redirect", status, detail=message,
                         hint=f"{hints.target} redirects to {location}; point the pump at the "
                              "final URL (redirects are not followed, they would resend the "
                              "token)")
    retry_after = parse_retry_after(headers.get("retry-after"), now) if status in (
        429, 503) else None
    if status >= 500 or status in RETRYABLE_4XX:
        return CallError(ErrorKind.RETRYABLE, "http_status", status, retry_after, message)
    return CallError(ErrorKind.CONFIGURATION, "http_status", status, None, message,
                     hint=hints.for_status(status))


def from_exception(exc: BaseException, hints: Hints) -> CallError | None:
    """A failure below HTTP (connect, DNS, reset, timeout, cut body, bad URL) as a CallError,
    on either transport; None when ``exc`` is none of those (a bug: the caller decides).

    The aiohttp transport maps every ``aiohttp.ClientConnectionError`` to
    ``httpx.ConnectTimeout``, as httpx-aiohttp does, so a refused connection, a failed DNS
    lookup or a connection dropped after the request all read "timeout" there; the aiohttp
    error it chains as the cause says what really happened.
    """
    native = _in_chain(exc, _is_aiohttp)
    if native is not None:
        return _from_aiohttp(native, hints)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return CallError(ErrorKind.RETRYABLE, "timeout", detail=type(exc).__name__)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return CallError(ErrorKind.CONFIGURATION, "bad_url", detail=short(exc),
                         hint=hints.bad_url)
    if isinstance(exc, httpx.ConnectError):
        dns = _in_chain(exc, lambda e: isinstance(e, socket.gaierror)) is not None
        return _unreachable(dns, short(exc), hints)
    if isinstance(exc, httpx.TransportError | httpx.DecodingError):
        return CallError(ErrorKind.RETRYABLE, "network", detail=short(exc))
    return None


# aiohttp names the TLS context of every connection it could not open ("ssl:default"), even
# for plain http: noise in the one line an operator reads.
_SSL_NOISE = re.compile(r" ssl:(?:default|None|True|False|<[^>]*>)")


def _unreachable(dns: bool, detail: str, hints: Hints) -> CallError:
    detail = _SSL_NOISE.sub("", detail)
    if dns:
        return CallError(ErrorKind.RETRYABLE, "dns", detail=detail,
                         hint=f"the host name does not resolve: {hints.bad_url}")
    return CallError(ErrorKind.RETRYABLE, "connect", detail=detail,
                     hint=f"nothing accepted the connection: is {hints.target} up, and are "
                          f"the host and port right? ({hints.bad_url})")


def internal(exc: BaseException) -> CallError:
    """A bug in one call: retried like a network fault, so it cannot kill the loop for good."""
    return CallError(ErrorKind.RETRYABLE, "internal",
                     detail=f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE])


def _from_aiohttp(native: BaseException, hints: Hints) -> CallError:
    import aiohttp

    detail = short(native)
    if isinstance(native, aiohttp.InvalidURL):
        return CallError(ErrorKind.CONFIGURATION, "bad_url", detail=detail,
                         hint=hints.bad_url)
    if isinstance(native, aiohttp.ClientConnectorError):  # refused, DNS, TLS, proxy connect
        dns = isinstance(native, getattr(aiohttp, "ClientConnectorDNSError", ())) or _in_chain(
            native, lambda e: isinstance(e, socket.gaierror)) is not None
        return _unreachable(dns, detail, hints)
    if isinstance(native, aiohttp.ServerTimeoutError | TimeoutError):  # connect or read timeout
        return CallError(ErrorKind.RETRYABLE, "timeout", detail=type(native).__name__)
    # Disconnected, reset, cut or malformed answer: the wire failed after the connect.
    return CallError(ErrorKind.RETRYABLE, "network", detail=detail)


def _is_aiohttp(exc: BaseException) -> bool:
    return type(exc).__module__.partition(".")[0] == "aiohttp"


def _in_chain(exc: BaseException,
              test: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception in ``exc``'s cause/context chain that passes ``test``."""
    if test is _is_aiohttp and "aiohttp" not in sys.modules:
        return None  # not loaded, so nothing in the chain can be one of its errors
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return None
        if test(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _runner_message(body: bytes) -> str:
    """The runner's own error message from a JSON error body, short; nothing from HTML pages."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    if isinstance(data, dict):
        for key in _MESSAGE_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:MAX_MESSAGE]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:MAX_MESSAGE]
    return ""


def short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:MAX_MESSAGE]
