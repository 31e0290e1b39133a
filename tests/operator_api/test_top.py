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
