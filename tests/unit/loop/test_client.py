"""The runner client with respx: the request on the wire, and every answer's classification."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from queue_pump.app import http_config
from queue_pump.config import from_mapping
from queue_pump.loop.client import IDLE, Outcome, Processed
from queue_pump.loop.failures import CallError, ErrorKind
from queue_pump.transport import build_http_client
from tests.support.env import ANON, BASE_ENV, TOKEN, runner_client

URL = "https://proj.supabase.co/functions/v1/ai-job-runner"


def call(env: dict[str, str] | None = None) -> Outcome:
    settings = from_mapping({**BASE_ENV, **(env or {})}, hostname="box-1")

    async def go() -> Outcome:
        async with build_http_client(http_config(settings)) as http:
            return await runner_client(http, settings).call()

    return asyncio.run(go())


def failure(**env: str) -> CallError:
    with pytest.raises(CallError) as info:
        call(env)
    return info.value


@respx.mock
def test_without_httpxs_private_transport_lookup_the_call_goes_through_send(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # RunnerClient reaches for httpx's private AsyncClient._transport_for_url to skip the
    # client layer; should a release drop it, the same request must still go out via send().
    monkeypatch.setattr("queue_pump.transport.direct_transport", lambda _http, _url: None)
    route = respx.post(URL, params={"worker": "1", "queue": "agent"}).mock(side_effect=[
        httpx.Response(200, json={"processed": True, "jobId": "j1"}),
        httpx.Response(200, content=b"x" * 2_000_000)])
    settings = from_mapping(BASE_ENV, hostname="box-1")

    async def go() -> tuple[Outcome, CallError]:
        async with build_http_client(http_config(settings)) as http:
            client = runner_client(http, settings)
            first = await client.call()
            with pytest.raises(CallError) as info:
                await client.call()
            return first, info.value

    first, too_large = asyncio.run(go())
    assert isinstance(first, Processed) and first.job_id == "j1"
    assert too_large.reason == "too_large"
    request = route.calls[0].request
    assert request.headers["X-Agent-Token"] == TOKEN and request.headers["X-Worker-Id"] == "box-1"
    assert json.loads(request.content) == {"worker": True, "queue": "agent"}


@respx.mock
def test_the_request_is_the_node_pumps_exactly() -> None:
    route = respx.post(URL, params={"worker": "1", "queue": "agent"}).respond(
        json={"processed": False})
    assert call() is IDLE
    request = route.calls.last.request
    assert str(request.url) == URL + "?worker=1&queue=agent"
    assert request.headers["X-Agent-Token"] == TOKEN
    assert request.headers["X-Organization-Id"] == "org-1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["X-Worker-Id"] == "box-1"
    assert "authorization" not in request.headers and "apikey" not in request.headers
    assert json.loads(request.content) == {"worker": True, "queue": "agent"}


@respx.mock
def test_queue_endpoint_and_anon_key() -> None:
    route = respx.post("https://runner.example/run").respond(json={})
    call({"QUEUE_PUMP_ENDPOINT": "https://runner.example/run?x=1", "QUEUE_PUMP_QUEUE": "render",
          "SUPABASE_ANON_KEY": ANON})
    request = route.calls.last.request
    assert request.url.params["queue"] == "render" and request.url.params["x"] == "1"
    assert json.loads(request.content)["queue"] == "render"
    assert request.headers["Authorization"] == f"Bearer {ANON}"
    assert request.headers["apikey"] == ANON


@respx.mock
def test_trailing_slash_on_supabase_url() -> None:
    route = respx.post(URL).respond(json={})
    call({"SUPABASE_URL": "https://proj.supabase.co/"})
    assert route.called


@respx.mock
@pytest.mark.parametrize("body,expected", [
    ({"processed": True, "jobId": "7", "jobType": "embed", "status": "done", "yielded": True},
     Processed("7", "embed", "done", True)),
    ({"processed": True}, Processed()),
    ({"processed": False}, IDLE),
    ({"processed": "yes"}, IDLE),
    ({}, IDLE),
    ({"ok": True, "message": "queue empty"}, IDLE),
])
def test_2xx_json_objects(body: dict[str, Any], expected: Outcome) -> None:
    respx.post(URL).respond(200, json=body)
    assert call() == expected


@respx.mock
@pytest.mark.parametrize("status,kind,retry_after", [
    (500, ErrorKind.RETRYABLE, None),
    (502, ErrorKind.RETRYABLE, None),
    (503, ErrorKind.RETRYABLE, 5.0),
    (429, ErrorKind.RETRYABLE, 5.0),
    (408, ErrorKind.RETRYABLE, None),
    (401, ErrorKind.CONFIGURATION, None),
    (403, ErrorKind.CONFIGURATION, None),
    (404, ErrorKind.CONFIGURATION, None),
    (400, ErrorKind.CONFIGURATION, None),
])
def test_statuses_are_classified(status: int, kind: ErrorKind, retry_after: float | None) -> None:
    respx.post(URL).respond(status, headers={"Retry-After": "5"}, json={"error": "nope"})
    error = failure()
    assert (error.kind, error.status, error.retry_after_s) == (kind, status, retry_after)
    assert error.detail == "nope"
    if status in (401, 403, 404):
        assert error.hint


@respx.mock
def test_retry_after_as_http_date() -> None:
    respx.post(URL).respond(429, headers={"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert failure().retry_after_s == 3600.0  # capped at the ceiling


@respx.mock
def test_html_error_pages_are_not_logged_as_messages() -> None:
    respx.post(URL).respond(502, html="<html><body>Bad gateway</body></html>")
    error = failure()
    assert (error.reason, error.detail) == ("http_status", "")


@respx.mock
def test_redirects_are_not_followed() -> None:
    respx.post(URL).respond(302, headers={"Location": "https://u:p@elsewhere.example/x"})
    other = respx.post("https://elsewhere.example/x").respond(json={})
    error = failure()
    assert error.kind is ErrorKind.CONFIGURATION and error.reason == "redirect"
    assert "u:p" not in error.hint and "elsewhere.example" in error.hint
    assert not other.called


@pytest.mark.parametrize("location", ["http://[::1/x", "http://u:p@runner:99999/x",
                                      "https://u:p@[::1/x"])
def test_a_redirect_whose_location_does_not_parse_is_still_a_configuration_error(
        location: str) -> None:
    from queue_pump.loop.client import classify

    with pytest.raises(CallError) as info:
        classify(302, {"location": location}, b"")
    error = info.value
    assert (error.kind, error.reason, error.status) == (ErrorKind.CONFIGURATION, "redirect", 302)
    assert "does not parse" in error.hint and "u:p" not in error.hint


@respx.mock
@pytest.mark.parametrize("content,reason", [
    (b"not json", "bad_json"),
    (b"<html>hi</html>", "bad_json"),
    (b"[1, 2]", "not_object"),
    (b'"processed"', "not_object"),
    (b"null", "not_object"),
    (b"\xff\xfe", "bad_json"),
])
def test_2xx_that_is_not_a_json_object(content: bytes, reason: str) -> None:
    respx.post(URL).respond(200, content=content)
    error = failure()
    assert (error.kind, error.reason) == (ErrorKind.RETRYABLE, reason)


@respx.mock
@pytest.mark.parametrize("exc,reason", [
    (httpx.ConnectError("refused"), "connect"),
    (httpx.ConnectTimeout("slow"), "timeout"),
    (httpx.ReadTimeout("slow"), "timeout"),
    (httpx.ReadError("reset"), "network"),
    (httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
     "network"),
    (httpx.WriteError("broken pipe"), "network"),
])
def test_transport_failures(exc: Exception, reason: str) -> None:
    respx.post(URL).mock(side_effect=exc)
    error = failure()
    assert (error.kind, error.reason) == (ErrorKind.RETRYABLE, reason)


def test_dns_failure_is_named() -> None:
    # A real lookup: the .invalid TLD never resolves (RFC 6761), so this fails fast, offline.
    error = failure(SUPABASE_URL="https://queue-pump-test.invalid")
    assert (error.kind, error.reason) == (ErrorKind.RETRYABLE, "dns")


def test_connection_refused_for_real() -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = failure(SUPABASE_URL=f"http://127.0.0.1:{port}")
    assert (error.kind, error.reason) == (ErrorKind.RETRYABLE, "connect")


@respx.mock
def test_body_over_the_cap_by_content_length() -> None:
    respx.post(URL).respond(200, content=b"x" * 5000)
    error = failure(QUEUE_PUMP_MAX_RESPONSE_BYTES="1024")
    assert error.reason == "too_large"


@respx.mock
def test_streamed_body_over_the_cap_stops_reading() -> None:
    served = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal served
        for _ in range(10_000):  # 640 MB if anyone read it all
            served += 1
            yield b"x" * 65536

    respx.post(URL).respond(200, stream=_Stream(endless()))
    error = failure(QUEUE_PUMP_MAX_RESPONSE_BYTES="100000")
    assert error.reason == "too_large"
    assert served <= 3


class _Stream(httpx.AsyncByteStream):
    def __init__(self, gen: AsyncIterator[bytes]) -> None:
        self._gen = gen

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._gen:
            yield chunk


@respx.mock
def test_total_deadline_covers_a_slow_trickle() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(5)
        yield b"}"

    respx.post(URL).respond(200, stream=_Stream(trickle()))
    started = datetime.now(UTC)
    error = failure(QUEUE_PUMP_HTTP_TIMEOUT_MS="1000")
    assert error.reason == "timeout"
    assert (datetime.now(UTC) - started).total_seconds() < 3


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_both_transports_speak_the_contract_over_real_loopback(transport: str) -> None:
    from tests.support.runner_double import JOB, Reply, runner_double

    replies = [JOB, Reply(status=503, headers={"Retry-After": "2"}), Reply(drop=True)]
    with runner_double(lambda i: replies[i]) as double:
        env = {"SUPABASE_URL": double.url, "QUEUE_PUMP_HTTP_TRANSPORT": transport}
        assert isinstance(call(env), Processed)
        assert failure(**env).retry_after_s == 2.0
        assert failure(**env).kind is ErrorKind.RETRYABLE
    seen = double.seen[0]
    assert seen.headers["X-Agent-Token"] == TOKEN
    assert json.loads(seen.body) == {"worker": True, "queue": "agent"}


# --- both transports: the same classification, pool bound, proxies and headers --------------

TRANSPORTS = ["httpx", "aiohttp"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("reply_kind,reason", [
    ("drop", "network"),  # connected, request sent, connection closed without an answer
    ("partial", "network"),  # the body is cut short
    ("stall", "timeout"),
])
def test_failures_after_connect_classify_alike(transport: str, reply_kind: str,
                                                reason: str) -> None:
    # The aiohttp transport maps aiohttp.ClientConnectionError (which a server hang-up is) to
    # httpx.ConnectTimeout: the classifier must look at the cause, not trust the mapped name.
    from tests.support.runner_double import Reply, runner_double

    reply = {"drop": Reply(drop=True), "partial": Reply(partial=True),
             "stall": Reply(delay_s=2.5)}[reply_kind]
    with runner_double(lambda _i: reply) as double:
        error = failure(SUPABASE_URL=double.url, QUEUE_PUMP_HTTP_TRANSPORT=transport,
                        QUEUE_PUMP_HTTP_TIMEOUT_MS="1000")
    assert (error.kind, error.reason) == (ErrorKind.RETRYABLE, reason)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refused_and_dns_classify_alike(transport: str) -> None:
    from tests.support.runner_double import free_port

    refused = failure(SUPABASE_URL=f"http://127.0.0.1:{free_port()}",
                      QUEUE_PUMP_HTTP_TRANSPORT=transport)
    assert (refused.kind, refused.reason) == (ErrorKind.RETRYABLE, "connect")
    dns = failure(SUPABASE_URL="https://queue-pump-test.invalid",
                  QUEUE_PUMP_HTTP_TRANSPORT=transport)
    assert (dns.kind, dns.reason) == (ErrorKind.RETRYABLE, "dns")
    assert "ConnectTimeout" not in refused.detail + dns.detail


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_pool_is_bounded_by_concurrency_plus_two(transport: str) -> None:
    concurrency = 2
    settings = from_mapping({**BASE_ENV, "QUEUE_PUMP_CONCURRENCY": str(concurrency),
                             "QUEUE_PUMP_HTTP_TRANSPORT": transport}, hostname="box-1")
    open_now = peak = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                await asyncio.sleep(0.05)
                body = b'{"processed":true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            open_now -= 1
            writer.close()

    async def go() -> list[Outcome]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        local = from_mapping({**BASE_ENV, "SUPABASE_URL": f"http://127.0.0.1:{port}",
                              "QUEUE_PUMP_CONCURRENCY": str(concurrency),
                              "QUEUE_PUMP_HTTP_TRANSPORT": transport}, hostname="box-1")
        async with server, build_http_client(http_config(local)) as http:
            client = runner_client(http, local)
            return await asyncio.gather(*(client.call() for _ in range(12)))

    assert settings.concurrency == concurrency
    outcomes = asyncio.run(go())
    assert all(isinstance(o, Processed) for o in outcomes)
    assert 1 < peak <= concurrency + 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_proxy_from_the_environment_is_used(transport: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from tests.support.runner_double import JOB, runner_double

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    with runner_double(lambda _i: JOB) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        outcome = call({"SUPABASE_URL": "http://runner.invalid", "QUEUE_PUMP_ALLOW_INSECURE_HTTP":
                        "1", "QUEUE_PUMP_HTTP_TRANSPORT": transport})
    assert isinstance(outcome, Processed)
    assert proxy.seen[0].path == ("http://runner.invalid/functions/v1/ai-job-runner"
                                  "?worker=1&queue=agent")
    assert proxy.seen[0].headers["X-Agent-Token"] == TOKEN


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cookies_are_not_sent_back_and_url_credentials_are_basic_auth(transport: str) -> None:
    import base64

    from tests.support.runner_double import Reply, runner_double

    reply = Reply(body={"processed": True}, headers={"Set-Cookie": "lb=node-7; Path=/"})
    with runner_double(lambda _i: reply) as double:
        url = double.url.replace("http://", "http://us%40er:pa%3Ass@")
        settings = from_mapping({**BASE_ENV, "SUPABASE_URL": url,
                                 "QUEUE_PUMP_HTTP_TRANSPORT": transport}, hostname="box-1")

        async def go() -> None:
            async with build_http_client(http_config(settings)) as http:
                client = runner_client(http, settings)
                await client.call()
                await client.call()

        asyncio.run(go())
    second = double.seen[1].headers
    assert "cookie" not in second  # like the Node pump's fetch: no cookie jar
    expected = base64.b64encode(b"us@er:pa:ss").decode()
    assert second["Authorization"] == f"Basic {expected}"
    assert double.seen[1].path == "/functions/v1/ai-job-runner?worker=1&queue=agent"


def test_both_transports_send_the_same_headers() -> None:
    from tests.support.runner_double import JOB, runner_double

    seen = {}
    for transport in TRANSPORTS:
        with runner_double(lambda _i: JOB) as double:
            call({"SUPABASE_URL": double.url, "QUEUE_PUMP_HTTP_TRANSPORT": transport})
        seen[transport] = {k.lower(): v for k, v in double.seen[0].headers.items()
                           if k.lower() != "host"}  # the ports differ
    assert seen["httpx"] == seen["aiohttp"]
    assert seen["httpx"]["accept"] == "application/json"
    assert seen["httpx"]["content-type"] == "application/json"


@pytest.fixture(autouse=True)
def _respx_needs_the_httpx_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """respx mocks httpx's own transport (httpcore), so the respx tests above pin it; the
    default transport (aiohttp) is covered by the real-loopback tests, which name theirs."""
    monkeypatch.setitem(BASE_ENV, "QUEUE_PUMP_HTTP_TRANSPORT", "httpx")


@respx.mock
@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_is_classified_not_a_crash(status: int) -> None:
    respx.post(URL).respond(status, content=b"[" * 200_000)
    error = failure()
    assert error.kind is ErrorKind.RETRYABLE
    assert error.reason == ("bad_json" if status == 200 else "http_status")
