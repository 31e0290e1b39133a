"""``queue-pump runner`` / ``python -m queue_pump.reference_runner``: flags, environment, and a
real process stopped by SIGTERM/SIGINT while a job runs."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from queue_pump.reference_runner import RUNNER_PATH
from queue_pump.reference_runner.cli import add_arguments, main, resolve
from tests.support import net as loopback

TOKEN = "runner-SECRET-91c2"
ORG = "org-test"
AUTH = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG}
ENV = {"AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": ORG}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    s = resolve(parse(), {})
    assert (s.host, s.port, s.db) == ("127.0.0.1", 8000, "queue-pump-runner.sqlite3")
    assert (s.lease_s, s.seed, s.seed_jobs) == (300.0, None, 0)
    assert s.faults.error_rate == 0.0 and s.faults.error_status == 503
    assert s.faults.retry_after_s is None


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    env = {"QUEUE_PUMP_RUNNER_ERROR_RATE": "0.25", "QUEUE_PUMP_RUNNER_PORT": "9001",
           "QUEUE_PUMP_RUNNER_STALL_S": "2"}
    s = resolve(parse("--port", "9002", "--drop-rate", "0.1", "--db", ":memory:",
                      "--retry-after-s", "0.5", "--seed", "42"), env)
    assert s.port == 9002
    assert s.faults.error_rate == 0.25 and s.faults.drop_rate == 0.1
    assert s.faults.stall_s == 2.0 and s.faults.retry_after_s == 0.5
    assert (s.db, s.seed) == (":memory:", 42)


@pytest.mark.parametrize("var", ["AGENT_TOKEN", "ORGANIZATION_ID"])
def test_missing_credentials_is_one_line_and_exit_2(
    var: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = dict(ENV, **{var: ""})
    assert main(parse("--port", "0"), env) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert var in err and TOKEN not in err


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--error-rate", "-0.1"], {}, "--error-rate must be between 0 and 1"),
        (["--rate-limit-rate", "1.5"], {}, "--rate-limit-rate must be between 0 and 1"),
        (["--drop-rate", "abc"], {}, "--drop-rate must be a number"),
        (["--stall-rate", "nan"], {}, "--stall-rate must be between"),
        (["--port", "70000"], {}, "--port must be between 0 and 65535"),
        (["--port", "-1"], {}, "--port must be between"),
        (["--port", "80.5"], {}, "--port must be an integer"),
        (["--error-status", "200"], {}, "--error-status must be between 400 and 599"),
        (["--stall-s", "-1"], {}, "--stall-s"),
        (["--lease-s", "0"], {}, "--lease-s"),
        (["--seed-jobs", "-3"], {}, "--seed-jobs"),
        (["--host", " "], {}, "--host must not be empty"),
        ([], {"QUEUE_PUMP_RUNNER_DROP_RATE": "2"}, "QUEUE_PUMP_RUNNER_DROP_RATE must be between"),
        (["--error-rate", "0.6", "--stall-rate", "0.6"], {}, "must not exceed 1"),
        (["--lease-s", "1", "--seed-duration-ms", "1000"], {}, "shorter than --lease-s"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(parse(*argv), {**ENV, **env}) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert needle in err and TOKEN not in err


def test_unopenable_database_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "no" / "such" / "dir" / "jobs.sqlite3")
    assert main(parse("--port", "0", "--db", db), ENV) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open database" in err


# -- the real process -------------------------------------------------------------------------


class Runner:
    """``python -m queue_pump.reference_runner`` as a child; knows its URL once it listens."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "queue_pump.reference_runner", "--port", "0", *argv],
            env={**os.environ, **(ENV if env is None else env)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.first_line = self.proc.stderr.readline()
        match = re.search(r"runner listening on (http://\S+) db=", self.first_line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"runner did not start: {self.first_line!r}")
        self.url = match.group(1)

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, rest = self.proc.communicate(timeout=15)
        return self.proc.returncode, self.first_line + rest


def status_counts(db: str) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
    finally:
        conn.close()
    return dict(rows)


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_the_job_in_flight_finish_then_exits_0(
    sig: int, tmp_path: Path
) -> None:
    db = str(tmp_path / "jobs.sqlite3")
    runner = Runner("--db", db, "--seed-jobs", "2", "--seed-duration-ms", "400")
    try:
        answer: dict[str, Any] = {}

        def call() -> None:
            resp = loopback.post(runner.url + RUNNER_PATH + "?worker=1&queue=agent",
                              headers=AUTH, json={"worker": True}, timeout=10)
            answer.update(resp.json(), status_code=resp.status_code)

        caller = threading.Thread(target=call)
        caller.start()
        # Wait until the run is under way, so the signal lands mid-run.
        for _ in range(100):
            if status_counts(db).get("running"):
                break
            threading.Event().wait(0.01)
        else:
            raise AssertionError("the job never started")
        code, err = runner.stop(sig)
        caller.join(timeout=10)
    finally:
        if runner.proc.poll() is None:
            runner.proc.kill()
    assert code == 0, err
    assert answer["status_code"] == 200 and answer["status"] == "done"
    assert "runner stopped: 1 calls, 1 processed" in err
    assert TOKEN not in err
    assert status_counts(db) == {"done": 1, "queued": 1}  # nothing left running


@pytest.mark.e2e
def test_faults_from_the_environment_apply() -> None:
    env = {**ENV, "QUEUE_PUMP_RUNNER_RATE_LIMIT_RATE": "1", "QUEUE_PUMP_RUNNER_RETRY_AFTER_S": "7"}
    runner = Runner("--db", ":memory:", "--seed-jobs", "1", env=env)
    try:
        resp = loopback.post(runner.url + RUNNER_PATH, headers=AUTH, timeout=10)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
        stats = loopback.get(runner.url + "/jobs/stats", headers=AUTH, timeout=10).json()
        assert stats["queued"] == 1 and stats["calls"]["faulted"] == 1
    finally:
        code, err = runner.stop(signal.SIGTERM)
    assert code == 0, err
