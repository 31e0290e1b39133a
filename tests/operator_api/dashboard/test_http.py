"""The dashboard's guards over plain HTTP (no browser needed): its headers, CSRF on every
action, the Host check, the login when a password is set, and the command's refusals."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.operator_api.target import Api, Target
from tests.support import proc
from tests.support.net import free_port

from .conftest import Dashboard, dashboard_env, start_dashboard, stop_dashboard

PASSWORD = "dashboard-password-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def _client(dashboard: Dashboard) -> httpx.Client:
    return httpx.Client(base_url=dashboard.url, timeout=30, follow_redirects=False)


@pytest.mark.e2e
def test_every_page_carries_a_strict_policy_and_no_framing(api: Api,
                                                           dashboard: Dashboard) -> None:
    job = api.add("echo")
    with _client(dashboard) as http:
        for path in ("/", "/jobs", f"/jobs/{job['id']}", "/retry-failed", "/jobs/999999",
                     "/nowhere", "/static/dashboard.js"):
            response = http.get(path)
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert "unsafe-inline" not in csp and "default-src 'none'" in csp
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        page = http.get("/").text
        assert "<script>" not in page and " on" not in page.split("<body>")[1].split(">")[0]
        assert dashboard.target.admin_token not in page


@pytest.mark.e2e
def test_an_action_without_the_csrf_token_or_from_another_origin_is_refused(
        api: Api, dashboard: Dashboard) -> None:
    job = api.add("sleep", {"ms": 100_000})
    with _client(dashboard) as http:
        token = CSRF.search(http.get(f"/jobs/{job['id']}").text)
        assert token is not None
        no_token = http.post(f"/jobs/{job['id']}/cancel", data={})
        wrong = http.post(f"/jobs/{job['id']}/cancel", data={"csrf_token": "0" * 64})
        elsewhere = http.post(f"/jobs/{job['id']}/cancel", data={"csrf_token": token.group(1)},
                              headers={"Origin": "http://evil.example"})
        assert [r.status_code for r in (no_token, wrong, elsewhere)] == [403, 403, 403]
        assert api.status(job["id"]) == "queued"
        # another browser (no cookie of this session) with a token it copied: refused
        with _client(dashboard) as stranger:
            stolen = stranger.post(f"/jobs/{job['id']}/cancel",
                                   data={"csrf_token": token.group(1)})
            assert stolen.status_code == 403
        ok = http.post(f"/jobs/{job['id']}/cancel", data={"csrf_token": token.group(1)},
                       headers={"Origin": dashboard.url})
        assert ok.status_code == 303 and ok.headers["Location"].endswith("?done=cancelled")
    assert api.status(job["id"]) == "cancelled"


@pytest.mark.e2e
def test_a_page_asked_for_under_another_host_name_is_refused(dashboard: Dashboard) -> None:
    with _client(dashboard) as http:
        assert http.get("/", headers={"Host": "rebind.example:8765"}).status_code == 421
        assert http.get("/", headers={"Host": "localhost"}).status_code == 200


@pytest.mark.e2e
def test_with_a_password_every_page_asks_for_it(target: Target, tmp_path: Path) -> None:
    served = start_dashboard(target, tmp_path, QUEUE_PUMP_DASHBOARD_PASSWORD=PASSWORD)
    try:
        assert "login required" in served.output()
        with _client(served) as http:
            assert http.get("/").headers["Location"] == "/login"
            assert http.get("/jobs/1").headers["Location"] == "/login"
            assert http.get("/", headers={"X-Live": "1"}).status_code == 401
            token = CSRF.search(http.get("/login").text)
            assert token is not None
            wrong = http.post("/login", data={"csrf_token": token.group(1), "password": "no"})
            assert wrong.status_code == 401
            before = http.cookies.get("qp_session")
            right = http.post("/login", data={"csrf_token": token.group(1),
                                              "password": PASSWORD})
            assert right.status_code == 303
            assert http.cookies.get("qp_session") != before  # a new session on login
            assert http.get("/").status_code == 200
            token = CSRF.search(http.get("/").text)
            assert token is not None
            http.post("/logout", data={"csrf_token": token.group(1)})
            assert http.get("/").status_code == 303
    finally:
        stop_dashboard(served)
    assert PASSWORD not in served.output()


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "queue_pump", "dashboard", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_off_loopback_it_refuses_to_start_without_a_password(target: Target,
                                                             tmp_path: Path) -> None:
    done = _run(dashboard_env(target), "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "QUEUE_PUMP_DASHBOARD_PASSWORD" in done.stderr and "not loopback" in done.stderr


def test_without_the_admin_token_it_says_so_in_one_line(target: Target,
                                                        tmp_path: Path) -> None:
    env = dashboard_env(target)
    del env["ADMIN_TOKEN"]
    done = _run(env, cwd=tmp_path)
    assert done.returncode == 2 and "ADMIN_TOKEN is not set" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    fast = _run(dashboard_env(target), "--refresh-s", "0.01", cwd=tmp_path)
    assert fast.returncode == 2 and "--refresh-s 0.01 is out of range" in fast.stderr
    port = _run(dashboard_env(target), "--port", "99999", cwd=tmp_path)
    assert port.returncode == 2 and "--port 99999 is not a port" in port.stderr
    short = _run(dashboard_env(target, QUEUE_PUMP_DASHBOARD_PASSWORD="short"), cwd=tmp_path)
    assert short.returncode == 2 and "QUEUE_PUMP_DASHBOARD_PASSWORD" in short.stderr
    assert "short" not in short.stderr.replace("QUEUE_PUMP", "")


@pytest.mark.e2e
def test_the_overview_shows_each_pumps_loops_and_says_which_does_not_answer(
        api: Api, target: Target, tmp_path: Path) -> None:
    port = free_port()
    pump = proc.Live(proc.start(target.pump_env(QUEUE_PUMP_HEALTH_PORT=str(port),
                                                QUEUE_PUMP_CONCURRENCY="2",
                                                QUEUE_PUMP_IDLE_SLEEP_MS="200")))
    nobody = f"http://127.0.0.1:{free_port()}"
    served = start_dashboard(target, tmp_path, "--pump", f"http://127.0.0.1:{port}",
                             "--pump", nobody)
    try:
        pump.wait_event("pump_started")
        with _client(served) as http:
            proc.wait_until(lambda: "agent-1" in http.get("/").text)
            page = http.get("/").text
        assert "agent-0" in page and "healthy" in page
        assert f"no pump answers at {nobody}" in page
    finally:
        stop_dashboard(served)
        pump.proc.terminate()
        code, _ = pump.finish(timeout_s=60)
    assert code == 0


@pytest.mark.e2e
def test_times_filter_as_durations_or_iso_and_a_bad_cursor_is_named(
        api: Api, dashboard: Dashboard) -> None:
    job = api.add("echo")
    with _client(dashboard) as http:
        recent = http.get("/jobs", params={"since": "1h"}).text
        assert f'data-job="{job["id"]}"' in recent
        future = http.get("/jobs", params={"since": "2999-01-01T00:00:00"}).text
        assert f'data-job="{job["id"]}"' not in future and "No jobs match" in future
        before = http.get("/jobs", params={"until": "2000-01-01T00:00:00Z"}).text
        assert "No jobs match" in before
        bad = http.get("/jobs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400 and "cursor" in bad.text
        assert http.get("/jobs", params={"status": "lost"}).status_code == 400
        assert http.get("/jobs/999999999").status_code == 404


@pytest.mark.e2e
def test_with_the_operator_api_away_each_page_says_so(target: Target, tmp_path: Path) -> None:
    away = f"http://127.0.0.1:{free_port()}"
    served = start_dashboard(target, tmp_path, QUEUE_PUMP_JOBS_URL=away + "/functions/v1/jobs")
    try:
        with _client(served) as http:
            for path in ("/", "/jobs", "/jobs/1", "/retry-failed"):
                response = http.get(path)
                assert response.status_code == 502, path
                assert "no answer from" in response.text, path
            live = http.get("/", headers={"X-Live": "1"})
            assert live.status_code == 502 and "<html" not in live.text
    finally:
        stop_dashboard(served)


def test_a_port_in_use_is_one_line_and_exit_1(target: Target, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run(dashboard_env(target), "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
