"""``queue-pump runner``: serve the reference runner until SIGTERM/SIGINT.

Every flag can also come from the environment (``QUEUE_PUMP_RUNNER_<FLAG>``, e.g.
``QUEUE_PUMP_RUNNER_ERROR_RATE=0.2``); a flag given on the command line wins. Values are checked
here rather than by argparse so that every bad value, from a flag or the environment, gets the
same single line and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import signal
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .app import DEFAULT_DRAIN_TIMEOUT_S, check_admin_token
from .faults import MAX_STALL_S, Faults, FaultsError
from .server import RunningRunner, start_runner
from .store import DEFAULT_LEASE_S, DEFAULT_QUEUE, JobSpec

PROG = "queue-pump runner"
ENV_PREFIX = "QUEUE_PUMP_RUNNER_"


class UsageError(ValueError):
    pass


def _number(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise UsageError(f"{name} must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{name} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise UsageError(f"{name} must be between {low} and {high}, got {text}")
        return value

    return parse


def _text(name: str, text: str) -> str:
    if not text.strip():
        raise UsageError(f"{name} must not be empty")
    return text


@dataclass(frozen=True)
class _Option:
    flag: str
    default: str | None
    parse: Callable[[str, str], Any]
    help: str
    metavar: str = "N"

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


_RATE = _number(0.0, 1.0)

OPTIONS: tuple[_Option, ...] = (
    _Option("--host", "127.0.0.1", _text, "Address to listen on.", "HOST"),
    _Option("--port", "8000", _integer(0, 65535), "Port to listen on; 0 picks a free one."),
    _Option("--db", "queue-pump-runner.sqlite3", _text,
            "SQLite file holding the jobs (':memory:' for a throwaway store). Several runners "
            "may share one file.", "PATH"),
    _Option("--lease-s", str(DEFAULT_LEASE_S), _number(0.001, 7 * 86_400.0),
            "A job running for longer is presumed abandoned by a dead runner and requeued; "
            "must exceed the longest run.", "S"),
    _Option("--drain-timeout-s", str(DEFAULT_DRAIN_TIMEOUT_S), _number(0.0, 86_400.0),
            "On SIGTERM/SIGINT, how long runs in flight may take to finish before their jobs are "
            "given back to the queue.", "S"),
    _Option("--error-rate", "0", _RATE, "Share of runner calls answered with --error-status.",
            "P"),
    _Option("--error-status", "503", _integer(400, 599), "Status of injected errors.", "CODE"),
    _Option("--retry-after-s", None, _number(0.0, 86_400.0),
            "Retry-After sent with injected errors and 429s (429s default to 1); rounded up "
            "to whole seconds.", "S"),
    _Option("--rate-limit-rate", "0", _RATE, "Share of runner calls answered 429.", "P"),
    _Option("--stall-rate", "0", _RATE,
            "Share of runner calls that hang --stall-s then answer 504.", "P"),
    _Option("--stall-s", "30", _number(0.0, MAX_STALL_S), "How long a stalled call hangs.", "S"),
    _Option("--drop-rate", "0", _RATE,
            "Share of runner calls whose connection is dropped without an answer.", "P"),
    _Option("--seed", None, _integer(-(2**63), 2**63 - 1),
            "Seed for faults and payload fail_rate, for reproducible runs."),
    _Option("--seed-jobs", "0", _integer(0, 1_000_000), "Enqueue N demo jobs at start."),
    _Option("--seed-queue", DEFAULT_QUEUE, _text, "Queue of the demo jobs.", "QUEUE"),
    _Option("--seed-duration-ms", "100", _number(0.0, 3_600_000.0),
            "How long each demo job runs.", "MS"),
)


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    db: str
    lease_s: float
    drain_timeout_s: float
    faults: Faults
    seed: int | None
    seed_jobs: int
    seed_queue: str
    seed_duration_ms: float
    access_log: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        default = "unset" if opt.default is None else opt.default
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help} (default {default}; env {opt.env})",
        )
    parser.add_argument(
        "--access-log", action="store_true", help="Log every request (to stderr)."
    )
    add_env_file_argument(parser)


def add_env_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-file", metavar="PATH", default=None,
                        help="read this file instead of ./.env (the real environment wins)")


def with_env_file(env_file: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment over the .env file, read as the pump reads it (python-dotenv; ./.env
    when it exists, a named file must exist): one .env serves the runner and the pump."""
    path = Path(env_file) if env_file else Path(".env")
    if env_file and not path.is_file():
        raise UsageError(f"--env-file {env_file!r} does not exist or is not a file")
    merged: dict[str, str] = {}
    if path.is_file():
        try:
            values = dotenv_values(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--env-file {str(path)!r} cannot be read: "
                             f"{exc.__class__.__name__}") from None
        merged.update({k: v for k, v in values.items() if v is not None})
    merged.update(environ)
    return merged


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Flags, then the environment, then defaults; raises UsageError with one line."""
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = getattr(args, opt.dest, None)
        name = opt.flag
        if raw is None and environ.get(opt.env, "") != "":
            raw, name = environ[opt.env], opt.env
        if raw is None:
            raw = opt.default
        values[opt.dest] = None if raw is None else opt.parse(name, str(raw))
    if values["seed_duration_ms"] >= values["lease_s"] * 1000:
        raise UsageError("--seed-duration-ms must be shorter than --lease-s")
    try:
        faults = Faults(
            error_rate=values["error_rate"],
            error_status=values["error_status"],
            retry_after_s=values["retry_after_s"],
            rate_limit_rate=values["rate_limit_rate"],
            stall_rate=values["stall_rate"],
            stall_s=values["stall_s"],
            drop_rate=values["drop_rate"],
        )
    except FaultsError as exc:
        raise UsageError(f"fault flags: {exc}") from None
    return Settings(
        host=values["host"],
        port=values["port"],
        db=values["db"],
        lease_s=values["lease_s"],
        drain_timeout_s=values["drain_timeout_s"],
        faults=faults,
        seed=values["seed"],
        seed_jobs=values["seed_jobs"],
        seed_queue=values["seed_queue"],
        seed_duration_ms=values["seed_duration_ms"],
        access_log=bool(getattr(args, "access_log", False)),
    )


def start_hint(host: str, port: int) -> str:
    """What to do next, on the start line: the pump's setting and an enqueue that reads the
    same .env. Names the variables, never their values."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a wildcard listens on loopback too
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    return (f"  give the pump SUPABASE_URL={base} (and the same AGENT_TOKEN and ORGANIZATION_ID)\n"
            f"  enqueue a job: python -m queue_pump.reference_runner enqueue demo --url {base}\n"
            f"  see and steer jobs: queue-pump jobs ls (SUPABASE_URL={base}, ADMIN_TOKEN and "
            "ORGANIZATION_ID)")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the reference runner until SIGTERM/SIGINT; 0 after a graceful stop, 2 on bad
    configuration, 1 when it cannot start (port taken, database unopenable)."""
    try:
        environ = with_env_file(getattr(args, "env_file", None), environ)
    except UsageError as exc:
        _say(f"{PROG}: {exc}")
        return 2
    for var, what in (
        ("AGENT_TOKEN", "the token callers must send as X-Agent-Token"),
        ("ORGANIZATION_ID", "the id callers must send as X-Organization-Id"),
    ):
        if not environ.get(var, "").strip():
            _say(f"{PROG}: {var} is not set ({what})")
            return 2
    try:
        settings = resolve(args, environ)
    except UsageError as exc:
        _say(f"{PROG}: {exc}")
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    admin = environ.get("ADMIN_TOKEN", "").strip() or None
    try:
        check_admin_token(admin, environ["AGENT_TOKEN"])
    except ValueError as exc:
        _say(f"{PROG}: {exc}")
        return 2
    others = tuple(o.strip() for o in environ.get("ALLOWED_ORGANIZATION_IDS", "").split(",")
                   if o.strip())
    return asyncio.run(_serve(settings, environ["AGENT_TOKEN"], environ["ORGANIZATION_ID"],
                              admin, others))


async def _serve(settings: Settings, token: str, organization_id: str,
                 admin_token: str | None = None, others: tuple[str, ...] = ()) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    running: RunningRunner | None = None
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        stop.set()
        # A second signal means "now": runs in flight give their jobs back instead of finishing.
        if signals_seen > 1 and running is not None:
            running.abort_runs()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        try:
            running = await start_runner(
                host=settings.host,
                port=settings.port,
                db=settings.db,
                token=token,
                organization_id=organization_id,
                admin_token=admin_token,
                allowed_organizations=others,
                faults=settings.faults,
                rng=random.Random(settings.seed),
                lease_s=settings.lease_s,
                drain_timeout_s=settings.drain_timeout_s,
                access_log=settings.access_log,
            )
        except OSError as exc:
            _say(f"{PROG}: cannot listen on {settings.host}:{settings.port}: "
                 f"{exc.strerror or exc}")
            return 1
        except sqlite3.Error as exc:
            _say(f"{PROG}: cannot open database {settings.db}: {exc}")
            return 1
        if settings.seed_jobs:
            spec = JobSpec("demo", {"duration_ms": settings.seed_duration_ms},
                           queue=settings.seed_queue)
            running.store.enqueue_many([spec] * settings.seed_jobs)
        _say(f"runner listening on {running.url} db={settings.db}"
             + ("" if admin_token else "; operator API off (no ADMIN_TOKEN)"))
        _say(start_hint(settings.host, running.port))
        await stop.wait()
        await running.close()
        calls = running.counters
        _say(
            f"runner stopped: {calls.total} calls, {calls.processed} processed, "
            f"{calls.idle} idle, {calls.faulted} faulted, {calls.unauthorized} unauthorized"
        )
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
