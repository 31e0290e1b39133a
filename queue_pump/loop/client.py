"""The runner client: one HTTP call of the contract, and what its answer means.

It knows nothing of loops, sleeping or logging policy: it returns ``Processed`` or ``Idle``, or
raises ``CallError`` (failures.py, shared with the schedules) with a kind the loop acts on. The
HTTP client it calls through is built in transport.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from .. import transport
from ..config import redact_url
from ..transport import IDENTITY
from . import failures
from .failures import MAX_MESSAGE as _MAX_MESSAGE
from .failures import CallError, ErrorKind

# A body arrives in pieces (one per HTTP chunk or per socket read); chunk headers may carry
# extensions of kilobytes around a single data byte, so the body cap alone bounds the body, not
# the bytes read off the wire. Capping the pieces too bounds those: an answer of at most
# ``max_bytes`` in more than this many pieces is refused as too large.
_MIN_PIECES = 1024
_BYTES_PER_PIECE = 4096


# The contract's optional counts (docs/RUNNER_CONTRACT.md, "jobs" and "backlog"): a value
# outside these bounds is absurd, so it is ignored (and named in ``ignored``), never trusted. A
# call that ran more jobs than this is not a call; the Supabase kit caps its backlog at 1,000.
MAX_JOBS_PER_CALL = 100_000
MAX_BACKLOG = 1_000_000_000


@dataclass(frozen=True)
class Processed:
    job_id: Any = None
    job_type: Any = None
    status: Any = None
    yielded: bool = False
    error: Any = None  # the runner's reason for a failed run, clipped
    jobs: int = 1  # how many jobs this call ran: the runner's "jobs", else one
    backlog: int | None = None  # jobs due after this call, as the runner counts them
    ignored: tuple[str, ...] = ()  # the runner's optional fields that were absurd, shown


@dataclass(frozen=True)
class Idle:
    backlog: int | None = None
    ignored: tuple[str, ...] = ()


Outcome = Processed | Idle
IDLE = Idle()


class _TooLarge(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Encoded(Exception):
    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


def _max_pieces(max_bytes: int) -> int:
    """The most pieces an answer of at most ``max_bytes`` may arrive in."""
    return _MIN_PIECES + max_bytes // _BYTES_PER_PIECE


@dataclass(frozen=True)
class ClientConfig:
    """What one queue's client needs (app.py builds it from the settings)."""

    endpoint: str  # the runner URL without its query
    queue: str
    headers: tuple[tuple[str, str], ...]  # the contract's: token, organization, worker, ...
    max_response_bytes: int
    timeout_s: float  # a whole call, start to last byte


class RunnerClient:
    """Calls the runner for one queue. Everything per call is precomputed here, once.

    A call is one fixed POST: no auth flow, no redirects, no cookies, no hooks. So it goes
    straight to the transport that httpx would pick for the URL (the pool, or the proxy the
    environment names), with the client's own headers and timeouts: the same bytes on the wire
    as ``http.stream(...)``, without the per-call work of the client layer (request building,
    header merging, cookie extraction), which costs as much as the transport itself.
    """

    def __init__(self, http: httpx.AsyncClient, config: ClientConfig,
                 scrub: Callable[[Any], Any]) -> None:
        """``scrub`` masks the process's secrets (the log redactor's): a runner's error text
        may echo one, and it must not survive into the error."""
        self._http = http
        self.queue = config.queue
        self._max_bytes = config.max_response_bytes
        self._max_pieces = _max_pieces(config.max_response_bytes)
        self._deadline_s = config.timeout_s
        self._url = httpx.URL(config.endpoint).copy_merge_params(
            {"worker": "1", "queue": self.queue})
        self.url_for_logs = redact_url(str(self._url))
        headers = httpx.Headers(http.headers)  # the client's defaults: User-Agent, ...
        headers.update(dict(config.headers))
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
        self._transport = transport.direct_transport(http, self._url)
        self._scrub = scrub

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
        except Exception as exc:
            # The aiohttp transport lets through the aiohttp errors its map does not name:
            # those are classified too; anything else is a bug, for the loop to count as
            # "internal".
            error = failures.from_exception(exc, failures.RUNNER)
            if error is None:
                raise
            raise error from None
        return classify(status, headers, body, now=now)

    async def _post(self) -> tuple[int, httpx.Headers, bytes]:
        request = httpx.Request("POST", self._url, headers=self._headers, content=self._body,
                                extensions=self._extensions)
        if self._transport is None:  # an AsyncClient without the transport lookup
            response = await self._http.send(request, stream=True)
        else:
            response = await self._transport.handle_async_request(request)
        try:
            body = await _read_bounded(response, self._max_bytes, self._max_pieces)
            return response.status_code, response.headers, body
        finally:
            await response.aclose()


async def _read_bounded(response: httpx.Response, max_bytes: int, pieces: int) -> bytes:
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
    not found (a body that is not aiohttp_transport.AiohttpBody), the meter reads 0 and the
    piece cap remains.
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
        backlog, bad_backlog = _count(data, "backlog", MAX_BACKLOG)
        if data.get("processed") is True:
            jobs, bad_jobs = _count(data, "jobs", MAX_JOBS_PER_CALL)
            return Processed(job_id=_loggable(data.get("jobId")),
                             job_type=_loggable(data.get("jobType")),
                             status=_loggable(data.get("status")),
                             yielded=bool(data.get("yielded")),
                             error=_loggable(data.get("error")),
                             jobs=1 if jobs is None else jobs, backlog=backlog,
                             ignored=bad_jobs + bad_backlog)
        if backlog is None and not bad_backlog:
            return IDLE
        return Idle(backlog=backlog, ignored=bad_backlog)
    raise failures.from_status(status, headers, body, failures.RUNNER, now=now)


def _count(data: Mapping[str, Any], key: str, high: int) -> tuple[int | None, tuple[str, ...]]:
    """An optional count of the contract: (the value, ()) when it is a whole number in
    0..``high``; (None, ()) when absent or null; (None, (what was wrong,)) otherwise."""
    value = data.get(key)
    if value is None:
        return None, ()
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high:
        return value, ()
    return None, (f"{key}={_loggable(value)!r} is not a whole number in 0..{high}"[:_MAX_MESSAGE],)


def _loggable(value: Any) -> Any:
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
