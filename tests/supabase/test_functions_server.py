"""Every function on one port under /functions/v1/<name> (kit.FunctionsServer, that is
`scripts/kit-stack.py serve`): the routing, Supabase's 404, bodies and statuses unchanged, the
functions' own limits, and a crashed function beside ones that keep serving."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ..conftest import TOKEN
from . import kit

pytestmark = [pytest.mark.kit, pytest.mark.e2e]


def call(url: str, body: bytes | None, *, org: str, method: str = "POST",
         token: str = TOKEN) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={
        "X-Agent-Token": token, "X-Organization-Id": org, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def raw(port: int, head: str, chunks: list[bytes], pause_s: float = 0.0) -> bytes:
    """One request written by hand (for framings urllib will not send); the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode("latin-1"))
        for chunk in chunks:
            time.sleep(pause_s)
            s.sendall(chunk)
        out = b""
        while data := s.recv(65536):
            out += data
        return out


@pytest.fixture
def server(deno_bin: Path, db_url: str) -> Iterator[kit.FunctionsServer]:
    env = {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": db_url, "HTTP_BODY_TIMEOUT_MS": "500"}
    with kit.FunctionsServer(deno_bin, env) as fns:
        yield fns


def test_every_function_on_one_port_and_a_job_goes_in_and_out_unchanged(
        server: kit.FunctionsServer, db_url: str, org: str) -> None:
    payload = {"text": "grüße, 日本", "n": 1234567.5, "nested": [{"a": None}] * 50}
    job = json.dumps({"type": "echo", "payload": payload}).encode()
    status, _, created = call(server.url("enqueue"), job, org=org)
    assert status == 201 and created["created"] is True
    status, headers, ran = call(server.url("ai-job-runner"), b"{}", org=org)
    assert status == 200 and ran["status"] == "done", ran
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("select payload, result from queue_pump.jobs where id = %s",
                              (created["id"],)).fetchone()
    assert stored == (payload, {"echo": payload})
    assert headers["Content-Type"] == "application/json"
    # Every function of the folder is served, each a process of its own with its own log.
    every = {p.name for p in kit.FUNCTIONS.iterdir()
             if (p / "index.ts").is_file() and not p.name.startswith("_")}
    assert {"ai-job-runner", "enqueue"} <= every and set(server.pids) == every
    assert len({e["port"] for e in server.router_events("function_started")}) == len(every)
    assert len(set(server.pids.values())) == len(every)
    for name in server.pids:
        assert [e["event"] for e in server.events(name)][:1] == ["listening"]


def test_an_unknown_function_is_supabases_404_and_other_paths_the_gateways(
        server: kit.FunctionsServer, org: str) -> None:
    status, _, body = call(server.url("no-such-function"), b"{}", org=org)
    assert (status, body) == (404, {"code": "NOT_FOUND",
                                    "message": "Requested function was not found"})
    status, _, body = call(server.base_url + "/rest/v1/jobs", None, org=org, method="GET")
    assert (status, body) == (404, {"message": "no Route matched with those values"})
    # A query string and the function's own refusals pass through as the function said them.
    status, _, body = call(server.url("ai-job-runner") + "?queue=bad%20queue", b"{}", org=org)
    assert status == 400 and body["error"].startswith("queue must be")
    status, headers, body = call(server.url("enqueue"), None, org=org, method="GET")
    assert (status, headers.get("Allow"), body) == (405, "POST", {"error": "use POST"})
    status, _, body = call(server.url("enqueue"), b"{}", org=org, token="wrong-token-0123456")
    assert status == 401


def test_the_functions_own_limits_meet_the_client(server: kit.FunctionsServer,
                                                  org: str) -> None:
    head = (f"POST /functions/v1/ai-job-runner HTTP/1.1\r\nHost: x\r\nX-Agent-Token: {TOKEN}\r\n"
            f"X-Organization-Id: {org}\r\nConnection: close\r\n")
    too_big = raw(server.port, head + f"Content-Length: {70 * 1024}\r\n\r\n", [b"{" * 1024])
    assert too_big.startswith(b"HTTP/1.1 413 ")
    assert b"body too large: at most 65536 bytes" in too_big
    chunked = raw(server.port, head + "Transfer-Encoding: chunked\r\n\r\n",
                  [b"2\r\n{}\r\n0\r\n\r\n"])
    assert chunked.startswith(b"HTTP/1.1 411 "), chunked[:200]
    # Half a body, then nothing: the function's HTTP_BODY_TIMEOUT_MS (500 ms) answers 408.
    slow = raw(server.port, head + "Content-Length: 10\r\n\r\n{}", [])
    assert slow.startswith(b"HTTP/1.1 408 "), slow[:200]
    assert b"request not received within 500 ms" in slow
    # A body sent slowly but within the deadline streams through to the function.
    dribble = raw(server.port, head + "Content-Length: 2\r\n\r\n", [b"{", b"}"], pause_s=0.2)
    assert dribble.startswith(b"HTTP/1.1 200 "), dribble[:200]


def test_a_killed_function_answers_502_with_one_line_and_the_others_keep_serving(
        server: kit.FunctionsServer, org: str) -> None:
    server.kill("ai-job-runner")
    exited = kit.wait_until(lambda: server.router_events("function_exited"), 30, "the exit")
    assert exited == [{"event": "function_exited", "function": "ai-job-runner", "code": -9}]
    status, _, body = call(server.url("ai-job-runner"), b"{}", org=org)
    assert status == 502
    assert body["error"].startswith("function ai-job-runner is not running: its process exited"
                                    " (killed by signal SIGKILL)")
    assert "\n" not in body["error"]
    status, _, created = call(server.url("enqueue"), b'{"type": "echo"}', org=org)
    assert status == 201 and created["created"] is True


def test_named_functions_only_and_a_clean_stop(deno_bin: Path, db_url: str) -> None:
    env = {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": db_url}
    fns = kit.FunctionsServer(deno_bin, env, ["enqueue"])
    try:
        assert set(fns.pids) == {"enqueue"}
        status, _, body = call(fns.url("ai-job-runner"), b"{}", org="o")
        assert (status, body["code"]) == (404, "NOT_FOUND")
    finally:
        code = fns.stop()
    assert code == 0
    assert [e["code"] for e in fns.router_events("function_exited")] == [0]
    assert fns.router_events("stopped")


def test_the_router_caps_connections_and_closes_ones_that_send_no_request(
        deno_bin: Path, db_url: str) -> None:
    env = {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": db_url, "HTTP_MAX_CONNECTIONS": "2",
           "HTTP_IDLE_TIMEOUT_MS": "3000"}
    with kit.FunctionsServer(deno_bin, env, ["enqueue"]) as fns:
        silent = [socket.create_connection(("127.0.0.1", fns.port), timeout=30)
                  for _ in range(2)]
        silent[1].sendall(b"POST /functions/v1/enqueue HTTP/1.1\r\nHost: x\r\n")  # half a head
        try:
            third = raw(fns.port, "GET /functions/v1/enqueue HTTP/1.1\r\nHost: x\r\n\r\n", [])
            assert third.startswith(b"HTTP/1.1 503 "), third[:200]
            assert third.endswith(b'{"error":"too many connections, try again later"}')
            started = time.monotonic()
            assert [s.recv(100) for s in silent] == [b"", b""]  # closed by the router
            assert time.monotonic() - started < 15
        finally:
            for s in silent:
                s.close()
        answer = raw(fns.port, "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", [])
        assert answer.startswith(b"HTTP/1.1 404 ")
