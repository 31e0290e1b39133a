"""Start the reference runner inside the current event loop (tests, the demo, the CLI)."""

from __future__ import annotations

import logging
import random
from types import TracebackType

from aiohttp import web

from .app import DEFAULT_DRAIN_TIMEOUT_S, RUNNER_PATH, CallCounters, build_app, get_state
from .faults import Faults
from .store import DEFAULT_LEASE_S, JobStore

ACCESS_LOG = logging.getLogger("queue_pump.reference_runner.access")


class RunningRunner:
    """A listening reference runner. ``faults`` is live: change it and the next call sees it."""

    def __init__(
        self, *, runner: web.AppRunner, host: str, port: int, store: JobStore, owns_store: bool
    ) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self.store = store
        self._owns_store = owns_store
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def runner_url(self) -> str:
        """Full URL of the runner endpoint (without the query)."""
        return self.url + RUNNER_PATH

    @property
    def app(self) -> web.Application:
        return self._runner.app

    @property
    def faults(self) -> Faults:
        return get_state(self.app).faults

    @property
    def counters(self) -> CallCounters:
        return get_state(self.app).counters

    def abort_runs(self) -> None:
        """Make runs still in flight give their jobs back now instead of finishing (a second
        Ctrl-C); they answer 503 and their jobs return to queued."""
        get_state(self.app).abort.set()

    async def close(self) -> None:
        """Stop listening, let runs in flight finish (see ``drain_timeout_s``), close the store
        if this runner opened it. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._runner.cleanup()
        finally:
            if self._owns_store:
                self.store.close()

    async def __aenter__(self) -> RunningRunner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_runner(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    db: str | JobStore = ":memory:",
    token: str,
    organization_id: str,
    faults: Faults | None = None,
    rng: random.Random | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    access_log: bool = False,
    admin_token: str | None = None,
    allowed_organizations: tuple[str, ...] = (),
) -> RunningRunner:
    """Listen on ``host:port`` (0: a free port, see ``.port``) and serve the reference runner.

    ``db`` is a SQLite path, ``":memory:"``, or an open ``JobStore`` (then the caller closes it).
    Jobs left ``running`` past ``lease_s`` are requeued before the first call is served.
    ``admin_token`` turns the operator API on (docs/OPERATOR_API.md); ``allowed_organizations``
    are served besides ``organization_id``.
    """
    owns_store = not isinstance(db, JobStore)
    store = JobStore(db, lease_s=lease_s) if isinstance(db, str) else db
    try:
        app = build_app(
            store,
            token=token,
            organization_id=organization_id,
            faults=faults,
            rng=rng,
            drain_timeout_s=drain_timeout_s,
            admin_token=admin_token,
            allowed_organizations=allowed_organizations,
        )
        runner = web.AppRunner(
            app,
            # The drain in on_shutdown bounds in-flight runs; this only has to cover the
            # handlers still writing their answers after it.
            shutdown_timeout=drain_timeout_s + 5.0,
            access_log=ACCESS_LOG if access_log else None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
    except BaseException:
        if owns_store:
            store.close()
        raise
    # With port 0 and a name resolving to several addresses each socket may get its own port;
    # the first one is the one we report.
    bound_port = int(runner.addresses[0][1])
    return RunningRunner(
        runner=runner, host=host, port=bound_port, store=store, owns_store=owns_store
    )

