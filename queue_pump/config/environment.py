"""Settings from the environment: each value parsed by its knob's kind (settings.py holds the
table), every problem listed at once, one line each.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .knobs import MAX_HEADER_CHARS, MAX_TOTAL_CONCURRENCY, Kind, Knob
from .rules import ConfigError, between_fields, queue_name_ok, range_problem
from .settings import KNOBS, KNOBS_BY_ATTR, Settings, env_of
from .urls import USERINFO as _USERINFO
from .urls import host_ok

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


_SHOWN_MAX = 60


def _show(knob: Knob, raw: str) -> str:
    """The bad value as the problem line shows it: never a secret's, never a page long."""
    if knob.secret:
        return "(hidden)"
    if knob.kind is Kind.URL:
        # A URL that fails to parse may still carry user:password; mask anything before an @.
        raw = _USERINFO.sub("//***@", raw)
    if len(raw) > _SHOWN_MAX:
        return f"{raw[:_SHOWN_MAX]!r}... ({len(raw)} characters)"
    return repr(raw)


def _parse(knob: Knob, raw: str, problems: list[str]) -> Any:
    value = raw.strip()
    if knob.optional and not value:
        return None
    return _PARSERS[knob.kind](knob, value, _show(knob, raw), problems)


def _parse_number(knob: Knob, value: str, shown: str, problems: list[str]) -> Any:
    rng = f"a whole number from {knob.low} to {knob.high}{knob.unit}"
    try:
        number = int(value, 10)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            problems.append(f"{knob.env}={shown} is not a number; expected {rng}")
            return None
        if not math.isfinite(as_float) or as_float != int(as_float):
            problems.append(f"{knob.env}={shown} is not a whole number; expected {rng}")
            return None
        number = int(as_float)
    # The environment speaks milliseconds; the loop works in seconds.
    parsed = number / knob.scale if knob.kind is Kind.MS else number
    problem = range_problem(knob, parsed, shown)
    if problem:
        problems.append(problem)
        return None
    return parsed


def _parse_bool(knob: Knob, value: str, shown: str, problems: list[str]) -> bool | None:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    problems.append(f"{knob.env}={shown} is not a boolean; expected 1/0, true/false, yes/no")
    return None


def _parse_choice(knob: Knob, value: str, shown: str, problems: list[str]) -> str | None:
    low = value.lower()
    if low == "" and knob.default == "":
        return ""
    if low not in knob.choices:
        problems.append(f"{knob.env}={shown} is not accepted; expected one of "
                        + ", ".join(knob.choices))
        return None
    return low


def _parse_url(knob: Knob, value: str, shown: str, problems: list[str]) -> str | None:
    if value and not _url_ok(knob, value, shown, problems):
        return None
    return _parse_text(knob, value, shown, problems)


def _url_ok(knob: Knob, value: str, shown: str, problems: list[str]) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        problems.append(f"{knob.env}={shown} is not a valid URL; expected e.g. "
                        "https://xyz.supabase.co")
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{knob.env}={shown if not parts.password else '(hidden)'} is not an "
                        "http(s) URL; expected e.g. https://xyz.supabase.co")
        return False
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        problems.append(f"{knob.env} has a bad port; expected a number from 1 to 65535")
        return False
    if knob.attr == "supabase_url" and (parts.query or parts.fragment):
        problems.append(f"{knob.env}={shown} has a query or fragment; expected the project "
                        "URL alone, e.g. https://xyz.supabase.co")
        return False
    if parts.fragment:
        problems.append(f"{knob.env}={shown} has a #fragment, which is never sent; remove it")
        return False
    if not host_ok(parts.hostname):
        # Caught here, it is one line at start-up; later, a DNS error retried forever.
        problems.append(f"{knob.env} has host {_show(knob, parts.hostname)}, which is not a "
                        "valid host name or IP address")
        return False
    return True


def _parse_text(knob: Knob, value: str, shown: str, problems: list[str]) -> str | None:
    if any(ch in value for ch in "\r\n\x00"):
        # A header value with a newline would be a request-smuggling vector.
        problems.append(f"{knob.env} contains a line break or NUL; expected a single line")
        return None
    if knob.header and len(value) > MAX_HEADER_CHARS:
        # Servers refuse headers past 8-16 KiB in all (431), on every call, forever.
        problems.append(f"{knob.env} is {len(value)} characters long; expected at most "
                        f"{MAX_HEADER_CHARS} (it is sent as an HTTP header)")
        return None
    if knob.header and not (value.isascii() and value.isprintable()):
        # Sent as an HTTP header: anything else fails every call, or the start-up, later.
        problems.append(f"{knob.env} has a character that cannot go in an HTTP header; expected "
                        "printable ASCII only")
        return None
    return value


_PARSERS: dict[Kind, Callable[[Knob, str, str, list[str]], Any]] = {
    Kind.MS: _parse_number, Kind.INT: _parse_number, Kind.BOOL: _parse_bool,
    Kind.CHOICE: _parse_choice, Kind.URL: _parse_url, Kind.STR: _parse_text,
    Kind.SECRET: _parse_text,
}


def _lanes(env: Mapping[str, str], values: dict[str, Any],
           problems: list[str]) -> tuple[tuple[str, int], ...]:
    """Several queues (agent:2,render:1), or the single queue and concurrency pair."""
    spec = values.get("queues") or ""
    if not spec:
        queue, concurrency = values.get("queue"), values.get("concurrency")
        return ((queue, concurrency),) if queue and isinstance(concurrency, int) else ()
    queues = env_of("queues")
    both = [name for name in (env_of("queue"), env_of("concurrency")) if name in env]
    if both:
        problems.append(f"{queues} is set together with {' and '.join(both)}; expected "
                        f"one form: {queues}=name:concurrency,... alone, or the single "
                        "queue variables")
    lanes: list[tuple[str, int]] = []
    per_queue = KNOBS_BY_ATTR["concurrency"]  # one queue's loops: as for the one queue
    low, high = per_queue.low or 1, per_queue.high or MAX_TOTAL_CONCURRENCY
    for part in spec.split(","):
        name, _, count = part.strip().partition(":")
        name = name.strip()
        count = count.strip() or "1"
        if (not queue_name_ok(name) or not (count.isascii() and count.isdigit())
                or not low <= int(count) <= high):
            problems.append(f"{queues} has {part.strip()!r}; expected name:concurrency "
                            f"with a name without spaces and a concurrency from {low} to {high}, "
                            "e.g. agent:2,render:1")
            continue
        if any(name == known for known, _ in lanes):
            problems.append(f"{queues} names {name!r} twice; expected each queue once")
            continue
        lanes.append((name, int(count)))
    total = sum(n for _, n in lanes)
    if total > MAX_TOTAL_CONCURRENCY:
        problems.append(f"{queues} adds up to {total} loops; expected at most "
                        f"{MAX_TOTAL_CONCURRENCY} in all")
    return tuple(lanes)


def from_mapping(env: Mapping[str, str], *, hostname: str | None = None) -> Settings:
    """Build Settings from an environment-like mapping, listing every problem at once."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    missing: list[Knob] = []
    for knob in KNOBS:
        raw = env.get(knob.env)
        if knob.required and (raw is None or not raw.strip()):
            values[knob.attr] = ""
            missing.append(knob)
            continue
        values[knob.attr] = _parse(knob, (knob.default or "") if raw is None else raw, problems)

    for knob in missing:
        if knob.attr == "supabase_url" and values.get("endpoint_override"):
            continue
        problems.append(f"{knob.env} is not set; it is required ({knob.help.split('.')[0]})")
    problems += [f"{knob.env} is still the placeholder from .env.example; set your own"
                 for knob in KNOBS
                 if knob.placeholder and (env.get(knob.env) or "").strip() == knob.placeholder]

    values["lanes"] = _lanes(env, values, problems)
    if values.get("idle_max_sleep_s") is None:
        values["idle_max_sleep_s"] = values.get("idle_sleep_s")  # adaptive idle off
    if problems:
        raise ConfigError(problems + between_fields(KNOBS, values))
    if not values["worker_id"]:
        values["worker_id"] = hostname or socket.gethostname()
    return Settings(**values)


_URL_OVER = ("jobs_url", "endpoint_override")


def some_from_mapping(env: Mapping[str, str], attrs: tuple[str, ...], *,
                      required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Only the settings ``attrs`` (a command that is no pump, e.g. ``queue-pump jobs``, needs
    neither the pump's token nor the loop's settings), parsed and checked as the pump parses
    them, with the same problem lines; ``required`` are required here whatever the table
    says."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for attr in attrs:
        knob = KNOBS_BY_ATTR[attr]
        raw = env.get(knob.env)
        needed = attr in required or knob.required
        if attr == "supabase_url" and any(env.get(env_of(a), "").strip() for a in _URL_OVER):
            needed = False  # a full URL replaces the project URL
        if needed and (raw is None or not raw.strip()):
            problems.append(f"{knob.env} is not set; it is required ({knob.help.split('.')[0]})")
            values[attr] = ""
            continue
        values[attr] = _parse(knob, (knob.default or "") if raw is None else raw, problems)
        if knob.placeholder and (raw or "").strip() == knob.placeholder:
            problems.append(f"{knob.env} is still the placeholder from .env.example; set your own")
    # The rules between fields read every knob; those not asked for are unset here.
    problems += between_fields(KNOBS, {k.attr: values.get(k.attr) for k in KNOBS})
    if problems:
        raise ConfigError(problems)
    return values
