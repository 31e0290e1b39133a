"""What a pump at the defaults loads, read from the real process (python -X importtime): the
transport that was not chosen never, and what only some runs need (metrics, backoff, .env,
misspelled names) not before it is needed. Idle memory itself is measured in bench/ (idle)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys

import pytest

from tests.support.proc import pump_env
from tests.support.runner_double import IDLE, runner_double

# Loaded only by what some runs do: the first /metrics scrape, the first backoff (or adaptive
# idle), a .env file, a misspelled QUEUE_PUMP_* name.
LATER = {"prometheus_client", "tenacity", "dotenv", "difflib"}
# Installed where an operator runs `queue-pump top` (the ops extra) and here (the dev extra):
# structlog and httpx would each load rich at import (~16.5 MB), and the pump refuses it.
OPERATORS_ONLY = {"rich", "pygments", "markdown_it", "click"}
# The modules a real --once run holds at its exit, whatever -X importtime says of failed tries.
_AT_EXIT = ("import atexit, runpy, sys; atexit.register(lambda: print('MODULES', "
            "sorted({m.split('.')[0] for m, v in sys.modules.items() if v is not None}), "
            "file=sys.stderr)); sys.argv = ['queue-pump', '--once']; "
            "runpy.run_module('queue_pump', run_name='__main__')")
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


@pytest.mark.e2e
def test_a_pump_never_loads_rich_even_where_it_is_installed(tmp_path: object) -> None:
    # Installed here (the dev extra), as where an operator runs `queue-pump top`; without it
    # the assertion below could not fail.
    assert importlib.util.find_spec("rich") is not None
    with runner_double(lambda i: IDLE) as double:
        proc = subprocess.run([sys.executable, "-c", _AT_EXIT], env=pump_env(double.url),
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES "))
    loaded = set(ast.literal_eval(line.removeprefix("MODULES ")))
    assert {"queue_pump", "structlog", "httpx"} <= loaded  # the run was read
    assert not loaded & OPERATORS_ONLY
