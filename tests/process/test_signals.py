"""Signals in every state, on the real process (tests/process/test_pump_process.py covers
SIGTERM/SIGINT while idle, SIGTERM during a long call, SIGTERM past the grace and a second
SIGTERM; these are the other combinations). In each one no call may start after the first signal."""

from __future__ import annotations

import signal

import pytest

from tests.support.proc import Live, pump_env, start, wait_until
from tests.support.runner_double import JOB, Reply, runner_double

pytestmark = pytest.mark.e2e
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def launch(url: str, **env: str) -> Live:
    return Live(start(pump_env(url, **env)))


# Backing off: a Retry-After of a minute, or a 401 that waits the cap (60 s by default). Both are
# waits of a minute or more, so the pump is surely asleep in its backoff when the signal comes.
BACKOFFS = {
    "retry-after": Reply(503, {"error": "busy"}, headers={"Retry-After": "60"}),
    "at-the-cap": Reply(401, {"error": "bad token"}),
}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("backoff", list(BACKOFFS))
def test_a_signal_while_backing_off_stops_at_once(sig: signal.Signals, backoff: str) -> None:
    with runner_double(lambda i: BACKOFFS[backoff]) as double:
        pump = launch(double.url, QUEUE_PUMP_BACKOFF_MAX_MS="60000")
        failed = pump.wait_event("call_failed")
        assert 60.0 <= failed["next_delay_s"] <= 75.0  # Retry-After gets up to 25 % on top
        pump.proc.send_signal(sig)
        code, _ = pump.finish()  # within its 30 s: the 60 s sleep was cut short
        assert code == 0
        assert len(double.seen) == 1  # no call after the signal
    assert pump.events("shutdown_requested")[0]["signal"] == sig.name
    stopped = pump.events("pump_stopped")[0]
    assert stopped["exit_code"] == 0 and stopped["errors"] == 1


def test_sigint_during_a_long_call_lets_it_finish() -> None:
    with runner_double(lambda i: Reply(body=JOB.body, delay_s=1.5) if i == 0 else JOB) as double:
        pump = launch(double.url)
        double.wait_for(1)
        pump.proc.send_signal(signal.SIGINT)
        code, _ = pump.finish()
        assert code == 0
        assert double.seen[0].answered  # the call completed inside the grace
        assert len(double.seen) == 1
    assert pump.events("shutdown_started")[0]["in_flight"] == 1
    assert pump.events("pump_stopped")[0]["processed"] == 1


def past_the_grace(sig: signal.Signals, *, clean: bool) -> tuple[Live, int, float]:
    with runner_double(lambda i: Reply(delay_s=5)) as double:
        pump = launch(double.url, QUEUE_PUMP_SHUTDOWN_GRACE_MS="300")
        double.wait_for(1)
        pump.proc.send_signal(sig)
        code, elapsed = pump.finish(clean=clean)
        assert len(double.seen) == 1
    return pump, code, elapsed


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_past_the_grace_the_call_is_cancelled_with_exit_code_3_and_no_traceback(
        sig: signal.Signals) -> None:
    pump, code, _ = past_the_grace(sig, clean=True)
    assert code == 3  # the grace ran out: the 5 s call was cancelled, not waited for
    assert pump.events("call_cancelled")
    assert pump.events("pump_stopped")[0]["exit_code"] == 3


@pytest.mark.parametrize(("first", "second"), [(signal.SIGINT, signal.SIGINT),
                                                (signal.SIGINT, signal.SIGTERM),
                                                (signal.SIGTERM, signal.SIGINT),
                                                (signal.SIGTERM, signal.SIGTERM)],
                         ids=lambda s: s.name)
def test_a_second_signal_exits_at_once_with_128_plus_its_number(
        first: signal.Signals, second: signal.Signals) -> None:
    with runner_double(lambda i: Reply(delay_s=5)) as double:
        pump = launch(double.url)
        double.wait_for(1)
        pump.proc.send_signal(first)
        pump.wait_event("shutdown_started")
        pump.proc.send_signal(second)
        code, _ = pump.finish()
        answered_before_exit = double.seen[0].answered
        assert len(double.seen) == 1
    assert code == 128 + second.value
    assert not answered_before_exit  # out before the 5 s call ended, let alone the 30 s grace
    assert pump.events("second_signal")[0]["signal"] == second.name


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_with_several_loops_calls_in_flight_finish_and_none_starts(sig: signal.Signals) -> None:
    # Four loops, each in a 1 s call when the signal comes; every answer after the first four
    # would be a call started after the signal.
    with runner_double(lambda i: Reply(body=JOB.body, delay_s=1.0)) as double:
        pump = launch(double.url, QUEUE_PUMP_CONCURRENCY="4", QUEUE_PUMP_TICK_SLEEP_MS="0")
        double.wait_for(4)
        pump.proc.send_signal(sig)
        code, _ = pump.finish()
        assert code == 0
        assert len(double.seen) == 4
        assert all(seen.answered for seen in double.seen)
    assert pump.events("shutdown_started")[0]["in_flight"] == 4
    assert pump.events("pump_stopped")[0]["processed"] == 4


def test_a_signal_in_the_tick_sleep_starts_no_new_call() -> None:
    # A 60 s tick: once the second answer is out, the loop sleeps before its third call.
    with runner_double(lambda i: JOB) as double:
        pump = launch(double.url, QUEUE_PUMP_TICK_SLEEP_MS="60000")
        wait_until(lambda: len(double.seen) == 1 and double.seen[0].answered, timeout_s=15)
        pump.proc.send_signal(signal.SIGTERM)
        code, _ = pump.finish()  # within its 30 s: the tick sleep was cut short
        assert code == 0
        assert len(double.seen) == 1


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT], ids=lambda s: s.name)
def test_sighup_and_sigquit_stop_gracefully_like_sigterm(sig: signal.Signals) -> None:
    # They used to kill the pump at once: the call in flight lost, no pump_stopped.
    with runner_double(lambda i: Reply(body=JOB.body, delay_s=1.0)) as double:
        pump = launch(double.url)
        double.wait_for(1)
        pump.proc.send_signal(sig)
        code, _ = pump.finish()
        assert code == 0
        assert len(double.seen) == 1 and double.seen[0].answered
    assert pump.events("shutdown_requested")[0]["signal"] == sig.name
    assert pump.events("pump_stopped")[0]["processed"] == 1


def test_sigusr2_is_logged_and_ignored() -> None:
    with runner_double(lambda i: JOB) as double:
        pump = launch(double.url, QUEUE_PUMP_TICK_SLEEP_MS="50")
        double.wait_for(1)
        pump.proc.send_signal(signal.SIGUSR2)
        pump.wait_event("signal_ignored")
        calls = len(double.seen)
        double.wait_for(calls + 3)  # still pumping
        assert pump.proc.poll() is None
        pump.proc.send_signal(signal.SIGTERM)
        code, _ = pump.finish()
    assert code == 0
    assert pump.events("signal_ignored")[0]["signal"] == "SIGUSR2"
    assert [e["signal"] for e in pump.events("shutdown_requested")] == ["SIGTERM"]
