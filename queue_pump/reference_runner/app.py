"""HTTP side of the reference runner: the runner endpoint, enqueue, stats and fault control, and
the operator API (operator_api.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import contract, operator_api
from .faults import FAULT_KINDS, FaultKind, Faults, FaultsError, format_seconds
from .store import OWN, Job, JobStore
from .validation import BadRequest, RunSpec, check_name, parse_jobs, parse_queue

log = logging.getLogger("queue_pump.reference_runner")

RUNNER_PATH = "/functions/v1/ai-job-runner"
TOKEN_HEADER = "X-Agent-Token"
ORG_HEADER = "X-Organization-Id"
WORKER_HEADER = "X-Worker-Id"
MAX_WORKER_ID_LEN = 200
# How often a run asks the store whether an operator cancelled it: a cancel sent to this
# process stops the run at once; one sent to another runner on the same file, within this.
CANCEL_POLL_S = 1.0
DEFAULT_DRAIN_TIMEOUT_S = 30.0
# Big enough for a 10k-job batch of small payloads; aiohttp's default is 1 MiB.
CLIENT_MAX_SIZE = 16 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class CallCounters:
    """What happened to runner calls since start-up (this process only, not the database)."""

    total: int = 0
    processed: int = 0
    idle: int = 0
    faulted: int = 0
    unauthorized: int = 0
    bad_request: int = 0
    # Refused (503) because a graceful shutdown had begun, or cut short by it.
    shutting_down: int = 0
    internal_error: int = 0
    faulted_by_kind: dict[FaultKind, int] = field(
        default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0)
    )

    def to_json(self, in_flight: int) -> dict[str, Any]:
        return {
            "total": self.total,
            "processed": self.processed,
            "idle": self.idle,
            "faulted": self.faulted,
            "unauthorized": self.unauthorized,
            "badRequest": self.bad_request,
            "shuttingDown": self.shutting_down,
            "internalError": self.internal_error,
            "inFlight": in_flight,
            "faultedByKind": {
                "error": self.faulted_by_kind["error"],
                "rateLimit": self.faulted_by_kind["rate_limit"],
                "stall": self.faulted_by_kind["stall"],
                "drop": self.faulted_by_kind["drop"],
            },
        }


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class RunnerState:
    """Everything the handlers share; one per app."""

    def __init__(
        self,
        store: JobStore,
        *,
        token: str,
        organization_id: str,
        faults: Faults,
        rng: random.Random,
        drain_timeout_s: float,
        admin_token: str | None = None,
        allowed_organizations: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.admin_token = admin_token
        self.organization_id = organization_id
        # The runner's own organization first; jobs of the others are stored under their name.
        self.organizations = (organization_id, *(
            o for o in allowed_organizations if o != organization_id))
        self.faults = faults
        self.rng = rng
        self.drain_timeout_s = drain_timeout_s
        self.counters = CallCounters()
        self._token = token.encode()
        # Runs in flight by job id: set when an operator cancels the job.
        self.cancels: dict[int, asyncio.Event] = {}
        # Claim-and-run tasks; kept apart from the request handlers so a client that hangs up,
        # or a handler cancelled by the server, never leaves a claimed job half-run.
        self.tasks: set[asyncio.Task[Outcome]] = set()
        self.shutting_down = asyncio.Event()
        # Set when the drain timeout runs out: runs still sleeping give their job back.
        self.abort = asyncio.Event()

    def store_org(self, org: str) -> str:
        """An organization as the store names it: the runner's own is ``OWN``."""
        return OWN if org == self.organization_id else org

    def cancel_run(self, job_id: int) -> None:
        event = self.cancels.get(job_id)
        if event is not None:
            event.set()

    def check_auth(self, request: web.Request) -> str | None:
        """None when the caller may proceed, else the reason (never containing the token)."""
        token = request.headers.get(TOKEN_HEADER, "")
        org = request.headers.get(ORG_HEADER, "")
        if not token:
            return f"missing {TOKEN_HEADER} header"
        if not org:
            return f"missing {ORG_HEADER} header"
        # Both checks always run so the timing does not tell which one failed.
        token_ok = hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._token)
        org_ok = org in self.organizations
        if not token_ok:
            return f"{TOKEN_HEADER} is not valid"
        if not org_ok:
            return f"{ORG_HEADER} does not match this runner's organization"
        return None

    async def claim_and_run(self, queue: str, worker_id: str | None, org: str = OWN) -> Outcome:
        # DB calls go to a thread: with a shared file another process may hold the write lock
        # for a while, and the event loop must keep serving meanwhile.
        job, backlog = await asyncio.to_thread(self.store.claim_counted, queue, worker_id,
                                               org=org)
        if job is None:
            self.counters.idle += 1
            return Outcome(200, {**contract.IDLE, "jobs": 0, "backlog": 0})
        self.cancels[job.id] = asyncio.Event()
        try:
            return await self._run(job, backlog)
        finally:
            self.cancels.pop(job.id, None)

    async def _run(self, job: Job, backlog: int) -> Outcome:
        spec = RunSpec.from_job(job.type, job.payload, self.store.lease_s)
        # Decide the outcome before sleeping so the rng draws follow call order, which keeps
        # seeded tests deterministic even when runs overlap.
        error = spec.error or self._knob_failure(job, spec)
        try:
            ended = await self._sleep(spec.duration_ms / 1000, job)
        except asyncio.CancelledError:
            # Only reached when the loop itself is torn down; blocking briefly beats leaving the
            # job running until its lease runs out.
            self.store.requeue(job, "run cancelled before it finished")
            raise
        if ended == "aborted":
            await asyncio.to_thread(
                self.store.requeue, job, "runner shut down before the run finished"
            )
            self.counters.shutting_down += 1
            return Outcome(
                503,
                {"error": "runner shut down before the job finished; job requeued",
                 "jobId": job.id},
                {"Retry-After": "1"},
            )
        if ended == "cancelled":
            status = await asyncio.to_thread(self.store.cancelled_while_running, job)
            error = None
        elif error is None:
            status = await asyncio.to_thread(self.store.complete, job, spec.result)
        else:
            status = await asyncio.to_thread(self.store.fail, job, error)
        self.counters.processed += 1
        # One job a call; the backlog as the claim left it (capped as the kit caps it).
        body = contract.processed(job.id, job.type, status, yielded=spec.yield_,
                                  queue=job.queue, attempt=job.attempts, jobs=1,
                                  backlog=backlog)
        if error is not None:
            body["error"] = error
        return Outcome(200, body)

    def _knob_failure(self, job: Job, spec: RunSpec) -> str | None:
        """The failure the payload's knobs ask for (fail_times, fail_rate), if any."""
        if job.attempts <= spec.fail_times:
            return (f"failed on purpose: attempt {job.attempts} is within the first"
                    f" {spec.fail_times} (payload fail_times)")
        if spec.fail_rate > 0 and self.rng.random() < spec.fail_rate:
            return f"failed on purpose (payload fail_rate {spec.fail_rate:g})"
        return None

    async def _sleep(self, seconds: float, job: Job) -> str:
        """The run's "work": "slept" the whole time, "aborted" by the drain timeout, or
        "cancelled" by an operator (here, or through the store from another process)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        cancel = self.cancels[job.id]
        while True:
            if self.abort.is_set():
                return "aborted"
            if cancel.is_set():
                return "cancelled"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "slept"
            waits = [asyncio.ensure_future(e.wait()) for e in (self.abort, cancel)]
            try:
                await asyncio.wait(waits, timeout=min(remaining, CANCEL_POLL_S),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if (not cancel.is_set() and not self.abort.is_set() and loop.time() < deadline
                    and await asyncio.to_thread(self.store.cancel_requested, job)):
                cancel.set()

    async def drain(self) -> None:
        """Graceful shutdown: refuse new calls, let runs in flight finish (up to the drain
        timeout), then make the rest give their jobs back, so nothing stays running."""
        self.shutting_down.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        while self.tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.abort.set()
                await asyncio.wait(set(self.tasks))
                break
            await asyncio.wait(set(self.tasks), timeout=remaining)


STATE: web.AppKey[RunnerState] = web.AppKey("reference_runner_state", RunnerState)


def get_state(app: web.Application) -> RunnerState:
    return app[STATE]


def _error(status: int, message: str, retry_after_s: float | None = None,
           **extra: Any) -> web.Response:
    headers = {}
    if retry_after_s is not None:
        headers["Retry-After"] = format_seconds(retry_after_s)
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


_REQUIRED = object()


async def _read_json(request: web.Request, *, empty: object) -> object:
    text = await request.text()
    if not text.strip():
        if empty is _REQUIRED:
            raise BadRequest("body is empty; expected JSON")
        return empty
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None



@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Callers get {"error": ...} for aiohttp's own answers (404, 405, 413) too, so a client
    # never has to parse two error shapes.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)


async def _runner_call(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    st.counters.total += 1
    denied = st.check_auth(request)
    if denied is not None:
        st.counters.unauthorized += 1
        return _error(401, denied)
    try:
        body = await _read_json(request, empty={})
        queue = parse_queue(request.query.get("queue"), body)
    except BadRequest as exc:
        st.counters.bad_request += 1
        return _error(400, str(exc))
    # No await from this check to registering the task below, so drain() cannot miss a run.
    if st.shutting_down.is_set():
        st.counters.shutting_down += 1
        return _error(503, "runner is shutting down", retry_after_s=1)
    # Faults come before the claim: a faulted call must never take a job.
    fault = st.faults.roll(st.rng)
    if fault is not None:
        st.counters.faulted += 1
        st.counters.faulted_by_kind[fault] += 1
        return await _apply_fault(request, st, fault)
    worker_id = request.headers.get(WORKER_HEADER) or None
    if worker_id is not None:
        worker_id = worker_id[:MAX_WORKER_ID_LEN]
    org = st.store_org(request.headers[ORG_HEADER])
    task = asyncio.create_task(st.claim_and_run(queue, worker_id, org))
    st.tasks.add(task)
    task.add_done_callback(st.tasks.discard)
    try:
        outcome = await asyncio.shield(task)
    except Exception as exc:
        # E.g. "database is locked" past the busy timeout. A JSON 500 keeps the error shape
        # uniform, and the pump retries it with backoff.
        st.counters.internal_error += 1
        log.exception("runner call failed")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}"[:300])
    return web.json_response(outcome.body, status=outcome.status, headers=outcome.headers)


async def _apply_fault(
    request: web.Request, st: RunnerState, fault: FaultKind
) -> web.StreamResponse:
    faults = st.faults
    if fault == "error":
        return _error(faults.error_status, "injected fault: error",
                      retry_after_s=faults.retry_after_s)
    if fault == "rate_limit":
        retry_after = 1.0 if faults.retry_after_s is None else faults.retry_after_s
        return _error(429, "injected fault: rate limited", retry_after_s=retry_after)
    if fault == "stall":
        try:
            await asyncio.wait_for(st.shutting_down.wait(), faults.stall_s)
        except TimeoutError:
            return _error(504, f"injected fault: stalled {faults.stall_s:g}s")
        return _error(503, "runner is shutting down", retry_after_s=1)
    # "drop": abort() resets the connection at once, so the client sees it closed with no
    # answer, as when a gateway or a crashing function hangs up. The response returned after it
    # is never written.
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def _enqueue(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    denied = st.check_auth(request)
    if denied is not None:
        return _error(401, denied)
    try:
        specs = parse_jobs(await _read_json(request, empty=_REQUIRED), st.store.lease_s)
    except BadRequest as exc:
        return _error(400, str(exc))
    org = st.store_org(request.headers[ORG_HEADER])
    specs = [dataclasses.replace(spec, organization=org) for spec in specs]
    results = await asyncio.to_thread(st.store.enqueue_many, specs, by="enqueue")
    jobs = [
        {"id": job.id, "queue": job.queue, "type": job.type, "status": job.status,
         "dedupeKey": job.dedupe_key, "created": created}
        for job, created in results
    ]
    status = 201 if any(created for _, created in results) else 200
    return web.json_response({"jobs": jobs}, status=status)


async def _stats(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    denied = st.check_auth(request)
    if denied is not None:
        return _error(401, denied)
    queue = request.query.get("queue")
    if queue is not None:
        try:
            check_name(queue, "query parameter queue")
        except BadRequest as exc:
            return _error(400, str(exc))
    stats = await asyncio.to_thread(st.store.stats, queue)
    stats["calls"] = st.counters.to_json(in_flight=len(st.tasks))
    stats["faults"] = st.faults.to_json()
    return web.json_response(stats)


async def _get_job(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    denied = st.check_auth(request)
    if denied is not None:
        return _error(401, denied)
    job_id = int(request.match_info["id"])
    # Past SQLite's 64-bit range no job can exist (and binding it would raise).
    org = st.store_org(request.headers[ORG_HEADER])
    job = await asyncio.to_thread(st.store.get, job_id, org=org) if job_id < 2**63 else None
    if job is None:
        return _error(404, f"no job with id {job_id}")
    return web.json_response(job.to_json())


async def _get_faults(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    denied = st.check_auth(request)
    if denied is not None:
        return _error(401, denied)
    return web.json_response(st.faults.to_json())


async def _set_faults(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    denied = st.check_auth(request)
    if denied is not None:
        return _error(401, denied)
    try:
        body = await _read_json(request, empty=_REQUIRED)
        if not isinstance(body, dict):
            raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
        st.faults.update(body)
    except (BadRequest, FaultsError) as exc:
        return _error(400, str(exc))
    log.info("faults changed: %s", st.faults.to_json())
    return web.json_response(st.faults.to_json())


async def _healthz(request: web.Request) -> web.StreamResponse:
    # Unauthenticated on purpose: lets a test or an orchestrator wait for readiness without the
    # token. It reveals nothing but liveness.
    st = request.app[STATE]
    ok = not st.shutting_down.is_set()
    return web.json_response({"ok": ok}, status=200 if ok else 503)


def build_app(
    store: JobStore,
    *,
    token: str,
    organization_id: str,
    faults: Faults | None = None,
    rng: random.Random | None = None,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    admin_token: str | None = None,
    allowed_organizations: tuple[str, ...] = (),
) -> web.Application:
    """The reference runner as an aiohttp app. ``faults`` is used (and mutated by
    ``POST /_faults``) in place; ``rng`` drives faults and payload ``fail_rate``.
    ``admin_token`` turns the operator API on; ``allowed_organizations`` are served besides
    ``organization_id``, each with jobs of its own."""
    if not token:
        raise ValueError("token must not be empty")
    if not organization_id:
        raise ValueError("organization_id must not be empty")
    check_admin_token(admin_token, token)
    app = web.Application(middlewares=[_json_errors], client_max_size=CLIENT_MAX_SIZE)
    state = RunnerState(
        store,
        token=token,
        organization_id=organization_id,
        faults=faults if faults is not None else Faults(),
        rng=rng if rng is not None else random.Random(),
        drain_timeout_s=drain_timeout_s,
        admin_token=admin_token,
        allowed_organizations=allowed_organizations,
    )
    app[STATE] = state

    async def recover(_app: web.Application) -> None:
        count = await asyncio.to_thread(store.requeue_expired)
        if count:
            log.warning("requeued %d job(s) left running past the %gs lease", count,
                        store.lease_s)

    async def drain(_app: web.Application) -> None:
        await state.drain()

    app.on_startup.append(recover)
    app.on_shutdown.append(drain)
    app.router.add_post(RUNNER_PATH, _runner_call)
    app.router.add_post("/jobs", _enqueue)
    app.router.add_get("/jobs/stats", _stats)
    app.router.add_get(r"/jobs/{id:\d+}", _get_job)
    app.router.add_get("/_faults", _get_faults)
    app.router.add_post("/_faults", _set_faults)
    app.router.add_get("/healthz", _healthz)
    operator_api.add_routes(app)
    return app


def check_admin_token(admin_token: str | None, token: str) -> None:
    """ValueError, one line, for an admin token that would not keep pumps and people apart."""
    if admin_token is None:
        return
    if len(admin_token) < operator_api.MIN_ADMIN_TOKEN:
        raise ValueError(f"ADMIN_TOKEN must be at least {operator_api.MIN_ADMIN_TOKEN} "
                         f"characters, got {len(admin_token)}")
    if admin_token == token:
        raise ValueError("ADMIN_TOKEN must differ from AGENT_TOKEN: a pump's token must not "
                         "cancel or purge")
