"""End to end: real pump processes against the reference runner process, over loopback."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from queue_pump.reference_runner import JobStore
from tests.support.fault_scenarios import backoff_bound
from tests.support.proc import Live, finish, pump_env, start, wait_until
from tests.support.reference_process import reference_runner
from tests.support.runner_double import free_port

pytestmark = pytest.mark.e2e


def jobs_in(db: Path) -> list[dict[str, object]]:
    store = JobStore(str(db))
    try:
        total = store.stats()["total"]
        return [store.get(i).to_json() for i in range(1, total + 1)]  # type: ignore[union-attr]
    finally:
        store.close()


def test_three_pumps_drain_500_jobs_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    with reference_runner(free_port(), str(db)) as runner:
        runner.enqueue([{"type": "t", "payload": {"duration_ms": i % 3}} for i in range(500)])
        pumps = [start(pump_env(runner.url, QUEUE_PUMP_CONCURRENCY="4",
                                QUEUE_PUMP_TICK_SLEEP_MS="0", QUEUE_PUMP_WORKER_ID=f"pump-{n}"),
                       "--drain") for n in range(3)]
        t0 = time.monotonic()
        results = [finish(p, t0, timeout_s=60) for p in pumps]
        assert runner.stats()["done"] == 500
    assert [r.code for r in results] == [0, 0, 0]
    jobs = jobs_in(db)
    assert len(jobs) == 500
    assert {j["status"] for j in jobs} == {"done"}
    assert {j["attempts"] for j in jobs} == {1}  # no job ran twice
    by_pump = Counter(j["workerId"] for j in jobs)
    assert set(by_pump) == {"pump-0", "pump-1", "pump-2"}  # every pump took its share
    reported = sum(r.named("pump_stopped")[0]["processed"] for r in results)
    assert reported == 500  # and each one's own count agrees with the runner


def test_sigterm_in_the_middle_of_a_long_job_lets_it_complete(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    with reference_runner(free_port(), str(db)) as runner:
        runner.enqueue([{"type": "long", "payload": {"duration_ms": 1500}},
                        {"type": "next", "payload": {"duration_ms": 0}}])
        pump = start(pump_env(runner.url, QUEUE_PUMP_TICK_SLEEP_MS="0"))
        wait_until(lambda: runner.stats()["running"] == 1, timeout_s=30.0)
        t0 = time.monotonic()
        pump.send_signal(signal.SIGTERM)
        done = finish(pump, t0)
        stats = runner.stats()
    assert done.code == 0
    assert stats["running"] == 0  # the long job finished before the exit
    assert (stats["done"], stats["queued"]) == (1, 1)  # finished the long one, took no other
    assert jobs_in(db)[0]["status"] == "done" and jobs_in(db)[0]["type"] == "long"


def test_runner_killed_and_restarted_pumps_back_off_then_drain(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    port = free_port()
    # A short lease: jobs the killed runner was running are handed out again after restart.
    with reference_runner(port, str(db), "--lease-s", "1") as runner:
        runner.enqueue([{"type": "t", "payload": {"duration_ms": 20}} for _ in range(120)])
        env = pump_env(runner.url, QUEUE_PUMP_CONCURRENCY="2", QUEUE_PUMP_TICK_SLEEP_MS="0",
                       QUEUE_PUMP_BACKOFF_BASE_MS="50", QUEUE_PUMP_BACKOFF_MAX_MS="500",
                       QUEUE_PUMP_IDLE_SLEEP_MS="200")
        pumps = [start(env) for _ in range(2)]
        wait_until(lambda: runner.stats()["done"] >= 30, timeout_s=30.0)
        killed = time.monotonic()
        runner.kill()
        time.sleep(1.0)  # the outage: pumps must back off, not spin
        runner.start()
        # As long as it took: restarting the runner is slower on a busy machine.
        outage_s = time.monotonic() - killed
        wait_until(lambda: runner.stats()["done"] == 120, timeout_s=60)
        stats = runner.stats()
        for pump in pumps:
            pump.send_signal(signal.SIGTERM)
        results = [finish(p, time.monotonic()) for p in pumps]
    assert (stats["done"], stats["queued"], stats["running"], stats["failed"]) == (120, 0, 0, 0)
    assert [r.code for r in results] == [0, 0]
    failures = [e for r in results for e in r.named("call_failed")]
    assert failures and {e["reason"] for e in failures} <= {"connect", "network", "timeout"}
    # Bounded by the backoff (50 ms base, 500 ms cap) over the outage as measured, for each of
    # the 4 loops, plus the call in flight when the runner died; a tight loop makes thousands.
    assert len(failures) <= 4 * (backoff_bound(outage_s, 0.05, 0.5) + 1), outage_s
    assert all(r.named("recovered") for r in results)


def test_wrong_token_is_reported_and_not_hammered(tmp_path: Path) -> None:
    with reference_runner(free_port(), str(tmp_path / "jobs.sqlite3")) as runner:
        runner.enqueue([{"type": "t"}])
        env = pump_env(runner.url, AGENT_TOKEN="wrong-token-0123456", QUEUE_PUMP_CONCURRENCY="2")
        pump = start(env)
        wait_until(lambda: runner.stats()["calls"]["unauthorized"] >= 2, timeout_s=30.0)
        time.sleep(1.0)
        calls = runner.stats()["calls"]
        pump.send_signal(signal.SIGTERM)
        done = finish(pump, time.monotonic())
        assert runner.stats()["queued"] == 1
    assert calls["unauthorized"] == 2  # one per loop, then they wait the 60 s cap
    failed = done.named("call_failed")
    assert failed[0]["status"] == 401 and failed[0]["level"] == "error"
    assert "AGENT_TOKEN" in failed[0]["hint"]
    assert failed[0]["next_delay_s"] == 60.0
    assert "wrong-token-123" not in done.stdout + done.stderr


def test_dedupe_key_enqueued_twice_yields_one_job(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    with reference_runner(free_port(), str(db)) as runner:
        first = runner.enqueue([{"type": "nightly", "dedupeKey": "nightly:2026-11-24"}])
        second = runner.enqueue([{"type": "nightly", "dedupeKey": "nightly:2026-11-24"}])
        assert first["jobs"][0]["id"] == second["jobs"][0]["id"]
        assert (first["jobs"][0]["created"], second["jobs"][0]["created"]) == (True, False)
        done = finish(start(pump_env(runner.url), "--drain"), time.monotonic())
        assert done.code == 0
        assert done.named("queue_drained")[0]["processed"] == 1
        assert runner.stats()["total"] == 1


def test_a_schedule_fires_once_per_window_across_restarts(tmp_path: Path) -> None:
    with reference_runner(free_port(), str(tmp_path / "jobs.sqlite3")) as runner:
        schedules = tmp_path / "schedules.toml"
        schedules.write_text(f"""
[[schedule]]
name = "every-minute"
cron = "* * * * *"
url = "{runner.url}/jobs"
body = {{ type = "tick", payload = {{ duration_ms = 0 }} }}
""")
        env = pump_env(runner.url, QUEUE_PUMP_SCHEDULES=str(schedules),
                       QUEUE_PUMP_IDLE_SLEEP_MS="60000")
        fired = []
        for _ in range(2):  # a start, and a restart (inside the same minute, most of the time)
            pump = Live(start(env))
            fired.append(pump.wait_event("schedule_fired"))
            # A fired schedule wakes the pump: its job is run now, not after the 60 s idle sleep.
            wait_until(lambda: runner.stats()["queued"] == 0)
            pump.proc.send_signal(signal.SIGTERM)
            assert pump.finish()[0] == 0
        windows = {e["window"] for e in fired}
        # One job per window, however many starts: a restart's POST reuses its window's key.
        assert runner.stats()["total"] == len(windows)
        assert fired[0]["created"] is True
        if len(windows) == 1:
            assert fired[1]["created"] is False


def test_a_bad_schedules_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "schedules.toml"
    bad.write_text('[[schedule]]\nname = "x"\ncron = "not cron"\n')
    done = finish(start(pump_env("http://127.0.0.1:9", QUEUE_PUMP_SCHEDULES=str(bad))),
                  time.monotonic())
    assert done.code == 2
    assert all(line.startswith("queue-pump: config: ") for line in done.stderr.splitlines())
    assert "cron" in done.stderr
