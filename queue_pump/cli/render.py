"""What the operator commands print: durations read and written the way people write them
(90s, 30m, 6h, 7d), times as ages, and plain tables sized to the terminal on a TTY (unclipped
when piped). The standard library alone."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str, name: str) -> float:
    """Seconds from "90", "90s", "30m", "6h", "7d", "2w"; ValueError naming ``name``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{name} {text!r} is not a duration; expected e.g. 90s, 30m, 6h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_time(text: str, name: str, now: datetime | None = None) -> str:
    """An ISO 8601 time with a zone, from a duration ago ("1h": an hour ago) or an ISO time
    (without a zone: UTC)."""
    now = now or datetime.now(UTC)
    if _DURATION.match(text):
        return (now - timedelta(seconds=parse_duration(text, name))).isoformat()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {text!r} is neither a duration ago (e.g. 1h, 7d) nor an ISO "
                         "time (e.g. 2026-12-06T08:00:00Z)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def ago(iso: str | None, now: datetime | None = None) -> str:
    """How long ago (or "in ..." for a time to come), short."""
    if not iso:
        return "-"
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    text = short_duration(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def short_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def one_line(text: object) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
          width: int | None = None) -> str:
    """Columns as wide as their widest cell; with ``width`` (a terminal's), the last column is
    clipped to what is left, with an ellipsis, so no line wraps."""
    cells = [[one_line(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if width is not None:
        fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
        widths[-1] = max(min(widths[-1], width - fixed), len(headers[-1]))
    lines = []
    for row in [list(headers), *cells]:
        parts = [_fit(cell, widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _fit(cell: str, width: int) -> str:
    if len(cell) > width:
        return cell[:max(width - 1, 0)] + "\u2026"
    return cell.ljust(width)


def terminal_width(is_tty: bool) -> int | None:
    """The terminal's width on a TTY; None (unclipped) when piped."""
    return shutil.get_terminal_size((100, 24)).columns if is_tty else None
