"""Steer: cancel (queued, running, finished), retry one and in bulk with a dry run, hung jobs,
purge with a dry run (OPERATOR_API.md §4, §7, §8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .target import Api, Target
from .test_jobs import kinds


def test_a_queued_job_cancelled_ends_at_once_and_never_runs(api: Api) -> None:
    job = api.add("echo")
    answer = api.ok(api.post(f"/{job['id']}/cancel"))
    assert answer["changed"] is True and answer["job"]["status"] == "cancelled"
    assert api.run()["processed"] is False
    again = api.ok(api.post(f"/{job['id']}/cancel"))
    assert again["changed"] is False and again["job"]["status"] == "cancelled"
    assert kinds(api.job(job["id"])) == ["enqueued", "cancelled"]


def test_a_running_job_cancelled_is_aborted_and_ends_cancelled_never_retried(api: Api) -> None:
    job = api.sleeper(maxAttempts=5)
    with api.running(job["id"]) as run:
        answer = api.ok(api.post(f"/{job['id']}/cancel"))
        assert answer["changed"] is True
        assert answer["job"]["status"] == "running" and answer["job"]["cancelRequested"] is True
        # The run ends long before its sleep would: its handler saw the abort.
        result = run.result(timeout=60)
    assert result["jobId"] == job["id"] and result["status"] == "cancelled"
    shown = api.job(job["id"])
    assert shown["status"] == "cancelled" and shown["attempts"] == 1
    assert shown["finishedAt"] is not None
    assert kinds(shown)[-2:] == ["cancel_requested", "cancelled"]
    assert api.run()["processed"] is False  # never retried


def test_a_finished_job_cannot_be_cancelled(api: Api) -> None:
    job = api.add("echo")
    api.run()
    response = api.post(f"/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["status"] == "done" and "done" in response.json()["error"]


def test_a_failed_job_retried_runs_again_and_completes(api: Api, target: Target) -> None:
    job = api.failing("bad upstream")
    assert api.run()["status"] == "failed"
    target.make_succeed(job["id"])  # the cause was fixed
    retried = api.ok(api.post(f"/{job['id']}/retry"))["job"]
    assert retried["status"] == "queued" and retried["attempts"] == 0
    assert retried["lastError"] is None and retried["cancelRequested"] is False
    assert api.run()["status"] == "done"
    shown = api.job(job["id"])
    assert shown["status"] == "done" and shown["attempts"] == 1
    assert kinds(shown) == ["enqueued", "claimed", "failed", "retried", "claimed", "completed"]


def test_a_cancelled_job_may_be_retried_but_not_a_queued_or_done_one(api: Api) -> None:
    job = api.add("echo")
    api.post(f"/{job['id']}/cancel")
    assert api.ok(api.post(f"/{job['id']}/retry"))["job"]["status"] == "queued"
    response = api.post(f"/{job['id']}/retry")
    assert response.status_code == 409 and response.json()["status"] == "queued"
    api.run()
    assert api.post(f"/{job['id']}/retry").status_code == 409


def test_bulk_retrys_dry_run_counts_what_it_then_retries(api: Api, target: Target) -> None:
    fails = [api.failing(f"fail {i}") for i in range(4)]
    api.failing("other", queue="q2")
    other_type = api.add("sleep", {"ms": -1}, maxAttempts=1)  # fails: a bad payload
    api.run_all()
    api.run_all("q2")
    target.backdate(fails[0]["id"], 7200)  # failed two hours ago
    # by type and queue: the four "fail" jobs of agent, not q2's, not the sleep one
    dry = api.ok(api.post("/retry", {"type": "fail", "queue": "agent", "dryRun": True}))
    assert dry == {"matched": 4, "retried": 0, "dryRun": True, "more": False}
    assert api.stats()["total"]["failed"] == 6  # a dry run changes nothing
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    recent = api.ok(api.post("/retry", {"queue": "agent", "since": hour_ago, "dryRun": True}))
    assert recent["matched"] == 4
    real = api.ok(api.post("/retry", {"queue": "agent", "since": hour_ago}))
    assert real == {"matched": 4, "retried": 4, "dryRun": False, "more": False}
    assert api.status(fails[0]["id"]) == "failed"
    assert {api.status(j["id"]) for j in (*fails[1:], other_type)} == {"queued"}
    assert kinds(api.job(fails[1]["id"]))[-1] == "retried"


def test_hung_jobs_are_found_and_cancelled(api: Api, target: Target) -> None:
    job = api.sleeper()
    with api.running(job["id"]) as run:
        assert api.ok(api.get("/hung", olderThan=300))["jobs"] == []
        target.backdate(job["id"], 600)  # no sign of life for ten minutes
        hung = api.ok(api.get("/hung", olderThan=300))["jobs"]
        assert [j["id"] for j in hung] == [job["id"]]
        assert api.ok(api.get("/hung", olderThan=300, queue="elsewhere"))["jobs"] == []
        dry = api.ok(api.post("/hung/cancel", {"olderThan": 300, "dryRun": True}))
        assert dry == {"matched": 1, "cancelled": 0, "dryRun": True}
        real = api.ok(api.post("/hung/cancel", {"olderThan": 300}))
        assert real == {"matched": 1, "cancelled": 1, "dryRun": False}
        assert run.result(timeout=60)["status"] == "cancelled"
    assert api.status(job["id"]) == "cancelled"


def test_purges_dry_run_counts_what_it_then_deletes(api: Api, target: Target) -> None:
    old = [api.add("echo") for _ in range(3)]
    old.append(api.failing())
    api.run_all()
    cancelled = api.add("echo")
    api.post(f"/{cancelled['id']}/cancel")
    old.append(cancelled)
    for job in old:
        target.backdate(job["id"], 3 * 86400)
    recent = api.add("echo")
    api.run()
    waiting = api.add("echo")
    target.backdate(waiting["id"], 3 * 86400)  # old but not finished: kept
    dry = api.ok(api.post("/purge", {"olderThan": 86400, "dryRun": True}))
    assert dry == {"matched": 5, "deleted": 0, "dryRun": True, "more": False}
    assert len(api.list()) == 7
    real = api.ok(api.post("/purge", {"olderThan": 86400}))
    assert real == {"matched": 5, "deleted": 5, "dryRun": False, "more": False}
    assert {j["id"] for j in api.list()} == {recent["id"], waiting["id"]}
    assert api.get(f"/{old[0]['id']}/history").status_code == 404
