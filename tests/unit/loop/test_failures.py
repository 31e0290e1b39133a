"""One failure vocabulary: the same fault gets the same kind and reason for a runner call and
for a schedule POST, on both transports, over real loopback (and as a pure table)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog

from queue_pump.app import contract_headers, http_config
from queue_pump.config import Settings, from_mapping
from queue_pump.loop import failures
from queue_pump.loop.failures import CallError, ErrorKind
from queue_pump.schedules.firing import FiringPolicy, Scheduler
from queue_pump.transport import build_http_client
from tests.support.env import BASE_ENV, runner_client
from tests.support.runner_double import Reply, free_port, runner_double

TRANSPORTS = ["httpx", "aiohttp"]
# fault -> (reply from the double, or None for an address with nothing behind it), expected
FAULTS: dict[str, tuple[Reply | None, ErrorKind, str]] = {
    "refused": (None, ErrorKind.RETRYABLE, "connect"),
    "dropped": (Reply(drop=True), ErrorKind.RETRYABLE, "network"),
    "cut_body": (Reply(status=500, partial=True), ErrorKind.RETRYABLE, "network"),
    "stalled": (Reply(delay_s=2.5), ErrorKind.RETRYABLE, "timeout"),
    "busy": (Reply(status=503, headers={"Retry-After": "7"}), ErrorKind.RETRYABLE,
             "http_status"),
    "too_early": (Reply(status=425), ErrorKind.RETRYABLE, "http_status"),
    "not_found": (Reply(status=404), ErrorKind.CONFIGURATION, "http_status"),
    "redirect": (Reply(status=302, headers={"Location": "https://u:p@elsewhere/x"}),
                 ErrorKind.CONFIGURATION, "redirect"),
}
TIMEOUT_S = 1.0


def _settings(url: str, transport: str) -> Settings:
    return from_mapping({**BASE_ENV, "SUPABASE_URL": url, "QUEUE_PUMP_HTTP_TRANSPORT": transport,
                         "QUEUE_PUMP_HTTP_TIMEOUT_MS": str(int(TIMEOUT_S * 1000)),
                         "QUEUE_PUMP_ALLOW_INSECURE_HTTP": "1"}, hostname="box-1")


async def _runner_call(settings: Settings) -> CallError:
    async with build_http_client(http_config(settings)) as http:
        with pytest.raises(CallError) as info:
            await runner_client(http, settings).call()
    return info.value


async def _schedule_post(settings: Settings) -> CallError:
    async with build_http_client(http_config(settings)) as http:
        scheduler = Scheduler([], http, contract_headers(settings), stop=asyncio.Event(),
                              now=lambda: datetime.now(UTC), pause=asyncio.sleep,
                              log=structlog.get_logger(),
                              policy=FiringPolicy(request_timeout_s=TIMEOUT_S))
        result = await scheduler._attempt(settings.endpoint, b"{}", httpx.Headers())
    assert isinstance(result, CallError), result
    return result


def _both(url: str, transport: str) -> tuple[CallError, CallError]:
    settings = _settings(url, transport)

    async def go() -> tuple[CallError, CallError]:
        return await _runner_call(settings), await _schedule_post(settings)

    return asyncio.run(go())


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_same_fault_is_the_same_reason_for_calls_and_schedules(transport: str,
                                                                   fault: str) -> None:
    reply, kind, reason = FAULTS[fault]
    if reply is None:
        call, post = _both(f"http://127.0.0.1:{free_port()}", transport)
    else:
        with runner_double(lambda _i: reply) as double:
            call, post = _both(double.url, transport)
    assert (call.kind, call.reason, call.status) == (post.kind, post.reason, post.status)
    assert (call.kind, call.reason) == (kind, reason)
    assert "u:p" not in call.hint + post.hint  # a Location's credentials are never shown


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failed_dns_lookup_is_dns_for_both(transport: str) -> None:
    call, post = _both("http://queue-pump-test.invalid", transport)
    assert call.reason == post.reason == "dns"


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


REQUEST = httpx.Request("POST", "http://127.0.0.1:1/")


@pytest.mark.parametrize("exc,reason", [
    (httpx.ConnectError("refused", request=REQUEST), "connect"),
    (_chained(httpx.ConnectError("x", request=REQUEST), socket.gaierror(-2, "unknown")), "dns"),
    (httpx.ConnectTimeout("slow", request=REQUEST), "timeout"),
    (httpx.ReadTimeout("slow", request=REQUEST), "timeout"),
    (TimeoutError(), "timeout"),
    (httpx.RemoteProtocolError("cut", request=REQUEST), "network"),
    (httpx.ReadError("reset", request=REQUEST), "network"),
    (httpx.UnsupportedProtocol("ftp", request=REQUEST), "bad_url"),
    (httpx.InvalidURL("bad"), "bad_url"),
])
def test_exceptions_classify_as_a_table(exc: BaseException, reason: str) -> None:
    for hints in (failures.RUNNER, failures.SCHEDULE):
        error = failures.from_exception(exc, hints)
        assert error is not None and error.reason == reason


def test_a_bug_is_not_a_transport_failure() -> None:
    assert failures.from_exception(KeyError("x"), failures.RUNNER) is None
    assert failures.internal(KeyError("x")).reason == "internal"


@pytest.mark.parametrize("status,kind,words", [
    (401, ErrorKind.CONFIGURATION, "credentials"),
    (403, ErrorKind.CONFIGURATION, "refused this caller"),
    (404, ErrorKind.CONFIGURATION, "nothing answers"),
    (422, ErrorKind.CONFIGURATION, "rejects the request"),
    (408, ErrorKind.RETRYABLE, ""),
    (429, ErrorKind.RETRYABLE, ""),
    (502, ErrorKind.RETRYABLE, ""),
])
def test_statuses_classify_as_a_table(status: int, kind: ErrorKind, words: str) -> None:
    seen: list[Any] = []
    for hints in (failures.RUNNER, failures.SCHEDULE):
        error = failures.from_status(status, {}, b'{"error": "nope"}', hints)
        assert (error.kind, error.reason, error.detail) == (kind, "http_status", "nope")
        assert words in error.hint
        seen.append(error.hint)
    if words:  # each caller's hint points at its own settings
        assert seen[0] != seen[1]
