"""The rules a Settings is held to whatever built it, checked on parsed values: each number in
its knob's range, each choice among its choices, and the rules between fields, all read from the
knobs (no variable is named here). Also the error that lists every breach, one line each."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .knobs import Kind, Knob
from .urls import host_ok, is_loopback_host, redact_url


class ConfigError(Exception):
    """Every problem found in the configuration, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def queue_name_ok(name: str) -> bool:
    return (bool(name) and name.isprintable()
            and not any(ch.isspace() or ch in ":,/?&#" for ch in name))


def range_problem(knob: Knob, value: float, shown: str) -> str | None:
    """The one range check of a number, in Settings' unit (an MS knob's bounds are scaled to
    seconds, not its value to milliseconds); ``shown`` is the value as the problem line shows
    it: as written in the environment when parsing, else as the environment would write it."""
    low = None if knob.low is None else knob.low / knob.scale
    high = None if knob.high is None else knob.high / knob.scale
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    return (f"{knob.env}={shown} is out of range; expected a whole number from {knob.low} to "
            f"{knob.high}{knob.unit}")


def out_of_range(knobs: Iterable[Knob], values: Mapping[str, Any]) -> list[str]:
    """Each number within its knob's range, each choice among its choices, for a Settings
    however it was built (parsing checks what it reads on the way in, with the same lines)."""
    problems = []
    for knob in knobs:
        value = values.get(knob.attr)
        problem = None
        if knob.kind in (Kind.INT, Kind.MS):
            if not isinstance(value, int | float) or isinstance(value, bool) or not (
                    math.isfinite(value)) or (knob.kind is Kind.INT and not isinstance(value, int)):
                problem = (f"{knob.env}={value!r} is not a number; expected a whole number from "
                           f"{knob.low} to {knob.high}{knob.unit}")
            else:
                problem = range_problem(knob, value, knob.shown(value))
        elif knob.kind is Kind.CHOICE and value not in (*knob.choices, knob.default):
            problem = (f"{knob.env}={value!r} is not accepted; expected one of "
                       + ", ".join(knob.choices))
        if problem:
            problems.append(problem)
    return problems


def _too_short(knob: Knob, value: Any) -> str | None:
    if not (knob.min_chars and value and len(value) < knob.min_chars):
        return None
    if value == knob.placeholder:
        return None  # said once, as the placeholder it is
    count = f"{len(value)} character" + ("s" if len(value) > 1 else "")
    return (f"{knob.env} is {count} long; expected at least {knob.min_chars} "
            f"({knob.min_chars_why})")


def _below(knob: Knob, value: Any, other: Knob, floor: Any) -> str | None:
    if not (isinstance(value, float) and isinstance(floor, float) and value < floor):
        return None
    return (f"{knob.env}={knob.shown(value)} is below {other.env}={other.shown(floor)}; "
            f"expected {knob.at_least_note}")


def between_fields(knobs: Sequence[Knob], values: Mapping[str, Any]) -> list[str]:
    """The rules between fields, on parsed values, as the knobs declare them (a minimum length,
    "at least that other knob") and the few no knob can say alone. Settings checks them when
    it is built; and from_mapping checks them over whatever did parse when something did not,
    so that one run shows every problem at once."""
    by_attr = {knob.attr: knob for knob in knobs}
    problems: list[str] = []
    if values.get("queue") is not None and not queue_name_ok(values["queue"]):
        problems.append(f"{by_attr['queue'].env}={values['queue']!r} is not a queue name; "
                        "expected a non-empty name without spaces, ':' or ','")
    for knob in knobs:
        value = values.get(knob.attr)
        problem = _too_short(knob, value)
        if knob.at_least:
            other = by_attr[knob.at_least]
            problem = problem or _below(knob, value, other, values.get(other.attr))
        if problem:
            problems.append(problem)
    health_host = values.get("health_host")
    if health_host is not None and not host_ok(health_host):
        # An empty host would bind every interface: the opposite of the safe default.
        problems.append(f"{by_attr['health_host'].env}={health_host!r} is not an address; "
                        "expected an IP address or host name, e.g. 127.0.0.1 (default) or "
                        "0.0.0.0")
    return problems + _supabase_url_path(by_attr, values) + _plain_http(by_attr, values)


def _plain_http(by_attr: Mapping[str, Knob], values: Mapping[str, Any]) -> list[str]:
    """Credentials never travel in clear to a host that is not loopback, unless allowed."""
    if values.get("allow_insecure_http") is not False:
        return []
    override = by_attr["endpoint_override"]
    runner = [(override, values.get("endpoint_override") or "")]
    if not runner[0][1]:  # the derived URL is used only without an override
        runner = [(by_attr["supabase_url"], values.get("supabase_url") or "")]
    webhook, jobs = by_attr["alert_webhook_url"], by_attr["jobs_url"]
    problems = []
    for knob, url in [*runner, (webhook, values.get("alert_webhook_url") or ""),
                      (jobs, values.get("jobs_url") or "")]:
        parts = urlsplit(url)
        if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
            shown = "(hidden)" if knob.secret else repr(redact_url(url))
            problems.append(f"{knob.env}={shown} uses plain http to a host that is not "
                            "loopback (its credentials would travel in clear); use https, or "
                            f"set {by_attr['allow_insecure_http'].env}=1")
    return problems


def _supabase_url_path(by_attr: Mapping[str, Knob], values: Mapping[str, Any]) -> list[str]:
    """The project URL without a path: the pump adds /functions/v1/ai-job-runner itself, so a
    path would make it call .../ai-job-runner/functions/v1/ai-job-runner and retry a 404
    forever. Unused (and unchecked) when a full runner URL overrides it."""
    url = values.get("supabase_url") or ""
    if not url or values.get("endpoint_override"):
        return []
    path = urlsplit(url).path
    if not path.strip("/"):
        return []
    return [f"{by_attr['supabase_url'].env}={redact_url(url)!r} has a path ({path!r}); expected "
            "the project URL only, e.g. https://<project>.supabase.co (the pump adds "
            "/functions/v1/ai-job-runner), or a full runner URL in "
            f"{by_attr['endpoint_override'].env}"]
