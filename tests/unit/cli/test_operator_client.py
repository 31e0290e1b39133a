"""The operator API's client on its own: every answer that is not a success becomes one line,
a hint and an exit code (the vocabulary of loop/failures.py), over a mock transport."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from queue_pump.cli.operator_client import (
    OperatorClient,
    OperatorConfig,
    OperatorError,
    load_config,
)
from queue_pump.config import ConfigError

CONFIG = OperatorConfig(url="https://proj.supabase.co/functions/v1/jobs",
                        admin_token="admin-SECRET-0123456789", organization_id="org-1",
                        anon_key="anon-SECRET-77b1")


def client(status: int, body: bytes | str = b"{}", headers: dict[str, str] | None = None
           ) -> OperatorClient:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Admin-Token"] == CONFIG.admin_token
        assert request.headers["apikey"] == CONFIG.anon_key
        assert request.headers["Authorization"] == f"Bearer {CONFIG.anon_key}"
        return httpx.Response(status, content=body, headers=headers or {})

    return OperatorClient(CONFIG, transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(("status", "body", "code", "said", "hint"), [
    (400, b'{"error": "limit must be a whole number from 1 to 500, got 0"}', 2,
     "limit must be", "see --help"),
    (401, b'{"error": "missing or wrong X-Admin-Token"}', 1, "HTTP 401", "ADMIN_TOKEN"),
    (403, b'{"error": "not allowed"}', 1, "HTTP 403", "ORGANIZATION_ID"),
    (404, b'{"error": "no job 7 in this organization"}', 1, "no job 7", "jobs ls"),
    (404, b'{"error": "no such function"}', 1, "HTTP 404", "jobs function is deployed"),
    (405, b'{"error": "use GET"}', 1, "HTTP 405", "check the command's arguments"),
    (409, b'{"error": "job 7 is done", "status": "done"}', 1, "job 7 is done", "jobs show"),
    (503, b'{"error": "the database is away"}', 1, "HTTP 503", "try again later"),
    (500, b"<html>oops</html>", 1, "HTTP 500", "try again later"),
    (302, b"", 1, "HTTP 302", "redirects"),
    (418, b'{"error": "teapot"}', 1, "HTTP 418: teapot", ""),
])
def test_each_refusal_is_one_line_with_a_hint_and_an_exit_code(
        status: int, body: bytes, code: int, said: str, hint: str) -> None:
    with pytest.raises(OperatorError) as caught, client(status, body) as api:
        api.call("GET", "/7")
    error = caught.value
    assert (error.code, error.status) == (code, status)
    assert said in error.message and hint in error.hint
    line = error.line()
    assert "\n" not in line and CONFIG.admin_token not in line and CONFIG.anon_key not in line


def test_a_success_that_is_not_a_json_object_is_not_this_api() -> None:
    with pytest.raises(OperatorError, match="without a JSON object"), client(200, b"[1]") as api:
        api.call("GET")


def test_an_answer_too_large_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("queue_pump.cli.operator_client.MAX_ANSWER", 10)
    with pytest.raises(OperatorError, match="at most 10 are read"), \
            client(200, b'{"jobs": [1, 2, 3]}') as api:
        api.call("GET")


def test_no_answer_says_where_it_called_and_what_to_check() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = OperatorClient(CONFIG, transport=httpx.MockTransport(refuse))
    with pytest.raises(OperatorError) as caught:
        api.call("GET", "/stats")
    assert "no answer from https://proj.supabase.co/functions/v1/jobs" in caught.value.message
    assert "SUPABASE_URL" in caught.value.hint and "QUEUE_PUMP_JOBS_URL" in caught.value.hint


def test_nothing_unset_is_sent() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    with OperatorClient(CONFIG, transport=httpx.MockTransport(record)) as api:
        api.call("GET", "", params={"status": "failed", "type": None})
        api.call("POST", "/retry", body={"type": None, "dryRun": True})
    assert str(seen[0].url).endswith("/functions/v1/jobs?status=failed")
    assert seen[1].content == b'{"dryRun":true}'


def test_the_config_needs_no_pump_token_and_takes_a_url_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = {"SUPABASE_URL": "https://proj.supabase.co", "ADMIN_TOKEN": "a" * 16,
           "ORGANIZATION_ID": "org-1"}
    config = load_config(None, env)
    assert config.url == "https://proj.supabase.co/functions/v1/jobs"
    assert "a" * 16 not in repr(config)
    own = load_config(None, {**env, "QUEUE_PUMP_JOBS_URL": "https://ops.example.com/jobs/",
                             "SUPABASE_URL": ""})
    assert own.url == "https://ops.example.com/jobs"
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"ORGANIZATION_ID": "org-1"})
    assert [p.split(" ")[0] for p in caught.value.problems] == ["SUPABASE_URL", "ADMIN_TOKEN"]
