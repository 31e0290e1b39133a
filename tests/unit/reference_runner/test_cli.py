"""``queue-pump runner`` / ``python -m queue_pump.reference_runner``: flags, environment, and a
real process stopped by SIGTERM/SIGINT while a job runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from queue_pump.reference_runner.cli import add_arguments, main, resolve

TOKEN = "runner-SECRET-91c2"
ORG = "org-test"
AUTH = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG}
ENV = {"AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": ORG}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    s = resolve(parse(), {})
    assert (s.host, s.port, s.db) == ("127.0.0.1", 8000, "queue-pump-runner.sqlite3")
    assert (s.lease_s, s.seed, s.seed_jobs) == (300.0, None, 0)
    assert s.faults.error_rate == 0.0 and s.faults.error_status == 503
    assert s.faults.retry_after_s is None


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    env = {"QUEUE_PUMP_RUNNER_ERROR_RATE": "0.25", "QUEUE_PUMP_RUNNER_PORT": "9001",
           "QUEUE_PUMP_RUNNER_STALL_S": "2"}
    s = resolve(parse("--port", "9002", "--drop-rate", "0.1", "--db", ":memory:",
                      "--retry-after-s", "0.5", "--seed", "42"), env)
    assert s.port == 9002
    assert s.faults.error_rate == 0.25 and s.faults.drop_rate == 0.1
    assert s.faults.stall_s == 2.0 and s.faults.retry_after_s == 0.5
    assert (s.db, s.seed) == (":memory:", 42)


@pytest.mark.parametrize("var", ["AGENT_TOKEN", "ORGANIZATION_ID"])
def test_missing_credentials_is_one_line_and_exit_2(
    var: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = dict(ENV, **{var: ""})
    assert main(parse("--port", "0"), env) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert var in err and TOKEN not in err


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--error-rate", "-0.1"], {}, "--error-rate must be between 0 and 1"),
        (["--rate-limit-rate", "1.5"], {}, "--rate-limit-rate must be between 0 and 1"),
        (["--drop-rate", "abc"], {}, "--drop-rate must be a number"),
        (["--stall-rate", "nan"], {}, "--stall-rate must be between"),
        (["--port", "70000"], {}, "--port must be between 0 and 65535"),
        (["--port", "-1"], {}, "--port must be between"),
        (["--port", "80.5"], {}, "--port must be an integer"),
        (["--error-status", "200"], {}, "--error-status must be between 400 and 599"),
        (["--stall-s", "-1"], {}, "--stall-s"),
        (["--lease-s", "0"], {}, "--lease-s"),
        (["--seed-jobs", "-3"], {}, "--seed-jobs"),
        (["--host", " "], {}, "--host must not be empty"),
        ([], {"QUEUE_PUMP_RUNNER_DROP_RATE": "2"}, "QUEUE_PUMP_RUNNER_DROP_RATE must be between"),
        (["--error-rate", "0.6", "--stall-rate", "0.6"], {}, "must not exceed 1"),
        (["--lease-s", "1", "--seed-duration-ms", "1000"], {}, "shorter than --lease-s"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(parse(*argv), {**ENV, **env}) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert needle in err and TOKEN not in err


@pytest.mark.parametrize(("admin", "needle"), [
    (TOKEN + "-longer-than-16", None),
    ("short-admin", "ADMIN_TOKEN must be at least 16 characters, got 11"),
])
def test_the_admin_token_is_long_and_not_the_pumps(
    admin: str, needle: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    same = {**ENV, "AGENT_TOKEN": admin, "ADMIN_TOKEN": admin}
    if needle is None:  # long enough, but the pump's own: refused
        needle = "ADMIN_TOKEN must differ from AGENT_TOKEN"
        env = same
    else:
        env = {**ENV, "ADMIN_TOKEN": admin}
    assert main(parse("--port", "0"), env) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert needle in err and admin not in err


def test_unopenable_database_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "no" / "such" / "dir" / "jobs.sqlite3")
    assert main(parse("--port", "0", "--db", db), ENV) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open database" in err


# -- the real process -------------------------------------------------------------------------


def test_start_hint_for_a_wildcard_address_names_loopback() -> None:
    from queue_pump.reference_runner.cli import start_hint

    assert "SUPABASE_URL=http://127.0.0.1:8000 " in start_hint("0.0.0.0", 8000)
    assert "SUPABASE_URL=http://[::1]:8001 " in start_hint("::1", 8001)
