"""The schedules file (TOML): its entries parsed and checked at start, and each entry's windows.

One problem per line, naming the entry and the field, so a bad file stops start-up with exit 2
instead of failing at its first window. The firing itself is firing.py beside this one; the format
and the rules are in docs/SCHEDULES.md.
"""

from __future__ import annotations

import math
import re
import string
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cronsim import CronSim, CronSimError

from ..config import ConfigError, env_of, is_loopback_host, redact_url

ENV = env_of("schedules")
DEFAULT_DEDUPE_KEY = "{name}:{window}"
BODY_KEY = "dedupeKey"  # the reference runner's field
_ENTRY_KEYS = ("name", "cron", "url", "body", "dedupe_key", "headers")
_KEY_FIELDS = frozenset({"name", "window"})
_BODY_FIELDS = frozenset({"name", "window", "dedupe_key"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CRON_FIELDS = "minute hour day-of-month month day-of-week"


def iso_window(window: datetime) -> str:
    """A window as it appears in keys and logs: UTC, whole seconds, 'Z'."""
    return as_utc(window).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_utc(dt: datetime) -> datetime:
    # A naive time is taken as UTC rather than local: schedules are UTC by definition.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _first(it: Iterator[datetime]) -> datetime | None:
    # cronsim gives up (StopIteration) after 50 years without a match.
    return next(it, None)


def _template_fields(text: str, allowed: frozenset[str]) -> set[str]:
    """The fields a template uses; ValueError unless every one is a plain allowed {name}."""
    used: set[str] = set()
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            # Attribute access, indexes and format specs are refused: the template is data.
            raise ValueError(f"{{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a known field")
        used.add(name)
    return used


def _strings(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every leaf of a body with its dotted path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
    else:
        yield path, value


def _render(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(values)
    if isinstance(value, dict):
        return {key: _render(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, values) for item in value]
    return value


@dataclass(frozen=True)
class Schedule:
    """One validated entry of the schedules file."""

    name: str
    cron: str
    url: str
    body: Mapping[str, Any]
    dedupe_key: str = DEFAULT_DEDUPE_KEY
    # Extra headers may carry credentials: kept out of repr, never logged.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def latest_window(self, now: datetime) -> datetime | None:
        """The start of the latest window at or before ``now``."""
        # CronSim never yields its start instant; a microsecond later makes "at" count.
        it = CronSim(self.cron, as_utc(now) + timedelta(microseconds=1), reverse=True)
        return _first(it)

    def next_window(self, after: datetime) -> datetime | None:
        """The start of the first window strictly after ``after``."""
        return _first(CronSim(self.cron, as_utc(after)))

    def key_for(self, window: datetime) -> str:
        return self.dedupe_key.format_map({"name": self.name, "window": iso_window(window)})

    def body_for(self, window: datetime) -> dict[str, Any]:
        """The JSON body of one window: templates filled, the dedupe key in place."""
        key = self.key_for(window)
        body: dict[str, Any] = _render(
            self.body, {"name": self.name, "window": iso_window(window), "dedupe_key": key})
        if not self.places_key:
            body[BODY_KEY] = key
        return body

    @property
    def places_key(self) -> bool:
        """True when some body string says where the key goes ({dedupe_key})."""
        return any(isinstance(v, str) and "dedupe_key" in _template_fields(v, _BODY_FIELDS)
                   for _, v in _strings(self.body, "body"))


def load_schedules(path: str, *, allow_insecure_http: bool = False) -> list[Schedule]:
    """Read and validate a schedules file; ConfigError lists every problem, one line each."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{ENV}={path!r} cannot be read: "
                           f"{exc.strerror or type(exc).__name__}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{ENV}={path!r} is not valid TOML: {exc}"]) from None
    return parse_schedules(data, source=path, allow_insecure_http=allow_insecure_http)


def parse_schedules(data: Mapping[str, Any], *, source: str = "schedules",
                    allow_insecure_http: bool = False) -> list[Schedule]:
    """Validate an already-parsed schedules document (see load_schedules)."""
    problems: list[str] = []
    extra = sorted(set(data) - {"schedule"})
    if extra:
        problems.append(f"{source}: unknown top-level key(s) {', '.join(map(repr, extra))}; "
                        "expected only [[schedule]] entries")
    entries = data.get("schedule", [])
    if not isinstance(entries, list) or not entries:
        problems.append(f"{source}: no [[schedule]] entries; expected at least one "
                        f"(unset {ENV} to run without schedules)")
        raise ConfigError(problems)
    schedules: list[Schedule] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        schedule = _parse_entry(entry, number, source, seen, allow_insecure_http, problems)
        if schedule is not None:
            schedules.append(schedule)
    if problems:
        raise ConfigError(problems)
    return schedules


Problem = Callable[[str], None]


def _parse_entry(entry: Any, number: int, source: str, seen: dict[str, int],
                 allow_insecure_http: bool, problems: list[str]) -> Schedule | None:
    """One [[schedule]] entry: every problem with it, one line each, or the Schedule."""
    if not isinstance(entry, dict):
        problems.append(f"{source}: schedule #{number} is not a table; expected [[schedule]] "
                        "with name, cron, url, body")
        return None
    name = entry.get("name")
    label = f"{source}: schedule #{number}" + (f" {name!r}" if isinstance(name, str) else "")
    before = len(problems)

    def problem(text: str) -> None:
        problems.append(f"{label}: {text}")

    _check_keys(entry, problem)
    if "name" in entry:
        _check_name(name, number, seen, problem)
    if "cron" in entry:
        _check_cron(entry["cron"], problem)
    if "url" in entry:
        _check_url(entry["url"], allow_insecure_http, problem)
    if "body" in entry:
        _check_body_table(entry["body"], problem)
    dedupe_key = entry.get("dedupe_key", DEFAULT_DEDUPE_KEY)
    _check_dedupe_key(dedupe_key, problem)
    headers = entry.get("headers", {})
    _check_headers(headers, problem)
    if len(problems) > before:
        return None
    cron, url, body = entry["cron"], entry["url"], entry["body"]
    assert isinstance(name, str) and isinstance(cron, str) and isinstance(url, str)
    assert isinstance(body, dict) and isinstance(dedupe_key, str) and isinstance(headers, dict)
    return Schedule(name=name, cron=cron, url=url, body=body, dedupe_key=dedupe_key,
                    headers=dict(headers))


def _check_keys(entry: dict[str, Any], problem: Problem) -> None:
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        problem(f"unknown key(s) {', '.join(map(repr, unknown))}; expected "
                + ", ".join(_ENTRY_KEYS))
    for key in ("name", "cron", "url", "body"):
        if key not in entry:
            problem(f"{key} is missing")


def _check_name(name: Any, number: int, seen: dict[str, int], problem: Problem) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problem(f"name {name!r} is not accepted; expected 1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit")
    elif name in seen:
        problem(f"name is used by schedule #{seen[name]} too; expected unique names")
    else:
        seen[name] = number


def _check_cron(cron: Any, problem: Problem) -> None:
    if not isinstance(cron, str) or len(cron.split()) != 5:
        # cronsim would also take 6 fields (seconds first) where croniter puts seconds
        # last: only the classic 5 fields mean the same thing everywhere.
        problem(f"cron {cron!r} is not a 5-field cron expression; expected "
                f"{_CRON_FIELDS}, in UTC (e.g. '0 3 * * *')")
        return
    try:
        if _first(CronSim(cron, datetime.now(UTC))) is None:
            problem(f"cron {cron!r} never matches in the next 50 years")
    except CronSimError as exc:
        problem(f"cron {cron!r} is not valid ({exc}); expected {_CRON_FIELDS}, in UTC")


def _check_url(url: Any, allow_insecure_http: bool, problem: Problem) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    shown = repr(redact_url(url)) if isinstance(url, str) else repr(url)
    try:
        port_ok = parts is not None and (parts.port or 0) >= 0
    except ValueError:
        port_ok = False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problem(f"url {shown} is not an http(s) URL; expected e.g. "
                "https://proj.supabase.co/functions/v1/enqueue")
    elif not port_ok:
        problem(f"url {shown} has a bad port; expected a number from 1 to 65535")
    elif (parts.scheme == "http" and not allow_insecure_http
          and not is_loopback_host(parts.hostname)):
        problem(f"url {shown} uses plain http to a host that is not loopback (the token "
                f"would travel in clear); use https, or set {env_of('allow_insecure_http')}=1")


def _check_body_table(body: Any, problem: Problem) -> None:
    if not isinstance(body, dict):
        problem(f"body is a {type(body).__name__}; expected a table, e.g. "
                "body = { type = \"digest\" }")
    else:
        _check_body(body, problem)


def _check_dedupe_key(dedupe_key: Any, problem: Problem) -> None:
    if not isinstance(dedupe_key, str):
        problem(f"dedupe_key is a {type(dedupe_key).__name__}; expected a string such as "
                f"{DEFAULT_DEDUPE_KEY!r}")
        return
    try:
        used = _template_fields(dedupe_key, _KEY_FIELDS)
    except ValueError as exc:
        problem(f"dedupe_key {dedupe_key!r} is a bad template ({exc}); expected text with "
                "{window} and optionally {name} ({{ and }} for literal braces)")
        return
    if "window" not in used:
        problem(f"dedupe_key {dedupe_key!r} lacks {{window}}; every window needs its own "
                "key, or only the first would ever be enqueued")


def _check_headers(headers: Any, problem: Problem) -> None:
    if not isinstance(headers, dict):
        problem(f"headers is a {type(headers).__name__}; expected a table of strings")
        return
    for key, value in headers.items():
        # Values are never shown: a header is where a credential would go.
        if not _HEADER_NAME.fullmatch(key):
            problem(f"headers: {key!r} is not a header name")
        elif not isinstance(value, str) or any(ch in value for ch in "\r\n\x00"):
            problem(f"headers.{key} is not a single-line string")


def _check_body(body: dict[str, Any], problem: Problem) -> None:
    for path, value in _strings(body, "body"):
        if isinstance(value, str):
            try:
                _template_fields(value, _BODY_FIELDS)
            except ValueError as exc:
                problem(f"{path} {value!r} is a bad template ({exc}); expected {{name}}, "
                        "{window} or {dedupe_key}, and {{ }} for literal braces")
        elif isinstance(value, float) and not math.isfinite(value):
            problem(f"{path} is {value}; JSON has no inf or nan")
        elif not isinstance(value, bool | int | float):
            # TOML dates and times have no JSON form.
            problem(f"{path} is a TOML {type(value).__name__}; expected a string, number, "
                    "boolean, array or table (quote dates)")
    literal = body.get(BODY_KEY)
    if BODY_KEY in body and not (isinstance(literal, str) and "{dedupe_key}" in literal):
        problem(f"body.{BODY_KEY} is set; set dedupe_key instead (the pump puts the key in the "
                f"body as {BODY_KEY}), or write \"{{dedupe_key}}\" where the key belongs")


def describe(schedules: Sequence[Schedule], now: datetime) -> list[dict[str, Any]]:
    """What a start line or `queue-pump config` can show: no headers, URL credentials masked."""
    out = []
    for s in schedules:
        following = s.next_window(now)
        out.append({"name": s.name, "cron": s.cron, "url": redact_url(s.url),
                    "next_window": iso_window(following) if following else None})
    return out
