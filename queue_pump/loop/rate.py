"""A rate over a recent window, in bounded memory: one (second, count) bucket per second that
saw an event, at most ``window_s`` of them. The progress line's jobs per second: an hour of
idling, then a burst, reads as the burst's pace, not as its average over the hour."""

from __future__ import annotations

import math
from collections import deque


class RecentRate:
    def __init__(self, window_s: float, started: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._started = started
        self._buckets: deque[list[int]] = deque(maxlen=math.ceil(window_s) + 1)

    def add(self, now: float, count: int = 1) -> None:
        second = math.floor(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])

    def per_second(self, now: float) -> float:
        """Events per second over the last ``window_s`` (or since the start, if shorter)."""
        since = now - self.window_s
        counted = sum(count for second, count in self._buckets if second + 1 > since)
        span = min(self.window_s, max(now - self._started, 1e-9))
        return counted / span
