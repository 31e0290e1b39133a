"""Issue 15, item 7: console lines are for people (short start line, no None), JSON unchanged."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from queue_pump.config import from_mapping
from queue_pump.config.settings import KNOBS
from queue_pump.observe.logs import CONSOLE_START_KEYS, configure, console_view, get_logger
from tests.support.env import BASE_ENV
from tests.support.proc import pump_env, run
from tests.support.runner_double import IDLE, Reply, runner_double


def _config() -> dict[str, Any]:
    return from_mapping({**BASE_ENV, "QUEUE_PUMP_QUEUES": "agent:2,render:1"},
                        hostname="box-1").public_view()


def test_console_start_line_keeps_the_few_settings_that_matter() -> None:
    event = console_view(None, "info", {"event": "pump_started", "version": "0.1.0",
                                        "runner": "https://x/functions/v1/ai-job-runner",
                                        "health": None, "config": _config()})
    assert "config" not in event and "health" not in event
    assert event["lanes"] == {"agent": 2, "render": 1} and event["worker_id"] == "box-1"
    assert event["idle_sleep_ms"] == 10000 and event["full_config"] == "queue-pump config"
    assert "max_calls_per_hour" not in event  # 0: no cap, nothing to say
    assert "idle_max_sleep_ms" not in event  # equal to the idle sleep: adaptive idle is off
    assert set(event) <= {"event", "version", "runner", "full_config", *CONSOLE_START_KEYS}


def test_console_lines_omit_none_but_keep_false_and_zero() -> None:
    event = console_view(None, "warning", {"event": "call_failed", "status": None,
                                           "retry_after_s": None, "attempt": 0,
                                           "hint": None, "kind": "retryable", "x": False})
    assert event == {"event": "call_failed", "attempt": 0, "kind": "retryable", "x": False}


def _log_through(fmt: str) -> str:
    stream = io.StringIO()
    configure(fmt=fmt, level="info", stream=stream)
    try:
        get_logger().info("pump_started", version="0.1.0", health=None, config=_config())
        get_logger().warning("call_failed", kind="retryable", status=None, hint=None)
    finally:
        structlog.reset_defaults()
    return stream.getvalue()


def test_json_lines_are_unchanged_every_key_and_the_full_config() -> None:
    started, failed = (json.loads(line) for line in _log_through("json").splitlines())
    assert started["health"] is None and set(started["config"]) >= {k.view_name for k in KNOBS}
    assert failed["status"] is None and failed["hint"] is None


def test_console_start_line_is_short() -> None:
    started, failed = _log_through("console").splitlines()
    assert len(started) < 250, started
    assert "None" not in started and "None" not in failed


def test_a_real_pump_on_a_console_prints_a_short_start_line() -> None:
    script = [Reply(status=503), IDLE]
    with runner_double(lambda i: script[min(i, 1)]) as double:
        done = run(pump_env(double.url, QUEUE_PUMP_LOG_FORMAT="console",
                            QUEUE_PUMP_BACKOFF_BASE_MS="1"), "--drain")
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    started = next(line for line in lines if "pump_started" in line)
    assert len(started) < 260 and "full_config" in started
    assert not [line for line in lines if "=None" in line]
    done.assert_no_secret()
