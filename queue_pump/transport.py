"""The HTTP client of the process and what it is built on: the pool, TLS, the aiohttp
transport, proxies from the environment, and the lookup of the transport a URL goes through.

The contract call itself (what is sent, how an answer is read) is client.py.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# Bytes the pump would have to inflate are never read: it asks for the body as sent, and an
# answer coded anyway (gzip, "gzip, gzip", br, ...) is refused before one byte of it is decoded.
# 1.8 KB of "gzip, gzip" inflate to 1 GiB; no cap on decoded bytes bounds what one step inflates.
IDENTITY = "identity"


@functools.cache
def trust_store() -> ssl.SSLContext:
    """The process's one TLS context, shared by every client it builds: loading the trust
    store costs ~30 ms of CPU and ~0.8 MB each time. Verification is always on; the trust
    store is the system's, so corporate CAs work."""
    return ssl.create_default_context()


@dataclass(frozen=True)
class HttpConfig:
    """What an HTTP client is built from (app.py makes one per client from the settings)."""

    endpoint: str  # where it calls: the proxy the environment names for it is looked up once
    transport: str  # what carries the calls: "httpx" (its own pool) or "aiohttp"
    timeout_s: float  # a whole call, start to last byte
    connect_timeout_s: float
    loops: int  # calls in flight at once at most: the pool is sized to them


def build_http_client(
    config: HttpConfig, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An AsyncClient over the chosen transport, its pool sized to the loops that share it."""
    timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
    limits = httpx.Limits(max_connections=config.loops + 2,
                          max_keepalive_connections=config.loops)
    verify: ssl.SSLContext | bool = True  # unused when httpx is handed a transport
    if transport is None and config.transport == "aiohttp":
        transport = _aiohttp_transport(config.endpoint, limits)
    elif transport is None:
        verify = trust_store()
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
    # frozenlist (aiohttp's signal lists, read when a trace hook fires, which the pump never
    # sets) is otherwise the one C++ extension loaded: its pure-Python build spares the C++
    # runtime, ~1 MB of an idle pump. setdefault: a value the environment gives still wins.
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    # Imported only when chosen, so the httpx transport never loads aiohttp.
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


def direct_transport(http: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport | None:
    """The transport httpx would pick for ``url`` (the pool, or an environment proxy's), found
    through httpx's private ``_transport_for_url``; None should a release drop it, and then
    calls go through the public ``send()``."""
    pick = getattr(http, "_transport_for_url", None)
    return pick(url) if pick else None
