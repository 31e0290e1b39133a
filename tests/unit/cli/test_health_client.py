"""queue-pump status and healthcheck against a real health endpoint, in process."""

from __future__ import annotations

from typing import Any

import pytest

from queue_pump.cli.health_client import cmd_healthcheck, cmd_status
from queue_pump.observe.state import Stats
from tests.support.env import FakeTime
from tests.support.runner_double import free_port


def test_status_and_healthcheck_commands(served_stats: tuple[Stats, FakeTime, str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    stats, fake, base = served_stats
    loop = stats.add_loop("agent-0", "agent")
    stats.call_started(loop, 10.0)
    stats.call_ended(loop, 0.1, "processed", job_status="done", jobs=5)
    stats.backlog("agent", 1000)
    stats.call_started(loop, 10.0)
    stats.call_ended(loop, 0.1, "error", error=("retryable", "connect"))
    assert cmd_status(["--url", base], {}) == 0
    out = capsys.readouterr().out
    assert "calls 2: jobs processed 5, idle 0, errors 1" in out  # one call ran five jobs
    assert "backlog (jobs due): agent 1000" in out
    assert "1 failures in a row" in out and "retryable:connect 1" in out
    assert cmd_healthcheck(["--url", base], {}) == 0
    fake.now += 1000
    assert cmd_healthcheck(["--url", base], {}) == 1
    assert "stuck loops: agent-0" in capsys.readouterr().err
    assert cmd_healthcheck(["--url", f"http://127.0.0.1:{free_port()}"], {}) == 1
    assert cmd_status(["--url", f"http://127.0.0.1:{free_port()}"], {}) == 1
    assert "no pump answers" in capsys.readouterr().err


def test_healthcheck_says_when_the_endpoint_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_healthcheck([], {"QUEUE_PUMP_HEALTH_PORT": "0"}) == 1
    assert "the health endpoint is off" in capsys.readouterr().err
    assert cmd_status([], {"QUEUE_PUMP_HEALTH_PORT": "0"}) == 1


def test_healthcheck_finds_the_port_in_dot_env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                               served_stats: tuple[Stats, FakeTime, str]) -> None:
    _, _, base = served_stats
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"QUEUE_PUMP_HEALTH_PORT={base.rsplit(':', 1)[1]}\n")
    assert cmd_healthcheck([], {}) == 0
