"""The interface between the operator API's conformance suite and a server that speaks it.

A driver (``tests/operator_api/drivers/<name>.py``) is a pytest plugin defining one fixture,
``<name>_target``, function-scoped, that yields a ``Target``: where the server is, its tokens, two
organizations with no jobs in them yet, and the two things only the server's owner can do (make
a job older, make a job's next run succeed). Everything else the tests do over HTTP, through the
operator API and the runner contract, exactly as the shipped commands do: jobs are added with
``POST /jobs`` and run by runner calls (``Api.run``), or by a real pump started with
``Target.pump_env()``.

The jobs the tests make use the kit's handler types, which both servers run:
``echo`` (succeeds at once), ``sleep`` with ``{"ms": N}`` (succeeds after N ms, stops early when
cancelled), ``fail`` with ``{"message": M}`` (always fails, with M as the error).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import net
from tests.support.proc import wait_until

API_PATH = "/functions/v1/jobs"
RUNNER_PATH = "/functions/v1/ai-job-runner"
ENQUEUE_PATH = "/functions/v1/enqueue"
# Longer than any test waits: a sleep job that must be cancelled to end.
LONG_SLEEP_MS = 100_000


@dataclass
class Target:
    """A server speaking the operator API, as one test sees it."""

    name: str
    # The project URL: the API is {supabase_url}/functions/v1/jobs, the runner
    # {supabase_url}/functions/v1/ai-job-runner.
    supabase_url: str
    admin_token: str
    agent_token: str
    # Two organizations the server accepts, holding no job when the test starts.
    organization: str
    other_organization: str
    # backdate(job_id, seconds): move every time of the job back by ``seconds`` (createdAt,
    # runAt, startedAt, heartbeatAt, finishedAt, updatedAt, its events' ``at``), never its
    # lease's end: a running job stays held by its worker. As the table's owner would.
    backdate: Callable[[int, float], None]
    # make_succeed(job_id): the job's next run succeeds, as when the cause of its failures was
    # fixed (the drivers turn its type into "echo").
    make_succeed: Callable[[int], None]
    # Sent with every call (e.g. the anon key's Authorization and apikey headers).
    extra_headers: dict[str, str] = field(default_factory=dict)
    # Also in the environment of a pump or a CLI started against it (e.g. SUPABASE_ANON_KEY).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def jobs_url(self) -> str:
        return self.supabase_url.rstrip("/") + API_PATH

    @property
    def runner_url(self) -> str:
        return self.supabase_url.rstrip("/") + RUNNER_PATH

    def api(self, organization: str | None = None, token: str | None = None) -> Api:
        return Api(self, organization or self.organization,
                   self.admin_token if token is None else token)

    def cli_env(self, organization: str | None = None) -> dict[str, str]:
        """What ``queue-pump jobs`` reads: the same variables as the pump, ADMIN_TOKEN for the
        agent's token."""
        return {"SUPABASE_URL": self.supabase_url, "ADMIN_TOKEN": self.admin_token,
                "ORGANIZATION_ID": organization or self.organization, **self.extra_env}

    def pump_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("QUEUE_PUMP_", "NOTIFY_"))}
        env.update({"SUPABASE_URL": self.supabase_url, "AGENT_TOKEN": self.agent_token,
                    "ORGANIZATION_ID": self.organization, "QUEUE_PUMP_LOG_FORMAT": "json",
                    "QUEUE_PUMP_HEALTH_PORT": "0", "PYTHONUNBUFFERED": "1",
                    **self.extra_env, **extra})
        env.pop("ADMIN_TOKEN", None)  # a pump never has it
        return env


class Api:
    """The operator API as one organization with one token sees it, over real HTTP."""

    def __init__(self, target: Target, organization: str, token: str) -> None:
        self.target = target
        self.organization = organization
        self.headers = {"X-Admin-Token": token, "X-Organization-Id": organization,
                        **target.extra_headers}
        self.http = httpx.Client(verify=net.tls(), timeout=60.0)

    # -- raw calls -------------------------------------------------------------------------
    def get(self, path: str = "", **params: Any) -> httpx.Response:
        return self.http.get(self.target.jobs_url + path, params=params, headers=self.headers)

    def post(self, path: str = "", body: Any = None) -> httpx.Response:
        return self.http.post(self.target.jobs_url + path, json={} if body is None else body,
                              headers=self.headers)

    def call(self, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.http.request(method, self.target.jobs_url + path, headers=headers, **kwargs)

    # -- answers the tests expect to be 2xx ------------------------------------------------
    def ok(self, response: httpx.Response, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, (response.status_code, response.text)
        body = response.json()
        assert isinstance(body, dict)
        return body

    def add(self, type: str = "echo", payload: dict[str, Any] | None = None,
            **fields: Any) -> dict[str, Any]:
        body = {"type": type, "payload": payload or {}, **fields}
        created = self.ok(self.post("", body), 201)
        assert created["created"] is True
        job: dict[str, Any] = created["job"]
        return job

    def sleeper(self, ms: int = LONG_SLEEP_MS, **fields: Any) -> dict[str, Any]:
        return self.add("sleep", {"ms": ms}, **fields)

    def failing(self, message: str = "boom", **fields: Any) -> dict[str, Any]:
        fields.setdefault("maxAttempts", 1)
        return self.add("fail", {"message": message}, **fields)

    def job(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = self.ok(self.get(f"/{job_id}"))["job"]
        return job

    def status(self, job_id: int) -> str:
        return str(self.job(job_id)["status"])

    def wait_status(self, job_id: int, *statuses: str) -> dict[str, Any]:
        wait_until(lambda: self.status(job_id) in statuses)
        return self.job(job_id)

    def stats(self, **params: Any) -> dict[str, Any]:
        return self.ok(self.get("/stats", **params))

    def list(self, **params: Any) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.ok(self.get("", **params))["jobs"]
        return jobs

    # -- the runner side -------------------------------------------------------------------
    def run(self, queue: str = "agent") -> dict[str, Any]:
        """One runner call, as a pump makes it, in this organization: the contract's answer."""
        response = self.http.post(
            self.target.runner_url, params={"worker": "1", "queue": queue}, json={"queue": queue},
            headers={"X-Agent-Token": self.target.agent_token,
                     "X-Organization-Id": self.organization, "X-Worker-Id": "conformance",
                     **self.target.extra_headers},
            timeout=LONG_SLEEP_MS / 1000 + 60)
        assert response.status_code == 200, (response.status_code, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    def run_jobs(self, queue: str = "agent") -> list[dict[str, Any]]:
        """One runner call; what became of each job it ran, in the order they were claimed: a
        batch runner's ``results`` (the kit at JOB_BATCH_SIZE > 1 with several jobs due), else
        the one-job answer itself, else nothing."""
        answer = self.run(queue)
        if not answer.get("processed"):
            return []
        results: list[dict[str, Any]] = answer.get("results", [answer])
        assert len(results) == answer.get("jobs", 1), answer
        return results

    def run_all(self, queue: str = "agent", limit: int = 1000) -> int:
        """Runner calls until one is idle; how many jobs they ran (a call's ``jobs``, 1 when a
        one-job runner leaves it out: docs/RUNNER_CONTRACT.md §2.1)."""
        ran = 0
        for _ in range(limit):
            answer = self.run(queue)
            if not answer.get("processed"):
                return ran
            ran += int(answer.get("jobs", 1))
        raise AssertionError(f"still processing after {limit} calls")

    @contextmanager
    def running(self, job_id: int, queue: str = "agent") -> Iterator[concurrent.futures.Future[
            dict[str, Any]]]:
        """A runner call in the background that has claimed ``job_id`` (the next due job of
        ``queue``): yields its future answer once the job is ``running``."""
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            future = pool.submit(self.run, queue)
            wait_until(lambda: future.done() or self.status(job_id) == "running")
            assert not future.done(), f"the run ended before the test saw it: {future.result()}"
            yield future
        finally:
            pool.shutdown(wait=True)

    def close(self) -> None:
        self.http.close()
