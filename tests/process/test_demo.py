"""The README's first command, small: it must drain every job and stop the pump cleanly."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from queue_pump.cli.demo import Tally, bar, main, percentile, run_demo

pytestmark = pytest.mark.e2e


def test_demo_drains_every_job_and_summarises() -> None:
    out = io.StringIO()
    assert asyncio.run(run_demo(40, 3, 0.05, seed=3, timeout_s=60, out=out)) == 0
    text = out.getvalue()
    assert "40 done, 0 failed, of 40" in text
    assert "pump exit         0 (clean stop on SIGTERM)" in text
    assert "p50" in text and "calls while idle" in text
    # The reference runner sends its backlog: 39 due after the first of 40 jobs, 0 at the end.
    assert "runner backlog    39 due at most, 0 at the end" in text


def test_demo_ignores_a_real_deployments_env_file_and_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The README tells users to keep the Node pump's .env where they run queue-pump: the demo
    # must still only ever talk to its own runner.
    (tmp_path / ".env").write_text(
        "QUEUE_PUMP_ENDPOINT=http://127.0.0.1:9/elsewhere\n"
        "QUEUE_PUMP_QUEUES=agent:2,render:1\n"
        "QUEUE_PUMP_SCHEDULES=/nonexistent/schedules.toml\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUEUE_PUMP_ENDPOINT", "http://127.0.0.1:9/exported")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "anon-from-a-real-deployment")
    out = io.StringIO()
    assert asyncio.run(run_demo(12, 2, 0.0, seed=5, timeout_s=60, out=out)) == 0
    assert "12 done, 0 failed, of 12" in out.getvalue()


def test_demo_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--jobs", "0"], {})
    assert info.value.code == 2
    assert "--jobs 0 is out of range" in capsys.readouterr().err


def test_tally_and_helpers() -> None:
    tally = Tally()
    for event in ({"event": "call", "outcome": "processed", "duration_ms": 10},
                  {"event": "call", "outcome": "error", "duration_ms": 30},
                  {"event": "call_failed", "status": 503},
                  {"event": "call", "outcome": "idle", "duration_ms": 20}):
        tally.feed(event)
    assert (tally.calls, tally.processed, tally.errors, tally.idle) == (3, 1, 1, 1)
    assert tally.errors_by_reason == {"503": 1}
    assert percentile([10.0, 20.0, 30.0], 50) == 20.0
    assert bar(5, 10, 1.0, 0, width=10).startswith("[#####.....] 5/10")
    assert bar(5, 10, 1.0, 0, backlog=5).endswith("errors 0  backlog 5")
    tally.feed({"event": "call", "outcome": "processed", "duration_ms": 1, "backlog": 7})
    tally.feed({"event": "call", "outcome": "idle", "duration_ms": 1, "backlog": 0})
    assert (tally.backlog, tally.peak_backlog) == (0, 7)
