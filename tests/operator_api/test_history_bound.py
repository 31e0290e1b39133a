"""A job's history is bounded: at most 200 events, past that one ``dropped`` event says how many
went, and the events that end the job are still written (OPERATOR_API.md §5)."""

from __future__ import annotations

from .target import Api, Target

MAX_EVENTS = 200


def test_a_long_history_is_capped_and_says_what_it_dropped(api: Api, target: Target) -> None:
    job = api.failing("again")
    api.run()
    # each round: retried, claimed, failed (final) = 3 events
    rounds = MAX_EVENTS // 3 + 5
    for _ in range(rounds):
        api.ok(api.post(f"/{job['id']}/retry"))
        assert api.run()["status"] == "failed"
    target.make_succeed(job["id"])
    api.ok(api.post(f"/{job['id']}/retry"))
    assert api.run()["status"] == "done"
    events = api.ok(api.get(f"/{job['id']}/history", limit=500))["events"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("dropped") == 1
    dropped = next(e for e in events if e["kind"] == "dropped")
    written = 3 + rounds * 3 + 3  # enqueued and the first run, the rounds, the last run
    kept = [e for e in events if e["kind"] != "dropped"]
    assert dropped["data"]["dropped"] == written - len(kept)
    assert len(kept) <= MAX_EVENTS + 10
    assert kinds[-1] == "completed"  # the end of the job is never dropped
    assert api.job(job["id"])["status"] == "done"
