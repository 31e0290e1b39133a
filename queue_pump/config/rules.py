"""The rules a Settings is held to whatever built it, checked on parsed values: each number in
its knob's range, each choice among its choices, and the rules between fields. Also the error
that lists every breach, one line each."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .knobs import MIN_SECRET_CHARS, MIN_WAKE_TOKEN, Kind, Knob
from .urls import host_ok, is_loopback_host, redact_url


class ConfigError(Exception):
    """Every problem found in the configuration, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def as_ms(seconds: float) -> int:
    """A duration as the environment writes it: whole milliseconds."""
    return round(seconds * 1000)


def queue_name_ok(name: str) -> bool:
    return (bool(name) and name.isprintable()
            and not any(ch.isspace() or ch in ":,/?&#" for ch in name))


def out_of_range(knobs: Iterable[Knob], values: Mapping[str, Any]) -> list[str]:
    """Each number within its knob's range, each choice among its choices: what parsing checks
    on the way in, checked again on the values, so a Settings built any other way is held to
    the same rules."""
    problems = []
    for knob in knobs:
        value = values.get(knob.attr)
        if knob.kind is Kind.MS and isinstance(value, int | float) and math.isfinite(value):
            value = as_ms(value)
        if knob.kind in (Kind.INT, Kind.MS) and not (
                isinstance(value, int) and (knob.low is None or value >= knob.low)
                and (knob.high is None or value <= knob.high)):
            problems.append(f"{knob.env}={value!r} is out of range; expected a whole number from "
                            f"{knob.low} to {knob.high}")
        elif knob.kind is Kind.CHOICE and value not in (*knob.choices, knob.default):
            problems.append(f"{knob.env}={value!r} is not accepted; expected one of "
                            + ", ".join(knob.choices))
    return problems


def _short_secrets(values: Mapping[str, Any]) -> list[str]:
    problems = []
    for env_name, attr in (("AGENT_TOKEN", "agent_token"), ("SUPABASE_ANON_KEY", "anon_key")):
        value = values.get(attr)
        if value and len(value) < MIN_SECRET_CHARS:
            # Masked everywhere, a short value would garble every log line and so show itself.
            count = f"{len(value)} character" + ("s" if len(value) > 1 else "")
            problems.append(f"{env_name} is {count} long; expected at least "
                            f"{MIN_SECRET_CHARS} (a value that short is no secret, and masking "
                            "it would garble every log line)")
    return problems


def between_fields(values: Mapping[str, Any]) -> list[str]:
    """The rules between fields, on parsed values. Settings checks them when it is built; and
    from_mapping checks them over whatever did parse when something did not, so that one run
    shows every problem at once."""
    problems: list[str] = []
    if values.get("queue") is not None and not queue_name_ok(values["queue"]):
        problems.append(f"QUEUE_PUMP_QUEUE={values['queue']!r} is not a queue name; expected "
                        "a non-empty name without spaces, ':' or ','")
    idle, idle_max = values.get("idle_sleep_s"), values.get("idle_max_sleep_s")
    if isinstance(idle, float) and isinstance(idle_max, float) and idle_max < idle:
        problems.append(f"QUEUE_PUMP_IDLE_MAX_SLEEP_MS={as_ms(idle_max)} is below "
                        f"QUEUE_PUMP_IDLE_SLEEP_MS={as_ms(idle)}; expected max >= the idle sleep "
                        "(or unset: adaptive idle off)")
    health_host = values.get("health_host")
    if health_host is not None and not host_ok(health_host):
        # An empty host would bind every interface: the opposite of the safe default.
        problems.append(f"QUEUE_PUMP_HEALTH_HOST={health_host!r} is not an address; expected "
                        "an IP address or host name, e.g. 127.0.0.1 (default) or 0.0.0.0")
    problems += _short_secrets(values)
    wake = values.get("wake_token")
    if wake and len(wake) < MIN_WAKE_TOKEN:
        problems.append(f"QUEUE_PUMP_WAKE_TOKEN is {len(wake)} characters long; expected at least "
                        f"{MIN_WAKE_TOKEN} (anyone who guesses it can wake the pump)")
    base, cap = values.get("backoff_base_s"), values.get("backoff_max_s")
    if isinstance(base, float) and isinstance(cap, float) and cap < base:
        problems.append(f"QUEUE_PUMP_BACKOFF_MAX_MS={as_ms(cap)} is below "
                        f"QUEUE_PUMP_BACKOFF_BASE_MS={as_ms(base)}; expected max >= base")

    problems += _supabase_url_path(values)
    if values.get("allow_insecure_http") is False:
        runner_urls = [("QUEUE_PUMP_ENDPOINT", values.get("endpoint_override") or "")]
        if not runner_urls[0][1]:  # the derived URL is used only without an override
            runner_urls = [("SUPABASE_URL", values.get("supabase_url") or "")]
        webhook = ("QUEUE_PUMP_ALERT_WEBHOOK_URL", values.get("alert_webhook_url") or "")
        for env_name, url in [*runner_urls, webhook]:
            parts = urlsplit(url)
            if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
                shown = "(hidden)" if env_name == webhook[0] else repr(redact_url(url))
                problems.append(f"{env_name}={shown} uses plain http to a host that is not "
                                "loopback (its credentials would travel in clear); use https, or "
                                "set QUEUE_PUMP_ALLOW_INSECURE_HTTP=1")

    return problems


def _supabase_url_path(values: Mapping[str, Any]) -> list[str]:
    """SUPABASE_URL is the project URL: the pump adds /functions/v1/ai-job-runner itself, so a
    path would make it call .../ai-job-runner/functions/v1/ai-job-runner and retry a 404
    forever. Unused (and unchecked) when QUEUE_PUMP_ENDPOINT is set."""
    url = values.get("supabase_url") or ""
    if not url or values.get("endpoint_override"):
        return []
    path = urlsplit(url).path
    if not path.strip("/"):
        return []
    return [f"SUPABASE_URL={redact_url(url)!r} has a path ({path!r}); expected the project URL "
            "only, e.g. https://<project>.supabase.co (the pump adds /functions/v1/"
            "ai-job-runner), or a full runner URL in QUEUE_PUMP_ENDPOINT"]
