"""What a pump at the defaults loads, read from the real process (python -X importtime): the
transport that was not chosen never, and what only some runs need (metrics, backoff, .env,
misspelled names) not before it is needed. Idle memory itself is measured in bench/ (idle)."""

from __future__ import annotations

import ast
import importlib.util
import json
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
# Never loaded: importlib.metadata (with zipfile, csv, importlib.resources: ~0.8 MB), which
# httpx-aiohttp imported for a version check, before the pump had a transport of its own.
NEVER = {"importlib.metadata", "zipfile", "csv", "httpx_aiohttp"}
# The dashboard's (queue-pump dashboard, the dashboard extra; installed here by dev): never in a
# pump, nor in `--help`. (greenlet, which Playwright brings into the dev extra, is not listed:
# structlog imports it whenever it is installed; the pump's image has none.)
DASHBOARD_ONLY = {"jinja2", "markupsafe", "playwright"}
DASHBOARD_MODULES = ("queue_pump.dashboard", "queue_pump.cli.dashboard", "aiohttp.web")


def imported(env: dict[str, str], cwd: str) -> set[str]:
    """Every module the process imported, from -X importtime's report."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "queue_pump", "--once"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("webhook", [False, True], ids=["", "with-webhook"])
def test_a_run_loads_its_transport_alone_and_nothing_it_does_not_use(
        transport: str, webhook: bool, tmp_path: object) -> None:
    with runner_double(lambda i: IDLE) as double:
        env = pump_env(double.url, QUEUE_PUMP_HTTP_TRANSPORT=transport)
        if webhook:  # its client goes through the chosen transport too
            env["QUEUE_PUMP_ALERT_WEBHOOK_URL"] = double.url + "/hook"
        modules = imported(env, str(tmp_path))
    names = {module.split(".")[0] for module in modules}
    assert "queue_pump" in names and "httpx" in names  # the report was read
    assert transport in names
    assert not names & NOT_CHOSEN[transport]
    assert not names & LATER
    assert not modules & NEVER
    assert not names & DASHBOARD_ONLY
    assert not {m for m in modules if m.startswith(DASHBOARD_MODULES)}


@pytest.mark.e2e
def test_help_loads_no_dashboard_no_event_loop_and_no_http_client(tmp_path: object) -> None:
    # Installed here (the dev extra), as where an operator runs `queue-pump dashboard`.
    assert importlib.util.find_spec("jinja2") is not None
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "queue_pump", "--help"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "dashboard" in proc.stdout
    modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")}
    names = {module.split(".")[0] for module in modules}
    assert "queue_pump" in names and "argparse" in names  # the report was read
    assert not names & (DASHBOARD_ONLY | OPERATORS_ONLY | {"httpx", "aiohttp", "asyncio"})
    assert not {m for m in modules if m.startswith(DASHBOARD_MODULES)}


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


# The real pump (python -m queue_pump), and at its exit a count of the TLS contexts it holds
# and of those with certificates loaded: each such copy of the system trust store is ~0.8 MB.
COUNT_TRUST_STORES = """
import atexit, gc, json, runpy, ssl, sys

def count():
    contexts = [o for o in gc.get_objects() if isinstance(o, ssl.SSLContext)]
    loaded = [c for c in contexts if c.cert_store_stats()["x509_ca"]]
    print("TRUST_STORES " + json.dumps({"contexts": len(contexts), "loaded": len(loaded)}),
          file=sys.stderr)

atexit.register(count)
sys.argv = ["queue_pump", *sys.argv[1:]]
runpy.run_module("queue_pump", run_name="__main__", alter_sys=True)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_pump_holds_one_trust_store_with_a_webhook_client_too(
        transport: str, tmp_path: object) -> None:
    with runner_double(lambda i: IDLE) as double:
        env = pump_env(double.url, QUEUE_PUMP_HTTP_TRANSPORT=transport,
                       QUEUE_PUMP_ALERT_WEBHOOK_URL=double.url + "/hook")
        proc = subprocess.run([sys.executable, "-c", COUNT_TRUST_STORES, "--once"], env=env,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert double.seen  # it made its call
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stderr.splitlines() if line.startswith("TRUST_STORES "))
    held = json.loads(line.removeprefix("TRUST_STORES "))
    assert held["loaded"] == 1, held
    # The count saw them all: aiohttp builds two contexts of its own at import (verified and
    # not), which would each load the trust store; the pump hands every session its own.
    assert held["contexts"] >= (3 if transport == "aiohttp" else 1), held
