"""Who may call the operator API, and how it refuses: its own token, never the pump's; the
organization scopes every answer; bad input is a 400 naming the field (OPERATOR_API.md §1-2)."""

from __future__ import annotations

import httpx
import pytest

from .target import Api, Target


def _error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) >= {"error"} and isinstance(body["error"], str)
    message: str = body["error"]
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def test_the_admin_token_opens_the_api(api: Api) -> None:
    assert api.ok(api.get(""))["jobs"] == []


@pytest.mark.parametrize("token", ["", "wrong-token-0123456789"])
def test_a_missing_or_wrong_admin_token_is_401(target: Target, token: str) -> None:
    response = target.api(token=token).get("")
    message = _error(response, 401)
    assert target.admin_token not in message


def test_the_pumps_agent_token_is_refused_by_the_operator_api(target: Target) -> None:
    as_pump = target.api()
    as_pump.headers.pop("X-Admin-Token")
    as_pump.headers["X-Agent-Token"] = target.agent_token
    _error(as_pump.get(""), 401)
    _error(as_pump.post("/purge", {"olderThan": 60}), 401)
    # ... and the agent token sent where the admin token goes
    _error(target.api(token=target.agent_token).get(""), 401)


def test_the_admin_token_is_refused_by_the_runner(target: Target, api: Api) -> None:
    api.add("echo")
    for headers in ({"X-Agent-Token": target.admin_token},
                    {"X-Admin-Token": target.admin_token}):
        response = httpx.post(target.runner_url, json={},
                              headers={**headers, "X-Organization-Id": target.organization,
                                       **target.extra_headers})
        _error(response, 401)
    assert api.list(status="queued")  # nothing was claimed


def test_a_malformed_organization_is_401(target: Target) -> None:
    response = target.api(organization="has space").get("")
    _error(response, 401)


def test_unknown_query_parameters_and_fields_are_refused_by_name(api: Api) -> None:
    _error(api.get("", statuss="failed"), 400, "statuss")
    _error(api.post("/retry", {"dryrun": True}), 400, "dryrun")
    _error(api.post("", {"type": "echo", "priorty": 1}), 400, "priorty")


@pytest.mark.parametrize(("params", "name"), [
    ({"status": "finished"}, "status"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"since": "yesterday"}, "since"),
    ({"cursor": "not-a-cursor"}, "cursor"),
])
def test_bad_list_parameters_are_400_naming_them(api: Api, params: dict[str, str],
                                                  name: str) -> None:
    _error(api.get("", **params), 400, name)


def test_a_bad_status_says_which_are_accepted(api: Api) -> None:
    _error(api.get("", status="finished"), 400, "queued", "running", "done", "failed",
           "cancelled")


@pytest.mark.parametrize(("path", "body", "name"), [
    ("/purge", {"olderThan": 1}, "olderThan"),
    ("/purge", {}, "olderThan"),
    ("/purge", {"olderThan": 3600, "dryRun": "yes"}, "dryRun"),
    ("/retry", {"since": "soon"}, "since"),
    ("/hung/cancel", {"olderThan": 0}, "olderThan"),
    ("", {"type": ""}, "type"),
    ("", {"type": "echo", "delaySeconds": -1}, "delaySeconds"),
    ("", {"type": "echo", "maxAttempts": 0}, "maxAttempts"),
    ("", {"type": "echo", "runAt": "2030-01-01T00:00:00Z", "delaySeconds": 5}, "delaySeconds"),
])
def test_bad_bodies_are_400_naming_the_field(api: Api, path: str, body: dict[str, object],
                                             name: str) -> None:
    _error(api.post(path, body), 400, name)


def test_a_body_that_is_not_a_json_object_is_400(api: Api) -> None:
    _error(api.call("POST", "/purge", content=b"[1, 2]",
                    headers={**api.headers, "Content-Type": "application/json"}), 400)
    _error(api.call("POST", "/purge", content=b"{not json",
                    headers={**api.headers, "Content-Type": "application/json"}), 400)


def test_no_such_job_or_path_is_404_and_a_wrong_method_405(api: Api) -> None:
    _error(api.get("/999999"), 404)
    _error(api.post("/999999/cancel"), 404)
    _error(api.get("/no-such-path"), 404)
    response = api.call("DELETE", "/stats")
    _error(response, 405)
    assert "GET" in response.headers.get("Allow", "")


def test_another_organizations_job_does_not_exist(api: Api, other: Api) -> None:
    theirs = other.add("echo")
    for response in (api.get(f"/{theirs['id']}"), api.get(f"/{theirs['id']}/history"),
                     api.post(f"/{theirs['id']}/cancel"), api.post(f"/{theirs['id']}/retry")):
        _error(response, 404)
    assert other.status(theirs["id"]) == "queued"
