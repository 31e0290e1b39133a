"""Working as organization A leaves organization B's jobs untouched and unseen: list, cancel,
retry, hung, purge and stats (the issue's "measured when done")."""

from __future__ import annotations

from .target import Api, Target


def _theirs(other: Api, target: Target) -> dict[str, int]:
    """Organization B: a queued, a failed and a done job, three days old."""
    failed = other.failing("theirs")
    done = other.add("echo")
    other.run_all()
    jobs = {"queued": other.add("echo")["id"], "failed": failed["id"], "done": done["id"]}
    for job_id in jobs.values():
        target.backdate(job_id, 3 * 86400)
    return jobs


def _unchanged(other: Api, jobs: dict[str, int]) -> None:
    assert {status: other.status(job_id) for status, job_id in jobs.items()} == {
        "queued": "queued", "failed": "failed", "done": "done"}


def test_list_and_stats_never_show_another_organization(api: Api, other: Api,
                                                         target: Target) -> None:
    _theirs(other, target)
    mine = api.add("echo")
    assert [j["id"] for j in api.list()] == [mine["id"]]
    assert api.list(status="failed,done") == []
    stats = api.stats()
    assert stats["total"]["queued"] == 1 and stats["total"]["failed"] == 0
    assert stats["recentFailures"] == [] and sum(m["done"] for m in stats["perMinute"]) == 0


def test_purge_as_one_organization_leaves_the_others(api: Api, other: Api,
                                                     target: Target) -> None:
    theirs = _theirs(other, target)
    answer = api.ok(api.post("/purge", {"olderThan": 60}))
    assert answer["matched"] == 0 and answer["deleted"] == 0
    _unchanged(other, theirs)


def test_bulk_retry_and_hung_as_one_organization_leave_the_others(api: Api, other: Api,
                                                                  target: Target) -> None:
    theirs = _theirs(other, target)
    assert api.ok(api.post("/retry", {}))["matched"] == 0
    assert api.ok(api.post("/hung/cancel", {"olderThan": 1}))["matched"] == 0
    assert api.ok(api.get("/hung", olderThan=1))["jobs"] == []
    _unchanged(other, theirs)


def test_cancel_and_retry_by_id_cannot_reach_another_organization(api: Api, other: Api,
                                                                  target: Target) -> None:
    theirs = _theirs(other, target)
    assert api.post(f"/{theirs['queued']}/cancel").status_code == 404
    assert api.post(f"/{theirs['failed']}/retry").status_code == 404
    _unchanged(other, theirs)
