"""Alerts: one webhook POST when a failure streak becomes an outage, one when it recovers.

Never one per failure, and a failing webhook never touches the pump: posts run as their own
tasks with a short timeout, and their failures are logged, not raised.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
from structlog.typing import FilteringBoundLogger

from .. import __version__
from .state import Stats

WEBHOOK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AlertConfig:
    """Where to post and when (app.py builds it from the settings)."""

    url: str
    after: int  # failed calls in a row that make an outage
    worker_id: str


class Alerter:
    def __init__(self, url: str, after: int, worker_id: str, log: FilteringBoundLogger,
                 http: httpx.AsyncClient) -> None:
        self._url = url
        self._after = after
        self._worker_id = worker_id
        self._log = log
        self._http = http
        self._outage_started: dict[str, float] = {}  # queue -> when its outage began
        self._tasks: set[asyncio.Task[None]] = set()
        # One post at a time, in order: a "recovered" must never overtake its "outage".
        self._order = asyncio.Lock()
        self.sent: list[str] = []  # the last few events, for tests and /healthz-style peeks

    @classmethod
    def start(cls, config: AlertConfig, stats: Stats, log: FilteringBoundLogger,
              http: httpx.AsyncClient) -> Alerter:
        """Listens to ``stats`` from now on; posts through ``http``, which it closes."""
        alerter = cls(config.url, config.after, config.worker_id, log, http)
        stats.subscribe(alerter.on_streak)
        return alerter

    def on_streak(self, queue: str, old: int, new: int) -> None:
        """Called by Stats on every change of a queue's failure streak (from the event loop)."""
        if queue not in self._outage_started and new >= self._after:
            self._outage_started[queue] = time.time()
            self._post("outage", queue, consecutive_failures=new)
        elif queue in self._outage_started and new == 0:
            started = self._outage_started.pop(queue)
            self._post("recovered", queue, failures=old, outage_s=round(time.time() - started, 1))

    def _post(self, event: str, queue: str, **fields: Any) -> None:
        payload = {"event": event, "service": "queue-pump", "version": __version__,
                   "worker_id": self._worker_id, "queue": queue,
                   "text": _text(event, self._worker_id, queue, fields), **fields}
        self.sent = [*self.sent[-9:], event]
        task = asyncio.get_running_loop().create_task(self._send(event, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, event: str, payload: dict[str, Any]) -> None:
        async with self._order:
            await self._post_now(event, payload)

    async def _post_now(self, event: str, payload: dict[str, Any]) -> None:
        try:
            response = await self._http.post(self._url, json=payload)
            if response.status_code >= 300:
                self._log.warning("alert_failed", alert=event, status=response.status_code)
            else:
                self._log.info("alert_sent", alert=event)
        except Exception as exc:
            self._log.warning("alert_failed", alert=event, error=type(exc).__name__)

    async def close(self, timeout_s: float = WEBHOOK_TIMEOUT_S) -> None:
        """Give posts in flight ``timeout_s`` (what is left of the shutdown grace), then drop."""
        pending = set(self._tasks)
        if pending and timeout_s > 0:
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        if pending:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._http.aclose()


def _text(event: str, worker_id: str, queue: str, fields: dict[str, Any]) -> str:
    # Slack and most chat webhooks show a "text" field; the rest is for machines.
    if event == "outage":
        return (f"queue-pump on {worker_id}, queue {queue}: {fields['consecutive_failures']} "
                "calls in a row failed; backing off")
    return (f"queue-pump on {worker_id}, queue {queue}: recovered after {fields['failures']} "
            "failed calls")
