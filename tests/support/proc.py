"""Run the real pump as a child process and read what it printed.

Every timeout here is a guard against a hang, not a speed bound (bench/ measures speed): 30 s,
which a pump traced for coverage on a loaded 2-core machine still makes with room to spare,
and below the 60 s sleeps the signal tests cut short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .env import TOKEN


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


def finish(proc: subprocess.Popen[str], started: float, timeout_s: float = 30) -> Finished:
    out, err = proc.communicate(timeout=timeout_s)
    return Finished(proc.returncode, out, err, time.monotonic() - started)


def run(env: Mapping[str, str], *args: str, timeout_s: float = 30,
        cwd: str | None = None) -> Finished:
    started = time.monotonic()
    return finish(start(env, *args, cwd=cwd), started, timeout_s)


def wait_until(predicate: Any, timeout_s: float = 30.0, step_s: float = 0.02) -> None:
    """Until ``predicate()`` holds, asked every ``step_s``; TimeoutError after ``timeout_s``.
    The one wait on an event of the suite (and of bench/): never a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(step_s)


def signal_after(proc: subprocess.Popen[str], sig: signal.Signals, delay_s: float) -> None:
    time.sleep(delay_s)
    proc.send_signal(sig)


class Live:
    """The pump process with its stdout read as it comes, so tests wait on log events."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.err: list[str] = []
        self._seen_lines: list[str] = []
        self._parsed: list[dict[str, Any]] = []
        self._threads = [threading.Thread(target=self._read, args=(s, sink), daemon=True)
                         for s, sink in ((proc.stdout, self.lines), (proc.stderr, self.err))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def events(self, name: str) -> list[dict[str, Any]]:
        # Parsed once each: wait_event asks every 10 ms, and a busy pump prints thousands.
        for line in self.lines[len(self._seen_lines):]:
            self._seen_lines.append(line)
            if line.startswith("{"):
                self._parsed.append(json.loads(line))
        return [event for event in self._parsed if event.get("event") == name]

    def wait_event(self, name: str, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found[0]
            assert self.proc.poll() is None, f"the pump exited {self.proc.returncode}"
            time.sleep(0.01)
        raise TimeoutError(f"no {name} event within {timeout_s} s")

    def finish(self, timeout_s: float = 30, *, clean: bool = True) -> tuple[int, float]:
        """Wait for the exit; ``clean``: no traceback anywhere. The token is never printed."""
        t0 = time.monotonic()
        code = self.proc.wait(timeout=timeout_s)
        for thread in self._threads:
            thread.join(timeout=5)
        out, err = "".join(self.lines), "".join(self.err)
        assert TOKEN not in out and TOKEN not in err
        if clean:
            assert "Traceback" not in out and "Traceback" not in err, err[-3000:]
        return code, time.monotonic() - t0
