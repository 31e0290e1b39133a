"""The runner client: one HTTP call of the contract, and the one place failures are classified.

It knows nothing of loops, sleeping or logging policy: it returns ``Processed`` or ``Idle``, or
raises ``CallError`` with a kind the loop acts on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import __version__
from .backoff import parse_retry_after
from .config import Settings, redact_url
from .logs import Redactor

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
# Bytes the pump would have to inflate are never read: it asks for the body as sent, and an
# answer coded anyway (gzip, "gzip, gzip", br, ...) is refused before one byte of it is decoded.
# 1.8 KB of "gzip, gzip" inflate to 1 GiB; no cap on decoded bytes bounds what one step inflates.
IDENTITY = "identity"
# A body arrives in pieces (one per HTTP chunk or per socket read); chunk headers may carry
# extensions of kilobytes around a single data byte, so the body cap alone bounds the body, not
# the bytes read off the wire. Capping the pieces too bounds those: an answer of at most
# ``max_bytes`` in more than this many pieces is refused as too large.
_MIN_PIECES = 1024
_BYTES_PER_PIECE = 4096


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
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Encoded(Exception):
    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


def max_pieces(max_bytes: int) -> int:
    """The most pieces an answer of at most ``max_bytes`` may arrive in."""
    return _MIN_PIECES + max_bytes // _BYTES_PER_PIECE


def _ssl_context() -> ssl.SSLContext:
    # Verification is always on; only the trust store is the system's, so corporate CAs work.
    return ssl.create_default_context()


def build_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The one AsyncClient of the process, its pool sized to the loops that share it."""
    timeout = httpx.Timeout(settings.http_timeout_s, connect=settings.connect_timeout_s)
    loops = max(settings.total_concurrency, settings.concurrency)
    limits = httpx.Limits(max_connections=loops + 2, max_keepalive_connections=loops)
    verify: ssl.SSLContext | bool = True  # unused when httpx is handed a transport
    if transport is None and settings.http_transport == "aiohttp":
        transport = _aiohttp_transport(settings.endpoint, limits)
    elif transport is None:
        verify = _ssl_context()
    return httpx.AsyncClient(
        timeout=timeout,
        headers={"Accept-Encoding": IDENTITY},
        limits=limits,
        verify=verify,
        # Redirects would resend the token to wherever the Location points: never follow.
        follow_redirects=False,
        # Proxy env vars are honoured (corporate networks); .netrc auth is not wanted.
        trust_env=True,
        transport=transport,
    )


def _aiohttp_transport(endpoint: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """httpx-aiohttp's transport over a session configured here, not by its defaults.

    - the pool: at most ``max_connections`` (aiohttp has no separate keep-alive count);
    - no cookie jar: like the Node pump's fetch, nothing a runner sets is sent back;
    - proxies from the environment, resolved once here for the one endpoint, because httpx
      ignores them when handed a transport, and aiohttp's own ``trust_env`` would also read
      ~/.netrc for credentials and look the proxy up again on every call;
    - TLS: aiohttp's verifying default (``ssl.create_default_context()``, the system trust
      store, built when aiohttp is imported), not a third copy of the trust store (~0.8 MB).
    """
    # Imported only when chosen, so the default pays nothing for it at start-up.
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        # Called by the transport on its first request, inside the running event loop.
        connector = aiohttp.TCPConnector(limit=limits.max_connections or 0,
                                         keepalive_timeout=limits.keepalive_expiry, ssl=True)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     trust_env=False)

    # httpx-aiohttp builds a context from ``verify`` for its own session, which ``session``
    # replaces: a bare client context (it verifies, and trusts nothing) costs nothing to build.
    unused = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    transport: httpx.AsyncBaseTransport = AiohttpTransport(
        verify=unused, limits=limits, proxy=_env_proxy(endpoint), client=session)
    return transport


def _env_proxy(url: str) -> httpx.Proxy | None:
    """The proxy the environment names for ``url`` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
    NO_PROXY, either case), as httpx itself would pick it for its own transport."""
    import urllib.request

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    chosen = proxies.get(parts.scheme) or proxies.get("all")
    if not chosen or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    if "://" not in chosen:
        chosen = "http://" + chosen
    return httpx.Proxy(chosen)


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
    """Calls the runner for one queue. Everything per call is precomputed here, once.

    A call is one fixed POST: no auth flow, no redirects, no cookies, no hooks. So it goes
    straight to the transport that httpx would pick for the URL (the pool, or the proxy the
    environment names), with the client's own headers and timeouts: the same bytes on the wire
    as ``http.stream(...)``, without the per-call work of the client layer (request building,
    header merging, cookie extraction), which costs as much as the transport itself.
    """

    def __init__(self, http: httpx.AsyncClient, settings: Settings, queue: str | None = None):
        self._http = http
        self.queue = queue or settings.queue
        self._max_bytes = settings.max_response_bytes
        self._max_pieces = max_pieces(settings.max_response_bytes)
        self._deadline_s = settings.http_timeout_s
        self._url = httpx.URL(settings.endpoint).copy_merge_params(
            {"worker": "1", "queue": self.queue})
        self.url_for_logs = redact_url(str(self._url))
        headers = httpx.Headers(http.headers)  # the client's defaults: User-Agent, ...
        headers.update(contract_headers(settings))
        headers["Accept-Encoding"] = IDENTITY
        if self._url.userinfo:
            # What httpx does for credentials in the URL (BasicAuth), done once; the URL sent
            # goes without them (aiohttp refuses both an Authorization header and URL ones).
            pair = f"{self._url.username}:{self._url.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            self._url = self._url.copy_with(userinfo=b"")
        self._headers = headers
        self._body = json.dumps({"worker": True, "queue": self.queue},
                                separators=(",", ":")).encode()
        self._extensions = {"timeout": http.timeout.as_dict()}
        self._transport = _direct_transport(http, self._url)
        self._scrub = Redactor(settings.secrets()).scrub

    async def call(self, now: datetime | None = None) -> Outcome:
        try:
            return await self._call(now)
        except CallError as exc:
            # The runner's text or an exception's may echo a secret, even clipped: mask it here,
            # so that no str(), repr() or log line of the error can show it.
            exc.detail, exc.hint = self._scrub(exc.detail), self._scrub(exc.hint)
            raise

    async def _call(self, now: datetime | None) -> Outcome:
        try:
            async with asyncio.timeout(self._deadline_s):
                status, headers, body = await self._post()
        except TimeoutError:
            raise CallError(ErrorKind.RETRYABLE, "timeout",
                            detail=f"no complete answer within {self._deadline_s:g} s") from None
        except _TooLarge as exc:
            raise CallError(ErrorKind.RETRYABLE, "too_large", detail=exc.detail) from None
        except _Encoded as exc:
            raise CallError(ErrorKind.RETRYABLE, "bad_encoding", detail=(
                f"answer has Content-Encoding: {exc.encoding}"[:_MAX_MESSAGE]),
                hint="the pump asks for Accept-Encoding: identity and never inflates an answer; "
                     "make the runner (or the proxy in front of it) send it uncompressed") from None
        except httpx.InvalidURL as exc:
            raise CallError(ErrorKind.CONFIGURATION, "bad_url", detail=_short(exc),
                            hint="check SUPABASE_URL or QUEUE_PUMP_ENDPOINT") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _transport_failure(exc) from None
        except Exception as exc:
            # httpx-aiohttp lets through the aiohttp errors its map does not name.
            if _aiohttp_error(exc) is None:
                raise
            raise _transport_failure(exc) from None
        return classify(status, headers, body, now=now)

    async def _post(self) -> tuple[int, httpx.Headers, bytes]:
        request = httpx.Request("POST", self._url, headers=self._headers, content=self._body,
                                extensions=self._extensions)
        if self._transport is None:  # an AsyncClient without the transport lookup
            response = await self._http.send(request, stream=True)
        else:
            response = await self._transport.handle_async_request(request)
        try:
            body = await read_bounded(response, self._max_bytes, self._max_pieces)
            return response.status_code, response.headers, body
        finally:
            await response.aclose()


async def read_bounded(response: httpx.Response, max_bytes: int, pieces: int) -> bytes:
    """The body as sent, or _TooLarge / _Encoded: never more than ``max_bytes`` held, never
    more than ``pieces`` reads nor about twice ``max_bytes`` off the wire, never a byte
    decompressed."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", IDENTITY):
        raise _Encoded(encoding)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _TooLarge(f"answer larger than {max_bytes} bytes")
    try:
        loaded = response.content  # a transport may hand over an answer already in memory
    except httpx.ResponseNotRead:
        pass
    else:
        if len(loaded) > max_bytes:
            raise _TooLarge(f"answer larger than {max_bytes} bytes")
        return loaded
    chunks: list[bytes] = []
    size = 0
    wire_cap = 2 * max_bytes + 65536  # chunked framing of honest answers costs far less
    meter = _WireMeter(response)
    try:
        # aiter_raw: the bytes as they came; with no Content-Encoding there is nothing to decode.
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > max_bytes:
                raise _TooLarge(f"answer larger than {max_bytes} bytes")  # never buffer it all
            chunks.append(chunk)
            if len(chunks) > pieces or meter.read > wire_cap:
                raise _TooLarge(f"answer framed in more than {pieces} pieces or "
                                f"{wire_cap} bytes for {size} bytes of body")
    finally:
        meter.close()
    return b"".join(chunks)


class _WireMeter:
    """Counts the bytes aiohttp's connection reads while one body is read.

    aiohttp parses chunk framing as it reads the socket, whoever consumes the body, and hands
    the data on in merged pieces: a flood of one-byte chunks behind 8 kB extensions reads
    hundreds of MB in a few hundred pieces. So the count is taken where aiohttp reads, on the
    connection's protocol, for this one answer. httpx's own transport (h11) needs no meter:
    each of its pieces is one chunk, whose header h11 caps at 16 kB. Where the attributes are
    not found (another httpx-aiohttp release), the meter reads 0 and the piece cap remains.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.read = 0
        native = getattr(response.stream, "_aiohttp_response", None)
        connection = getattr(native, "connection", None)
        self._protocol: Any = getattr(connection, "protocol", None)
        if self._protocol is None:
            return
        original = self._protocol.data_received

        def counting(data: bytes) -> None:
            self.read += len(data)
            original(data)

        self._protocol.data_received = counting

    def close(self) -> None:
        if self._protocol is not None and "data_received" in vars(self._protocol):
            del self._protocol.data_received  # the pooled connection reads as before


def _direct_transport(http: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport | None:
    """The transport httpx would pick for ``url`` (the pool, or an environment proxy's), found
    through httpx's private ``_transport_for_url``; None should a release drop it, and then
    calls go through the public ``send()``."""
    pick = getattr(http, "_transport_for_url", None)
    return pick(url) if pick else None


def _transport_failure(exc: BaseException) -> CallError:
    """A failure below HTTP (connect, DNS, reset, timeout, cut body) as one CallError.

    httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` to ``httpx.ConnectTimeout``, so
    a refused connection, a failed DNS lookup or a connection dropped after the request all
    read "timeout" there; the aiohttp error it chains as the cause says what really happened.
    """
    native = _aiohttp_error(exc)
    if native is not None:
        return _from_aiohttp(native)
    if isinstance(exc, httpx.TimeoutException):
        return CallError(ErrorKind.RETRYABLE, "timeout", detail=type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        reason = "dns" if _caused_by(exc, socket.gaierror) else "connect"
        return CallError(ErrorKind.RETRYABLE, reason, detail=_short(exc))
    if isinstance(exc, httpx.UnsupportedProtocol):
        return CallError(ErrorKind.CONFIGURATION, "bad_url", detail=_short(exc),
                         hint="check SUPABASE_URL or QUEUE_PUMP_ENDPOINT")
    return CallError(ErrorKind.RETRYABLE, "network", detail=_short(exc))


def _aiohttp_error(exc: BaseException) -> BaseException | None:
    """The aiohttp exception in ``exc``'s chain, if aiohttp is loaded at all."""
    if "aiohttp" not in sys.modules:
        return None
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if type(seen).__module__.partition(".")[0] == "aiohttp":
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _from_aiohttp(native: BaseException) -> CallError:
    import aiohttp

    detail = _short(native)
    if isinstance(native, aiohttp.InvalidURL):
        return CallError(ErrorKind.CONFIGURATION, "bad_url", detail=detail,
                         hint="check SUPABASE_URL or QUEUE_PUMP_ENDPOINT")
    if isinstance(native, aiohttp.ClientConnectorError):  # refused, DNS, TLS, proxy connect
        dns = isinstance(native, getattr(aiohttp, "ClientConnectorDNSError", ())) or _caused_by(
            native, socket.gaierror)
        return CallError(ErrorKind.RETRYABLE, "dns" if dns else "connect", detail=detail)
    if isinstance(native, aiohttp.ServerTimeoutError | TimeoutError):  # connect or read timeout
        return CallError(ErrorKind.RETRYABLE, "timeout", detail=type(native).__name__)
    # Disconnected, reset, cut or malformed answer: the wire failed after the connect.
    return CallError(ErrorKind.RETRYABLE, "network", detail=detail)


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> Outcome:
    """Turn a complete answer into an outcome, or raise the CallError that describes it."""
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise CallError(ErrorKind.RETRYABLE, "bad_json", status,
                            detail="2xx answer is not JSON") from None
        if not isinstance(data, dict):
            raise CallError(ErrorKind.RETRYABLE, "not_object", status,
                            detail=f"2xx answer is JSON {type(data).__name__}, not an object")
        if data.get("processed") is True:
            return Processed(job_id=loggable(data.get("jobId")),
                             job_type=loggable(data.get("jobType")),
                             status=loggable(data.get("status")), yielded=bool(data.get("yielded")))
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


def loggable(value: Any) -> Any:
    """A runner's field as the pump may log it: short strings, finite numbers, booleans and
    None as they are; anything else (a 900 kB jobType, NaN, 1e999999, an object) as text
    clipped like a message, so every log line stays short and valid JSON."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value[:_MAX_MESSAGE]
    if isinstance(value, int) and abs(value) < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    try:
        text = json.dumps(value)  # NaN and Infinity become the text that names them
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text[:_MAX_MESSAGE]


def runner_message(body: bytes) -> str:
    """The runner's own error message from a JSON error body, short; nothing from HTML pages."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
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
