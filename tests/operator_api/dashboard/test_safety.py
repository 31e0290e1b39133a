"""What makes the page safe to open: a job's payload, error and history render as text and
never run (with the Content-Security-Policy switched off, so escaping alone is what is
tested), the page passes axe-core's checks, and screenshots at a desktop's and a phone's width
are taken (and written into docs/img/ with QUEUE_PUMP_SCREENSHOTS=docs/img)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.operator_api.target import Api, Target
from tests.support.env import ROOT

from .conftest import AXE_JS, Dashboard, missing, new_page
from .test_browser import expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

HOSTILE = {
    "html": "<img src=x onerror=\"window.__pwned='img'\">",
    "script": "<script>window.__pwned='payload'</script>",
    "close": "</pre></td></table><script>window.__pwned='close'</script>",
    "quote": "\"'><svg onload=window.__pwned='svg'>",
}
HOSTILE_ERROR = "<script>window.__pwned='error'</script><b>bold?</b>"


def _hostile_jobs(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    echoed = api.add("echo", HOSTILE)  # its result echoes the payload
    failed = api.failing(HOSTILE_ERROR)
    api.run_all()
    return echoed, failed


@pytest.mark.e2e
def test_job_values_with_html_and_script_render_as_text_and_never_run(
        api: Api, browser: Browser, dashboard: Dashboard) -> None:
    echoed, failed = _hostile_jobs(api)
    page = new_page(browser, bypass_csp=True)
    try:
        for path in ("/", "/jobs", f"/jobs/{echoed['id']}", f"/jobs/{failed['id']}",
                     "/jobs?status=failed"):
            page.goto(dashboard.url + path)
            page.wait_for_load_state("load")
            assert page.evaluate("window.__pwned") is None, path
            assert page.locator("main img, main svg[onload], main b").count() == 0, path
        page.goto(f"{dashboard.url}/jobs/{echoed['id']}")
        for value in HOSTILE.values():  # shown as written, in the payload and the result
            assert page.locator('[data-field="payload"]').inner_text().count(
                value.replace('"', '\\"')) == 1
            assert value.replace('"', '\\"') in page.locator('[data-field="result"]').inner_text()
        page.goto(f"{dashboard.url}/jobs/{failed['id']}")
        # contained, not equal: the kit's runner writes a thrown error as "Error: <message>"
        expect(page.locator('[data-field="lastError"]')).to_contain_text(HOSTILE_ERROR)
        expect(page.locator(".timeline .message").first).to_contain_text(HOSTILE_ERROR)
        page.goto(dashboard.url + "/")
        expect(page.locator("table.failures")).to_contain_text(HOSTILE_ERROR)
        assert page.evaluate("window.__pwned") is None
    finally:
        page.context.close()


def _axe_source() -> str:
    if not AXE_JS.exists():
        missing(f"axe-core is not installed at {AXE_JS.relative_to(ROOT)}: "
                "cd scripts/ci/npm/axe && npm ci")
    return AXE_JS.read_text()


def _axe(page: Page, source: str) -> list[dict[str, Any]]:
    page.add_script_tag(content=source)
    result: dict[str, Any] = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.e2e
def test_axe_finds_no_serious_or_critical_violation_on_any_page(
        api: Api, browser: Browser, dashboard: Dashboard) -> None:
    source = _axe_source()
    echoed, failed = _hostile_jobs(api)
    api.sleeper()  # a queued job, so the due and oldest-due cards show values
    # bypass_csp: axe is injected as an inline script, which the page's own policy refuses
    page = new_page(browser, bypass_csp=True)
    found = {}
    try:
        for path in ("/", "/jobs", "/jobs?status=failed", f"/jobs/{echoed['id']}",
                     f"/jobs/{failed['id']}", "/retry-failed?type=fail", "/jobs/999999"):
            for width in (1280, 390):
                page.set_viewport_size({"width": width, "height": 800})
                page.goto(dashboard.url + path)
                bad = _axe(page, source)
                if bad:
                    found[f"{path} at {width}px"] = [
                        (v["id"], v["impact"], v["help"],
                         [n["target"] for n in v["nodes"][:3]]) for v in bad]
    finally:
        page.context.close()
    assert found == {}


@pytest.mark.e2e
def test_screenshots_at_a_desktop_and_a_phone_width(api: Api, target: Target,
                                                    browser: Browser, dashboard: Dashboard,
                                                    tmp_path: Path) -> None:
    # An hour of work, for the chart: jobs finished, then moved back into earlier minutes.
    done = [api.add("echo", {"n": i}) for i in range(120)]
    api.failing("TypeError: cannot read properties of undefined (reading 'id')")
    api.run_all()
    for i, finished in enumerate(done):
        target.backdate(finished["id"], 60 * ((i * i) % 58) + 30)
    # A job that failed three times: its timeline of attempts and errors.
    job = api.failing("Error: upstream said 502 Bad Gateway", maxAttempts=3)
    for _ in range(3):
        api.run()
        target.backdate(job["id"], 600)  # its retry is due now
    api.sleeper()
    out = Path(os.environ.get("QUEUE_PUMP_SCREENSHOTS") or tmp_path)
    if not out.is_absolute():
        out = ROOT / out
    shots = []
    for name, path in (("overview", "/"), ("jobs", "/jobs"), ("job", f"/jobs/{job['id']}")):
        for suffix, size in (("", {"width": 1280, "height": 800}),
                             ("-phone", {"width": 390, "height": 844})):
            page = new_page(browser)
            try:
                page.set_viewport_size(size)
                page.goto(dashboard.url + path)
                page.wait_for_load_state("load")
                file = out / f"dashboard-{name}{suffix}.png"
                page.screenshot(path=str(file))
                # nothing overflows sideways at a phone's width
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= size["width"], (path, size, width)
                shots.append(file)
            finally:
                page.context.close()
    for file in shots:
        data = file.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
