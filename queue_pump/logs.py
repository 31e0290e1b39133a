"""structlog set-up: JSON or console lines on stdout, with every secret value masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

MASK = "***"


class Redactor:
    """Masks known secret values anywhere in an event, whatever key they hide under.

    Keys alone are not enough: a runner may echo the token in an error message, and an
    exception text may carry a URL with credentials.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        return value

    def __call__(self, _logger: Any, _name: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        for key, value in event.items():
            event[key] = self.scrub(value)
        return event


def configure(*, fmt: str, level: str, secrets: Iterable[str] = (),
              stream: TextIO | None = None) -> None:
    """Called once at start-up; ``fmt`` empty means json unless stdout is a terminal."""
    stream = stream or sys.stdout
    if not fmt:
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=stream.isatty()) if fmt == "console"
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            Redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def get_logger(**initial: Any) -> Any:
    return structlog.get_logger("queue_pump").bind(**initial)
