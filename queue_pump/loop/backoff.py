"""How long to wait: backoff strategies as data, and pure functions over them. No clock, no
network; randomness only from the ``random.Random`` a caller hands in, so tests pass a seeded
one and never touch the global generator. The exponential schedule is tenacity's
(``wait_exponential``, overflow-safe); the jitter on top is drawn here, since tenacity's own
``wait_random_exponential`` draws from the global ``random``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenacity import RetryCallState

# A runner may ask for a long pause, but a pump that sleeps for a day on a typo looks dead.
RETRY_AFTER_CEILING_S = 3600.0
IDLE_JITTER = 0.1
# Retry-After is a floor, and every loop (and every pump) that got it would come back at the
# same instant: each adds up to this share of it on top, drawn on its own.
RETRY_AFTER_SPREAD = 0.25
_DELTA = re.compile(r"\d{1,12}(\.\d{1,6})?")


def _attempt(n: int) -> RetryCallState:
    # tenacity's strategies read only attempt_number; a real RetryCallState keeps us on its API.
    from tenacity import RetryCallState

    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, n)
    return state


@dataclass(frozen=True)
class Exponential:
    """The n-th wait in a row is base * 2^(n-1), up to the max (adaptive idle uses it bare:
    the idle sleep gets its own +-10 % on top, idle_delay)."""

    base_s: float
    max_s: float

    def bound(self, n: int) -> float:
        # Loaded at the first backoff, not at start: an idle pump at the defaults (no failure,
        # no adaptive idle) never needs it, and it is ~0.5 MB.
        from tenacity.wait import wait_exponential

        return float(wait_exponential(multiplier=self.base_s, max=self.max_s)(_attempt(n)))

    def delay(self, n: int, rng: random.Random) -> float:
        return self.bound(n)


@dataclass(frozen=True)
class FullJitter(Exponential):
    """AWS "full jitter": uniform(0, min(max, base * 2**(failures-1)))."""

    def delay(self, n: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.bound(n))


Strategy = Exponential


def full_jitter(base_s: float, max_s: float) -> FullJitter:
    return FullJitter(base_s, max_s)


def adaptive_idle(idle_s: float, idle_max_s: float) -> Exponential:
    """Adaptive idle: the n-th idle answer in a row waits idle * 2^(n-1), up to the max."""
    return Exponential(idle_s, idle_max_s)


def retry_delay(strategy: Strategy, failures: int, rng: random.Random | None = None) -> float:
    """The wait after the ``failures``-th consecutive failure (1-based); ``rng`` is needed by
    jittered strategies only."""
    if rng is None:
        if isinstance(strategy, FullJitter):
            raise TypeError("a jittered strategy needs the random source (rng=)")
        return strategy.bound(failures)
    return strategy.delay(failures, rng)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    Garbage is ignored rather than trusted: a bad header must not make the pump hammer or stall.
    """
    if not value:
        return None
    value = value.strip()
    # HTTP says whole seconds; some servers send "1.5", which is meant kindly, so take it.
    if _DELTA.fullmatch(value):
        return min(float(value), RETRY_AFTER_CEILING_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return min(max(0.0, (when - now).total_seconds()), RETRY_AFTER_CEILING_S)


def idle_delay(idle_s: float, rng: random.Random) -> float:
    """The idle sleep, +-10 % so replicas started together drift apart."""
    return idle_s * (1 + rng.uniform(-IDLE_JITTER, IDLE_JITTER))


def next_delay(
    strategy: Strategy, failures: int, cap_s: float, *, retry_after_s: float | None,
    at_cap: bool, rng: random.Random, spread: float = RETRY_AFTER_SPREAD,
) -> float:
    """The one rule for the wait after a failed call.

    The runner's own Retry-After is honoured as the least wait, even above the cap: it knows its
    load better than we do, and up to ``spread`` of it (a quarter) is added at random, so the
    loops that got it do not all come back at once (never past the one-hour ceiling). A
    configuration problem (wrong token, wrong URL) will not fix itself quickly, so it waits the
    cap; anything else follows the jittered exponential.
    """
    if at_cap:
        return max(cap_s, retry_after_s or 0.0)
    jittered = strategy.delay(failures, rng)
    if retry_after_s is not None:
        # A floor, not a replacement: "Retry-After: 0" (some proxies send it) or a date in the
        # past must not turn the loop into a tight one.
        extra = rng.uniform(0.0, spread * retry_after_s) if spread else 0.0
        # ...and the jitter never takes it past the ceiling: an hour is the longest wait.
        return min(max(retry_after_s, jittered) + extra, RETRY_AFTER_CEILING_S)
    return jittered


class QueueGate:
    """The failure state one queue's loops share: while the queue fails, one loop probes it and
    the others hold.

    Per-loop backoff let 256 loops against a runner that answers 503 make 1,037 calls in 5 s:
    a runner that is down should see one loop's backoff from the whole process, not
    concurrency times it. The first loop to fail becomes the prober and keeps its own
    jittered backoff; the others, before each call, ask ``hold`` and wait until the prober's
    next call, then ask again (with jitter of their own, up to ``spread_s``). The first answer
    that is not a failure, from any loop, opens the gate for all. Pure: time comes in as
    ``now``, randomness from the ``rng`` it is given.
    """

    def __init__(self, spread_s: float, rng: random.Random) -> None:
        self.prober: str | None = None
        self.next_probe_at = 0.0
        self.given_up = False  # --drain/--once: the prober gave up, so does everyone
        self._spread_s = spread_s
        self._rng = rng

    def failed(self, loop: str, now: float, delay_s: float) -> None:
        if self.prober is None:
            self.prober = loop
        if self.prober == loop:
            self.next_probe_at = now + delay_s

    def succeeded(self) -> None:
        self.prober = None

    def leave(self, loop: str) -> None:
        """A loop that ends hands the probing on (the next to ask takes it)."""
        if self.prober == loop:
            self.prober = None

    def hold(self, loop: str, now: float) -> float:
        """How long ``loop`` must wait before it may call (0: call now)."""
        if self.prober is None or self.prober == loop:
            return 0.0
        # After the prober's next call (a fresh one, or one in flight), with this loop's own
        # jitter, so the holders do not all ask again at the same instant.
        return max(self.next_probe_at - now, 0.0) + self._rng.uniform(0.1, 1.0) * self._spread_s
