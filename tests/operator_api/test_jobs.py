"""Add a job and find it by the id the answer gave; one job in full; its history; a list with
filters, newest first, page by page (OPERATOR_API.md §3-6)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .target import Api, Target

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
JOB_FIELDS = {"id", "queue", "type", "status", "attempts", "maxAttempts", "runAt", "createdAt",
              "updatedAt", "startedAt", "finishedAt", "heartbeatAt", "leaseExpiresAt", "lockedBy",
              "dedupeKey", "lastError", "cancelRequested"}


def _when(text: str) -> datetime:
    assert ISO.match(text), text
    return datetime.fromisoformat(text)


def kinds(job: dict[str, object]) -> list[str]:
    history = job["history"]
    assert isinstance(history, list)
    return [event["kind"] for event in history]


def test_a_job_added_is_found_by_the_id_its_answer_gave(api: Api) -> None:
    added = api.add("echo", {"n": 1}, queue="mail", maxAttempts=4, dedupeKey="k-1")
    assert set(added) >= JOB_FIELDS
    assert isinstance(added["id"], int)
    job = api.job(added["id"])
    assert set(job) >= JOB_FIELDS | {"payload", "progress", "result", "history"}
    assert (job["status"], job["type"], job["queue"], job["payload"]) == (
        "queued", "echo", "mail", {"n": 1})
    assert (job["attempts"], job["maxAttempts"], job["dedupeKey"]) == (0, 4, "k-1")
    assert job["cancelRequested"] is False and job["lastError"] is None
    assert _when(job["createdAt"]) <= _when(job["runAt"]) + timedelta(seconds=1)
    assert kinds(job) == ["enqueued"]
    assert job["history"][0]["data"]["by"] == "operator"


def test_a_dedupe_key_already_held_answers_200_with_the_job_it_holds(api: Api) -> None:
    first = api.add("echo", dedupeKey="once")
    again = api.ok(api.post("", {"type": "echo", "dedupeKey": "once"}), 200)
    assert again["created"] is False and again["job"]["id"] == first["id"]


def test_a_delayed_job_is_not_due_until_its_time(api: Api) -> None:
    later = api.add("echo", delaySeconds=3600)
    assert _when(later["runAt"]) >= _when(later["createdAt"]) + timedelta(seconds=3599)
    assert api.run()["processed"] is False
    at = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pinned = api.add("echo", runAt=at)
    assert _when(pinned["runAt"]) == datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert api.stats()["total"]["due"] == 0


def test_a_success_leaves_its_history_and_result(api: Api) -> None:
    job = api.add("echo", {"say": "hi"})
    answer = api.run()
    assert (answer["processed"], answer["jobId"], answer["status"]) == (True, job["id"], "done")
    shown = api.job(job["id"])
    assert shown["status"] == "done" and shown["attempts"] == 1
    assert shown["result"] == {"echo": {"say": "hi"}}
    assert _when(shown["finishedAt"]) >= _when(shown["startedAt"])
    assert kinds(shown) == ["enqueued", "claimed", "completed"]
    claimed = shown["history"][1]
    assert claimed["attempt"] == 1 and claimed["worker"]
    assert [e["seq"] for e in shown["history"]] == sorted(e["seq"] for e in shown["history"])


def test_every_attempts_error_is_kept_in_the_history(api: Api) -> None:
    job = api.failing("upstream said 502", maxAttempts=3)
    for _ in range(3):
        answer = api.run()
        assert answer.get("jobId") == job["id"], answer
        # a retry is due after a backoff: make it due now, as time passing would
        if api.status(job["id"]) == "queued":
            api.target.backdate(job["id"], 3600)
    shown = api.job(job["id"])
    assert shown["status"] == "failed" and shown["attempts"] == 3
    assert "upstream said 502" in shown["lastError"]
    failed = [e for e in shown["history"] if e["kind"] == "failed"]
    assert len(failed) == 3 and all("upstream said 502" in e["message"] for e in failed)
    assert [e["attempt"] for e in failed] == [1, 2, 3]
    assert "retryAt" in failed[0]["data"] and failed[-1]["data"].get("final") is True


def test_history_pages_after_a_seq(api: Api) -> None:
    job = api.add("echo")
    api.run()
    events = api.ok(api.get(f"/{job['id']}/history"))
    assert events["job"] == {"id": job["id"], "status": "done"}
    seqs = [e["seq"] for e in events["events"]]
    later = api.ok(api.get(f"/{job['id']}/history", after=seqs[0], limit=1))["events"]
    assert [e["seq"] for e in later] == [seqs[1]]


def test_the_list_filters_by_status_type_and_queue_newest_first(api: Api) -> None:
    done = api.add("echo")
    api.run()
    failed = api.failing()
    api.run()
    queued = [api.add("echo", queue="q2") for _ in range(3)]
    other_type = api.add("sleep", {"ms": 1})
    everything = api.list()
    # newest first: the reverse of the order they were added in (ids need not grow: the kit's
    # reveal no count)
    assert [j["id"] for j in everything] == [
        other_type["id"], *(j["id"] for j in reversed(queued)), failed["id"], done["id"]]
    assert [j["id"] for j in api.list(status="failed")] == [failed["id"]]
    assert {j["id"] for j in api.list(status="done,failed")} == {done["id"], failed["id"]}
    assert [j["id"] for j in api.list(queue="q2")] == [j["id"] for j in reversed(queued)]
    assert [j["id"] for j in api.list(type="sleep")] == [other_type["id"]]
    assert "history" not in everything[0] and "payload" not in everything[0]


def test_the_list_by_time_window(api: Api, target: Target) -> None:
    old = api.add("echo")
    target.backdate(old["id"], 7200)
    new = api.add("echo")
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert [j["id"] for j in api.list(since=hour_ago)] == [new["id"]]
    assert [j["id"] for j in api.list(until=hour_ago)] == [old["id"]]


def test_keyset_pages_cover_every_job_once(api: Api) -> None:
    ids = [api.add("echo")["id"] for _ in range(7)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.ok(api.get("", **params))
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == list(reversed(ids)) and pages == 3
    api.add("echo")  # a job added meanwhile does not shift a page already cursored
