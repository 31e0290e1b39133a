"""Issue 15, item 5: the reference runner reads the .env the pump reads, and says what to do next.

The README's local tryout in real processes: one directory, one .env, runner -> enqueue -> pump.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TOKEN = "local-SECRET-tok3n"
ORG = "local-org"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QUEUE_PUMP_")
           and k not in ("AGENT_TOKEN", "ORGANIZATION_ID", "SUPABASE_URL", "NOTIFY_SOCKET")}
    env.update({"PYTHONUNBUFFERED": "1", "QUEUE_PUMP_LOG_FORMAT": "json", **extra})
    return env


def _py(cwd: Path, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=_clean_env(**extra),
                          capture_output=True, text=True, timeout=60)


def _write_env(path: Path, **values: str) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


@pytest.mark.e2e
def test_runner_enqueue_pump_share_one_dot_env(tmp_path: Path) -> None:
    _write_env(tmp_path / ".env", AGENT_TOKEN=TOKEN, ORGANIZATION_ID=ORG)
    runner = subprocess.Popen([sys.executable, "-m", "queue_pump", "runner", "--port", "0",
                               "--db", "jobs.sqlite3"], cwd=tmp_path, env=_clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert runner.stderr is not None
        first = runner.stderr.readline()
        assert first.startswith("runner listening on http://127.0.0.1:"), first
        pump_hint, enqueue_hint = runner.stderr.readline(), runner.stderr.readline()
        found = re.search(r"SUPABASE_URL=(http://127\.0\.0\.1:\d+) ", pump_hint)
        assert found, pump_hint
        url = found.group(1)
        assert f"enqueue demo --url {url}" in enqueue_hint
        # The pump's half of the same .env: the URL the runner just gave.
        _write_env(tmp_path / ".env", AGENT_TOKEN=TOKEN, ORGANIZATION_ID=ORG, SUPABASE_URL=url)
        enq = _py(tmp_path, "-m", "queue_pump.reference_runner", "enqueue", "demo",
                  "--count", "3", "--payload", '{"duration_ms": 1}')
        assert enq.returncode == 0, enq.stderr
        assert enq.stdout.startswith(f"enqueued 3 demo job(s) in queue agent at {url}")
        pump = _py(tmp_path, "-m", "queue_pump", "--drain")
        assert pump.returncode == 0, pump.stderr
        assert '"event": "queue_drained"' in pump.stdout and '"processed": 3' in pump.stdout
        # The real environment wins over the file, as for the pump.
        wrong = _py(tmp_path, "-m", "queue_pump.reference_runner", "enqueue",
                    AGENT_TOKEN="another-token-value")
        assert wrong.returncode == 1 and "answered 401" in wrong.stderr
        assert wrong.stderr.count("\n") == 1
    finally:
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=20)
    assert runner.returncode == 0 and "3 processed" in err
    for text in (out, err, enq.stdout, enq.stderr, pump.stderr, wrong.stderr):
        assert TOKEN not in text and "Traceback" not in text


@pytest.mark.e2e
def test_a_named_env_file_is_read_and_a_missing_one_is_one_line(tmp_path: Path) -> None:
    missing = _py(tmp_path, "-m", "queue_pump.reference_runner", "--env-file", "nope.env")
    assert missing.returncode == 2
    assert missing.stderr == ("queue-pump runner: --env-file 'nope.env' does not exist or is "
                              "not a file\n")
    _write_env(tmp_path / "other.env", AGENT_TOKEN=TOKEN)  # no ORGANIZATION_ID: says so
    half = _py(tmp_path, "-m", "queue_pump", "runner", "--env-file", "other.env")
    assert half.returncode == 2 and "ORGANIZATION_ID is not set" in half.stderr


@pytest.mark.e2e
def test_enqueue_says_when_no_runner_answers(tmp_path: Path) -> None:
    _write_env(tmp_path / ".env", AGENT_TOKEN=TOKEN, ORGANIZATION_ID=ORG)
    done = _py(tmp_path, "-m", "queue_pump.reference_runner", "enqueue",
               "--url", "http://127.0.0.1:9", "--wait-s", "0.5")
    assert done.returncode == 1 and "no runner answers at http://127.0.0.1:9" in done.stderr
    bad = _py(tmp_path, "-m", "queue_pump.reference_runner", "enqueue", "--payload", "[1]")
    assert bad.returncode == 2 and "--payload must be a JSON object" in bad.stderr


