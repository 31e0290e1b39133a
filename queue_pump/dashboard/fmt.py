"""How the pages write times, durations and JSON values (the same words as `queue-pump top`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def parse_iso(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None


def short_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def ago(iso: str | None, now: datetime | None = None) -> str:
    when = parse_iso(iso)
    if when is None:
        return iso or "-"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    text = short_duration(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def pretty(value: Any) -> str:
    """A JSON value, indented, as text (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def compact(value: Any, limit: int = 500) -> str:
    """A JSON value on one line, clipped (an event's data)."""
    return clip(json.dumps(value, ensure_ascii=False, sort_keys=True), limit)


def clip(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split()) if text is not None else ""
    return line if len(line) <= limit else line[:limit - 1] + "\u2026"
