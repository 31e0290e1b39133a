"""Fixtures (fake time for the loops, log capture) and the suite's set-up; the helpers the tests
share are in tests/support/."""

from __future__ import annotations

import compileall
import importlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from .supabase import kit
from .support.env import ANON, BASE_ENV, TOKEN, FakeTime

__all__ = ["ANON", "BASE_ENV", "TOKEN", "FakeTime"]  # the kit's tests import TOKEN from here

# Filled by tests/supabase/conftest.py: the kit tests left out, one count per hint. The hooks
# that print it live here, because an xdist controller collects nothing and so never loads
# tests/supabase/conftest.py.
KIT_LEFT_OUT = pytest.StashKey[dict[str, int]]()
# The same for the dashboard's browser tests without Chromium or Playwright
# (tests/operator_api/dashboard/conftest.py).
BROWSER_LEFT_OUT = pytest.StashKey[dict[str, int]]()
# Where the kit's PostgreSQL cluster lives, shared by every worker (tests/supabase/conftest.py).
KIT_PG_DIR = pytest.StashKey[str]()

@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def served_stats() -> Iterator[tuple[Any, FakeTime, str]]:
    """Stats in fake time, served by a real health endpoint on loopback: (stats, time, url)."""
    from queue_pump.observe.health import HealthConfig, HealthServer
    from queue_pump.observe.state import Stats

    fake = FakeTime()
    stats = Stats(clock=fake.clock)
    server = HealthServer(stats, HealthConfig("127.0.0.1", 0))
    server.start()
    try:
        yield stats, fake, server.url
    finally:
        server.close()


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing for systemd's $NOTIFY_SOCKET: (socket, path)."""
    path = os.path.join(tempfile.mkdtemp(), "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)  # a hang guard, as every wait of the suite: traced pumps start slowly
    try:
        yield sock, path
    finally:
        sock.close()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Under xdist every worker collects the whole suite and leaves out the same kit tests:
    the controller keeps one worker's count, so the summary line prints once, not per worker."""
    left_out = getattr(node, "workeroutput", {}).get("kit_left_out")
    if left_out:
        node.config.stash[KIT_LEFT_OUT] = left_out
    browser_left_out = getattr(node, "workeroutput", {}).get("browser_left_out")
    if browser_left_out:
        node.config.stash[BROWSER_LEFT_OUT] = browser_left_out


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for hint, count in config.stash.get(KIT_LEFT_OUT, {}).items():
        terminalreporter.write_line(f"SKIPPED {count} Supabase kit tests: {hint}", yellow=True)
    for hint, count in config.stash.get(BROWSER_LEFT_OUT, {}).items():
        terminalreporter.write_line(f"SKIPPED {count} dashboard browser tests: {hint}",
                                    yellow=True)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has set things up
        return
    _cache_bytecode()
    if config.getoption("numprocesses", None):
        _warm_bytecode()
    # A directory for the kit's one PostgreSQL cluster, made here (a worker's temp dir is
    # private to root, where the server runs as postgres) and handed down to the workers.
    shared = tempfile.mkdtemp(prefix="qp-kit-pg-")
    os.chmod(shared, 0o755)
    os.environ[kit.SHARED_DIR_ENV] = config.stash[KIT_PG_DIR] = shared


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the kit's cluster, if a test started it, once every worker is done."""
    shared = config.stash.get(KIT_PG_DIR, None)
    if shared is not None:
        kit.stop_shared(Path(shared))
        shutil.rmtree(shared, ignore_errors=True)


def _cache_bytecode() -> None:
    """The suite starts ~150 interpreters on the same code (pumps, runners, xdist workers).
    Under PYTHONDONTWRITEBYTECODE=1 (this machine sets it) each compiles queue_pump, and each
    worker rewrites every test module, from source again: about 0.1 s of CPU per pump and 2 s
    per worker. So the suite lets them cache it, as Python does by default, in the __pycache__
    directories .gitignore already leaves out. (A cache outside the tree, PYTHONPYCACHEPREFIX,
    would also ignore site-packages' own compiled files and make a first run slower than
    none.) Run in the controller before xdist starts its workers, so they and every child
    inherit it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _warm_bytecode() -> None:
    """On a first run every xdist worker would rewrite the same test modules, and every pump
    started before the first had cached it would compile queue_pump, all at once: ~20 s of CPU.
    The controller does each once before the workers start (a warm run finds nothing to do)."""
    tests = Path(__file__).parent
    compileall.compile_dir(tests.parent / "queue_pump", quiet=1)
    from _pytest.assertion.rewrite import PYTEST_TAG

    def stale(source: Path) -> bool:
        cached = source.parent / "__pycache__" / f"{source.stem}.{PYTEST_TAG}.pyc"
        return not cached.is_file() or cached.stat().st_mtime < source.stat().st_mtime

    modules = sorted(tests.rglob("test_*.py"))
    if any(stale(m) for m in modules):
        sys.dont_write_bytecode = False  # this process started under the variable too
        for module in modules:  # imported as the workers will, so rewritten as they would be
            importlib.import_module(".".join(module.relative_to(tests.parent).with_suffix("").parts))
