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
    """The process's one TLS context, shared by every client it builds, on either transport:
    loading the trust store costs ~30 ms of CPU and ~0.8 MB each time. Verification is always
    on; the trust store is the system's (SSL_CERT_FILE and SSL_CERT_DIR honoured), so corporate
    CAs work."""
    context = ssl.create_default_context()
    # HTTP/1.1 only, as aiohttp's own context says; httpcore sets the same on every connect.
    context.set_alpn_protocols(["http/1.1"])
    return context


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
    """The aiohttp transport (aiohttp_transport.py): the pool sized by ``limits``, the trust
    store, and the proxy the environment names for ``endpoint``, looked up once here, because
    httpx ignores the environment's proxies when handed a transport."""
    _import_aiohttp()
    # Imported only when chosen, so the httpx transport never loads aiohttp.
    from .aiohttp_transport import AiohttpTransport

    return AiohttpTransport(limits, trust_store(), proxy=_env_proxy(endpoint))


# What OpenSSL reads for the default trust store (ssl.get_default_verify_paths()).
_TRUST_STORE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


@functools.cache
def _import_aiohttp() -> None:
    """aiohttp, imported without the two trust stores it would load for itself.

    Importing aiohttp builds two TLS contexts (``aiohttp.connector``): a verifying one and
    one for ``ssl=False``, each loading the system trust store, ~0.8 MB apiece, for contexts
    the pump never uses: every session it builds is handed ``trust_store()``. So for the
    moment of the import the default verify paths point at nothing (os.devnull), and both of
    aiohttp's contexts trust no one: a caller that ever fell back to them would fail closed,
    never open. The variables are put back in ``finally`` as they were, a value the user set
    included, before ``trust_store()`` reads them. It runs once, in the event loop's thread
    before the first call, with the GIL held by every write and read of os.environ; the one
    other thread then is the health server's, which makes no TLS connection and no name lookup
    (the C library calls that read the environment without the GIL).
    """
    # frozenlist (aiohttp's signal lists, read when a trace hook fires, which the pump never
    # sets) is otherwise the one C++ extension loaded: its pure-Python build spares the C++
    # runtime, ~1 MB of an idle pump. setdefault: a value the environment gives still wins.
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    saved = {name: os.environ.get(name) for name in _TRUST_STORE_VARIABLES}
    os.environ.update(dict.fromkeys(_TRUST_STORE_VARIABLES, os.devnull))
    try:
        import aiohttp  # noqa: F401
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
