"""Serving the app on a host and port (0: a free one), and stopping it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .app import DashboardConfig, build_app
from .backend import Backend


@dataclass
class RunningDashboard:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_dashboard(config: DashboardConfig, backend: Backend, *, host: str = "127.0.0.1",
                          port: int = 0) -> RunningDashboard:
    runner = web.AppRunner(build_app(config, backend), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return RunningDashboard(runner=runner, host=host, port=int(runner.addresses[0][1]))
