"""The mistakes a new user makes, told plainly (issue 15): misspelled variables, a URL with a
path, a missing .env, failed jobs, a refused connection, a drain that gives up, status against
the wrong URL."""

from __future__ import annotations

import asyncio
import http.server
import json
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from queue_pump.cli.health_client import format_status
from queue_pump.config import ConfigError, from_mapping
from queue_pump.loop.client import Processed
from queue_pump.loop.failures import RUNNER, ErrorKind, from_exception
from queue_pump.loop.pump import ExitCode, Lane, Mode, Pump
from queue_pump.observe.state import Stats
from tests.support.env import BASE_ENV, TOKEN, FakeTime
from tests.unit.loop.test_pump import POLICY, Script, err, run


def queue_pump(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "queue_pump", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def base_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_PUMP_", "SUPABASE_"))}
    env.pop("AGENT_TOKEN", None)
    env.pop("ORGANIZATION_ID", None)
    return {**env, **extra}


def test_a_misspelled_variable_is_warned_about_with_the_right_name(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("QUEUE_PUMP_IDLE_SLEEP=5000\n")
    out = queue_pump("config", env=base_env(**BASE_ENV, QUEUE_PUMP_CONCURENCY="4"),
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "queue-pump: warning: QUEUE_PUMP_CONCURENCY is not a queue-pump setting and is ignored;"
        " did you mean QUEUE_PUMP_CONCURRENCY?",
        "queue-pump: warning: QUEUE_PUMP_IDLE_SLEEP is not a queue-pump setting and is ignored;"
        " did you mean QUEUE_PUMP_IDLE_SLEEP_MS?"]
    assert TOKEN not in out.stdout + out.stderr


@pytest.mark.parametrize("url", ["https://x.supabase.co/functions/v1/ai-job-runner",
                                 "https://x.supabase.co/rest"])
def test_supabase_url_with_a_path_is_refused_with_what_to_write(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({**BASE_ENV, "SUPABASE_URL": url})
    [problem] = caught.value.problems
    assert problem.startswith(f"SUPABASE_URL={url!r} has a path")
    assert "https://<project>.supabase.co" in problem and "QUEUE_PUMP_ENDPOINT" in problem


def test_a_trailing_slash_or_an_endpoint_override_is_fine() -> None:
    assert from_mapping({**BASE_ENV, "SUPABASE_URL": "https://x.supabase.co/"})
    assert from_mapping({**BASE_ENV, "SUPABASE_URL": "https://x.supabase.co/odd/path",
                         "QUEUE_PUMP_ENDPOINT": "https://runner.example/run"})


def test_a_missing_env_file_says_where_the_pump_looked(tmp_path: Path) -> None:
    out = queue_pump("--once", env=base_env(), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 3  # one per missing setting; the first also says where it looked
    assert lines[0].endswith(
        f"; no .env was read in {str(tmp_path)!r} (the working directory): run the pump where"
        " .env is, or pass --env-file PATH")
    assert "Traceback" not in out.stderr


def test_failed_and_retried_jobs_get_their_own_lines(fake_time: FakeTime,
                                                     logs: list[dict[str, Any]]) -> None:
    run([Processed(job_id="7", job_type="mail", status="failed", error="SMTP said 550"),
         Processed(job_id="8", job_type="mail", status="retry", error="timeout"),
         Processed(job_id="9", job_type="mail", status="done")], fake_time)
    lines = [(e["event"], e["log_level"], e["job_id"], e["error"]) for e in logs
             if e["event"].startswith("job_")]
    # with the runner's reason: a failed job is findable without the runner's own log
    assert lines == [("job_failed", "warning", "7", "SMTP said 550"),
                     ("job_retry", "info", "8", "timeout")]


def test_drain_that_gives_up_says_so_and_why(fake_time: FakeTime,
                                             logs: list[dict[str, Any]]) -> None:
    code, _, _ = run([err(status=503)] * 8, fake_time, mode=Mode.DRAIN)
    assert code is ExitCode.CALL_FAILED
    [gave_up] = [e for e in logs if e["event"] == "drain_gave_up"]
    assert gave_up["why"] == "5 failed calls in a row" and gave_up["status"] == 503
    logs.clear()
    run([err(status=401, kind=ErrorKind.CONFIGURATION)], fake_time, mode=Mode.DRAIN)
    assert [e["why"] for e in logs if e["event"] == "drain_gave_up"] == ["a configuration error"]


def test_configuration_errors_carry_the_runner_url(fake_time: FakeTime,
                                                  logs: list[dict[str, Any]]) -> None:
    url = "https://x.supabase.co/functions/v1/ai-job-runner"

    async def go() -> None:
        stop = asyncio.Event()
        script = Script([err(status=404, kind=ErrorKind.CONFIGURATION), err(status=503)], stop,
                        fake_time)
        await Pump([Lane("agent", 1, script, url)], POLICY, Stats(clock=fake_time.clock),
                   structlog.get_logger(), stop=stop, pause=fake_time.pause,
                   clock=fake_time.clock, rng=random.Random(1)).run()

    asyncio.run(go())
    assert [e["url"] for e in logs if e["event"] == "call_failed"] == [url, None]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_a_refused_connection_has_a_hint_and_no_tls_noise(transport: str) -> None:
    import httpx

    from queue_pump.app import http_config
    from queue_pump.transport import build_http_client

    settings = from_mapping({**BASE_ENV, "QUEUE_PUMP_HTTP_TRANSPORT": transport})

    async def call() -> BaseException:
        async with build_http_client(http_config(settings)) as client:
            try:
                await client.post(f"http://127.0.0.1:{_closed_port()}/x")
            except httpx.HTTPError as exc:
                return exc
        raise AssertionError("the connection was not refused")

    error = from_exception(asyncio.run(call()), RUNNER)
    assert error is not None and error.reason == "connect"
    assert "is the runner up" in error.hint and "SUPABASE_URL" in error.hint
    assert "ssl:" not in error.detail


class _NotAPump(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_a_pump() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAPump)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["status", "healthcheck"])
def test_status_at_something_that_is_not_a_pump_says_so(command: str, not_a_pump: str,
                                                       tmp_path: Path) -> None:
    out = queue_pump(command, "--url", not_a_pump, env=base_env(), cwd=tmp_path)
    assert out.returncode == 1
    assert "not as a queue-pump health endpoint" in out.stderr
    no_scheme = queue_pump(command, "--url", "127.0.0.1:8080", env=base_env(), cwd=tmp_path)
    assert no_scheme.returncode == 2
    assert "has no http:// or https:// scheme" in no_scheme.stderr


def test_status_names_the_pump_and_its_problems() -> None:
    text = format_status({"version": "0.1.0", "status": "ok", "healthy": False, "state":
                          "backing-off", "ready": False, "worker_id": "box-2",
                          "runner": "https://x.supabase.co/functions/v1/ai-job-runner",
                          "problems": ["queue agent: the latest failed call was a configuration"
                                       " error (http_status 401)"], "loops": []},
                         "http://127.0.0.1:8080")
    lines = text.splitlines()
    assert lines[0].endswith(": UNHEALTHY, backing-off, not ready")
    assert lines[1] == "  worker box-2, runner https://x.supabase.co/functions/v1/ai-job-runner"
    assert lines[2].startswith("  problem: queue agent:")


def test_help_fits_80_columns_and_names_every_command(tmp_path: Path) -> None:
    out = queue_pump("--help", env=base_env(COLUMNS="80"), cwd=tmp_path)
    assert out.returncode == 0
    wide = [line for line in out.stdout.splitlines() if len(line) > 80]
    assert wide == []
    assert "queue-pump {run,runner,demo,status,healthcheck,config} --help" in out.stdout
    assert "queue-pump {jobs,top,dashboard} --help" in out.stdout
    assert "  QUEUE_PUMP_CONCURRENCY  (default: 1)" in out.stdout


def test_a_bad_flag_value_is_named_as_the_flag(tmp_path: Path) -> None:
    out = queue_pump("--once", "--concurrency", "abc", env=base_env(**BASE_ENV), cwd=tmp_path)
    assert out.returncode == 2
    [line] = [x for x in out.stderr.splitlines() if "abc" in x]
    assert line.startswith("queue-pump: config: --concurrency 'abc'"), line


@pytest.mark.parametrize("command", [[], ["config"]])
def test_a_secret_flag_says_where_secrets_come_from(command: list[str], tmp_path: Path) -> None:
    out = queue_pump(*command, "--agent-token", "x" * 20, env=base_env(**BASE_ENV), cwd=tmp_path)
    assert out.returncode == 2
    assert "--agent-token does not exist: AGENT_TOKEN is a secret" in out.stderr
    assert "x" * 20 not in out.stderr


def test_config_takes_the_flags_run_takes(tmp_path: Path) -> None:
    ok = queue_pump("config", "--concurrency", "4", env=base_env(**BASE_ENV), cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout)["concurrency"] == 4
    bad = queue_pump("config", "--concurrency", "abc", env=base_env(**BASE_ENV), cwd=tmp_path)
    assert bad.returncode == 2 and "--concurrency 'abc'" in bad.stderr
