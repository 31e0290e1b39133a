"""The real process over loopback: exit codes, signals, one-line errors, no secret in output."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.support.proc import finish, pump_env, run, start
from tests.support.runner_double import IDLE, JOB, Reply, free_port, runner_double

pytestmark = pytest.mark.e2e


def test_once_exit_codes() -> None:
    with runner_double(lambda i: JOB) as double:
        done = run(pump_env(double.url), "--once")
        assert done.code == 0 and len(double.seen) == 1
        done.assert_no_secret()
    with runner_double(lambda i: IDLE) as double:
        assert run(pump_env(double.url), "--once").code == 0
    with runner_double(lambda i: Reply(status=500)) as double:
        done = run(pump_env(double.url), "--once")
        assert done.code == 1 and len(double.seen) == 1
        assert done.named("call_failed")[0]["status"] == 500
        done.assert_no_secret()


def test_drain_stops_at_the_first_idle_answer() -> None:
    with runner_double(lambda i: JOB if i < 5 else IDLE) as double:
        done = run(pump_env(double.url, QUEUE_PUMP_TICK_SLEEP_MS="0"), "--drain")
        assert done.code == 0
        assert len(double.seen) == 6
        assert done.named("queue_drained")[0]["processed"] == 5


def test_flags_override_the_environment() -> None:
    with runner_double(lambda i: IDLE) as double:
        env = pump_env("http://127.0.0.1:9", QUEUE_PUMP_QUEUE="from-env")
        done = run(env, "--once", "--supabase-url", double.url, "--queue", "from-flag")
        assert done.code == 0
        assert "queue=from-flag" in double.seen[0].path


def test_bad_configuration_exits_2_with_one_line_per_problem() -> None:
    env = pump_env("ftp://nope", QUEUE_PUMP_CONCURRENCY="0", AGENT_TOKEN="tok-SECRET-\n5f3a9c")
    done = run(env)
    assert done.code == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith("queue-pump: config: ") for line in lines)
    done.assert_no_secret()


def test_bad_flag_is_one_line() -> None:
    done = run(pump_env("http://127.0.0.1:9"), "--once", "--drain")
    assert done.code == 2 and len(done.stderr.strip().splitlines()) == 1
    done = run(pump_env("http://127.0.0.1:9"), "--concurrency", "lots")
    assert done.code == 2 and "--concurrency 'lots' is not a number" in done.stderr


def test_health_port_in_use_is_a_clear_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(pump_env("http://127.0.0.1:9", QUEUE_PUMP_HEALTH_PORT=str(port)))
    assert done.code == 2
    assert f"QUEUE_PUMP_HEALTH_PORT={port} cannot be bound" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_idle_stops_at_once(sig: signal.Signals) -> None:
    with runner_double(lambda i: IDLE) as double:
        proc = start(pump_env(double.url, QUEUE_PUMP_IDLE_SLEEP_MS="60000"))
        double.wait_for(1)
        t0 = time.monotonic()
        proc.send_signal(sig)
        # finish() gives up after 30 s: an exit at all means the 60 s idle sleep was cut.
        done = finish(proc, t0)
    assert done.code == 0
    assert done.named("shutdown_requested")[0]["signal"] == sig.name
    assert len(double.seen) == 1  # no call after the signal
    done.assert_no_secret()


def test_sigterm_during_a_long_call_lets_it_finish() -> None:
    with runner_double(lambda i: Reply(body=JOB.body, delay_s=1.5) if i == 0 else JOB) as double:
        proc = start(pump_env(double.url))
        double.wait_for(1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        done = finish(proc, t0)
    assert done.code == 0
    assert double.seen[0].answered  # the runner got to send its whole answer
    assert len(double.seen) == 1  # and no call started after the signal
    assert done.named("pump_stopped")[0]["processed"] == 1


def test_env_file_in_the_working_directory(tmp_path: os.PathLike[str]) -> None:
    with runner_double(lambda i: JOB) as double:
        (tmp_path / ".env").write_text(f"SUPABASE_URL={double.url}\n")  # type: ignore[operator]
        env = pump_env(double.url)
        del env["SUPABASE_URL"]
        done = run(env, "--once", cwd=str(tmp_path))
        assert done.code == 0 and len(double.seen) == 1


@pytest.mark.parametrize("retry_after", [None, "0", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_backoff_keeps_calls_bounded_while_the_runner_fails(retry_after: str | None) -> None:
    # 2 s of 503s with base 100 ms: full jitter allows at most ~log2(2/0.1)+few calls per loop,
    # a tight loop would make hundreds (a "Retry-After: 0" once made 4,579 in 3 s).
    headers = {"Retry-After": retry_after} if retry_after else {}
    with runner_double(lambda i: Reply(status=503, headers=headers)) as double:
        env = pump_env(double.url, QUEUE_PUMP_BACKOFF_BASE_MS="100",
                       QUEUE_PUMP_BACKOFF_MAX_MS="1000")
        proc = start(env)
        try:
            double.wait_for(8, timeout_s=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            done = finish(proc, time.monotonic())
    assert done.code == 0
    # Seven full-jitter waits (up to 0.1, 0.2, 0.4, 0.8, 1, 1, 1 s) add up to less than 0.2 s
    # about once in a million runs; a tight loop makes the eight calls in a few ms. A lower
    # bound: a busy machine only makes the span longer.
    span = double.seen[7].at - double.seen[0].at
    assert span >= 0.2, f"8 calls in {span * 1000:.0f} ms: not backing off"
    failed = done.named("call_failed")
    assert [e["attempt"] for e in failed] == list(range(1, len(failed) + 1))


def test_free_port_helper_is_free() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
