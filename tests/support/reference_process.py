"""The reference runner as a real process of its own, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from . import net
from .env import TOKEN

ORG = "org-1"
AUTH = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG}


class RunnerProcess:
    def __init__(self, port: int, db: str, *args: str) -> None:
        self.port = port
        self.db = db
        self.args = args
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> RunnerProcess:
        env = {**os.environ, "AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": ORG}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "queue_pump.reference_runner", "--port", str(self.port),
             "--db", self.db, *self.args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if net.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"runner exited: {err}")
            time.sleep(0.05)
        raise TimeoutError("runner did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def enqueue(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        response = net.post(self.url + "/jobs", json={"jobs": jobs}, headers=AUTH, timeout=30)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        return dict(net.get(self.url + "/jobs/stats", headers=AUTH, timeout=10).json())

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(net.get(f"{self.url}/jobs/{job_id}", headers=AUTH, timeout=10).json())


@contextmanager
def reference_runner(port: int, db: str, *args: str) -> Iterator[RunnerProcess]:
    runner = RunnerProcess(port, db, *args).start()
    try:
        yield runner
    finally:
        runner.stop()
