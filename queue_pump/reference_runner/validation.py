"""Request-body checks with one-line messages that name the offending field."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .store import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, JobSpec

MAX_NAME_LEN = 200
MAX_DEDUPE_KEY_LEN = 500
MAX_ATTEMPTS_LIMIT = 100
MAX_BATCH = 10_000
# A day: far beyond any test, but a typo'd duration cannot park a job for weeks.
MAX_DURATION_MS = 86_400_000

# What the Supabase kit's enqueue takes that the reference runner does not run: refused by name
# with a line saying so, rather than as unknown fields or, worse, stored and ignored.
KIT_ONLY = ("concurrencyKey", "after", "afterFailure", "parentId")
JOB_KEYS = ("type", "payload", "queue", "dedupeKey", "maxAttempts", "priority", *KIT_ONLY)
# Higher runs first, as in the kit (and pg-boss); BullMQ and Oban count the other way.
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000


class BadRequest(ValueError):
    """The message is one line and names what is wrong."""


@dataclass(frozen=True)
class RunSpec:
    """How the reference runner "runs" a job, read from its type and payload.

    The kit's handler types run as the kit runs them (supabase/functions/ai-job-runner/
    handlers.ts): ``echo`` returns its payload, ``sleep`` waits ``{"ms": N}`` (stopped early by
    a cancel), ``fail`` throws ``{"message": M}``. Any type also obeys the payload's knobs
    (``duration_ms``, ``fail_rate``, ``fail_times``, ``yield``)."""

    duration_ms: float = 0.0
    fail_rate: float = 0.0
    fail_times: int = 0
    yield_: bool = False
    error: str | None = None  # the handler's own failure, decided by type and payload
    result: Any = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RunSpec:
        # Tolerant on purpose: payloads written straight into the database bypass the checks in
        # parse_jobs, and a malformed knob should be ignored rather than crash the run.
        duration = _num(payload.get("duration_ms"), 0.0)
        fail_rate = _num(payload.get("fail_rate"), 0.0)
        fail_times = _num(payload.get("fail_times"), 0.0)
        return cls(
            duration_ms=min(max(duration, 0.0), MAX_DURATION_MS),
            fail_rate=min(max(fail_rate, 0.0), 1.0),
            fail_times=max(int(fail_times), 0),
            yield_=payload.get("yield") is True,
        )

    @classmethod
    def from_job(cls, job_type: str, payload: dict[str, Any], lease_s: float) -> RunSpec:
        spec = cls.from_payload(payload)
        if job_type == "echo":
            return replace(spec, result={"echo": payload})
        if job_type == "fail":
            message = payload.get("message")
            return replace(spec, error=message if isinstance(message, str)
                           else "fail: this handler always fails")
        if job_type == "sleep":
            return _sleep(spec, payload.get("ms", 0), lease_s)
        return spec


def _sleep(spec: RunSpec, ms: object, lease_s: float) -> RunSpec:
    if not _is_number(ms) or ms < 0:  # type: ignore[operator]
        return replace(spec, error="sleep: payload.ms must be a number >= 0")
    wanted = float(ms)  # type: ignore[arg-type]
    # As the kit's deadline does: a run ends well inside its lease, or it would be run twice.
    budget = max(lease_s * 1000 * 0.9, 0.0)
    if wanted > budget:
        return replace(spec, duration_ms=budget,
                       error=f"sleep: deadline reached before {wanted:g} ms")
    return replace(spec, duration_ms=max(spec.duration_ms, wanted),
                   result={"slept_ms": int(wanted) if wanted.is_integer() else wanted})


def _num(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


def _is_number(value: object) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    )


def check_run_knobs(payload: dict[str, Any], where: str, lease_s: float | None = None) -> None:
    """Reject payload knobs the runner would otherwise silently ignore or clamp."""
    if "duration_ms" in payload:
        v = payload["duration_ms"]
        if not _is_number(v) or not 0 <= v <= MAX_DURATION_MS:
            raise BadRequest(
                f"{where}.duration_ms must be a number between 0 and {MAX_DURATION_MS}, got {v!r}"
            )
        # A run longer than the lease would be presumed dead and claimed again while it still
        # runs: two runs of one job, the first ending "lost". Refuse it up front.
        if lease_s is not None and v >= lease_s * 1000:
            raise BadRequest(
                f"{where}.duration_ms must be shorter than the runner's lease"
                f" ({lease_s:g} s, --lease-s), got {v!r}"
            )
    if "fail_rate" in payload:
        v = payload["fail_rate"]
        if not _is_number(v) or not 0 <= v <= 1:
            raise BadRequest(f"{where}.fail_rate must be a number between 0 and 1, got {v!r}")
    if "fail_times" in payload:
        v = payload["fail_times"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise BadRequest(f"{where}.fail_times must be an integer >= 0, got {v!r}")
    if "yield" in payload and not isinstance(payload["yield"], bool):
        raise BadRequest(f"{where}.yield must be true or false, got {payload['yield']!r}")


def check_name(value: object, where: str, max_len: int = MAX_NAME_LEN) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where} must be a non-empty string, got {value!r}")
    if len(value) > max_len:
        raise BadRequest(f"{where} must be at most {max_len} characters, got {len(value)}")
    return value


def parse_job(obj: object, where: str, lease_s: float | None = None) -> JobSpec:
    """One job object; ``where`` prefixes the field names in messages ("" for none)."""

    def at(name: str) -> str:
        return f"{where}.{name}" if where else name

    if not isinstance(obj, dict):
        raise BadRequest(f"{where or 'body'} must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(k for k in obj if k not in JOB_KEYS)
    if unknown:
        raise BadRequest(
            f"{where or 'body'} has unknown field(s) {', '.join(unknown)}"
            f" (allowed: {', '.join(JOB_KEYS)})"
        )
    _refuse_kit_only(obj, at)
    if "type" not in obj:
        raise BadRequest(f"{at('type')} is required")
    job_type = check_name(obj["type"], f"{at('type')}")
    payload = obj.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise BadRequest(f"{at('payload')} must be a JSON object, got {type(payload).__name__}")
    check_run_knobs(payload, f"{at('payload')}", lease_s)
    queue = obj.get("queue", DEFAULT_QUEUE)
    queue = DEFAULT_QUEUE if queue is None else check_name(queue, f"{at('queue')}")
    dedupe_key = obj.get("dedupeKey")
    if dedupe_key is not None:
        dedupe_key = check_name(dedupe_key, f"{at('dedupeKey')}", MAX_DEDUPE_KEY_LEN)
    max_attempts = obj.get("maxAttempts", DEFAULT_MAX_ATTEMPTS)
    if max_attempts is None:
        max_attempts = DEFAULT_MAX_ATTEMPTS
    if (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise BadRequest(
            f"{at('maxAttempts')} must be an integer between 1 and {MAX_ATTEMPTS_LIMIT},"
            f" got {max_attempts!r}"
        )
    return JobSpec(job_type, payload, queue, dedupe_key, max_attempts,
                   priority=_priority(obj.get("priority"), at("priority")))


def _refuse_kit_only(obj: dict[str, Any], at: Callable[[str], str]) -> None:
    kit_only = [k for k in KIT_ONLY if obj.get(k) is not None]
    if kit_only:
        raise BadRequest(
            f"{at(kit_only[0])}: the reference runner has no concurrency keys, rate limits or"
            " dependencies; the Supabase kit has (docs/SUPABASE.md)"
        )


def _priority(value: object, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not (
            MIN_PRIORITY <= value <= MAX_PRIORITY):
        raise BadRequest(f"{where} must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}"
                         f" (higher runs first), got {value!r}")
    return value


def parse_jobs(body: object, lease_s: float | None = None) -> list[JobSpec]:
    """``POST /jobs`` body: one job object, ``{"jobs": [...]}``, or a JSON list of jobs.
    With ``lease_s``, payload ``duration_ms`` must stay below it."""
    if isinstance(body, dict) and "jobs" in body:
        extra = sorted(k for k in body if k != "jobs")
        if extra:
            raise BadRequest(f"body with 'jobs' must have no other field, got {', '.join(extra)}")
        items, prefix = body["jobs"], "jobs"
        if not isinstance(items, list):
            raise BadRequest(f"jobs must be a JSON list, got {type(items).__name__}")
    elif isinstance(body, list):
        items, prefix = body, "body"
    elif isinstance(body, dict):
        return [parse_job(body, "job", lease_s)]
    else:
        raise BadRequest(f"body must be a job object or a list of jobs, got {type(body).__name__}")
    if not items:
        raise BadRequest(f"{prefix} is empty: nothing to enqueue")
    if len(items) > MAX_BATCH:
        raise BadRequest(f"{prefix} has {len(items)} jobs, at most {MAX_BATCH} per request")
    return [parse_job(item, f"{prefix}[{i}]", lease_s) for i, item in enumerate(items)]


def parse_queue(query_value: str | None, body: object) -> str:
    """Queue of a runner call: the query's ``queue`` wins over the body's, default "agent"."""
    if query_value:
        return check_name(query_value, "query parameter queue")
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    value = body.get("queue")
    if value is None:
        return DEFAULT_QUEUE
    return check_name(value, "body.queue")
