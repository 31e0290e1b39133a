"""Bad input never crashes the pump.

1. Every knob in queue_pump.config.KNOBS, as a variable and as a flag, with empty, non-numeric,
   negative, huge and malformed values, through the real CLI entry point: exit 2 and exactly one
   line naming the variable, nothing on stdout, never the token. In-process (cli.main with the
   pump's start replaced by a stub, so an accepted value is seen, never run) for the sweep, and
   a few real processes.
2. Any runner answer (any status, any headers, any body) fed through classify(), and through a
   RunnerClient + Pump in fake time: an outcome or a CallError, never another exception, and
   every wait finite and bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_pump import cli
from queue_pump.app import http_config, policy
from queue_pump.config import from_mapping
from queue_pump.config.knobs import Knob
from queue_pump.config.settings import KNOBS
from queue_pump.loop.backoff import RETRY_AFTER_CEILING_S
from queue_pump.loop.client import Idle, Processed, classify
from queue_pump.loop.failures import CallError, ErrorKind
from queue_pump.loop.pump import Lane, Pump
from queue_pump.observe.state import Stats
from queue_pump.transport import build_http_client
from tests.support.env import BASE_ENV, TOKEN, FakeTime, runner_client
from tests.support.proc import pump_env, run

ACCEPTED = 99  # what the stubbed start returns: the configuration was accepted
HUGE_NUMBER = "9" * 40
HUGE_TEXT = "x" * 100_000


def _flag(knob: Knob) -> str:
    return "--" + knob.env.removeprefix("QUEUE_PUMP_").lower().replace("_", "-")


def bad_values(knob: Knob) -> list[str]:
    """Values that must be refused for this knob: empty, non-numeric, negative, huge, malformed.

    Only values that mean something legitimate are left out: empty where empty means "unset"
    (an optional knob, a default that is empty, a boolean's off)."""
    empty_ok = (not knob.required and (knob.default == "" or knob.optional)) or knob.kind == "bool"
    values = [] if empty_ok else [""]
    if knob.kind in ("int", "ms"):
        values += ["abc", "-5", HUGE_NUMBER, "1e400", "12abc", "1.5", "nan", "0x10", "5 ms"]
    elif knob.kind == "bool":
        values += ["abc", "-5", HUGE_NUMBER, "2", "yes please"]
    elif knob.kind == "choice":
        values += ["abc", "-5", HUGE_TEXT, ",".join(knob.choices)]
    elif knob.kind == "url":
        values += ["abc", "-5", HUGE_NUMBER, "ftp://host.example", "http://", "https://",
                   "https://host.example:99999", "https://host.example:-1",
                   "https://host.example/a\nb"]
    else:  # str and secret: anything on one line is a legal name, id or token
        values += ["line\nbreak", "carriage\rreturn", "nul\x00byte"]
        if knob.env in ("QUEUE_PUMP_QUEUE", "QUEUE_PUMP_QUEUES"):
            values += ["has space", "a:b:c", "-5:-5"]
        if knob.env == "QUEUE_PUMP_WAKE_TOKEN":
            values += ["short"]
    return values


def run_cli(argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
            ) -> tuple[int, str, str]:
    try:
        code = cli.main(argv, env)
    except SystemExit as exc:  # argparse's own exits
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stub_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Accepted settings reach serve(): replace it, so nothing ever runs in this process."""

    async def accepted(*_: Any, **__: Any) -> int:
        return ACCEPTED

    monkeypatch.setattr("queue_pump.app.serve", accepted)
    yield


def env_with(knob: Knob, value: str) -> dict[str, str]:
    env = {**BASE_ENV, "QUEUE_PUMP_LOG_FORMAT": "json", knob.env: value}
    if knob.env == "QUEUE_PUMP_QUEUES":
        env.pop("QUEUE_PUMP_QUEUE", None)
    return env


def assert_one_clear_line(knob: Knob, value: str, how: str, result: tuple[int, str, str],
                          max_len: int | None = None) -> None:
    code, out, err = result
    where = f"{knob.env}={value[:40]!r} as {how}"
    assert code == 2, f"{where}: exit {code} (99 = accepted), stderr {err[:300]!r}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"{where}: {len(lines)} lines: {err[:600]!r}"
    assert lines[0].startswith("queue-pump"), where
    assert knob.env in lines[0] or _flag(knob) in lines[0], f"{where}: {lines[0][:300]!r}"
    if max_len is not None:
        assert len(lines[0]) <= max_len, f"{where}: a {len(lines[0])}-character line"
    assert out == "", where
    assert TOKEN not in err and "Traceback" not in err, where


@pytest.mark.usefixtures("stub_start")
@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: k.env)
def test_every_knob_refuses_bad_values_with_one_line(
        knob: Knob, capsys: pytest.CaptureFixture[str]) -> None:
    # The base configuration is accepted, so a refusal below is this knob's doing.
    assert run_cli(["--once"], {**BASE_ENV}, capsys)[0] == ACCEPTED
    for value in bad_values(knob):
        assert_one_clear_line(knob, value, "variable",
                              run_cli(["--once"], env_with(knob, value), capsys))
        if not knob.secret:  # secrets have no flag: a command line shows up in ps
            assert_one_clear_line(knob, value, "flag", run_cli(
                ["--once", f"{_flag(knob)}={value}"], {**BASE_ENV}, capsys))


def test_secrets_have_no_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for knob in (k for k in KNOBS if k.secret):
        code, out, err = run_cli(["--once", f"{_flag(knob)}={TOKEN}"], {**BASE_ENV}, capsys)
        assert code == 2 and "is a secret and comes from the environment" in err and out == ""
        assert TOKEN not in err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("stub_start")
@pytest.mark.parametrize("argv", [["--concurrency"], ["--nope"], ["--once", "--drain"],
                                  ["--env-file"], ["--env-file", "/nonexistent/.env"],
                                  ["run", "--concurrency", "1", "--concurrency=x"]])
def test_bad_arguments_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(argv, {**BASE_ENV}, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


# --- what the sweep found (fixed in config.py by f34d9a4), kept as named cases ----------------
URL_KNOBS = [k for k in KNOBS if k.kind == "url"]


@pytest.mark.usefixtures("stub_start")
def test_an_empty_health_host_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    knob = next(k for k in KNOBS if k.env == "QUEUE_PUMP_HEALTH_HOST")
    assert_one_clear_line(knob, "", "variable", run_cli(["--once"], env_with(knob, ""), capsys))


@pytest.mark.usefixtures("stub_start")
@pytest.mark.parametrize("knob", URL_KNOBS, ids=lambda k: k.env)
def test_an_unclosed_ipv6_bracket_is_one_line(knob: Knob,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_clear_line(knob, "https://[::1", "variable",
                          run_cli(["--once"], env_with(knob, "https://[::1"), capsys))


@pytest.mark.usefixtures("stub_start")
@pytest.mark.parametrize("value", ["https://exa mple.com", "https://" + "a" * 300 + ".example"])
def test_a_url_with_an_impossible_host_is_refused(value: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    knob = URL_KNOBS[0]
    assert_one_clear_line(knob, value, "variable", run_cli(["--once"], env_with(knob, value),
                                                           capsys))


@pytest.mark.usefixtures("stub_start")
def test_a_huge_value_makes_a_short_line(capsys: pytest.CaptureFixture[str]) -> None:
    knob = next(k for k in KNOBS if k.kind == "choice")
    assert_one_clear_line(knob, HUGE_TEXT, "variable",
                          run_cli(["--once"], env_with(knob, HUGE_TEXT), capsys), max_len=400)


# --- a few real processes --------------------------------------------------------------------
def test_every_knob_bad_at_once_in_one_process_lists_each_on_its_own_line() -> None:
    env = pump_env("abc")
    for knob in KNOBS:
        if knob.env == "QUEUE_PUMP_QUEUES":
            continue  # it excludes QUEUE_PUMP_QUEUE, which has its own bad value here
        bad = [v for v in bad_values(knob) if v and "\x00" not in v and len(v) < 1000]
        env[knob.env] = bad[0]
    done = run(env)
    assert done.code == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("queue-pump: config: ") for line in lines)
    named = {knob.env for knob in KNOBS if any(knob.env in line for line in lines)}
    missing = {k.env for k in KNOBS} - named - {"QUEUE_PUMP_QUEUES"}
    assert not missing, done.stderr
    done.assert_no_secret()


@pytest.mark.parametrize(("extra", "args", "says"), [
    ({}, ["--concurrency=-5"], "--concurrency '-5' is out of range"),
    ({"QUEUE_PUMP_HTTP_TIMEOUT_MS": HUGE_NUMBER}, [], "QUEUE_PUMP_HTTP_TIMEOUT_MS="),
    ({"QUEUE_PUMP_HEALTH_HOST": "no-such-host.invalid", "QUEUE_PUMP_HEALTH_PORT": "8080"}, [],
     "cannot be bound"),
    ({"QUEUE_PUMP_HEALTH_HOST": "no such host.invalid"}, [], "is not an address"),
    ({"AGENT_TOKEN": TOKEN + "\n"}, ["--nope"], "unrecognized arguments"),
])
def test_bad_input_through_the_real_process(extra: dict[str, str], args: list[str],
                                            says: str) -> None:
    done = run(pump_env("http://127.0.0.1:9", **extra), *args)
    assert done.code == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr
    done.assert_no_secret()


# --- any runner answer -------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["processed", "jobId", "status", "yielded", "error", "message", "msg",
                        "detail"]) | st.text(max_size=8), inner, max_size=5),
    max_leaves=12)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
RETRY_AFTER = (st.integers(0, 10**30).map(str) | HEADER_TEXT
               | st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")))
HEADERS = st.dictionaries(
    st.sampled_from(["retry-after", "location", "content-type", "x-anything"]),
    RETRY_AFTER, max_size=3)
BODY = (JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200)
        | st.builds(lambda msg: json.dumps({"error": msg + TOKEN}).encode(),
                    st.text(max_size=400)))
ANSWER = st.tuples(st.integers(100, 599), HEADERS, BODY)


@settings(max_examples=150, deadline=None)
@given(ANSWER)
def test_classify_any_answer(answer: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = answer
    try:
        outcome = classify(status, headers, body)
    except CallError as exc:
        assert exc.kind in (ErrorKind.RETRYABLE, ErrorKind.CONFIGURATION)
        assert exc.retry_after_s is None or 0 <= exc.retry_after_s <= RETRY_AFTER_CEILING_S
        assert str(exc) and repr(exc)
        assert len(exc.detail) <= 300
    else:
        assert 200 <= status < 300
        assert isinstance(outcome, Processed | Idle)


SETTINGS = from_mapping({**BASE_ENV, "QUEUE_PUMP_BACKOFF_BASE_MS": "100",
                         "QUEUE_PUMP_BACKOFF_MAX_MS": "5000", "QUEUE_PUMP_LOG_EVERY": "1"},
                        hostname="box")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANSWER, min_size=1, max_size=12))
def test_any_answers_never_crash_a_loop(answers: list[tuple[int, dict[str, str], bytes]]
                                        ) -> None:
    fake = FakeTime()

    async def go() -> tuple[Stats, int]:
        stop = asyncio.Event()
        left = list(answers)

        def handler(request: httpx.Request) -> httpx.Response:
            status, headers, body = left.pop(0)
            if not left:
                stop.set()
            return httpx.Response(status, headers=headers, content=body)

        stats = Stats(clock=fake.clock)
        async with build_http_client(http_config(SETTINGS),
                                     transport=httpx.MockTransport(handler)) as http:
            client = runner_client(http, SETTINGS)
            pump = Pump([Lane("agent", 1, client.call)], policy(SETTINGS), stats,
                        structlog.get_logger(), stop=stop, pause=fake.pause, clock=fake.clock,
                        rng=random.Random(0))
            code = await asyncio.wait_for(pump.run(), 10)
        return stats, int(code)

    with structlog.testing.capture_logs() as logs:
        stats, code = asyncio.run(go())
    assert code == 0
    counts = stats.snapshot()["counters"]
    assert counts["calls"] == len(answers)
    assert counts["calls"] == counts["processed"] + counts["idle"] + counts["errors"]
    # "internal" would mean an exception other than CallError escaped a call
    assert not any(key.endswith(":internal") for key in stats.snapshot()["errors"])
    assert all(math.isfinite(p) and 0 <= p <= RETRY_AFTER_CEILING_S for p in fake.pauses)
    assert all(e["event"] != "call_failed" or e.get("attempt", 0) >= 1 for e in logs)


def test_a_switch_stands_alone_or_takes_a_value(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[bool] = []

    async def capture(settings: Any, *_: Any) -> int:
        seen.append(settings.allow_insecure_http)
        return ACCEPTED

    monkeypatch.setattr("queue_pump.app.serve", capture)
    env = {**BASE_ENV, "SUPABASE_URL": "http://runner.internal:8000"}
    assert run_cli(["--allow-insecure-http", "--once"], env, capsys)[0] == ACCEPTED
    assert run_cli(["--once", "--allow-insecure-http"], env, capsys)[0] == ACCEPTED
    assert run_cli(["--allow-insecure-http", "yes"], env, capsys)[0] == ACCEPTED
    code, _, err = run_cli(["--allow-insecure-http", "0", "--once"], env, capsys)
    assert code == 2 and "uses plain http" in err
    assert seen == [True, True, True]
