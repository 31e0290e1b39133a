"""Fault knobs: make a share of runner calls fail the ways real serverless runners fail."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal["error", "rate_limit", "stall", "drop"]
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "rate_limit", "stall", "drop")

# Longest stall accepted: a stall only has to outlast a client's timeout, and an absurd value
# would keep a test or a demo hanging.
MAX_STALL_S = 3600.0


class FaultsError(ValueError):
    """A fault setting is out of range or of the wrong type; the message is one line."""


@dataclass
class Faults:
    """What share of runner calls to fault, and how. All off by default.

    One random draw per call picks at most one fault, so the shares add up: with
    ``error_rate=0.2`` and ``rate_limit_rate=0.1`` about 20% of calls get ``error_status`` and
    about 10% get 429; the rates together may not exceed 1. The object is shared with the
    running app, so changing an attribute (or ``update``) takes effect on the next call.
    """

    error_rate: float = 0.0
    error_status: int = 503
    # Sent as Retry-After (rounded up to whole seconds) on error answers when set; 429 answers
    # always carry one (1 s if unset).
    retry_after_s: float | None = None
    rate_limit_rate: float = 0.0
    stall_rate: float = 0.0
    stall_s: float = 30.0
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        rates = {
            "error_rate": self.error_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "stall_rate": self.stall_rate,
            "drop_rate": self.drop_rate,
        }
        for name, value in rates.items():
            _check_number(name, value)
            if not 0.0 <= value <= 1.0:
                raise FaultsError(f"{name} must be between 0 and 1, got {value}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise FaultsError(
                "error_rate + rate_limit_rate + stall_rate + drop_rate must not exceed 1"
            )
        if isinstance(self.error_status, bool) or not isinstance(self.error_status, int):
            raise FaultsError(f"error_status must be an integer, got {self.error_status!r}")
        if not 400 <= self.error_status <= 599:
            raise FaultsError(f"error_status must be between 400 and 599, got {self.error_status}")
        if self.retry_after_s is not None:
            _check_number("retry_after_s", self.retry_after_s)
            if not 0.0 <= self.retry_after_s <= 86_400:
                raise FaultsError(
                    f"retry_after_s must be between 0 and 86400, got {self.retry_after_s}"
                )
        _check_number("stall_s", self.stall_s)
        if not 0.0 <= self.stall_s <= MAX_STALL_S:
            raise FaultsError(f"stall_s must be between 0 and {MAX_STALL_S:g}, got {self.stall_s}")

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply some knobs at once, all or none: on a bad value nothing changes."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise FaultsError(
                f"unknown fault setting(s): {', '.join(unknown)}"
                f" (known: {', '.join(sorted(known))})"
            )
        candidate = dataclasses.replace(self, **dict(changes))  # runs validate()
        for name in changes:
            setattr(self, name, getattr(candidate, name))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def any_enabled(self) -> bool:
        return self.error_rate + self.rate_limit_rate + self.stall_rate + self.drop_rate > 0

    def roll(self, rng: random.Random) -> FaultKind | None:
        """Pick the fault for one call, or None. Draws nothing from ``rng`` while every rate is
        zero, so enabling faults does not shift the draws payloads' ``fail_rate`` sees."""
        if not self.any_enabled():
            return None
        bands: tuple[tuple[FaultKind, float], ...] = (
            ("error", self.error_rate),
            ("rate_limit", self.rate_limit_rate),
            ("stall", self.stall_rate),
            ("drop", self.drop_rate),
        )
        u = rng.random()
        for kind, rate in bands:
            if u < rate:
                return kind
            u -= rate
        return None


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultsError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise FaultsError(f"{name} must be finite, got {value}")


def format_seconds(value: float) -> str:
    """Retry-After text: HTTP allows only whole seconds, so a fraction is rounded up (a client
    must never be told to come back sooner than the knob says)."""
    return str(math.ceil(value))
