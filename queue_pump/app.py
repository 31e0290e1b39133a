"""The running process: wire settings to client, pump, stats, health, systemd and alerts; signals.

The one place that knows both the settings and the parts: each part gets a small frozen config
of its own, built here from Settings (the functions below ``serve``), never the whole table.
Data flows one way: the pump writes Stats; health, the watchdog and alerts only read it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from structlog.typing import FilteringBoundLogger

from . import __version__
from .config import Settings, env_of
from .exits import ExitCode, Mode
from .loop.budget import TokenBucket
from .loop.client import ClientConfig, RunnerClient
from .loop.pump import Lane, Policy, Pump
from .loop.waits import Waker, stop_or_timeout
from .observe import (
    Alerter,
    HealthServer,
    Notifier,
    Redactor,
    Stats,
    configure,
    get_logger,
    watchdog,
)
from .observe.alerts import WEBHOOK_TIMEOUT_S, AlertConfig
from .observe.health import HealthConfig
from .transport import HttpConfig, build_http_client

if TYPE_CHECKING:
    from .schedules import Schedule
    from .schedules.firing import FiringPolicy

# What stops the pump gracefully (calls in flight get the grace): SIGTERM and SIGINT, SIGHUP
# (a closed terminal, or a reload this pump does not have: its settings are read once) and
# SIGQUIT (by default Python would die at once and lose the call in flight). Not on Windows:
# only the first two exist there.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, name))


def _install_signals(stop: asyncio.Event, log: FilteringBoundLogger, notifier: Notifier,
                     grace_s: float, wake: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()

    signalled: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        # "Second" means a second signal, not a stop set by something else (a crashed loop):
        # the operator's first SIGTERM always gets the graceful path.
        signalled.append(sig)
        if len(signalled) > 1:
            # The operator asked twice: they want out now, whatever is in flight.
            log.warning("second_signal", signal=sig.name, exit_code=128 + sig.value)
            sys.stdout.flush()
            os._exit(128 + sig.value)
        log.info("shutdown_requested", signal=sig.name, grace_s=grace_s)
        notifier.send("STOPPING=1")
        stop.set()

    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # Windows: fall back to the plain handler
            signal.signal(sig, lambda signum, _frame: loop.call_soon_threadsafe(
                on_signal, signal.Signals(signum)))
    if hasattr(signal, "SIGUSR1"):  # not on Windows
        loop.add_signal_handler(signal.SIGUSR1, wake, "signal")
        # Reserved: its default would kill the pump with the call in flight lost.
        loop.add_signal_handler(signal.SIGUSR2, lambda: log.info(
            "signal_ignored", signal="SIGUSR2", hint="SIGTERM stops the pump, SIGUSR1 wakes it"))


async def serve(settings: Settings, mode: Mode, environ: Mapping[str, str],
                schedules: Sequence[Schedule] = ()) -> int:
    """The process until it stops; ``schedules`` were loaded and checked by the command line."""
    # One redactor for the process: the logs and the runner clients' errors mask the same values.
    redactor = Redactor(settings.secrets())
    configure(fmt=settings.log_format, level=settings.log_level, redactor=redactor)
    log = get_logger()
    stop = asyncio.Event()
    notifier = Notifier.from_environ(environ)
    stats = Stats()
    waker = Waker()

    def wake(source: str) -> None:
        waker.wake()
        stats.woken(source)
        log.debug("woken", source=source)

    _install_signals(stop, log, notifier, settings.shutdown_grace_s, wake)
    loop = asyncio.get_running_loop()

    def wake_from_thread() -> None:
        loop.call_soon_threadsafe(wake, "http")

    health: HealthServer | None = None
    # One-shot runs (cron) need no endpoint, and must not collide with a resident pump's port.
    if mode is Mode.FOREVER and settings.health_port:
        health = HealthServer(stats, health_config(settings), wake=wake_from_thread)
        try:
            health.start()
        except OSError as exc:
            print(f"queue-pump: config: {env_of('health_port')}={settings.health_port} cannot be "
                  f"bound on {settings.health_host} ({exc.strerror or exc}); choose a free port, "
                  "or 0 to turn the health endpoint off", file=sys.stderr)
            return int(ExitCode.CONFIG)

    alerter = start_alerter(settings, stats, log)
    budget = None
    if settings.max_calls_per_hour:
        budget = TokenBucket(settings.max_calls_per_hour, capacity=settings.total_concurrency)
        stats.call_budget(settings.max_calls_per_hour)
    http = build_http_client(http_config(settings))
    clients = [RunnerClient(http, client_config(settings, queue), redactor.scrub)
               for queue, _ in settings.lanes]
    stats.worker_id, stats.runner = settings.worker_id, clients[0].url_for_logs
    log.info("pump_started", version=__version__, mode=mode.value,
             runner=clients[0].url_for_logs, health=health.url if health else None,
             config=settings.public_view())
    lanes = [Lane(queue, concurrency, client.call, client.url_for_logs)
             for (queue, concurrency), client in zip(settings.lanes, clients, strict=True)]
    pump = Pump(lanes, policy(settings), stats, log, stop=stop, budget=budget, waker=waker)
    scheduler = asyncio.create_task(_run_schedules(schedules, settings, stats, stop, log, wake))
    notifier.send("READY=1")
    dog = asyncio.create_task(watchdog(notifier, stats, environ))
    code = ExitCode.CALL_FAILED  # if the pump itself raised, finally must not hide it
    try:
        async with http:
            code = await pump.run(mode)
    finally:
        dog.cancel()
        # One grace for the whole shutdown: what the loops used of it, the rest can't have.
        left_s = settings.shutdown_grace_s - (time.monotonic() - (pump.stop_seen_at or 0))
        if pump.stop_seen_at is None:
            left_s = settings.shutdown_grace_s
        if not await _finish(scheduler, max(left_s, 0.0)) and code == ExitCode.OK:
            code = ExitCode.CALL_FAILED
        if alerter:
            await alerter.close(timeout_s=min(max(left_s, 0.0), 2.0))
        if health:
            health.close()
    log.info("pump_stopped", exit_code=int(code), cancelled_calls=pump.cancelled_calls,
             **stats.snapshot()["counters"])
    return int(code)


async def _run_schedules(schedules: Sequence[Schedule], settings: Settings, stats: Stats,
                         stop: asyncio.Event, log: FilteringBoundLogger,
                         wake: Callable[[str], None]) -> bool:
    """Runs the schedules until stop; False if it died of a bug (then the pump stops too)."""
    if not schedules:
        return True
    from .schedules import Scheduler, describe

    def counted(name: str, event: str) -> None:
        stats.schedule_event(name, event)
        if event == "fired":
            wake("schedule")  # the job it enqueued is picked up now, not at the next idle poll

    log.info("schedules_loaded", schedules=describe(schedules, datetime.now(UTC)))
    try:
        # Its own client: the loops may hold every pooled connection for a long call.
        async with build_http_client(http_config(settings)) as http:
            await Scheduler(schedules, http, contract_headers(settings), stop=stop,
                            now=lambda: datetime.now(UTC), pause=stop_or_timeout(stop), log=log,
                            policy=firing_policy(settings), on_count=counted).run()
    except Exception as exc:
        # Crash-only, as for the loops: a pump whose schedules silently stopped is worse than
        # one that exits 1 and is restarted (the restart catches the missed window up).
        log.error("scheduler_crashed", error=f"{type(exc).__name__}: {exc}"[:300])
        stop.set()
        return False
    return True


async def _finish(task: asyncio.Task[bool], grace_s: float) -> bool:
    """Let the scheduler end its POST in flight within the grace; the next start catches up."""
    try:
        return await asyncio.wait_for(task, timeout=grace_s)
    except TimeoutError:
        return True


# --- what each part gets of the settings: its own frozen config, built here and only here ---

Config = TypeVar("Config")


def _pick(cls: type[Config], settings: Settings, **others: Any) -> Config:
    """``cls`` from the settings' fields of the same names, and ``others`` for the rest."""
    named = {f.name: getattr(settings, f.name) for f in fields(cls)  # type: ignore[arg-type]
             if f.name not in others and hasattr(settings, f.name)}
    return cls(**named, **others)


def policy(settings: Settings) -> Policy:
    return _pick(Policy, settings)


def http_config(settings: Settings) -> HttpConfig:
    """The runner's client: its pool sized to every loop that shares it."""
    return HttpConfig(endpoint=settings.endpoint, transport=settings.http_transport,
                      timeout_s=settings.http_timeout_s,
                      connect_timeout_s=settings.connect_timeout_s,
                      loops=max(settings.total_concurrency, settings.concurrency))


def contract_headers(settings: Settings) -> dict[str, str]:
    """What every call of the contract sends (the runner's and the schedules')."""
    headers = {
        "X-Agent-Token": settings.agent_token,
        "X-Organization-Id": settings.organization_id,
        "X-Worker-Id": settings.worker_id,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"queue-pump/{__version__}",
    }
    if settings.anon_key:
        headers["Authorization"] = f"Bearer {settings.anon_key}"
        headers["apikey"] = settings.anon_key
    return headers


def client_config(settings: Settings, queue: str | None = None) -> ClientConfig:
    return ClientConfig(endpoint=settings.endpoint, queue=queue or settings.queue,
                        headers=tuple(contract_headers(settings).items()),
                        max_response_bytes=settings.max_response_bytes,
                        timeout_s=settings.http_timeout_s)


def health_config(settings: Settings) -> HealthConfig:
    return HealthConfig(host=settings.health_host, port=settings.health_port,
                        wake_token=settings.wake_token)


def firing_policy(settings: Settings) -> FiringPolicy:
    from .schedules.firing import FiringPolicy

    return _pick(FiringPolicy, settings)


def start_alerter(settings: Settings, stats: Stats,
                  log: FilteringBoundLogger) -> Alerter | None:
    """The outage webhook, when one is set: through the chosen transport, like every call."""
    if not settings.alert_webhook_url:
        return None
    url = settings.alert_webhook_url
    http = build_http_client(HttpConfig(endpoint=url, transport=settings.http_transport,
                                        timeout_s=WEBHOOK_TIMEOUT_S,
                                        connect_timeout_s=WEBHOOK_TIMEOUT_S, loops=1))
    config = AlertConfig(url=url, after=settings.alert_after, worker_id=settings.worker_id)
    return Alerter.start(config, stats, log, http)
