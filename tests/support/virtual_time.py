"""Virtual time for many loops at once: every pause waits for its own deadline on one shared
clock, which jumps to the next deadline once every task has run as far as it can.

FakeTime (env.py) advances the clock by each pause as it is asked for, which is right for one
loop and meaningless for eight sleeping side by side. Here a pause ends the way the pump's
real one does (stop_or_timeout): at its deadline, on stop, on a wake when wakeable, or when
``until`` is set; only the clock is virtual, so an idle hour takes milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

from queue_pump.loop.waits import Waker

# Rounds of "let every ready task run" before the clock may jump: the calls under test (scripts,
# respx) finish without real I/O, in a handful of rounds.
SETTLE_ROUNDS = 50


class VirtualTime:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.pauses: list[tuple[float, bool, bool]] = []  # (seconds, wakeable, until given)

    def clock(self) -> float:
        return self.now

    def pause_for(self, stop: asyncio.Event, waker: Waker | None = None) -> Any:
        """A Pause (waits.py) over this clock, ended early as the real one is."""

        async def pause(seconds: float, wakeable: bool = False,
                        until: asyncio.Event | None = None) -> None:
            self.pauses.append((seconds, wakeable, until is not None))
            if seconds <= 0 or stop.is_set() or (until is not None and until.is_set()):
                return
            timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._timers, (self.now + seconds, next(self._seq), timer))
            events = [stop, *([waker.current()] if wakeable and waker else []),
                      *([until] if until is not None else [])]
            waits: set[asyncio.Future[Any]] = {timer, *(asyncio.ensure_future(e.wait())
                                                        for e in events)}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

        return pause

    async def sleep(self, seconds: float) -> None:
        """A wait of ``seconds`` on this clock that nothing ends early (a job running)."""
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._seq), timer))
        await timer

    async def settle(self) -> None:
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Let the clock run ``seconds``, firing every deadline on the way in order."""
        end = self.now + seconds
        await self.settle()
        while True:
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)  # ended early (stop, wake, until)
            if not self._timers or self._timers[0][0] > end:
                break
            at, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, at)
            timer.set_result(None)
            await self.settle()
        self.now = end
        await self.settle()

    async def run_until(self, done: Callable[[], bool], *, step_s: float = 1.0,
                        limit_s: float = 86_400.0) -> None:
        """Advance in steps until ``done()``; AssertionError past ``limit_s`` of virtual time."""
        spent = 0.0
        while not done():
            assert spent < limit_s, f"not done after {limit_s} virtual seconds"
            await self.advance(step_s)
            spent += step_s

