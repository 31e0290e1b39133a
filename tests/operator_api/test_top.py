"""`queue-pump top` under a real terminal (tmux at 80x24) while 1,000 jobs drain under a real
pump: its counts move, and at the end they are what `stats` says; Ctrl-C leaves it cleanly.
Not a terminal: plain periodic lines. Without rich: one line saying how to get it."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from queue_pump.cli import main
from tests.support import proc
from tests.support.proc import wait_until

from .target import Api, Target

JOBS = 1000
ALL_ROW = re.compile(r"^all\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", re.M)


class Pane:
    """A tmux server of our own (its own socket), one 80x24 window running a command."""

    def __init__(self, command: str, env: dict[str, str], tmp: Path) -> None:
        self.socket = f"qp-top-{uuid.uuid4().hex[:8]}"
        script = tmp / "top.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script.write_text(f"{exports}{command}; echo EXIT=$?; sleep 120\n")
        self._tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24",
                   "-c", str(tmp), f"bash {shlex.quote(str(script))}")

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=30, check=True)
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30)


def _counts(screen: str) -> tuple[int, ...] | None:
    found = ALL_ROW.search(screen)
    return tuple(int(n) for n in found.groups()) if found else None


@pytest.fixture
def tmux() -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("QUEUE_PUMP_REQUIRE_KIT") == "1":
            pytest.fail("tmux is not installed (apt-get install tmux); CI needs it")
        pytest.skip("tmux is not installed: apt-get install tmux")


@pytest.mark.e2e
@pytest.mark.usefixtures("tmux")
def test_top_in_a_real_terminal_while_jobs_drain(api: Api, target: Target,
                                                  tmp_path: Path) -> None:
    for _ in range(JOBS):
        api.add("sleep", {"ms": 5})
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    env |= {**target.cli_env(), "TERM": "xterm-256color"}
    queue_pump = str(Path(sys.executable).with_name("queue-pump"))
    pane = Pane(f"{shlex.quote(queue_pump)} top --every-s 0.2", env, tmp_path)
    pump = None
    try:
        wait_until(lambda: _counts(pane.screen()) is not None)
        assert _counts(pane.screen())[:3] == (JOBS, 0, 0)  # type: ignore[index]
        first = pane.screen().splitlines()
        assert first[0].startswith("queue-pump top") and len(first) <= 24
        pump = proc.Live(proc.start(target.pump_env(QUEUE_PUMP_TICK_SLEEP_MS="0",
                                                    QUEUE_PUMP_IDLE_SLEEP_MS="200")))
        seen: set[tuple[int, ...]] = set()

        def drained_on_screen() -> bool:
            counts = _counts(pane.screen())
            if counts is not None:
                seen.add(counts)
            return counts is not None and counts[2] == JOBS

        wait_until(drained_on_screen, timeout_s=300)
        done_seen = sorted({c[2] for c in seen})
        assert any(0 < d < JOBS for d in done_seen), done_seen  # the counts moved
        total = api.stats()["total"]
        on_screen = _counts(pane.screen())
        assert on_screen == tuple(total[k] for k in ("queued", "running", "done", "failed",
                                                     "cancelled", "due"))
        assert "per minute" in pane.screen()
        pane.keys("C-c")
        wait_until(lambda: "EXIT=" in pane.screen())
        screen = pane.screen()
        assert "EXIT=0" in screen and "Traceback" not in screen
    finally:
        pane.close()
        if pump is not None:
            pump.proc.terminate()
            pump.finish(timeout_s=60)


def test_not_a_terminal_prints_plain_periodic_lines(api: Api, target: Target,
                                                   tmp_path: Path) -> None:
    api.add("echo")
    env = {**target.cli_env(), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([sys.executable, "-m", "queue_pump", "top", "--count", "3",
                           "--every-s", "0.05"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert all(re.match(r"^\S+Z queued=1 running=0 done=0 failed=0 cancelled=0 due=1 ", line)
               for line in lines), lines


def test_without_rich_top_says_how_to_install_it(target: Target,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setitem(sys.modules, "rich", None)  # as if it were not installed
    monkeypatch.setattr(sys, "stdout", Terminal())
    code = main(["top"], target.cli_env())
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'queue-pump[ops]'" in err


def test_a_refused_token_ends_top_with_one_line(target: Target, tmp_path: Path) -> None:
    env = {**target.cli_env(), "ADMIN_TOKEN": "not-the-admin-token-0123",
           "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([sys.executable, "-m", "queue_pump", "top", "--count", "1"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "ADMIN_TOKEN" in done.stderr


# -- what it draws, in this process: the view at 80 columns, a pump's loops, failures later on --

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_view_in_a_terminal_with_a_pumps_loops(
        api: Api, target: Target, served_stats: tuple[object, object, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    stats, _, health_url = served_stats
    stats.add_loop("agent-0", "agent")  # type: ignore[attr-defined]
    api.failing("it broke")
    api.run()
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setenv("COLUMNS", "80")
    code = main(["top", "--count", "2", "--every-s", "0.1", "--pump", health_url],
                target.cli_env())
    assert code == 0
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "queue-pump top" in drawn and "it broke" in drawn
    assert "pump healthy, 1 loops (1 starting)" in drawn


def test_the_view_fits_80x24_however_many_queues_and_failures() -> None:
    from rich.console import Console

    from queue_pump.cli.top import Snapshot, view

    queues = [{"queue": f"queue-{i}", "queued": i, "running": 0, "done": 10 * i, "failed": 1,
               "cancelled": 0, "due": i, "oldestDueAgeSeconds": 3.5 * i or None}
              for i in range(12)]
    stats = {"queues": queues, "total": {**queues[-1], "queue": None},
             "perMinute": [{"minute": f"2026-12-06T08:{m:02d}:00Z", "done": m, "failed": m % 3}
                           for m in range(61)],
             "recentFailures": [{"id": i, "queue": "q", "type": "t", "error": "x " * 200,
                                 "finishedAt": "2026-12-06T08:00:00Z"} for i in range(10)]}
    loops = [{"name": f"agent-{i}", "state": "working", "stuck": i == 3} for i in range(12)]
    pump = {"healthy": False, "state": "working", "counters": {"processed": 5}, "loops": loops}
    drawn = []
    for snap in (Snapshot(stats, pump), Snapshot(stats, "no pump answers at x", error="boom"),
                 Snapshot({}, None, error="HTTP 503")):
        console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
        console.print(view(snap, "org at http://127.0.0.1/functions/v1/jobs"))
        lines = console.export_text().rstrip("\n").splitlines()
        assert all(len(line) <= 80 for line in lines), lines
        assert len(lines) <= 24, len(lines)
        drawn.append("\n".join(lines))
    assert "+6 more" in drawn[0]
    assert "pump UNHEALTHY, STUCK: agent-3; 12 loops (12 working)" in drawn[0]
    assert "last refresh failed: boom" in drawn[1] and "no pump answers at x" in drawn[1]
    assert "last refresh failed: HTTP 503" in drawn[2]


def test_the_pumps_backlog_is_shown_when_its_runner_sends_one() -> None:
    from rich.console import Console

    from queue_pump.cli.top import Snapshot, plain_line, view

    total = {"queued": 3, "running": 0, "done": 0, "failed": 0, "cancelled": 0, "due": 3,
             "oldestDueAgeSeconds": 1.0}
    stats = {"queues": [{"queue": "agent", **total}], "total": total, "perMinute": []}
    pump = {"healthy": True, "counters": {"processed": 2}, "backlog": {"agent": 1000},
            "loops": [{"name": "agent-0", "state": "working"}]}
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    console.print(view(Snapshot(stats, pump), "org"))
    assert "pump healthy, backlog (jobs due): agent 1000; 1 loops" in console.export_text()
    assert plain_line(Snapshot(stats, pump)).endswith(" pump_backlog_agent=1000")
    assert "backlog" not in plain_line(Snapshot(stats, {**pump, "backlog": {}}))


def test_a_failure_after_the_first_refresh_is_shown_not_fatal() -> None:
    from queue_pump.cli.operator_client import OperatorError
    from queue_pump.cli.top import _refreshes, plain_line

    class Flaky:
        calls = 0

        def call(self, *_args: object, **_kwargs: object) -> dict[str, object]:
            self.calls += 1
            if self.calls == 2:
                raise OperatorError("HTTP 503: database away", "try again later")
            return {"total": {"queued": 1, "running": 0, "done": 2, "failed": 0,
                              "cancelled": 0, "due": 1, "oldestDueAgeSeconds": None},
                    "queues": [], "perMinute": [], "recentFailures": []}

    snaps = list(_refreshes(Flaky(), None, None, 0.0, 3))  # type: ignore[arg-type]
    assert [s.error for s in snaps] == [None, "HTTP 503: database away; try again later", None]
    assert plain_line(snaps[1]).endswith("error: HTTP 503: database away; try again later")
    assert "oldest_due=- " in plain_line(snaps[0])


def test_a_pump_that_does_not_answer_is_said_in_the_view(target: Target) -> None:
    from queue_pump.cli.top import _pump_health
    from tests.support.net import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    assert str(_pump_health(dead)).startswith(f"no pump answers at {dead}")
    not_a_pump = _pump_health(target.jobs_url)
    assert isinstance(not_a_pump, str) and "not as a pump" in not_a_pump
