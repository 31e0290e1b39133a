"""Every wait the pump and the scheduler make: until a timeout or stop, whichever comes first,
and for idle sleeps a wake as well. A leaf: asyncio and time only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class Pause(Protocol):
    """Wait ``seconds``, or less: a stop always ends it; a wake ends it when ``wakeable``, and
    ``until`` being set ends it too (a parked loop's queue has work again)."""

    def __call__(self, seconds: float, wakeable: bool = False,
                 until: asyncio.Event | None = None) -> Awaitable[None]: ...


# Wakes are merged: at most one is delivered per this interval, and any that come within it
# make one more at its end (so the last insert is never missed). A loop makes at most one call
# per delivered wake, so wakes alone can make a pump call at most loops / this per second.
WAKE_MIN_INTERVAL_S = 0.25


class Waker:
    """Ends every wakeable pause at once (POST /wake, SIGUSR1), at most once per
    ``min_interval_s``: 1,000 SIGUSR1 a second used to make 3,372 calls a second.

    ``generation`` counts delivered wakes, so a loop whose call was in flight when the wake came
    (the likely case for a trigger fired by the very insert that call just missed) can tell, and
    calls again instead of sleeping through it.
    """

    def __init__(self, min_interval_s: float = WAKE_MIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._event = asyncio.Event()
        self.generation = 0
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._last: float | None = None
        self._pending: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        """Called on the event loop's thread."""
        if self._pending is not None:
            return  # one is already due at the end of the interval: this one is in it
        now = self._clock()
        if self._last is None or now - self._last >= self._min_interval_s:
            self._deliver()
            return
        self._pending = asyncio.get_running_loop().call_later(
            self._last + self._min_interval_s - now, self._deliver)

    def _deliver(self) -> None:
        self._pending = None
        self._last = self._clock()
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event


class Bell:
    """Ends the waits of whoever listens to it, every one at once: one queue's parked loops
    (idle_gate.py). Each ring is a fresh event, so a listener that took ``current()`` before
    waiting never misses a ring that comes in between."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event


def stop_or_timeout(stop: asyncio.Event, waker: Waker | None = None) -> Pause:
    """The only way the pump waits: until ``seconds`` pass or ``stop`` is set, whichever first;
    with ``wakeable``, a wake ends it too; with ``until``, that event being set."""

    async def pause(seconds: float, wakeable: bool = False,
                    until: asyncio.Event | None = None) -> None:
        if seconds <= 0 or stop.is_set() or (until is not None and until.is_set()):
            return
        if not (wakeable and waker) and until is None:
            try:
                async with asyncio.timeout(seconds):
                    await stop.wait()
            except TimeoutError:
                pass
            return
        events = [stop, *([waker.current()] if wakeable and waker else []),
                  *([until] if until is not None else [])]
        waits = {asyncio.ensure_future(event.wait()) for event in events}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    return pause
