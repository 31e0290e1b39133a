"""Shared fixtures: fake time for the loops, a base environment, log capture."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

TOKEN = "tok-SECRET-5f3a9c"  # recognisable, so tests can assert it never leaks
ANON = "anon-SECRET-77b1"

BASE_ENV = {
    "SUPABASE_URL": "https://proj.supabase.co",
    "AGENT_TOKEN": TOKEN,
    "ORGANIZATION_ID": "org-1",
}


class FakeTime:
    """A clock that only moves when the pump pauses (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []
        self.wakeable: list[bool] = []

    def clock(self) -> float:
        return self.now

    async def pause(self, seconds: float, wakeable: bool = False) -> None:
        self.pauses.append(seconds)
        self.wakeable.append(wakeable)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured
