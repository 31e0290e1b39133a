"""The runner client: one HTTP call of the contract, and the one place failures are classified.

It knows nothing of loops, sleeping or logging policy: it returns ``Processed`` or ``Idle``, or
raises ``CallError`` with a kind the loop acts on.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx

from . import __version__
from .backoff import parse_retry_after
from .config import Settings, redact_url

# Statuses that mean "the runner or something in front of it is busy or down: try again".
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
_HINTS = {
    401: "the runner rejected the credentials: check AGENT_TOKEN and ORGANIZATION_ID "
         "(and SUPABASE_ANON_KEY if the function verifies JWTs)",
    403: "the runner refused this caller: check ORGANIZATION_ID and the token's rights",
    404: "nothing answers at this URL: check SUPABASE_URL or QUEUE_PUMP_ENDPOINT, and that the "
         "function is deployed",
}
_MESSAGE_KEYS = ("error", "message", "msg", "detail")
_MAX_MESSAGE = 300


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"
    CONFIGURATION = "configuration"


@dataclass(frozen=True)
class Processed:
    job_id: Any = None
    job_type: Any = None
    status: Any = None
    yielded: bool = False


@dataclass(frozen=True)
class Idle:
    pass


Outcome = Processed | Idle
IDLE = Idle()


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


class _TooLarge(Exception):
    pass


def _ssl_context() -> ssl.SSLContext:
    # Verification is always on; only the trust store is the system's, so corporate CAs work.
    return ssl.create_default_context()


def build_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The one AsyncClient of the process, its pool sized to the loops that share it."""
    timeout = httpx.Timeout(settings.http_timeout_s, connect=settings.connect_timeout_s)
    loops = settings.total_concurrency
    limits = httpx.Limits(max_connections=loops + 2, max_keepalive_connections=loops)
    if transport is None and settings.http_transport == "aiohttp":
        # Imported only when chosen, so the default pays nothing for it at start-up.
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(verify=_ssl_context(), limits=limits, trust_env=True)
    return httpx.AsyncClient(
        timeout=timeout,
        limits=limits,
        verify=_ssl_context(),
        # Redirects would resend the token to wherever the Location points: never follow.
        follow_redirects=False,
        # Proxy env vars are honoured (corporate networks); .netrc auth is not wanted.
        trust_env=True,
        transport=transport,
    )


def contract_headers(settings: Settings) -> dict[str, str]:
    headers = {
        "X-Agent-Token": settings.agent_token,
        "X-Organization-Id": settings.organization_id,
        "X-Worker-Id": settings.worker_id,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"queue-pump/{__version__}",
    }
    if settings.anon_key:
        headers["Authorization"] = f"Bearer {settings.anon_key}"
        headers["apikey"] = settings.anon_key
    return headers


class RunnerClient:
    """Calls the runner for one queue. Everything per call is precomputed here, once."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, queue: str | None = None):
        self._http = http
        self.queue = queue or settings.queue
        self._max_bytes = settings.max_response_bytes
        self._deadline_s = settings.http_timeout_s
        self._url = httpx.URL(settings.endpoint).copy_merge_params(
            {"worker": "1", "queue": self.queue})
        self.url_for_logs = redact_url(str(self._url))
        self._headers = contract_headers(settings)
        self._body = json.dumps({"worker": True, "queue": self.queue},
                                separators=(",", ":")).encode()

    async def call(self, now: datetime | None = None) -> Outcome:
        try:
            async with asyncio.timeout(self._deadline_s):
                status, headers, body = await self._post()
        except TimeoutError:
            raise CallError(ErrorKind.RETRYABLE, "timeout",
                            detail=f"no complete answer within {self._deadline_s:g} s") from None
        except _TooLarge:
            raise CallError(ErrorKind.RETRYABLE, "too_large",
                            detail=f"answer larger than {self._max_bytes} bytes") from None
        except httpx.TimeoutException as exc:
            raise CallError(ErrorKind.RETRYABLE, "timeout", detail=type(exc).__name__) from None
        except httpx.ConnectError as exc:
            reason = "dns" if _caused_by(exc, socket.gaierror) else "connect"
            raise CallError(ErrorKind.RETRYABLE, reason, detail=_short(exc)) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CallError(ErrorKind.CONFIGURATION, "bad_url", detail=_short(exc),
                            hint="check SUPABASE_URL or QUEUE_PUMP_ENDPOINT") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise CallError(ErrorKind.RETRYABLE, "network", detail=_short(exc)) from None
        return classify(status, headers, body, now=now)

    async def _post(self) -> tuple[int, httpx.Headers, bytes]:
        async with self._http.stream("POST", self._url, content=self._body,
                                     headers=self._headers) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise _TooLarge
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise _TooLarge  # stop reading: never buffer an unbounded body
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> Outcome:
    """Turn a complete answer into an outcome, or raise the CallError that describes it."""
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise CallError(ErrorKind.RETRYABLE, "bad_json", status,
                            detail="2xx answer is not JSON") from None
        if not isinstance(data, dict):
            raise CallError(ErrorKind.RETRYABLE, "not_object", status,
                            detail=f"2xx answer is JSON {type(data).__name__}, not an object")
        if data.get("processed") is True:
            return Processed(job_id=data.get("jobId"), job_type=data.get("jobType"),
                             status=data.get("status"), yielded=bool(data.get("yielded")))
        return IDLE
    message = runner_message(body)
    if 300 <= status < 400:
        location = redact_url(headers.get("location", "")) or "(no Location)"
        raise CallError(ErrorKind.CONFIGURATION, "redirect", status, detail=message,
                        hint=f"the runner redirects to {location}; point the pump at the final "
                             "URL (redirects are not followed, they would resend the token)")
    retry_after = parse_retry_after(headers.get("retry-after"), now) if status in (
        429, 503) else None
    if status >= 500 or status in _RETRYABLE_4XX:
        raise CallError(ErrorKind.RETRYABLE, "http_status", status, retry_after, message)
    raise CallError(ErrorKind.CONFIGURATION, "http_status", status, None, message,
                    hint=_HINTS.get(status, "the runner rejects the request as sent: check the "
                                            "URL and the runner's version"))


def runner_message(body: bytes) -> str:
    """The runner's own error message from a JSON error body, short; nothing from HTML pages."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(data, dict):
        for key in _MESSAGE_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:_MAX_MESSAGE]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:_MAX_MESSAGE]
    return ""


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:_MAX_MESSAGE]
