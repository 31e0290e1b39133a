"""A call budget: one token bucket shared by every loop, so a bill can be capped.

Work is paced, never dropped: a loop that finds the bucket empty reserves the next token and
waits for it, so loops queue up fairly behind one another instead of racing.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, per_hour: int, capacity: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_hour <= 0 or capacity < 1:
            raise ValueError("per_hour must be positive and capacity at least 1")
        self.per_hour = per_hour
        self._rate = per_hour / 3600.0
        self._capacity = float(capacity)
        self._tokens = float(capacity)
        self._clock = clock
        self._updated = clock()

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it (0 when one was there).

        Tokens may go negative: each caller behind an empty bucket is owed a later slot.
        """
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate
