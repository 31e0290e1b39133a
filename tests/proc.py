"""Run the real pump as a child process and read what it printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .conftest import TOKEN


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    elapsed_s: float

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def assert_no_secret(self) -> None:
        assert TOKEN not in self.stdout and TOKEN not in self.stderr
        assert "Traceback" not in self.stderr and "Traceback" not in self.stdout


def pump_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_PUMP_", "NOTIFY_"))}
    env.update({"SUPABASE_URL": url, "AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": "org-1",
                "QUEUE_PUMP_LOG_FORMAT": "json", "QUEUE_PUMP_HEALTH_PORT": "0",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start(env: Mapping[str, str], *args: str, cwd: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "queue_pump", *args], env=dict(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


def finish(proc: subprocess.Popen[str], started: float, timeout_s: float = 20) -> Finished:
    out, err = proc.communicate(timeout=timeout_s)
    return Finished(proc.returncode, out, err, time.monotonic() - started)


def run(env: Mapping[str, str], *args: str, timeout_s: float = 20,
        cwd: str | None = None) -> Finished:
    started = time.monotonic()
    return finish(start(env, *args, cwd=cwd), started, timeout_s)


def signal_after(proc: subprocess.Popen[str], sig: signal.Signals, delay_s: float) -> None:
    time.sleep(delay_s)
    proc.send_signal(sig)
