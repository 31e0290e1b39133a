"""Issue 24 over the operator API, on every target: a job's priority (higher runs first) set by
`add` and obeyed by the runner; the kit's other new fields, which the reference runner refuses by
name rather than store and ignore."""

from __future__ import annotations

from .target import Api


def test_a_higher_priority_runs_first_on_every_target(api: Api) -> None:
    low = api.add("echo", {"n": "low"}, priority=-5)
    plain = api.add("echo", {"n": "plain"})
    high = api.add("echo", {"n": "high"}, priority=50)
    assert (low["priority"], plain["priority"], high["priority"]) == (-5, 0, 50)
    # One job a call (the reference runner), or one call's batch in claim order (the kit).
    started: list[int] = []
    while len(started) < 3:
        ran = api.run_jobs()
        assert ran, started
        started += [job["jobId"] for job in ran]
    assert started == [high["id"], plain["id"], low["id"]]


def test_a_priority_out_of_range_is_refused_by_name(api: Api) -> None:
    for bad in (1001, -1001, 1.5, "high", True):
        response = api.post("", {"type": "echo", "priority": bad})
        assert response.status_code == 400, (bad, response.text)
        assert "priority must be a whole number from -1000 to 1000" in response.json()["error"]


def test_the_kit_stores_a_concurrency_key_and_after_the_reference_runner_refuses_them(
        api: Api) -> None:
    parent = api.add("echo")
    response = api.post("", {"type": "echo", "concurrencyKey": "acme", "after": [parent["id"]]})
    if api.target.name == "reference":
        assert response.status_code == 400
        assert response.json()["error"].startswith(
            "concurrencyKey: the reference runner has no concurrency keys, rate limits or"
            " dependencies")
        return
    child = api.ok(response, 201)["job"]
    assert (child["concurrencyKey"], child["after"], child["waitingFor"]) == (
        "acme", [parent["id"]], 1)
    assert api.run()["jobId"] == parent["id"]
    assert api.run()["jobId"] == child["id"]


def test_the_kit_sets_and_shows_limits_per_key_the_reference_runner_has_none(api: Api) -> None:
    """`POST /jobs/limits` and `GET /jobs/limits` (issue 24, the kit only): a key limited to 1
    runs one job at a time; a bad value is refused naming it, and nothing changes."""
    response = api.post("/limits", {"queue": "agent", "key": "acme", "maxRunning": 1})
    if api.target.name == "reference":
        assert response.status_code == 404
        return
    answer = api.ok(response)
    assert answer == {"queue": "agent", "limits": [{
        "key": "acme", "maxRunning": 1, "maxStarts": None, "perSeconds": None, "running": 0,
        "parked": 0}]}
    api.ok(api.post("/limits", {"key": None, "maxStarts": 5, "perSeconds": 0.5}))
    first = api.sleeper(concurrencyKey="acme")
    api.add("echo", concurrencyKey="acme")
    with api.running(first["id"]):
        assert api.run()["processed"] is False   # the second waits for the key's one slot
        shown = api.ok(api.get("/limits", queue="agent"))["limits"]
        api.ok(api.post(f"/{first['id']}/cancel"))   # the run ends at the runner's next poll
    assert {(x["key"], x["maxRunning"], x["maxStarts"], x["perSeconds"], x["running"],
             x["parked"]) for x in shown} == {("acme", 1, None, None, 1, 1),
                                              (None, None, 5, 0.5, 0, 0)}
    for body, expected in [
        ({"key": "acme", "maxRunning": 0}, "max_running must be between 1 and 100000"),
        ({"key": "acme", "maxRunning": 1.5}, "maxRunning must be a whole number"),
        ({"key": "acme", "maxStarts": 2, "perSeconds": 0}, "perSeconds must be a number of"),
        ({"key": "acme"}, "give maxRunning, maxStarts, or both"),
        ({"key": "acme", "maxRunning": 2, "limit": 3}, "limit"),
    ]:
        response = api.post("/limits", body)
        assert response.status_code == 400, (body, response.text)
        assert expected in response.json()["error"], (body, response.text)
    # Nothing changed by the refusals.
    assert {(x["key"], x["maxRunning"]) for x in api.ok(api.get("/limits"))["limits"]} == {
        ("acme", 1), (None, None)}
