"""Issue 15, item 9: under Compose a bad configuration (exit 2) restart-loops slowly and loudly.

The wrapper is the shipped docker-compose.queue-pump.yml's own text, run by a real /bin/sh around
the real queue-pump (CI's deploy checks run the same file in a real Docker engine; there is no
engine in this suite).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.env import ROOT
from tests.support.proc import pump_env
from tests.support.runner_double import IDLE, free_port, runner_double

COMPOSE = ROOT / "docker-compose.queue-pump.yml"
DELAY_VAR = "${WORKER_CONFIG_ERROR_DELAY_S:-60}"


def wrapper(delay_s: int) -> str:
    """The `entrypoint: [/bin/sh, -c, |...]` script as Compose hands it to sh."""
    lines = COMPOSE.read_text().splitlines()
    start = lines.index("    entrypoint:")
    assert lines[start + 1:start + 4] == ["      - /bin/sh", "      - -c", "      - |"]
    body = []
    for line in lines[start + 4:]:
        if not line.startswith(" " * 8):
            break
        body.append(line[8:])
    text = "\n".join(body) + "\n"
    assert DELAY_VAR in text  # 60 s unless the operator says otherwise
    # Compose's interpolation: $$ is a literal $, ${VAR:-default} is the variable or default.
    return text.replace(DELAY_VAR, str(delay_s)).replace("$$", "$")


def start(script: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    bin_dir = str(Path(sys.executable).parent)  # where the real queue-pump script lives
    env = {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", "")}
    return subprocess.Popen(["/bin/sh", "-c", script, "queue-pump", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_entrypoint_keeps_the_run_command_and_the_delay_default() -> None:
    text = COMPOSE.read_text()
    assert '    command: ["run"]' in text  # an entrypoint clears the image's CMD
    assert 'exec queue-pump "$$@"' in text  # a good configuration: the pump is PID 1


def test_exit_2_is_said_loudly_and_delayed() -> None:
    env = pump_env("http://127.0.0.1:1")
    del env["SUPABASE_URL"]
    started = time.monotonic()
    proc = start(wrapper(1), env, "run")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert time.monotonic() - started >= 1
    assert "SUPABASE_URL" in err  # the pump's own line, then the wrapper's
    assert err.rstrip().splitlines()[-1].startswith(
        "queue-pump: BAD CONFIGURATION (the lines above say what)")
    assert "Next try in 1 s." in err


def test_a_stop_during_the_delay_is_prompt() -> None:
    env = pump_env("http://127.0.0.1:1")
    del env["AGENT_TOKEN"]
    proc = start(wrapper(60), env, "run")
    assert proc.stderr is not None
    while "BAD CONFIGURATION" not in proc.stderr.readline():
        pass
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 2 and time.monotonic() - stopped < 5


def test_other_exit_codes_pass_through_at_once() -> None:
    started = time.monotonic()
    proc = start(wrapper(60), pump_env(f"http://127.0.0.1:{free_port()}"), "--once")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "BAD CONFIGURATION" not in err
    assert time.monotonic() - started < 30


def test_sigterm_reaches_the_pump_which_stops_gracefully() -> None:
    with runner_double(lambda i: IDLE) as double:
        proc = start(wrapper(60), pump_env(double.url, QUEUE_PUMP_IDLE_SLEEP_MS="60000"), "run")
        double.wait_for(1)
        # exec: the process the container starts is now the pump itself, which gets the signal
        assert b"bin/queue-pump\x00run" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stopped = [line for line in out.splitlines() if '"event": "pump_stopped"' in line]
    assert stopped and re.search(r'"exit_code": 0\b', stopped[0])
    assert '"signal": "SIGTERM"' in out
