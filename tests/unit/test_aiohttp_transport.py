"""The aiohttp transport (queue_pump/aiohttp_transport.py) against httpx-aiohttp's, which it
replaced in the pump: the same httpx error for every aiohttp error. What a runner sees of it,
and how its failures are classified, is tested over real loopback in unit/loop/test_client.py,
process/test_hostile_answers.py and process/test_faults.py."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import aiohttp
import httpx
import pytest
from httpx_aiohttp.transport import map_aiohttp_exceptions  # the bench's floor (dev extra)

from queue_pump.aiohttp_transport import _as_httpx_errors


def _aiohttp_errors() -> Iterator[type[BaseException]]:
    """Every exception class aiohttp's client raises or exports."""
    seen: set[type[BaseException]] = set()
    for module in (aiohttp, aiohttp.client_exceptions):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls not in seen:
                seen.add(cls)
                yield cls


def _raised_through(mapper: object, cls: type[BaseException]) -> type[BaseException]:
    """The type that leaves ``mapper`` when ``cls`` is raised inside it: ``cls`` itself when
    it is let through."""
    # A subclass with a plain str(): some of aiohttp's need constructor arguments to print.
    plain = type(cls.__name__, (cls,), {"__str__": lambda self: "x"})
    try:
        with mapper():  # type: ignore[operator]
            raise plain.__new__(plain)
    except BaseException as exc:
        return cls if type(exc) is plain else type(exc)
    raise AssertionError("nothing was raised")


@pytest.mark.parametrize("cls", list(_aiohttp_errors()), ids=lambda cls: cls.__name__)
def test_each_aiohttp_error_becomes_the_httpx_error_httpx_aiohttp_raised(
        cls: type[BaseException]) -> None:
    ours = _raised_through(_as_httpx_errors, cls)
    assert ours is _raised_through(map_aiohttp_exceptions, cls)


def test_the_mapping_is_not_vacuous() -> None:
    # The parity above would also hold if neither side mapped anything.
    assert _raised_through(_as_httpx_errors, aiohttp.SocketTimeoutError) is httpx.ReadTimeout
    assert _raised_through(_as_httpx_errors, aiohttp.ClientPayloadError) is httpx.ReadError
    # Every connection error reads ConnectTimeout (loop/failures.py looks at the cause).
    assert _raised_through(_as_httpx_errors, aiohttp.ClientConnectorError) is httpx.ConnectTimeout
    assert _raised_through(_as_httpx_errors, ValueError) is ValueError  # not aiohttp's: as is
