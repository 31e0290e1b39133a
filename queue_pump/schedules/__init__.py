"""Scheduled enqueue: the schedules file, read and checked at start (file.py), and the firing of
each entry's windows (firing.py), classified and backed off as the runner calls are.

``Scheduler`` is loaded when first named: `queue-pump config` checks a schedules file without
paying for the HTTP client that firing needs."""

from typing import TYPE_CHECKING, Any

from .file import Schedule, describe, load_schedules

if TYPE_CHECKING:
    from .firing import Scheduler

__all__ = ["Schedule", "Scheduler", "describe", "load_schedules"]


def __getattr__(name: str) -> Any:
    if name == "Scheduler":
        from .firing import Scheduler

        return Scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
