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
    started = [api.run()["jobId"] for _ in range(3)]
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
