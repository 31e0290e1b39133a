"""Settings: the one table of settings. Each field is declared once, with ``setting()``: its
type here, its variable, kind, default, help and range in its knob. Parsing (environment.py),
``--help``, ``.env.example`` and the README table are derived from it; the order of the fields
is the order of all of them.

Built once from the environment (config.from_mapping) and validated at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .knobs import (
    DAY_MS,
    HOUR_MS,
    MIB,
    MIN_ADMIN_TOKEN,
    MIN_SECRET_CHARS,
    MIN_TOKEN_CHARS,
    MIN_WAKE_TOKEN,
    Kind,
    Knob,
    knobs_of,
    setting,
)
from .rules import ConfigError, between_fields, out_of_range
from .urls import redact_url

# Masked everywhere, a short secret would garble every log line and so show itself.
SHORT_SECRET = "a value that short is no secret, and masking it would garble every log line"
# The kit's functions refuse a shorter AGENT_TOKEN at their start: refused here first.
SHORT_TOKEN = "a shared secret that short can be guessed; the kit's functions refuse it too"

# The family of variables the pump reads; and the names in it that are no setting of the pump:
# the reference runner's own (its prefix), and those the tests and CI read.
PREFIX = "QUEUE_PUMP_"
NOT_SETTINGS_PREFIXES = (f"{PREFIX}RUNNER_",)
NOT_SETTINGS = frozenset({f"{PREFIX}DENO", f"{PREFIX}REQUIRE_KIT", f"{PREFIX}PG_BIN",
                          f"{PREFIX}REQUIRE_BROWSER", f"{PREFIX}SCREENSHOTS"})


@dataclass(frozen=True)
class Settings:
    """The pump's whole configuration. Secrets are kept out of repr()."""

    supabase_url: str = setting(
        "SUPABASE_URL", Kind.URL, None,
        "Project URL; the runner is {SUPABASE_URL}/functions/v1/ai-job-runner. "
        "Not needed when QUEUE_PUMP_ENDPOINT is set.", required=True,
        placeholder="https://your-project.supabase.co")
    agent_token: str = setting(
        "AGENT_TOKEN", Kind.SECRET, None,
        f"Sent as X-Agent-Token on every call; at least {MIN_TOKEN_CHARS} characters, as "
        "the kit's functions want (e.g. openssl rand -hex 32).",
        required=True, header=True, placeholder="change-me", min_chars=MIN_TOKEN_CHARS,
        min_chars_why=SHORT_TOKEN)
    organization_id: str = setting(
        "ORGANIZATION_ID", Kind.STR, None,
        "Sent as X-Organization-Id on every call.", required=True, header=True,
        placeholder="your-organization-id")
    anon_key: str = setting(
        "SUPABASE_ANON_KEY", Kind.SECRET, "",
        "When set, also sent as Authorization: Bearer and apikey (for JWT-verifying "
        f"functions); at least {MIN_SECRET_CHARS} characters.", header=True,
        min_chars=MIN_SECRET_CHARS, min_chars_why=SHORT_SECRET)
    # For people, not pumps: the operator commands' credential (docs/OPERATIONS.md).
    admin_token: str = setting(
        "ADMIN_TOKEN", Kind.SECRET, "",
        "The operator's token: queue-pump jobs and top send it as X-Admin-Token. For people, "
        "never for pumps: the operator API (the kit's jobs function, the reference runner) "
        f"refuses AGENT_TOKEN there; at least {MIN_ADMIN_TOKEN} characters.",
        header=True, min_chars=MIN_ADMIN_TOKEN,
        min_chars_why="it can cancel and purge jobs: it must not be guessable")
    jobs_url: str = setting(
        "QUEUE_PUMP_JOBS_URL", Kind.URL, "",
        "The operator API for queue-pump jobs and top; default "
        "{SUPABASE_URL}/functions/v1/jobs.")
    dashboard_password: str = setting(
        "QUEUE_PUMP_DASHBOARD_PASSWORD", Kind.SECRET, "",
        "The login secret of queue-pump dashboard: needed to serve it on any address but "
        f"loopback, and asked for on loopback too when set; at least {MIN_ADMIN_TOKEN} "
        "characters.",
        min_chars=MIN_ADMIN_TOKEN,
        min_chars_why="it opens a page that can cancel and retry jobs: it must not be guessable")
    endpoint_override: str = setting(
        "QUEUE_PUMP_ENDPOINT", Kind.URL, "",
        "Full runner URL, overrides the one derived from SUPABASE_URL (non-Supabase runners).")
    queue: str = setting(
        "QUEUE_PUMP_QUEUE", Kind.STR, "agent",
        "Queue name, sent in the query (queue=) and the body.")
    concurrency: int = setting(
        "QUEUE_PUMP_CONCURRENCY", Kind.INT, "1",
        "Loops calling the runner at once, sharing one connection pool; while the queue is "
        "idle only one of them polls it.", low=1, high=256)
    queues: str = setting(
        "QUEUE_PUMP_QUEUES", Kind.STR, "",
        "Several queues from one process: name:concurrency,... (e.g. agent:2,render:1). "
        "Replaces QUEUE_PUMP_QUEUE and QUEUE_PUMP_CONCURRENCY.")
    idle_sleep_s: float = setting(
        "QUEUE_PUMP_IDLE_SLEEP_MS", Kind.MS, "10000",
        "Sleep after an idle answer (about +-10% jitter). Per queue: while a queue is idle, "
        "one of its loops polls at this pace and the others wait for work.", low=100,
        high=DAY_MS)
    idle_max_sleep_s: float = setting(
        "QUEUE_PUMP_IDLE_MAX_SLEEP_MS", Kind.MS, "",
        "Adaptive idle: each idle answer in a row doubles the idle sleep up to this; a "
        "processed job snaps back. Default: the idle sleep (off).", low=100, high=DAY_MS,
        optional=True, at_least="idle_sleep_s",
        at_least_note="max >= the idle sleep (or unset: adaptive idle off)")
    tick_sleep_s: float = setting(
        "QUEUE_PUMP_TICK_SLEEP_MS", Kind.MS, "250",
        "Sleep after a processed job.", low=0, high=HOUR_MS)
    http_timeout_s: float = setting(
        "QUEUE_PUMP_HTTP_TIMEOUT_MS", Kind.MS, "1800000",
        "Longest a single call may take, start to last byte.", low=1000, high=DAY_MS)
    connect_timeout_s: float = setting(
        "QUEUE_PUMP_CONNECT_TIMEOUT_MS", Kind.MS, "10000",
        "Longest the TCP/TLS connect may take.", low=100, high=HOUR_MS)
    log_every: int = setting(
        "QUEUE_PUMP_LOG_EVERY", Kind.INT, "10",
        "Log a progress line every N processed jobs (0: only yielded jobs).", low=0,
        high=1_000_000)
    backoff_base_s: float = setting(
        "QUEUE_PUMP_BACKOFF_BASE_MS", Kind.MS, "1000",
        "First retry delay bound after a failed call; doubles per failure (full jitter).",
        low=1, high=HOUR_MS)
    backoff_max_s: float = setting(
        "QUEUE_PUMP_BACKOFF_MAX_MS", Kind.MS, "60000",
        "Cap of the retry delay; also the delay after 401/403/404.", low=1, high=HOUR_MS,
        at_least="backoff_base_s", at_least_note="max >= base")
    shutdown_grace_s: float = setting(
        "QUEUE_PUMP_SHUTDOWN_GRACE_MS", Kind.MS, "30000",
        "On SIGTERM/SIGINT, how long calls in flight may take to finish.", low=0, high=HOUR_MS)
    max_response_bytes: int = setting(
        "QUEUE_PUMP_MAX_RESPONSE_BYTES", Kind.INT, str(MIB),
        "Largest runner answer read; a larger one is an error (never buffered).",
        low=1024, high=256 * MIB)
    http_transport: str = setting(
        "QUEUE_PUMP_HTTP_TRANSPORT", Kind.CHOICE, "aiohttp",
        "What carries the calls under the httpx API: httpx (its own pool) or aiohttp.",
        choices=("httpx", "aiohttp"))
    log_format: str = setting(
        "QUEUE_PUMP_LOG_FORMAT", Kind.CHOICE, "",
        "json or console; default json when stdout is not a terminal.",
        choices=("json", "console"))
    log_level: str = setting(
        "QUEUE_PUMP_LOG_LEVEL", Kind.CHOICE, "info", "Lowest level logged.",
        choices=("debug", "info", "warning", "error"))
    worker_id: str = setting(
        "QUEUE_PUMP_WORKER_ID", Kind.STR, "",
        "Sent as X-Worker-Id so a runner can tell pumps apart; default the hostname.",
        header=True)
    allow_insecure_http: bool = setting(
        "QUEUE_PUMP_ALLOW_INSECURE_HTTP", Kind.BOOL, "0",
        "Allow plain http:// to a host that is not loopback (the token travels in clear).")
    health_host: str = setting(
        "QUEUE_PUMP_HEALTH_HOST", Kind.STR, "127.0.0.1",
        "Address of the health endpoint (/healthz /readyz /metrics); 0.0.0.0 in a container.")
    health_port: int = setting(
        "QUEUE_PUMP_HEALTH_PORT", Kind.INT, "8080",
        "Port of the health endpoint; 0 turns it off.", low=0, high=65535)
    wake_token: str = setting(
        "QUEUE_PUMP_WAKE_TOKEN", Kind.SECRET, "",
        "Enables POST /wake on the health endpoint for callers sending it as a bearer token "
        f"(at least {MIN_WAKE_TOKEN} characters); wakes idle loops at once. SIGUSR1 wakes "
        "them with or without it.", header=True, min_chars=MIN_WAKE_TOKEN,
        min_chars_why="anyone who guesses it can wake the pump")
    max_calls_per_hour: int = setting(
        "QUEUE_PUMP_MAX_CALLS_PER_HOUR", Kind.INT, "0",
        "Cap on all runner calls (a token bucket shared by every loop; work is paced, never "
        "dropped). 0: no cap.", low=0, high=100_000_000)
    schedules: str = setting(
        "QUEUE_PUMP_SCHEDULES", Kind.STR, "",
        "A TOML file of cron entries to enqueue (see docs/SCHEDULES.md).")
    # Secret: a Slack-style webhook URL carries its credential in the path.
    alert_webhook_url: str = setting(
        "QUEUE_PUMP_ALERT_WEBHOOK_URL", Kind.URL, "",
        "Receives one JSON POST when a failure streak reaches ALERT_AFTER, one on recovery.",
        secret=True)
    alert_after: int = setting(
        "QUEUE_PUMP_ALERT_AFTER", Kind.INT, "10",
        "Consecutive failed calls that make an outage.", low=1, high=1_000_000)
    # Derived at construction: (queue, concurrency) for every queue pumped. No knob.
    lanes: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        values = vars(self)
        problems = out_of_range(KNOBS, values) + between_fields(KNOBS, values)
        if problems:
            raise ConfigError(problems)

    @property
    def total_concurrency(self) -> int:
        return sum(n for _, n in self.lanes)

    @property
    def endpoint(self) -> str:
        """The runner URL without its query; the client adds worker=1&queue=<queue>."""
        if self.endpoint_override:
            return self.endpoint_override
        return self.supabase_url.rstrip("/") + "/functions/v1/ai-job-runner"

    def __repr__(self) -> str:
        # The dataclass repr would show URL credentials; this one shows what the logs show.
        return f"Settings({self.public_view()!r})"

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for the log redactor; empty ones are no secret."""
        values = [getattr(self, knob.attr) for knob in KNOBS if knob.secret]
        values += [urlsplit(u).password for u in (self.supabase_url, self.endpoint_override)]
        return tuple(v for v in values if v)

    def public_view(self) -> dict[str, Any]:
        """The effective configuration with secrets masked, for the start line and /healthz."""
        view: dict[str, Any] = {}
        for knob in KNOBS:
            value = getattr(self, knob.attr)
            if knob.secret:
                value = "***" if value else ""
            elif knob.kind is Kind.URL and value:
                value = redact_url(value)
            elif knob.kind is Kind.MS:
                value = round(value * knob.scale)
            view[knob.view_name] = value
        view["endpoint"] = redact_url(self.endpoint)
        view["lanes"] = {queue: n for queue, n in self.lanes}
        return view


KNOBS: tuple[Knob, ...] = knobs_of(Settings)
KNOBS_BY_ENV = {k.env: k for k in KNOBS}
KNOBS_BY_ATTR = {k.attr: k for k in KNOBS}


def env_of(attr: str) -> str:
    """The variable of a Settings field, as the table declares it: every line that names a
    variable (a problem, a hint, a help text) takes it from here, never writes it again."""
    return KNOBS_BY_ATTR[attr].env


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
           "# Generated from queue_pump/config/settings.py "
           "(python -m queue_pump config --env-example).",
           ""]
    for knob in KNOBS:
        out.append(f"# {knob.help}")
        if knob.required:
            out.append(f"{knob.env}={knob.placeholder}")
        else:
            out.append(f"# {knob.env}={knob.default or ''}")
        out.append("")
    return "\n".join(out)
