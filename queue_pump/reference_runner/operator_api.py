"""The operator API over HTTP (docs/OPERATOR_API.md), at the paths the Supabase kit's ``jobs``
function answers: ``/functions/v1/jobs``, ``/functions/v1/jobs/42``, ... Its own token
(``X-Admin-Token``), never the runner's; every call scoped to ``X-Organization-Id``; unknown
parameters and fields refused, so a typo never widens a bulk action."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from . import steering
from .store import STATUSES
from .validation import JOB_KEYS, BadRequest, check_name, parse_job

API_PATH = "/functions/v1/jobs"
ADMIN_HEADER = "X-Admin-Token"
ORG_HEADER = "X-Organization-Id"
MIN_ADMIN_TOKEN = 16
MAX_BODY = 64 * 1024
MAX_DELAY_S = 31_536_000
_ORG = re.compile(r"^[\x21-\x7e]{1,200}$")
_ADD_EXTRA = ("runAt", "delaySeconds")

Handler = Callable[[web.Request, "Caller"], Awaitable[web.StreamResponse]]


class Caller:
    """Who is calling: the organization as the store names it, and the state it shares."""

    def __init__(self, org: str, state: Any) -> None:
        self.org = org
        self.state = state
        self.store = state.store


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _error(code: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=code)


def _authorize(request: web.Request, state: Any) -> Caller | web.Response:
    admin = state.admin_token
    if admin is None:
        return _error(503, "the operator API is off: start the runner with ADMIN_TOKEN set")
    # Hashed first: constant time in the token's content and length.
    if not hmac.compare_digest(_digest(request.headers.get(ADMIN_HEADER, "")), _digest(admin)):
        return _error(401, f"missing or wrong {ADMIN_HEADER}")
    org = request.headers.get(ORG_HEADER, "").strip()
    if not _ORG.match(org):
        return _error(401, f"missing or malformed {ORG_HEADER} (1-200 printable characters)")
    if org not in state.organizations:
        return _error(403, f"this {ORG_HEADER} is not one this runner serves "
                           "(ORGANIZATION_ID, ALLOWED_ORGANIZATION_IDS)")
    return Caller(state.store_org(org), state)


def _route(handler: Handler, params: tuple[str, ...] = ()) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    async def serve(request: web.Request) -> web.StreamResponse:
        from .app import STATE

        caller = _authorize(request, request.app[STATE])
        if isinstance(caller, web.Response):
            return caller
        try:
            unknown = sorted(set(request.query) - set(params))
            if unknown:
                accepted = ", ".join(params) or "none"
                raise BadRequest(f"unknown query parameter {unknown[0]!r}; accepted: {accepted}")
            return await handler(request, caller)
        except BadRequest as exc:
            return _error(400, str(exc))
        except steering.Conflict as exc:
            return _error(409, str(exc), status=exc.job.status)
    return serve


# -- input ------------------------------------------------------------------------------------

def _int(text: str, name: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d{1,16}", text.strip()):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {value}")
    return value


def _seconds(value: object, name: str, low: float, high: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not low <= value <= high):
        raise BadRequest(f"{name} must be a number of seconds from {low:g} to {high:g}, "
                         f"got {value!r}")
    return float(value)


def _time(value: object, name: str) -> float:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    raise BadRequest(f"{name} must be an ISO 8601 time with a zone, e.g. "
                     f"2026-12-06T08:00:00Z, got {value!r}")


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    return value


def _cursor(text: str) -> tuple[float, int]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(text.encode() + b"=="))
        if isinstance(created, float | int) and isinstance(job_id, int):
            return float(created), job_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise BadRequest("cursor is not one this API gave; pass the 'next' of the previous page")


def _encode_cursor(cursor: tuple[float, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode().rstrip("=")


async def _body(request: web.Request, fields: tuple[str, ...], limit: int = MAX_BODY
                ) -> dict[str, Any]:
    raw = await request.read()
    if len(raw) > limit:
        raise BadRequest(f"body is {len(raw)} bytes; at most {limit}")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; accepted: {', '.join(fields)}")
    return body


def _statuses(text: str) -> tuple[str, ...]:
    wanted = tuple(s.strip() for s in text.split(",") if s.strip())
    if not wanted or any(s not in STATUSES for s in wanted):
        raise BadRequest(f"status must be one of {', '.join(STATUSES)} (or several, "
                         f"comma-separated), got {text!r}")
    return wanted


def _optional_name(mapping: Mapping[str, Any], name: str) -> str | None:
    value = mapping.get(name)
    return None if value is None else check_name(value, name)


def _job_id(request: web.Request) -> int:
    job_id = int(request.match_info["id"])
    return job_id if job_id < 2**63 else -1  # past SQLite's range no job exists


def _not_found(job_id: int) -> web.Response:
    return _error(404, f"no job {job_id} in this organization")


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # A shared file's write lock may be held by another process for a while.
    return await asyncio.to_thread(fn, *args, **kwargs)


# -- handlers ---------------------------------------------------------------------------------

async def _list(request: web.Request, caller: Caller) -> web.StreamResponse:
    q = request.query
    query = steering.ListQuery(
        statuses=_statuses(q["status"]) if "status" in q else (),
        type=_optional_name(q, "type"), queue=_optional_name(q, "queue"),
        since=_time(q["since"], "since") if "since" in q else None,
        until=_time(q["until"], "until") if "until" in q else None,
        limit=_int(q["limit"], "limit", 1, steering.MAX_PAGE) if "limit" in q else 50,
        cursor=_cursor(q["cursor"]) if "cursor" in q else None)
    jobs, after = await _in_thread(steering.list_jobs, caller.store, caller.org, query)
    return web.json_response({"jobs": [steering.job_json(j) for j in jobs],
                              "next": None if after is None else _encode_cursor(after)})


async def _add(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request, (*JOB_KEYS, *_ADD_EXTRA), limit=16 * 1024 * 1024)
    run_at = None
    if body.get("runAt") is not None and body.get("delaySeconds") is not None:
        raise BadRequest("delaySeconds and runAt: give one, not both")
    if body.get("delaySeconds") is not None:
        delay = _seconds(body["delaySeconds"], "delaySeconds", 0, MAX_DELAY_S)
        run_at = caller.store.clock() + delay
    elif body.get("runAt") is not None:
        run_at = _time(body["runAt"], "runAt")
    fields = {k: v for k, v in body.items() if k not in _ADD_EXTRA}
    spec = parse_job(fields, "", caller.store.lease_s)
    spec = dataclasses.replace(spec, run_at=run_at, organization=caller.org)
    [(job, created)] = await _in_thread(caller.store.enqueue_many, [spec], by="operator")
    return web.json_response({"job": steering.job_json(job), "created": created},
                             status=201 if created else 200)


async def _show(request: web.Request, caller: Caller) -> web.StreamResponse:
    job_id = _job_id(request)
    found = await _in_thread(steering.events, caller.store, caller.org, job_id)
    if found is None:
        return _not_found(job_id)
    job, events = found
    return web.json_response({"job": {**steering.job_json(job, full=True), "history": events}})


async def _history(request: web.Request, caller: Caller) -> web.StreamResponse:
    job_id = _job_id(request)
    q = request.query
    after = _int(q["after"], "after", 0, 2**53 - 1) if "after" in q else 0
    limit = _int(q["limit"], "limit", 1, steering.MAX_PAGE) if "limit" in q else steering.MAX_PAGE
    found = await _in_thread(steering.events, caller.store, caller.org, job_id, after, limit)
    if found is None:
        return _not_found(job_id)
    job, events = found
    return web.json_response({"events": events, "job": {"id": job.id, "status": job.status}})


async def _cancel(request: web.Request, caller: Caller) -> web.StreamResponse:
    await _body(request, ())
    job_id = _job_id(request)
    done = await _in_thread(steering.cancel, caller.store, caller.org, job_id)
    if done is None:
        return _not_found(job_id)
    job, changed = done
    if job.status == "running" and changed:
        caller.state.cancel_run(job.id)  # a run of this process stops now, not at its poll
    return web.json_response({"job": steering.job_json(job), "changed": changed})


async def _retry(request: web.Request, caller: Caller) -> web.StreamResponse:
    await _body(request, ())
    job_id = _job_id(request)
    job = await _in_thread(steering.retry, caller.store, caller.org, job_id)
    if job is None:
        return _not_found(job_id)
    return web.json_response({"job": steering.job_json(job)})


async def _retry_failed(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request, ("type", "queue", "since", "until", "dryRun"))
    answer = await _in_thread(
        steering.retry_failed, caller.store, caller.org,
        type=_optional_name(body, "type"), queue=_optional_name(body, "queue"),
        since=None if body.get("since") is None else _time(body["since"], "since"),
        until=None if body.get("until") is None else _time(body["until"], "until"),
        dry_run=_bool(body.get("dryRun", False), "dryRun"))
    return web.json_response(answer)


def _older_than(value: object, default: float | None) -> float:
    if value is None and default is not None:
        return default
    if isinstance(value, str):  # a query parameter
        return float(_int(value, "olderThan", 1, 86_400))
    return _seconds(value, "olderThan", 1, 86_400)


async def _hung(request: web.Request, caller: Caller) -> web.StreamResponse:
    q = request.query
    jobs = await _in_thread(steering.hung, caller.store, caller.org,
                            _older_than(q.get("olderThan"), 300.0), _optional_name(q, "queue"))
    return web.json_response({"jobs": [steering.job_json(j) for j in jobs]})


async def _cancel_hung(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request, ("olderThan", "queue", "dryRun"))
    answer = await _in_thread(
        steering.cancel_hung, caller.store, caller.org,
        _older_than(body.get("olderThan"), 300.0), _optional_name(body, "queue"),
        _bool(body.get("dryRun", False), "dryRun"))
    return web.json_response(answer)


async def _stats(request: web.Request, caller: Caller) -> web.StreamResponse:
    answer = await _in_thread(steering.stats, caller.store, caller.org,
                              _optional_name(request.query, "queue"))
    return web.json_response(answer)


async def _purge(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request, ("olderThan", "dryRun"))
    if body.get("olderThan") is None:
        raise BadRequest("olderThan is required: seconds since a job finished, from 60")
    older = _seconds(body["olderThan"], "olderThan", 60, 100 * 365 * 86_400)
    answer = await _in_thread(steering.purge, caller.store, caller.org, older,
                              _bool(body.get("dryRun", False), "dryRun"))
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    base, one = API_PATH, API_PATH + r"/{id:\d{1,20}}"
    list_params = ("status", "type", "queue", "since", "until", "limit", "cursor")
    app.router.add_get(base, _route(_list, list_params))
    app.router.add_post(base, _route(_add))
    app.router.add_get(base + "/stats", _route(_stats, ("queue",)))
    app.router.add_get(base + "/hung", _route(_hung, ("olderThan", "queue")))
    app.router.add_post(base + "/hung/cancel", _route(_cancel_hung))
    app.router.add_post(base + "/retry", _route(_retry_failed))
    app.router.add_post(base + "/purge", _route(_purge))
    app.router.add_get(one, _route(_show))
    app.router.add_get(one + "/history", _route(_history, ("after", "limit")))
    app.router.add_post(one + "/cancel", _route(_cancel))
    app.router.add_post(one + "/retry", _route(_retry))
