"""structlog set-up: JSON or console lines on stdout, with every secret value masked."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import FilteringBoundLogger

MASK = "***"
# Messages are clipped (e.g. a runner's error at 300 characters), and the clip may fall inside an
# echoed secret: a string ending with at least this many leading characters of one is masked too.
PARTIAL_MIN = 6


class Redactor:
    """Masks known secret values anywhere in an event, whatever key they hide under.

    Keys alone are not enough: a runner may echo the token in an error message, and an
    exception text may carry a URL with credentials.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._plain = sorted({s for s in secrets if s}, key=len, reverse=True)
        # Each secret also as it looks inside a URL or a JSON string, where it may be echoed.
        forms = set()
        for secret in self._plain:
            forms |= {secret, quote(secret, safe=""), quote_plus(secret),
                      json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(forms, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, MASK)
            return self._scrub_cut_tail(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        if value is None or isinstance(value, bool | int | float):
            return value
        # Anything else is rendered with repr(): an exception, an object holding a URL.
        text = repr(value)
        scrubbed = self.scrub(text)
        return scrubbed if scrubbed != text else value

    def _scrub_cut_tail(self, value: str) -> str:
        for secret in self._plain:
            for keep in range(min(len(secret) - 1, len(value)), PARTIAL_MIN - 1, -1):
                if value.endswith(secret[:keep]):
                    return value[:-keep] + MASK
        return value

    def __call__(self, _logger: Any, _name: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        for key, value in event.items():
            event[key] = self.scrub(value)
        return event


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "nan": JSON has no such numbers, and a line must parse
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _finite_numbers(_logger: Any, _name: str,
                   event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every value JSON can carry: structlog's renderer would write NaN and Infinity bare."""
    for key, value in event.items():
        event[key] = _json_safe(value)
    return event


# What pump_started shows on a console, from its ``config``: enough to see which runner, which
# queues and how fast it polls; the full configuration is one command away (queue-pump config).
CONSOLE_START_KEYS = ("lanes", "worker_id", "idle_sleep_ms", "idle_max_sleep_ms",
                      "max_calls_per_hour")


def console_view(_logger: Any, _name: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console lines are read by a person: None says nothing there, and a 1,000-character
    start line says too much. JSON lines keep every key (their readers rely on stable keys)."""
    config = event.get("config")
    if event.get("event") == "pump_started" and isinstance(config, dict):
        del event["config"]
        shown = {k: config.get(k) for k in CONSOLE_START_KEYS}
        if shown["idle_max_sleep_ms"] == shown["idle_sleep_ms"]:
            shown["idle_max_sleep_ms"] = None  # adaptive idle is off
        event.update({k: v for k, v in shown.items() if v not in (None, "", 0)})
        event["full_config"] = "queue-pump config"
    for key in [k for k, v in event.items() if v is None]:
        del event[key]
    return event


def configure(*, fmt: str, level: str, redactor: Redactor | None = None,
              stream: TextIO | None = None) -> None:
    """Called once at start-up; ``fmt`` empty means json unless stdout is a terminal.
    ``redactor`` masks the process's secrets in every line (the one the wiring built)."""
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
            redactor or Redactor(()),
            _finite_numbers,
            *([console_view] if fmt == "console" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def get_logger(**initial: Any) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger("queue_pump").bind(**initial)
    return logger
