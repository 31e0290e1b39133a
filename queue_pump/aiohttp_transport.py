"""httpx's transport interface over one aiohttp session: what carries the calls when the
chosen transport is aiohttp. Imported by transport.py only then, after aiohttp.

It does what httpx-aiohttp's ``AiohttpTransport`` did for the pump (that library is the bench's
floor now, not a dependency): hand an ``httpx.Request`` to aiohttp unchanged, and give its
answer back as an ``httpx.Response`` whose body is read as it arrives, with aiohttp's errors
raised as the same httpx errors, the aiohttp error chained as their cause (loop/failures.py
classifies by that cause). Owning these ~80 lines spares every pump the ~0.8 MB that
httpx-aiohttp's import cost (it loads importlib.metadata, with zipfile, csv and
importlib.resources, for one version check), and makes the body's aiohttp response an
attribute of ours, which the wire meter of loop/client.py reads.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

# An aiohttp error -> the httpx error raised for it (the most specific that applies), as
# httpx-aiohttp maps them: callers that name httpx's errors (the alert webhook logs the type's
# name) see what they saw with it. The URL errors are aiohttp 3.10's.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = tuple(
    (native, ours) for native, ours in (
        (aiohttp.ServerTimeoutError, httpx.TimeoutException),
        (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
        (aiohttp.ClientConnectionError, httpx.ConnectTimeout),
        (aiohttp.ClientConnectorError, httpx.ConnectError),
        (aiohttp.ClientPayloadError, httpx.ReadError),
        (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
        (aiohttp.ClientHttpProxyError, httpx.ProxyError),
        (getattr(aiohttp, "NonHttpUrlClientError", None), httpx.UnsupportedProtocol),
        (getattr(aiohttp, "InvalidUrlClientError", None), httpx.UnsupportedProtocol),
    ) if native is not None)

# Pieces of the body handed on at most this large (httpx-aiohttp's size).
CHUNK_BYTES = 16 * 1024


def httpx_error(exc: BaseException) -> type[httpx.TransportError] | None:
    """The httpx error ``exc`` is raised as; None leaves it as it is (not aiohttp's)."""
    chosen: type[httpx.TransportError] | None = None
    for native, ours in _ERRORS:
        if isinstance(exc, native) and (chosen is None or issubclass(ours, chosen)):
            chosen = ours
    return chosen


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        error = httpx_error(exc)
        if error is None:
            raise
        raise error(str(exc)) from exc


class AiohttpBody(httpx.AsyncByteStream):
    """An answer's body, read from aiohttp as it arrives."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        # The name httpx-aiohttp gave it: loop/client.py's wire meter finds the connection here.
        self._aiohttp_response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._aiohttp_response.content.iter_chunked(CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        with _as_httpx_errors():
            await self._aiohttp_response.__aexit__(None, None, None)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Calls through one aiohttp session, configured here, not by aiohttp's defaults:

    - the pool: at most ``limits.max_connections`` (aiohttp has no separate keep-alive count);
    - no cookie jar: like the Node pump's fetch, nothing a runner sets is sent back;
    - ``proxy`` (transport.py resolves the environment's once, for the one endpoint), not
      aiohttp's own ``trust_env``, which would also read ~/.netrc for credentials and look
      the proxy up again on every call;
    - TLS: ``tls``, the process's one context (transport.trust_store()).
    """

    def __init__(self, limits: httpx.Limits, tls: ssl.SSLContext,
                 proxy: httpx.Proxy | None = None) -> None:
        self._limits, self._tls, self._proxy = limits, tls, proxy
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        # Made at the first call, inside the running event loop, as aiohttp requires.
        connector = aiohttp.TCPConnector(limit=self._limits.max_connections or 0,
                                         keepalive_timeout=self._limits.keepalive_expiry,
                                         ssl=self._tls)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._new_session()
        timeout = request.extensions.get("timeout", {})
        proxy = self._proxy
        with _as_httpx_errors():
            response = await self._session.request(
                # The pump's bodies are all bytes in memory (a streamed one would raise
                # httpx.RequestNotRead here); an empty one is sent as none.
                request.method, str(request.url), headers=request.headers,
                data=request.content or None,
                # The pump reads the answer as sent and follows no redirect (transport.py).
                allow_redirects=False, auto_decompress=False, compress=False,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout.get("connect"),
                                              sock_read=timeout.get("read"),
                                              connect=timeout.get("pool")),
                server_hostname=request.extensions.get("sni_hostname"),
                proxy=str(proxy.url) if proxy else None,
                proxy_auth=aiohttp.BasicAuth(*proxy.auth) if proxy and proxy.auth else None,
                proxy_headers=proxy.headers if proxy else None,
            ).__aenter__()
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(response.status, headers=response.raw_headers,
                              stream=AiohttpBody(response), request=request,
                              extensions=extensions)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
