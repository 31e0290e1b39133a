"""Fault injection against the real pump process over loopback: it stays up, backs off as it
promises, recovers within one max-backoff, logs each failure streak without a traceback, keeps
its memory bounded and never shows the token. The scenarios and checks are in fault_scenarios.py
(bench/fault_matrix.py prints the same figures for docs/RELIABILITY.md)."""

from __future__ import annotations

import sys
from concurrent.futures import Future

import pytest

from .fault_scenarios import (
    BASE_S,
    FAULTS,
    FAULTS_BY_NAME,
    MAX_S,
    OTHER_TRANSPORT,
    WINDOW_S,
    Result,
    backoff_bound,
    check,
    run_fault,
    run_matrix,
)

pytestmark = pytest.mark.e2e


# One scenario per test, over the pump's default transport: the suite's workers (pytest-xdist)
# run them side by side. (A module-wide matrix ran every collected scenario in each worker.)
@pytest.mark.parametrize("fault", [f.name for f in FAULTS])
def test_fault(fault: str) -> None:
    result = run_fault(FAULTS_BY_NAME[fault])
    assert check(result) == [], result.stdout[-2000:]
    assert result.fault is FAULTS_BY_NAME[fault]


def test_the_backoff_bound_is_far_below_a_tight_loop() -> None:
    bound = backoff_bound(WINDOW_S, BASE_S, MAX_S)
    # Expected calls are ~13 (mean wait 0.25 s at the cap); a tight loop makes thousands.
    assert 13 < bound <= 30
    # and it grows with the window and shrinks with a larger cap, as a bound should
    assert backoff_bound(2 * WINDOW_S, BASE_S, MAX_S) > bound
    assert backoff_bound(WINDOW_S, BASE_S, 2 * MAX_S) < bound


def test_the_checks_catch_a_pump_that_hammers() -> None:
    """The negative control: a pump whose backoff is 1 ms breaks the bound, and check() says so.
    (Its busy loop may share the machine with other scenarios: a busy machine only lowers their
    call counts, which the checks bound from above.)"""
    result = run_fault(FAULTS_BY_NAME["500"], QUEUE_PUMP_BACKOFF_BASE_MS="1",
                       QUEUE_PUMP_BACKOFF_MAX_MS="1")
    assert result.calls_in_window > 5 * result.bound
    problems = check(result)
    assert any(f"bound {result.bound}" in p for p in problems), problems


@pytest.fixture(scope="module")
def matrix_other(request: pytest.FixtureRequest) -> dict[str, Future[Result]]:
    module = sys.modules[__name__]
    wanted = [f for f in FAULTS if any(
        getattr(item, "module", None) is module and getattr(item, "callspec", None)
        and item.callspec.params.get("other_fault") == f.name for item in request.session.items)]
    return run_matrix(wanted, jobs=4, QUEUE_PUMP_HTTP_TRANSPORT=OTHER_TRANSPORT)


@pytest.mark.slow
@pytest.mark.parametrize("other_fault", [f.name for f in FAULTS])
def test_fault_over_the_other_transport(other_fault: str,
                                        matrix_other: dict[str, Future[Result]]) -> None:
    """The same matrix over the transport that is not the default (-m slow)."""
    result = matrix_other[other_fault].result(timeout=120)
    assert check(result) == [], result.stdout[-2000:]
