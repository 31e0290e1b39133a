"""A running job cancelled under a real pump: its handler sees the abort, the job ends cancelled
with no further attempt, and the pump carries on (the issue's "measured when done")."""

from __future__ import annotations

import pytest

from tests.support import proc

from .target import Api, Target
from .test_jobs import kinds


@pytest.mark.e2e
def test_a_running_job_cancelled_under_a_real_pump(api: Api, target: Target) -> None:
    job = api.sleeper(maxAttempts=5)
    pump = proc.Live(proc.start(target.pump_env(QUEUE_PUMP_IDLE_SLEEP_MS="200",
                                                QUEUE_PUMP_TICK_SLEEP_MS="0")))
    try:
        api.wait_status(job["id"], "running")
        assert api.ok(api.post(f"/{job['id']}/cancel"))["changed"] is True
        # ends long before its 100 s sleep would: the handler saw the abort
        shown = api.wait_status(job["id"], "cancelled")
        assert shown["attempts"] == 1 and kinds(shown)[-1] == "cancelled"
        after = api.add("echo")
        api.wait_status(after["id"], "done")  # the pump carries on
        assert api.status(job["id"]) == "cancelled" and api.job(job["id"])["attempts"] == 1
    finally:
        pump.proc.terminate()
        code, _ = pump.finish(timeout_s=60)
    assert code == 0
    assert not pump.events("call_failed")
