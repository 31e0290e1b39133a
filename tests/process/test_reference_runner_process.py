"""The reference runner as a real process: stopped by a signal while a job runs, faults from
its environment."""

from __future__ import annotations

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
from tests.support import net as loopback
from tests.support.env import TOKEN
from tests.support.reference_process import AUTH, ORG

ENV = {"AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": ORG}


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
