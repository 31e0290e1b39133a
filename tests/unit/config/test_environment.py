"""Configuration as a table: inputs and the one-line messages they must produce."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from queue_pump.config import ConfigError, from_mapping
from queue_pump.config.envfile import load_env
from queue_pump.config.settings import KNOBS, env_example
from queue_pump.config.urls import is_loopback_host, redact_url
from tests.support.env import ANON, BASE_ENV, ROOT, TOKEN


def problems(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_mapping({**BASE_ENV, **env})
    return info.value.problems


def test_defaults_are_the_node_pumps() -> None:
    s = from_mapping(BASE_ENV, hostname="h")
    # Milliseconds in the environment, seconds in Settings; `config` shows milliseconds again.
    assert (s.idle_sleep_s, s.tick_sleep_s, s.http_timeout_s, s.log_every) == (
        10.0, 0.25, 1800.0, 10)
    assert (s.queue, s.concurrency, s.backoff_base_s, s.backoff_max_s) == ("agent", 1, 1.0, 60.0)
    assert (s.connect_timeout_s, s.shutdown_grace_s, s.max_response_bytes) == (
        10.0, 30.0, 1048576)
    view = s.public_view()
    assert (view["idle_sleep_ms"], view["tick_sleep_ms"], view["http_timeout_ms"]) == (
        10000, 250, 1800000)
    assert s.worker_id == "h"
    assert s.endpoint == "https://proj.supabase.co/functions/v1/ai-job-runner"


def test_test_friendly_minimums_are_accepted() -> None:
    s = from_mapping({**BASE_ENV, "QUEUE_PUMP_IDLE_SLEEP_MS": "100",
                      "QUEUE_PUMP_TICK_SLEEP_MS": "0", "QUEUE_PUMP_HTTP_TIMEOUT_MS": "1000"})
    assert (s.idle_sleep_s, s.tick_sleep_s, s.http_timeout_s) == (0.1, 0.0, 1.0)


@pytest.mark.parametrize("env,needle", [
    ({"QUEUE_PUMP_CONCURRENCY": "0"}, "QUEUE_PUMP_CONCURRENCY='0' is out of range; expected a "
                                      "whole number from 1 to 256"),
    ({"QUEUE_PUMP_CONCURRENCY": "257"}, "from 1 to 256"),
    ({"QUEUE_PUMP_CONCURRENCY": "four"}, "QUEUE_PUMP_CONCURRENCY='four' is not a number"),
    ({"QUEUE_PUMP_CONCURRENCY": ""}, "QUEUE_PUMP_CONCURRENCY='' is not a number"),
    ({"QUEUE_PUMP_CONCURRENCY": "2.5"}, "is not a whole number"),
    ({"QUEUE_PUMP_IDLE_SLEEP_MS": "-1"}, "QUEUE_PUMP_IDLE_SLEEP_MS='-1' is out of range"),
    ({"QUEUE_PUMP_IDLE_SLEEP_MS": "99"}, "from 100 to 86400000 ms"),
    ({"QUEUE_PUMP_IDLE_SLEEP_MS": "1e99"}, "QUEUE_PUMP_IDLE_SLEEP_MS='1e99' is out of range"),
    ({"QUEUE_PUMP_IDLE_SLEEP_MS": "nan"}, "is not a whole number"),
    ({"QUEUE_PUMP_HTTP_TIMEOUT_MS": "999"}, "from 1000 to"),
    ({"QUEUE_PUMP_TICK_SLEEP_MS": "99999999999999999999"}, "is out of range"),
    ({"QUEUE_PUMP_LOG_FORMAT": "xml"}, "QUEUE_PUMP_LOG_FORMAT='xml' is not accepted; expected "
                                      "one of json, console"),
    ({"QUEUE_PUMP_LOG_LEVEL": "loud"}, "expected one of debug, info, warning, error"),
    ({"QUEUE_PUMP_ALLOW_INSECURE_HTTP": "maybe"}, "is not a boolean"),
    ({"QUEUE_PUMP_HEALTH_PORT": "70000"}, "from 0 to 65535"),
    ({"SUPABASE_URL": "ftp://x.example"}, "SUPABASE_URL='ftp://x.example' is not an http(s) URL"),
    ({"SUPABASE_URL": "proj.supabase.co"}, "is not an http(s) URL"),
    ({"SUPABASE_URL": "https://x.example:99999"}, "SUPABASE_URL has a bad port"),
    ({"SUPABASE_URL": "http://proj.supabase.co"}, "uses plain http to a host that is not "
                                                   "loopback"),
    ({"QUEUE_PUMP_ENDPOINT": "http://10.0.0.5/run"}, "QUEUE_PUMP_ENDPOINT='http://10.0.0.5/run'"),
    ({"QUEUE_PUMP_ALERT_WEBHOOK_URL": "http://hooks.example/T0/secret"},
     "QUEUE_PUMP_ALERT_WEBHOOK_URL=(hidden) uses plain http"),
    ({"QUEUE_PUMP_QUEUE": ""}, "QUEUE_PUMP_QUEUE='' is not a queue name"),
    ({"QUEUE_PUMP_QUEUE": "a b"}, "is not a queue name"),
    ({"QUEUE_PUMP_BACKOFF_BASE_MS": "5000", "QUEUE_PUMP_BACKOFF_MAX_MS": "1000"},
     "QUEUE_PUMP_BACKOFF_MAX_MS=1000 is below QUEUE_PUMP_BACKOFF_BASE_MS=5000"),
    ({"ORGANIZATION_ID": "org\r\nX-Evil: 1"}, "ORGANIZATION_ID contains a line break"),
    ({"AGENT_TOKEN": ""}, "AGENT_TOKEN is not set; it is required"),
    ({"AGENT_TOKEN": "tökén"}, "AGENT_TOKEN has a character that cannot go in an HTTP header"),
    ({"ORGANIZATION_ID": "org\x01"}, "ORGANIZATION_ID has a character that cannot go"),
    ({"QUEUE_PUMP_WORKER_ID": "box-ü"}, "QUEUE_PUMP_WORKER_ID has a character"),
    ({"QUEUE_PUMP_QUEUES": "agent:\u00b2"}, "QUEUE_PUMP_QUEUES has 'agent:\u00b2'"),
    ({"SUPABASE_URL": "https://x.supabase.co/#frag"}, "has a query or fragment"),
    ({"SUPABASE_URL": "https://x.supabase.co?x=1"}, "has a query or fragment"),
    ({"QUEUE_PUMP_ENDPOINT": "https://r.example/run#x"}, "has a #fragment"),
    ({"AGENT_TOKEN": "change-me"}, "AGENT_TOKEN is still the placeholder from .env.example"),
    ({"SUPABASE_URL": "https://your-project.supabase.co"}, "SUPABASE_URL is still the placeholder"),
    ({"AGENT_TOKEN": "   "}, "AGENT_TOKEN is not set"),
])
def test_bad_values_give_one_line_each(env: dict[str, str], needle: str) -> None:
    found = problems(**env)
    assert len(found) == 1, found
    assert needle in found[0]
    assert "\n" not in found[0]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"QUEUE_PUMP_CONCURRENCY": "0", "QUEUE_PUMP_LOG_FORMAT": "x"})
    named = {p.split(" ")[0].split("=")[0] for p in info.value.problems}
    assert named == {"QUEUE_PUMP_CONCURRENCY", "QUEUE_PUMP_LOG_FORMAT", "SUPABASE_URL",
                     "AGENT_TOKEN", "ORGANIZATION_ID"}


@pytest.mark.parametrize(("change", "needle"), [
    ({"concurrency": 0}, "QUEUE_PUMP_CONCURRENCY=0 is out of range"),
    ({"idle_sleep_s": 0.05}, "QUEUE_PUMP_IDLE_SLEEP_MS=50 is out of range"),
    ({"http_transport": "curl"}, "QUEUE_PUMP_HTTP_TRANSPORT='curl' is not accepted"),
    ({"backoff_base_s": 5.0, "backoff_max_s": 1.0}, "QUEUE_PUMP_BACKOFF_MAX_MS=1000 is below"),
    ({"idle_max_sleep_s": 0.5}, "QUEUE_PUMP_IDLE_MAX_SLEEP_MS=500 is below"),
    ({"wake_token": "short"}, "QUEUE_PUMP_WAKE_TOKEN is 5 characters long"),
    ({"health_host": ""}, "QUEUE_PUMP_HEALTH_HOST='' is not an address"),
    ({"supabase_url": "http://runner.example"}, "uses plain http"),
])
def test_settings_hold_their_rules_however_they_are_built(change: dict[str, object],
                                                          needle: str) -> None:
    good = from_mapping(BASE_ENV, hostname="h")
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(good, **change)
    assert len(info.value.problems) == 1 and needle in info.value.problems[0]


@pytest.mark.parametrize("name", ["ORGANIZATION_ID", "QUEUE_PUMP_WORKER_ID", "AGENT_TOKEN",
                                  "SUPABASE_ANON_KEY"])
def test_header_values_have_a_length_cap(name: str) -> None:
    too_long = TOKEN + "x" * 4096
    (problem,) = problems(**{name: too_long})
    assert problem == (f"{name} is {len(too_long)} characters long; expected at most 4096 "
                       "(it is sent as an HTTP header)")
    assert from_mapping({**BASE_ENV, name: "x" * 4096}, hostname="h")  # the cap itself is fine


def test_endpoint_override_makes_supabase_url_optional() -> None:
    s = from_mapping({"AGENT_TOKEN": "t" * 16, "ORGANIZATION_ID": "o",
                      "QUEUE_PUMP_ENDPOINT": "https://runner.example/jobs/run"})
    assert s.endpoint == "https://runner.example/jobs/run"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost", "http://[::1]:8000",
                                 "http://127.9.9.9", "http://api.localhost"])
def test_plain_http_to_loopback_is_fine(url: str) -> None:
    assert from_mapping({**BASE_ENV, "SUPABASE_URL": url}).supabase_url == url


def test_insecure_http_can_be_allowed_explicitly() -> None:
    s = from_mapping({**BASE_ENV, "SUPABASE_URL": "http://runner:8000",
                      "QUEUE_PUMP_ALLOW_INSECURE_HTTP": "1"})
    assert s.allow_insecure_http is True


@pytest.mark.parametrize("secret_env", [
    {"AGENT_TOKEN": "x\n" + TOKEN},
    {"SUPABASE_ANON_KEY": ANON + "\x01"},
    {"SUPABASE_URL": f"https://user:{TOKEN}@[::1"},  # does not even parse
    {"SUPABASE_URL": f"ftp://user:{TOKEN}@h.example"},
    {"QUEUE_PUMP_ALERT_WEBHOOK_URL": f"https://hooks.example/{TOKEN}#x"},
])
def test_secret_values_never_appear_in_messages(secret_env: dict[str, str]) -> None:
    found = problems(**secret_env, QUEUE_PUMP_CONCURRENCY="0")
    assert len(found) == 2  # the secret-bearing value's problem is reported, without it
    assert all(TOKEN not in p and ANON not in p for p in found)


def test_repr_and_public_view_hide_secrets() -> None:
    s = from_mapping({**BASE_ENV, "SUPABASE_ANON_KEY": ANON,
                      "QUEUE_PUMP_ALERT_WEBHOOK_URL": "https://hooks.example/T0/SECRETPATH",
                      "SUPABASE_URL": "https://user:pw@proj.supabase.co"})
    for text in (repr(s), str(s), str(s.public_view())):
        assert TOKEN not in text and ANON not in text and "SECRETPATH" not in text
        assert "pw" not in text.replace("public_view", "")
    assert s.public_view()["agent_token"] == "***"
    assert set(s.secrets()) == {TOKEN, ANON, "https://hooks.example/T0/SECRETPATH", "pw"}


def test_redact_url() -> None:
    assert redact_url("https://a:b@h.example:8443/p?q=1") == "https://***@h.example:8443/p?q=1"
    assert redact_url("https://h.example/p") == "https://h.example/p"


def test_loopback_detection() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    assert not is_loopback_host("10.0.0.1") and not is_loopback_host("example.com")


def test_env_file_real_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("QUEUE_PUMP_CONCURRENCY=3\nQUEUE_PUMP_QUEUE=from-file\n"
                        "export ORGANIZATION_ID='quoted org'\n")
    merged = load_env(str(env_file), {"QUEUE_PUMP_QUEUE": "from-env"})
    assert merged["QUEUE_PUMP_CONCURRENCY"] == "3"
    assert merged["QUEUE_PUMP_QUEUE"] == "from-env"
    assert merged["ORGANIZATION_ID"] == "quoted org"
    monkeypatch.chdir(tmp_path)
    assert load_env(None, {})["QUEUE_PUMP_CONCURRENCY"] == "3"  # ./.env by default


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_env(str(tmp_path / "nope.env"), {})


def test_env_example_is_current_and_lists_every_variable() -> None:
    committed = (ROOT / ".env.example").read_text()
    assert committed == env_example(), "regenerate: queue-pump config --env-example > .env.example"
    for knob in KNOBS:
        assert knob.env in committed


def test_readme_documents_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [knob.env for knob in KNOBS if f"`{knob.env}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


@pytest.mark.parametrize(("name", "floor", "why"), [
    ("AGENT_TOKEN", 16, "a shared secret that short can be guessed; the kit's functions refuse "
                        "it too"),
    ("SUPABASE_ANON_KEY", 8, "a value that short is no secret, and masking it would garble "
                             "every log line")])
@pytest.mark.parametrize("value", ["e", "abcdefg"])
def test_a_secret_too_short_is_refused_without_showing_it(name: str, floor: int, why: str,
                                                          value: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({**BASE_ENV, name: value}, hostname="h")
    problems = info.value.problems
    count = "1 character" if value == "e" else f"{len(value)} characters"
    assert problems == [f"{name} is {count} long; expected at least {floor} ({why})"]
    assert from_mapping({**BASE_ENV, name: value + "x" * (floor - len(value))}, hostname="h")


def test_the_pump_and_the_kit_want_the_same_token_length() -> None:
    """One minimum for the tokens the pump and the kit's functions share."""
    from queue_pump.config.knobs import MIN_TOKEN_CHARS

    env_ts = (ROOT / "supabase" / "functions" / "_shared" / "env.ts").read_text()
    assert f"export const MIN_TOKEN_CHARS = {MIN_TOKEN_CHARS};" in env_ts
    floors = {k.env: k.min_chars for k in KNOBS
              if k.env in ("AGENT_TOKEN", "ADMIN_TOKEN", "QUEUE_PUMP_WAKE_TOKEN")}
    assert floors == dict.fromkeys(floors, MIN_TOKEN_CHARS) and len(floors) == 3
    with pytest.raises(ConfigError) as info:
        from_mapping({**BASE_ENV, "AGENT_TOKEN": "x" * (MIN_TOKEN_CHARS - 1)}, hostname="h")
    assert info.value.problems[0].startswith(
        f"AGENT_TOKEN is {MIN_TOKEN_CHARS - 1} characters long; expected at least 16")


@pytest.mark.parametrize(("mode", "holds_secret", "warned"), [
    (0o644, True, True), (0o604, True, True), (0o600, True, False), (0o640, True, False),
    (0o644, False, False)])
def test_a_world_readable_env_file_holding_a_secret_is_warned_about_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int, holds_secret: bool,
        warned: bool) -> None:
    from queue_pump.cli import main

    env = tmp_path / "pump.env"
    secret = f"AGENT_TOKEN={TOKEN}\n" if holds_secret else ""
    env.write_text(f"SUPABASE_URL=https://proj.supabase.co\n{secret}ORGANIZATION_ID=o\n")
    env.chmod(mode)
    main(["config", "--env-file", str(env)], {} if holds_secret else {"AGENT_TOKEN": TOKEN})
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("queue-pump: warning:")]
    if warned:
        assert warnings == [f"queue-pump: warning: {str(env)!r} holds AGENT_TOKEN and is "
                            f"readable by every user (mode {mode:o}); make it private: "
                            f"chmod 600 {str(env)!r}"]
    else:
        assert warnings == []
    assert TOKEN not in err


def test_queues_parse_and_replace_the_single_queue() -> None:
    s = from_mapping({**BASE_ENV, "QUEUE_PUMP_QUEUES": "agent:2, render:1,mail"})
    assert s.lanes == (("agent", 2), ("render", 1), ("mail", 1))
    assert s.total_concurrency == 4
    assert from_mapping(BASE_ENV).lanes == (("agent", 1),)


@pytest.mark.parametrize("env,needle", [
    ({"QUEUE_PUMP_QUEUES": "agent:2", "QUEUE_PUMP_QUEUE": "x"},
     "QUEUE_PUMP_QUEUES is set together with QUEUE_PUMP_QUEUE"),
    ({"QUEUE_PUMP_QUEUES": "agent:2", "QUEUE_PUMP_CONCURRENCY": "3"}, "together with"),
    ({"QUEUE_PUMP_QUEUES": "agent:0"}, "QUEUE_PUMP_QUEUES has 'agent:0'"),
    ({"QUEUE_PUMP_QUEUES": "agent:x"}, "expected name:concurrency"),
    ({"QUEUE_PUMP_QUEUES": "a b:1"}, "QUEUE_PUMP_QUEUES has 'a b:1'"),
    ({"QUEUE_PUMP_QUEUES": "agent:1,agent:2"}, "names 'agent' twice"),
    ({"QUEUE_PUMP_QUEUES": "a:200,b:100"}, "adds up to 300 loops"),
    ({"QUEUE_PUMP_IDLE_MAX_SLEEP_MS": "5000"}, "QUEUE_PUMP_IDLE_MAX_SLEEP_MS=5000 is below"),
    ({"QUEUE_PUMP_WAKE_TOKEN": "short"}, "QUEUE_PUMP_WAKE_TOKEN is 5 characters long"),
    ({"QUEUE_PUMP_MAX_CALLS_PER_HOUR": "-1"}, "QUEUE_PUMP_MAX_CALLS_PER_HOUR='-1' is out of range"),
])
def test_queue_idle_and_wake_settings_errors(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({**BASE_ENV, **env})
    assert len(info.value.problems) == 1 and needle in info.value.problems[0]


def test_defaults_keep_the_node_pumps_behaviour() -> None:
    s = from_mapping(BASE_ENV)
    assert s.idle_max_sleep_s == s.idle_sleep_s == 10.0
    assert (s.max_calls_per_hour, s.wake_token, s.schedules) == (0, "", "")


def test_an_env_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    env = tmp_path / "pump.env"
    env.write_bytes(b"AGENT_TOKEN=\xff\xfe not utf-8\n")
    with pytest.raises(ConfigError) as info:
        load_env(str(env), {})
    assert info.value.problems == [f"--env-file {str(env)!r} cannot be read: UnicodeDecodeError"]


def test_ctrl_c_during_start_up_is_exit_130_without_a_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from queue_pump.cli import commands

    def interrupted(argv: object, environ: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(commands.HANDLERS, "config", interrupted)
    assert commands.main(["config"], {}) == 130
