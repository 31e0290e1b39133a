"""The dashboard under test: the real `queue-pump dashboard` process, over each operator API
driver's server (the ``target`` fixture of tests/operator_api/), seen by Debian's Chromium
driven by Playwright (one browser per test session, a fresh context per test).

Without Chromium or Playwright the browser tests skip with one line saying what to install;
QUEUE_PUMP_REQUIRE_BROWSER=1 (CI's .ci/run) makes that a failure."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import BROWSER_LEFT_OUT
from tests.operator_api.target import Target
from tests.support import proc
from tests.support.env import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REQUIRED = os.environ.get("QUEUE_PUMP_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("QUEUE_PUMP_CHROMIUM", "/usr/bin/chromium")
AXE_JS = ROOT / "scripts/ci/npm/axe/node_modules/axe-core/axe.min.js"
SERVING = re.compile(r"serving (http://\S+)/ ")
# The page's live refresh in these tests: fast, so a count that moved shows within a second.
REFRESH_S = "0.3"


def browser_missing() -> str | None:
    """What to install for the browser tests, or None when all is here."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: pip install -e '.[dev]'"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without Chromium or Playwright the browser tests are left out with one summary line;
    QUEUE_PUMP_REQUIRE_BROWSER=1 keeps them, so the ``browser`` fixture fails instead."""
    hint = browser_missing()
    if REQUIRED or hint is None:
        return
    left = [i for i in items if "browser" in getattr(i, "fixturenames", ())]
    if not left:
        return
    config.hook.pytest_deselected(items=left)
    items[:] = [i for i in items if i not in left]
    config.stash[BROWSER_LEFT_OUT] = {hint: len(left)}
    worker_output = getattr(config, "workeroutput", None)
    if worker_output is not None:  # an xdist worker: the controller prints the summary
        worker_output["browser_left_out"] = {hint: len(left)}


def missing(hint: str) -> None:
    if REQUIRED:
        pytest.fail(f"{hint} (QUEUE_PUMP_REQUIRE_BROWSER=1 makes this a failure)")
    pytest.skip(hint)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    hint = browser_missing()
    if hint is not None:
        missing(hint)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
    finally:
        playwright.stop()


@dataclass
class Dashboard:
    url: str
    live: proc.Live
    target: Target

    def output(self) -> str:
        return "".join(self.live.lines) + "".join(self.live.err)


def dashboard_env(target: Target, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    env.update(target.cli_env(), PYTHONUNBUFFERED="1", **extra)
    return env


def start_dashboard(target: Target, cwd: Path, *args: str, **env: str) -> Dashboard:
    live = proc.Live(proc.start(dashboard_env(target, **env), "dashboard", "--port", "0",
                                "--refresh-s", REFRESH_S, *args, cwd=str(cwd)))
    proc.wait_until(lambda: any(SERVING.search(line) for line in live.lines)
                    or live.proc.poll() is not None)
    found = [m for line in live.lines if (m := SERVING.search(line))]
    assert found, f"the dashboard did not start: {''.join(live.err)[-2000:]}"
    return Dashboard(found[0].group(1), live, target)


def stop_dashboard(dashboard: Dashboard) -> None:
    dashboard.live.proc.terminate()
    code, _ = dashboard.live.finish(timeout_s=30)
    assert code == 0
    assert dashboard.target.admin_token not in dashboard.output()


@pytest.fixture
def dashboard(target: Target, tmp_path: Path) -> Iterator[Dashboard]:
    served = start_dashboard(target, tmp_path)
    try:
        yield served
    finally:
        stop_dashboard(served)


def new_page(browser: Browser, **options: Any) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, **options)
    context.set_default_timeout(30_000)
    page = context.new_page()
    # An alert, confirm or prompt would be a script of a job's running: fail loudly.
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message!r}"))
    return page


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    opened = new_page(browser)
    try:
        yield opened
    finally:
        opened.context.close()
