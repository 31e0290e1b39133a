"""The web app: its settings, the templates, the middleware every request goes through
(headers, Host, session cookie, login, CSRF) and the routes (views.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from . import chart, fmt
from .backend import Backend
from .security import CSRF_FIELD, HEADERS, SESSION_COOKIE, Guard, host_allowed, new_session_id
from .security import same_origin as same_origin_check

HERE = Path(__file__).parent
LOG = logging.getLogger("queue_pump.dashboard")
# Operator API calls in flight at once, from all browsers together (each is a worker thread).
MAX_CALLS = 4
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class DashboardConfig:
    where: str  # "<organization> at <operator API URL>", shown in the header
    password: str = ""
    pumps: tuple[str, ...] = ()  # health endpoints of pumps
    refresh_s: float = 2.0
    bound_loopback: bool = True

    def __repr__(self) -> str:
        return f"DashboardConfig(where={self.where!r}, pumps={self.pumps!r})"


@dataclass
class State:
    config: DashboardConfig
    backend: Backend
    guard: Guard
    templates: jinja2.Environment
    calls: asyncio.Semaphore
    login_lock: asyncio.Lock
    in_flight: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    async def call(self, method: str, path: str = "", *, params: Mapping[str, Any] | None = None,
                   body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        async with self.calls:
            return await asyncio.to_thread(self.backend.call, method, path, params=params,
                                           body=body)

    async def shared_get(self, path: str) -> dict[str, Any]:
        """GET ``path``, one call for every request that asks while it is in flight: many tabs
        open on the overview cost the operator API one stats query per refresh, not one each."""
        pending = self.in_flight.get(path)
        if pending is None:
            pending = asyncio.ensure_future(self.call("GET", path))
            self.in_flight[path] = pending
            pending.add_done_callback(lambda _: self.in_flight.pop(path, None))
        # shield: a browser that goes away cancels its own wait, not the others' call
        return await asyncio.shield(pending)

    async def pump_health(self, url: str) -> dict[str, Any] | str:
        async with self.calls:
            return await asyncio.to_thread(self.backend.pump_health, url)


STATE: web.AppKey[State] = web.AppKey("dashboard", State)
SESSION: web.RequestKey[str] = web.RequestKey("session_id", str)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        # Every value is escaped as text unless marked safe (only the chart is): a job's payload,
        # error and log lines are whatever its enqueuer wrote. A field a server leaves out
        # (a later or earlier version of the API) renders empty rather than failing the page.
        autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.filters.update({name: _defined(f) for name, f in (
        ("ago", fmt.ago), ("duration", fmt.short_duration), ("pretty", fmt.pretty),
        ("clip", fmt.clip), ("compact", fmt.compact))})
    env.globals.update(per_minute_svg=chart.per_minute_svg, CSRF_FIELD=CSRF_FIELD)
    return env


def _defined(format_: Callable[..., str]) -> Callable[..., str]:
    """The filter, given None for a field the answer did not have."""
    def apply(value: Any, *args: Any) -> str:
        return format_(None if isinstance(value, jinja2.Undefined) else value, *args)
    return apply


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    state = request.app[STATE]
    if name == "error.html" and request.headers.get("X-Live") == "1":
        name = "error_live.html"  # a refresh that failed: the message alone, in place
    session = request.get(SESSION, "")
    html = state.templates.get_template(name).render(
        csrf_token=state.guard.csrf_token(session), where=state.config.where,
        needs_login=state.guard.needs_login, refresh_ms=int(state.config.refresh_s * 1000),
        path=request.path, here=request.path_qs, **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _is_public(request: web.Request) -> bool:
    return request.path.startswith("/static/") or request.path == "/login"


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if not host_allowed(request.headers.get("Host"), state.config.bound_loopback):
        return _with_headers(web.Response(status=421, text="this dashboard answers on its "
                                                           "loopback address only\n"))
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id is None or len(session_id) > 100:
        session_id = new_session_id()
    request[SESSION] = session_id
    try:
        response = await _guarded(request, handler, state, session_id or "")
    except web.HTTPRedirection as exc:
        response = web.Response(status=exc.status,
                                headers={"Location": exc.headers.get("Location", "/")})
    except web.HTTPException as exc:
        response = render(request, "error.html", status=exc.status, title=exc.reason,
                          message=f"{exc.status} {exc.reason}")
    except Exception:  # a bug: its traceback in the server's log, a plain page in the browser
        LOG.exception("dashboard_error", extra={"path": request.path})
        response = web.Response(status=500, text="500: the dashboard failed; see its log\n")
    if request[SESSION] != request.cookies.get(SESSION_COOKIE):  # new, or a login's
        response.set_cookie(SESSION_COOKIE, request[SESSION], httponly=True,
                            samesite="Strict", path="/")
    return _with_headers(response)


async def _guarded(request: web.Request, handler: Handler, state: State,
                   session_id: str) -> web.StreamResponse:
    if request.method == "POST":
        form = await request.post()
        token = form.get(CSRF_FIELD)
        if not same_origin_check(request.headers.get("Origin"), request.headers.get("Host"),
                                 request.scheme) or not state.guard.csrf_ok(
                session_id, token if isinstance(token, str) else None):
            return render(request, "error.html", status=403, title="Refused",
                          message="This form is stale or did not come from this dashboard: "
                                  "reload the page and try again.")
    if not _is_public(request) and not state.guard.logged_in(session_id):
        if request.headers.get("X-Live"):
            return web.Response(status=401, text="log in again\n")
        raise web.HTTPSeeOther("/login")
    return await handler(request)


def _with_headers(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def build_app(config: DashboardConfig, backend: Backend) -> web.Application:
    from . import views

    app = web.Application(middlewares=[guard_middleware], client_max_size=64 * 1024)
    app[STATE] = State(config=config, backend=backend, guard=Guard(config.password),
                       templates=templates(), calls=asyncio.Semaphore(MAX_CALLS),
                       login_lock=asyncio.Lock())
    views.add_routes(app)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    return app
