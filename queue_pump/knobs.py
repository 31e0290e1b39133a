"""Every setting, declared once: its variable, attribute, kind, default, help and range.

Parsing (config.py), ``--help``, ``.env.example`` and the README table are all derived from this
table, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MIB = 1024 * 1024


class Kind(StrEnum):
    """How a value is written in the environment, and so how it is parsed (config.py)."""

    MS = "ms"  # whole milliseconds in the environment; seconds (float) in Settings
    INT = "int"
    BOOL = "bool"
    STR = "str"
    CHOICE = "choice"
    URL = "url"
    SECRET = "secret"


@dataclass(frozen=True)
class Knob:
    env: str
    attr: str  # the Settings field; an MS knob's ends in _s: the loop works in seconds
    kind: Kind
    default: str | None
    help: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    optional: bool = False  # empty means "not set" (None), resolved after parsing

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET or self.attr in SECRET_ATTRS

    @property
    def view_name(self) -> str:
        """The name in `queue-pump config` and the start line: the unit the user wrote."""
        return self.attr.removesuffix("_s") + "_ms" if self.kind is Kind.MS else self.attr


# Values that must never reach any output: the webhook URL is in the list because Slack-style
# webhook URLs carry their credential in the path.
SECRET_ATTRS = frozenset({"agent_token", "anon_key", "alert_webhook_url", "wake_token"})
MAX_TOTAL_CONCURRENCY = 256
MIN_WAKE_TOKEN = 16
# Every secret is masked wherever it appears in a log line: a one-letter token would turn
# "call_failed" into "call_fail***d" and so show the token. Shorter than this is no secret.
MIN_SECRET_CHARS = 8
MAX_HEADER_CHARS = 4096

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

KNOBS: tuple[Knob, ...] = (
    Knob("SUPABASE_URL", "supabase_url", Kind.URL, None,
         "Project URL; the runner is {SUPABASE_URL}/functions/v1/ai-job-runner. "
         "Not needed when QUEUE_PUMP_ENDPOINT is set.", required=True),
    Knob("AGENT_TOKEN", "agent_token", Kind.SECRET, None,
         f"Sent as X-Agent-Token on every call; at least {MIN_SECRET_CHARS} characters.",
         required=True),
    Knob("ORGANIZATION_ID", "organization_id", Kind.STR, None,
         "Sent as X-Organization-Id on every call.", required=True),
    Knob("SUPABASE_ANON_KEY", "anon_key", Kind.SECRET, "",
         "When set, also sent as Authorization: Bearer and apikey (for JWT-verifying "
         f"functions); at least {MIN_SECRET_CHARS} characters."),
    Knob("QUEUE_PUMP_ENDPOINT", "endpoint_override", Kind.URL, "",
         "Full runner URL, overrides the one derived from SUPABASE_URL (non-Supabase runners)."),
    Knob("QUEUE_PUMP_QUEUE", "queue", Kind.STR, "agent",
         "Queue name, sent in the query (queue=) and the body."),
    Knob("QUEUE_PUMP_CONCURRENCY", "concurrency", Kind.INT, "1",
         "Loops calling the runner at once, sharing one connection pool.", low=1, high=256),
    Knob("QUEUE_PUMP_QUEUES", "queues", Kind.STR, "",
         "Several queues from one process: name:concurrency,... (e.g. agent:2,render:1). "
         "Replaces QUEUE_PUMP_QUEUE and QUEUE_PUMP_CONCURRENCY."),
    Knob("QUEUE_PUMP_IDLE_SLEEP_MS", "idle_sleep_s", Kind.MS, "10000",
         "Sleep after an idle answer (about +-10% jitter).", low=100, high=DAY_MS),
    Knob("QUEUE_PUMP_IDLE_MAX_SLEEP_MS", "idle_max_sleep_s", Kind.MS, "",
         "Adaptive idle: each idle answer in a row doubles the idle sleep up to this; a "
         "processed job snaps back. Default: the idle sleep (off).", low=100, high=DAY_MS,
         optional=True),
    Knob("QUEUE_PUMP_TICK_SLEEP_MS", "tick_sleep_s", Kind.MS, "250",
         "Sleep after a processed job.", low=0, high=HOUR_MS),
    Knob("QUEUE_PUMP_HTTP_TIMEOUT_MS", "http_timeout_s", Kind.MS, "1800000",
         "Longest a single call may take, start to last byte.", low=1000, high=DAY_MS),
    Knob("QUEUE_PUMP_CONNECT_TIMEOUT_MS", "connect_timeout_s", Kind.MS, "10000",
         "Longest the TCP/TLS connect may take.", low=100, high=HOUR_MS),
    Knob("QUEUE_PUMP_LOG_EVERY", "log_every", Kind.INT, "10",
         "Log a progress line every N processed jobs (0: only yielded jobs).", low=0,
         high=1_000_000),
    Knob("QUEUE_PUMP_BACKOFF_BASE_MS", "backoff_base_s", Kind.MS, "1000",
         "First retry delay bound after a failed call; doubles per failure (full jitter).",
         low=1, high=HOUR_MS),
    Knob("QUEUE_PUMP_BACKOFF_MAX_MS", "backoff_max_s", Kind.MS, "60000",
         "Cap of the retry delay; also the delay after 401/403/404.", low=1, high=HOUR_MS),
    Knob("QUEUE_PUMP_SHUTDOWN_GRACE_MS", "shutdown_grace_s", Kind.MS, "30000",
         "On SIGTERM/SIGINT, how long calls in flight may take to finish.", low=0, high=HOUR_MS),
    Knob("QUEUE_PUMP_MAX_RESPONSE_BYTES", "max_response_bytes", Kind.INT, str(MIB),
         "Largest runner answer read; a larger one is an error (never buffered).",
         low=1024, high=256 * MIB),
    Knob("QUEUE_PUMP_HTTP_TRANSPORT", "http_transport", Kind.CHOICE, "aiohttp",
         "What carries the calls under the httpx API: httpx (its own pool) or aiohttp "
         "(httpx-aiohttp).", choices=("httpx", "aiohttp")),
    Knob("QUEUE_PUMP_LOG_FORMAT", "log_format", Kind.CHOICE, "",
         "json or console; default json when stdout is not a terminal.",
         choices=("json", "console")),
    Knob("QUEUE_PUMP_LOG_LEVEL", "log_level", Kind.CHOICE, "info", "Lowest level logged.",
         choices=("debug", "info", "warning", "error")),
    Knob("QUEUE_PUMP_WORKER_ID", "worker_id", Kind.STR, "",
         "Sent as X-Worker-Id so a runner can tell pumps apart; default the hostname."),
    Knob("QUEUE_PUMP_ALLOW_INSECURE_HTTP", "allow_insecure_http", Kind.BOOL, "0",
         "Allow plain http:// to a host that is not loopback (the token travels in clear)."),
    Knob("QUEUE_PUMP_HEALTH_HOST", "health_host", Kind.STR, "127.0.0.1",
         "Address of the health endpoint (/healthz /readyz /metrics); 0.0.0.0 in a container."),
    Knob("QUEUE_PUMP_HEALTH_PORT", "health_port", Kind.INT, "8080",
         "Port of the health endpoint; 0 turns it off.", low=0, high=65535),
    Knob("QUEUE_PUMP_WAKE_TOKEN", "wake_token", Kind.SECRET, "",
         "Enables POST /wake on the health endpoint for callers sending it as a bearer token "
         f"(at least {MIN_WAKE_TOKEN} characters); wakes idle loops at once. SIGUSR1 wakes "
         "them with or without it."),
    Knob("QUEUE_PUMP_MAX_CALLS_PER_HOUR", "max_calls_per_hour", Kind.INT, "0",
         "Cap on all runner calls (a token bucket shared by every loop; work is paced, never "
         "dropped). 0: no cap.", low=0, high=100_000_000),
    Knob("QUEUE_PUMP_SCHEDULES", "schedules", Kind.STR, "",
         "A TOML file of cron entries to enqueue (see docs/SCHEDULES.md)."),
    Knob("QUEUE_PUMP_ALERT_WEBHOOK_URL", "alert_webhook_url", Kind.URL, "",
         "Receives one JSON POST when a failure streak reaches ALERT_AFTER, one on recovery."),
    Knob("QUEUE_PUMP_ALERT_AFTER", "alert_after", Kind.INT, "10",
         "Consecutive failed calls that make an outage.", low=1, high=1_000_000),
)

KNOBS_BY_ENV = {k.env: k for k in KNOBS}

# What .env.example ships with: a pump started on these would call nobody's runner.
PLACEHOLDERS = {"SUPABASE_URL": "https://your-project.supabase.co", "AGENT_TOKEN": "change-me",
                "ORGANIZATION_ID": "your-organization-id"}

# Values that travel as HTTP headers on every call.
HEADER_KNOBS = frozenset({"AGENT_TOKEN", "ORGANIZATION_ID", "SUPABASE_ANON_KEY",
                          "QUEUE_PUMP_WORKER_ID", "QUEUE_PUMP_WAKE_TOKEN"})


def describe_knobs(width: int = 80) -> str:
    """The variables table for --help: each variable and its default on a line, its help
    wrapped below, so no line is wider than ``width``."""
    import textwrap

    lines = []
    for knob in KNOBS:
        default = "(required)" if knob.required else f"(default: {knob.default or 'empty'})"
        lines.append(f"  {knob.env}  {default}")
        lines += textwrap.wrap(knob.help, width=max(width, 40), initial_indent="      ",
                               subsequent_indent="      ")
    return "\n".join(lines)


def env_example() -> str:
    """The text of .env.example; a test keeps the committed file equal to this."""
    out = ["# queue-pump configuration. Copy to .env; the real environment wins over this file.",
           "# Generated from queue_pump/knobs.py (python -m queue_pump config --env-example).", ""]
    for knob in KNOBS:
        out.append(f"# {knob.help}")
        if knob.required:
            out.append(f"{knob.env}={PLACEHOLDERS[knob.env]}")
        else:
            out.append(f"# {knob.env}={knob.default or ''}")
        out.append("")
    return "\n".join(out)
