"""Settings that look like ours but are not: a misspelled variable is otherwise silently
ignored and its default used (the idle sleep without its _MS, CONCURENCY for CONCURRENCY)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .settings import NOT_SETTINGS, NOT_SETTINGS_PREFIXES, PREFIX


def unknown_settings(env: Mapping[str, str], known: Iterable[str]) -> list[tuple[str, str | None]]:
    """Each name of the pump's family (PREFIX) in ``env`` that no setting declares, with the
    closest known name (None when nothing is close), sorted by name."""
    known = sorted(set(known))
    ours = [k for k in known if k.startswith(PREFIX)]
    found = []
    for name in sorted(env):
        if (not name.startswith(PREFIX) or name in known or name in NOT_SETTINGS
                or name.startswith(NOT_SETTINGS_PREFIXES)):
            continue
        import difflib  # only once a name is unknown: a pump that starts clean never loads it

        close = difflib.get_close_matches(name, ours, n=1, cutoff=0.75)
        found.append((name, close[0] if close else None))
    return found


def warning_line(name: str, suggestion: str | None) -> str:
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    return f"{name} is not a queue-pump setting and is ignored{hint}"
