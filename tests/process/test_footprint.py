"""What a pump at the defaults loads, read from the real process (python -X importtime): the
transport that was not chosen never, and what only some runs need (metrics, backoff, .env,
misspelled names) not before it is needed. Idle memory itself is measured in bench/ (idle)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.proc import pump_env
from tests.support.runner_double import IDLE, runner_double

# Loaded only by what some runs do: the first /metrics scrape, the first backoff (or adaptive
# idle), a .env file, a misspelled QUEUE_PUMP_* name.
LATER = {"prometheus_client", "tenacity", "dotenv", "difflib"}
NOT_CHOSEN = {"httpx": {"aiohttp", "httpx_aiohttp", "frozenlist", "yarl"},
              "aiohttp": {"httpcore", "h11"}}


def imported(env: dict[str, str], cwd: str) -> set[str]:
    """Top-level names of every module the process imported, from -X importtime's report."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "queue_pump", "--once"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:")}
    return {name.split(".")[0] for name in names}


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("webhook", [False, True], ids=["", "with-webhook"])
def test_a_run_loads_its_transport_alone_and_nothing_it_does_not_use(
        transport: str, webhook: bool, tmp_path: object) -> None:
    with runner_double(lambda i: IDLE) as double:
        env = pump_env(double.url, QUEUE_PUMP_HTTP_TRANSPORT=transport)
        if webhook:  # its client goes through the chosen transport too
            env["QUEUE_PUMP_ALERT_WEBHOOK_URL"] = double.url + "/hook"
        names = imported(env, str(tmp_path))
    assert "queue_pump" in names and "httpx" in names  # the report was read
    assert transport in names
    assert not names & NOT_CHOSEN[transport]
    assert not names & LATER
