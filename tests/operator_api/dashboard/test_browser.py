"""The dashboard clicked through in a real browser, against each operator API driver, with a
real pump draining where the issue asks for one: filter the list, open a failed job and see
its error, press Retry and watch it complete, cancel a running job, see the overview's counts
move, and walk through the pages by keyboard alone."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.operator_api.target import Api, Target
from tests.support import proc

from .conftest import Dashboard

if TYPE_CHECKING:
    from playwright.sync_api import Page


def expect(thing: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(thing)


def _count(page: Page, status: str) -> Any:
    return page.locator(f'.card[data-status="{status}"] .count')


def _rows(page: Page) -> Any:
    return page.locator("table.jobs tbody tr")


@pytest.mark.e2e
def test_filter_the_list_and_page_through_it(api: Api, dashboard: Dashboard,
                                             page: Page) -> None:
    for _ in range(52):
        api.add("echo", {"n": 1}, queue="bulk")
    failing = [api.failing(f"boom {i}") for i in range(2)]
    api.run_all()  # the two failing jobs of queue agent fail
    page.goto(dashboard.url + "/jobs")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(_rows(page)).to_have_count(2)
    assert sorted(int(r) for r in _rows(page).evaluate_all(
        "rows => rows.map(r => r.dataset.job)")) == sorted(j["id"] for j in failing)
    expect(page.locator("table.jobs")).to_contain_text("boom 1")
    # by queue: 52 jobs, 50 a page, then the next page by its cursor
    page.get_by_role("link", name="Clear").click()
    page.get_by_role("textbox", name="Queue", exact=True).fill("bulk")
    page.get_by_role("textbox", name="Queue", exact=True).press("Enter")
    expect(_rows(page)).to_have_count(50)
    page.get_by_role("link", name="Next page").click()
    expect(_rows(page)).to_have_count(2)
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    page.get_by_role("link", name="First page").click()
    expect(_rows(page)).to_have_count(50)
    # a bad time names the field, and the page still stands
    page.get_by_label("Created since").fill("yesterday-ish")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("alert")).to_contain_text("since")


@pytest.mark.e2e
def test_open_a_failed_job_see_its_error_retry_it_and_watch_it_complete(
        api: Api, target: Target, dashboard: Dashboard, page: Page) -> None:
    job = api.failing("Error: upstream said 502", maxAttempts=1)
    pump = proc.Live(proc.start(target.pump_env(QUEUE_PUMP_IDLE_SLEEP_MS="200",
                                                QUEUE_PUMP_TICK_SLEEP_MS="0")))
    try:
        api.wait_status(job["id"], "failed")
        page.goto(dashboard.url + "/")
        failures = page.locator("table.failures")
        expect(failures).to_contain_text("Error: upstream said 502")
        failures.get_by_role("link", name=f"#{job['id']}").click()
        expect(page).to_have_url(re.compile(rf"/jobs/{job['id']}$"))
        # the kit's runner writes a thrown error as "Error: <message>"
        expect(page.locator('[data-field="lastError"]')).to_contain_text(
            "Error: upstream said 502")
        expect(page.locator(".timeline")).to_contain_text("Attempt 1")
        target.make_succeed(job["id"])  # the cause was fixed
        page.get_by_role("button", name="Retry").click()
        expect(page.get_by_role("status")).to_contain_text("Queued again")
        # the pump runs it; the page follows by itself
        expect(page.locator('[data-field="status"]')).to_have_text("done", timeout=60_000)
        expect(page.locator(".timeline")).to_contain_text("Retried by an operator")
        assert api.status(job["id"]) == "done"
    finally:
        pump.proc.terminate()
        code, _ = pump.finish(timeout_s=60)
    assert code == 0


@pytest.mark.e2e
def test_cancel_a_running_job_under_a_pump(api: Api, target: Target, dashboard: Dashboard,
                                           page: Page) -> None:
    job = api.sleeper(maxAttempts=5)
    pump = proc.Live(proc.start(target.pump_env(QUEUE_PUMP_IDLE_SLEEP_MS="200",
                                                QUEUE_PUMP_TICK_SLEEP_MS="0")))
    try:
        api.wait_status(job["id"], "running")
        page.goto(f"{dashboard.url}/jobs/{job['id']}")
        expect(page.locator('[data-field="status"]')).to_have_text("running")
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator('[data-field="status"]')).to_have_text("cancelled",
                                                                   timeout=60_000)
        expect(page.get_by_role("button", name="Retry")).to_be_visible()
        shown = api.job(job["id"])
        assert shown["status"] == "cancelled" and shown["attempts"] == 1
    finally:
        pump.proc.terminate()
        code, _ = pump.finish(timeout_s=60)
    assert code == 0


@pytest.mark.e2e
def test_the_overview_counts_move_while_the_tab_is_open(api: Api, dashboard: Dashboard,
                                                        page: Page) -> None:
    page.goto(dashboard.url + "/")
    expect(_count(page, "queued")).to_have_text("0")
    expect(page.locator("svg.chart rect.done")).to_have_count(0)
    for _ in range(3):
        api.add("echo")
    expect(_count(page, "queued")).to_have_text("3")  # no reload: the live refresh
    expect(_count(page, "due")).to_have_text("3")
    assert api.run_all() == 3
    expect(_count(page, "done")).to_have_text("3")
    expect(_count(page, "queued")).to_have_text("0")
    expect(page.locator("svg.chart rect.done")).to_have_count(1)  # this minute's bar
    expect(page.locator("svg.chart desc")).to_contain_text("3 done")


@pytest.mark.e2e
def test_retry_all_failed_of_a_type_shows_the_dry_run_count_first(
        api: Api, dashboard: Dashboard, page: Page) -> None:
    flaky = [api.failing(f"flaky {i}") for i in range(4)]
    other = api.add("sleep", {"ms": -1}, maxAttempts=1)  # fails too, as another type
    api.run_all()
    assert api.status(other["id"]) == "failed"
    page.goto(dashboard.url + "/retry-failed")
    page.get_by_label("Type").fill("fail")
    page.get_by_role("button", name="Count them").click()
    expect(page.locator('[data-field="matched"]')).to_contain_text("4 failed jobs")
    assert api.status(flaky[0]["id"]) == "failed"  # a dry run changed nothing
    page.get_by_role("button", name="Retry 4 jobs").click()
    expect(page.locator('[data-field="retried"]')).to_contain_text("Retried 4 failed jobs")
    assert {api.status(j["id"]) for j in flaky} == {"queued"}
    assert api.status(other["id"]) == "failed"  # another type: left alone


@pytest.mark.e2e
def test_keyboard_alone_reaches_retry_and_enter_presses_it(api: Api, dashboard: Dashboard,
                                                          page: Page) -> None:
    job = api.failing("keyboard")
    api.run_all()
    page.goto(f"{dashboard.url}/jobs/{job['id']}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Retry":
            break
    else:
        pytest.fail("Tab never reached the Retry button")
    # the focus ring is drawn (a visible outline on :focus-visible)
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Queued again")
    assert api.status(job["id"]) == "queued"


_SET_VISIBILITY = """state => {
    Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.mark.e2e
def test_a_hidden_tab_asks_nothing_and_catches_up_when_shown(api: Api, dashboard: Dashboard,
                                                             page: Page) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.headers.get("x-live") else None)
    page.goto(dashboard.url + "/")
    expect(page.locator(".live[data-refreshed]")).to_have_count(1)  # it refreshes while shown
    page.evaluate(_SET_VISIBILITY, "hidden")
    page.wait_for_timeout(100)  # a refresh already on its way may land
    before = len(asked)
    api.add("echo")
    # Ten refresh periods hidden: not one request (a wait for nothing to happen).
    page.wait_for_timeout(3000)
    assert len(asked) == before
    expect(_count(page, "queued")).to_have_text("0")
    page.evaluate(_SET_VISIBILITY, "visible")
    expect(_count(page, "queued")).to_have_text("1")  # at once on showing, then on
    assert len(asked) > before
