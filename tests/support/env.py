"""What every test may take: the recognisable secrets, a base environment, fake time, and a
runner client built as the process builds one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

# The repository's root: the package, the docs and the deployment files, wherever a test is.
ROOT = Path(__file__).resolve().parents[2]

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

    async def pause(self, seconds: float, wakeable: bool = False,
                    until: asyncio.Event | None = None) -> None:
        self.pauses.append(seconds)
        self.wakeable.append(wakeable)
        self.now += seconds
        await asyncio.sleep(0)


def runner_client(http: Any, settings: Any) -> Any:
    """A RunnerClient as the process builds one: its config and the settings' one redactor."""
    from queue_pump.app import client_config
    from queue_pump.loop.client import RunnerClient
    from queue_pump.observe import Redactor

    return RunnerClient(http, client_config(settings), Redactor(settings.secrets()).scrub)
