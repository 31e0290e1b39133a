"""The pages and the actions. Each page is one template; with the ``X-Live`` header (the live
script's refresh) only its live part is rendered. Actions are POSTs (CSRF-checked in app.py)
answered by a redirect to the page that shows their effect."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from .app import SESSION, STATE, render
from .backend import ApiError
from .security import SESSION_COOKIE

STATUSES = ("queued", "running", "done", "failed", "cancelled")
MAX_FIELD = 200
PAGE = 50
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
NOTICES = {  # what an action's redirect may say: fixed words, nothing reflected
    "cancelled": "Cancelled.",
    "cancel-requested": "Cancel requested: the runner stops the handler at its next heartbeat.",
    "already-cancelled": "It was already cancelled.",
    "retried": "Queued again: it runs at the next claim.",
}


def _live(request: web.Request) -> bool:
    return request.headers.get("X-Live") == "1"


def _api_problem(exc: ApiError) -> int:
    return exc.status if exc.status in (400, 404, 409) else 502


async def overview(request: web.Request) -> web.Response:
    state = request.app[STATE]
    pumps: list[tuple[str, dict[str, Any] | str]] = []
    try:
        stats, healths = await asyncio.gather(
            state.shared_get("/stats"),
            asyncio.gather(*(state.pump_health(url) for url in state.config.pumps)))
        pumps = list(zip(state.config.pumps, healths, strict=True))
    except ApiError as exc:
        return render(request, "error.html", status=_api_problem(exc), title="No answer",
                      message=exc.message)
    context = {"stats": stats, "pumps": pumps, "statuses": STATUSES}
    name = "overview_live.html" if _live(request) else "overview.html"
    return render(request, name, **context)


def _since(text: str, name: str) -> str:
    """An ISO time from "1h" (an hour ago) or an ISO time; ValueError naming the field."""
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
        return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: {text[:40]!r} is neither a duration ago (e.g. 1h, 7d) nor "
                         "an ISO time (e.g. 2026-12-06T08:00:00Z)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _filters(request: web.Request) -> tuple[dict[str, str], dict[str, str]]:
    """The list's filters as the form shows them, and as the API's parameters."""
    shown = {k: request.query.get(k, "").strip()[:MAX_FIELD]
             for k in ("status", "type", "queue", "since", "until")}
    if shown["status"] and shown["status"] not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    params = {k: v for k, v in shown.items() if v and k in ("status", "type", "queue")}
    for name in ("since", "until"):
        if shown[name]:
            params[name] = _since(shown[name], name)
    return shown, params


async def jobs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cursor = request.query.get("cursor", "")[:1000]
    context: dict[str, Any] = {"statuses": STATUSES, "cursor": cursor, "jobs": [],
                               "next": None, "problem": None}
    status = 200
    try:
        shown, params = _filters(request)
        context["shown"] = shown
        answer = await state.call("GET", "", params={**params, "limit": PAGE,
                                                      "cursor": cursor or None})
        context.update(jobs=answer.get("jobs", []), next=answer.get("next"))
    except ValueError as exc:
        context.setdefault("shown", {k: request.query.get(k, "")[:MAX_FIELD] for k in
                                     ("status", "type", "queue", "since", "until")})
        context["problem"], status = str(exc), 400
    except ApiError as exc:
        context["problem"], status = exc.message, _api_problem(exc)
    context["filters"] = {k: v for k, v in context["shown"].items() if v}
    name = "jobs_live.html" if _live(request) else "jobs.html"
    return render(request, name, status=status, **context)


def _attempts(events: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The history as a timeline: a group per attempt (from its claim), and one for what an
    operator did."""
    groups: list[tuple[str, list[dict[str, Any]]]] = [("Enqueued", [])]
    for event in events:
        kind = event.get("kind")
        if kind == "claimed":
            groups.append((f"Attempt {event.get('attempt', '?')}", []))
        elif kind == "retried":
            groups.append(("Retried by an operator", []))
        groups[-1][1].append(event)
    return [g for g in groups if g[1]]


def _job_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if len(raw) > 16:
        raise web.HTTPNotFound()
    return int(raw)


async def job(request: web.Request, problem: str | None = None,
              status: int = 200) -> web.Response:
    state = request.app[STATE]
    job_id = _job_id(request)
    try:
        found = (await state.call("GET", f"/{job_id}"))["job"]
    except ApiError as exc:
        return render(request, "error.html", status=_api_problem(exc), title="No such job"
                      if exc.status == 404 else "No answer", message=exc.message)
    notice = NOTICES.get(request.query.get("done", ""))
    name = "job_live.html" if _live(request) else "job.html"
    return render(request, name, status=status, job=found, notice=notice, problem=problem,
                  timeline=_attempts(found.get("history") or []))


async def act(request: web.Request) -> web.Response:
    """POST /jobs/{id}/cancel or /retry: the API's answer, then the job's page."""
    state = request.app[STATE]
    job_id, action = _job_id(request), request.match_info["action"]
    try:
        answer = await state.call("POST", f"/{job_id}/{action}", body={})
    except ApiError as exc:
        if exc.status in (404, 409):  # shown on the job's page, as it stands now
            return await job(request, problem=exc.message, status=exc.status)
        return render(request, "error.html", status=502, title="No answer", message=exc.message)
    if action == "retry":
        done = "retried"
    elif answer.get("changed") is False:
        done = "already-cancelled"
    else:
        done = "cancelled" if answer["job"]["status"] == "cancelled" else "cancel-requested"
    raise web.HTTPSeeOther(f"/jobs/{job_id}?done={done}")


def _bulk_fields(fields: Any) -> dict[str, str]:
    return {k: str(fields.get(k, "")).strip()[:MAX_FIELD] for k in ("type", "queue")}


async def retry_failed(request: web.Request) -> web.Response:
    """GET: the dry run (how many failed jobs the retry would take); POST: the retry."""
    state = request.app[STATE]
    posted = request.method == "POST"
    fields = await request.post() if posted else request.query
    body = _bulk_fields(fields)
    try:
        answer = await state.call("POST", "/retry", body={
            **{k: v for k, v in body.items() if v}, "dryRun": not posted})
    except ApiError as exc:
        return render(request, "retry_failed.html", status=_api_problem(exc), fields=body,
                      answer=None, problem=exc.message, posted=posted)
    return render(request, "retry_failed.html", fields=body, answer=answer, problem=None,
                  posted=posted)


async def login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.guard.needs_login:
        raise web.HTTPSeeOther("/")
    if request.method == "GET":
        return render(request, "login.html", problem=None)
    form = await request.post()
    given = form.get("password")
    async with state.login_lock:  # one guess at a time, and a slow wrong one
        if isinstance(given, str) and state.guard.password_ok(given):
            # A new session id on login: one planted before it is worth nothing after.
            state.guard.log_in(_new_session(request))  # the middleware sets its cookie
            raise web.HTTPSeeOther("/")
        await asyncio.sleep(1.0)
    return render(request, "login.html", status=401, problem="That is not the password.")


def _new_session(request: web.Request) -> str:
    from .security import new_session_id

    session_id = new_session_id()
    request[SESSION] = session_id
    return session_id


async def logout(request: web.Request) -> web.Response:
    request.app[STATE].guard.log_out(request.cookies.get(SESSION_COOKIE))
    raise web.HTTPSeeOther("/login")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/jobs", jobs)
    app.router.add_get(r"/jobs/{id:\d+}", job)
    app.router.add_post(r"/jobs/{id:\d+}/{action:cancel|retry}", act)
    app.router.add_route("GET", "/retry-failed", retry_failed)
    app.router.add_route("POST", "/retry-failed", retry_failed)
    app.router.add_route("GET", "/login", login)
    app.router.add_route("POST", "/login", login)
    app.router.add_post("/logout", logout)
