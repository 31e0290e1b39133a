"""The benchmark harness still runs: short rounds of its commands against the stand-in runner,
and the report renders what they saved. Figures are not checked here (speed lives in bench/,
not in timed tests); what each command promises to count is."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import ROOT

pytestmark = pytest.mark.e2e


def bench(results: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--results",
                          str(results), *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    saved: dict[str, Any] = json.loads((results / f"{args[0]}.json").read_text())
    return saved


@pytest.fixture(scope="module")
def report() -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    try:
        from bench import report as module
        yield module
    finally:
        sys.path.remove(str(ROOT))


def test_throughput_round_drains_every_job_and_reports_it(tmp_path: Path, report: Any) -> None:
    # The smallest round that still exercises every part: one pump variant and its floor.
    data = bench(tmp_path, "throughput", "--concurrency", "4", "--job-ms", "0", "--rounds",
                 "1", "--target-s", "0.2", "--max-jobs", "200",
                 "--variants", "pump-aiohttp,bare-httpx-aiohttp")
    runs = data["runs"]
    assert {(r["variant"], r["concurrency"]) for r in runs} == {
        ("pump-aiohttp", 4), ("bare-httpx-aiohttp", 4)}
    for run in runs:
        assert run["rc"] == 0 and run["processed"] == run["jobs"] >= 50, run
        assert run["rate"] > 0 and run["cpu_s"] > 0
    pump = next(r for r in data["summary"]
                if r["variant"] == "pump-aiohttp" and r["concurrency"] == 4)
    assert pump["failed"] == 0 and pump["vs_floor"] > 0  # measured against its floor
    table = report.throughput_table(data)
    assert "pump, aiohttp (httpx-aiohttp)" in table
    assert table.count("\n") == 1 + 1  # header, rule, one row per concurrency


def test_modes_wake_picks_up_every_job_and_counts_idle_calls(tmp_path: Path,
                                                              report: Any) -> None:
    data = bench(tmp_path, "modes", "--modes", "adaptive-1-60s+wake", "--pumps", "1",
                 "--quiet-s", "1.5", "--samples", "2", "--gap-min-s", "0.1", "--gap-max-s", "0.3")
    (run,) = data["runs"]
    assert run["mode"] == "adaptive-1-60s+wake" and run["wake"] is True
    assert len(run["latencies_s"]) == 2  # both jobs claimed...
    assert all(0 <= x < 1.0 for x in run["latencies_s"])  # ...by a wake, not the 1 s poll
    assert run["quiet_calls"] >= 1  # the pump did poll while the queue was empty
    assert "adaptive 1-60 s + wake-ups" in report.modes_table(data)


def test_modes_without_samples_still_saves(tmp_path: Path) -> None:
    data = bench(tmp_path, "modes", "--modes", "fixed-10s", "--pumps", "1", "--quiet-s", "0.5",
                 "--samples", "0")
    (run,) = data["runs"]
    assert run["busy_calls_per_hour"] is None and run["latencies_s"] == []


def test_profile_attributes_time_to_the_pumps_own_code(tmp_path: Path, report: Any) -> None:
    data = bench(tmp_path, "profile", "--jobs", "300")
    assert data["jobs"] == 300
    assert 0 < data["queue_pump_own_s"] < data["total_own_s"]

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert report.main(["--results", str(tmp_path)]) == 0
    assert "### Where a call's time goes" in printed.getvalue()


def test_idle_loops_counts_idle_calls_pickups_and_a_burst(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "idle_loops.py"),
                           "--concurrency", "1,2", "--warmup-s", "0.5", "--window-s", "1",
                           "--idle-sleep-ms", "100", "--idle-max-sleep-ms", "100",
                           "--pickups", "1", "--gap-s", "0.1", "0.2", "--burst-per-loop", "2",
                           "--burst-job-ms", "300", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [r["concurrency"] for r in results] == [1, 2]
    for r in results:
        assert r["idle_calls"] >= 1 and r["idle_calls_per_hour"] > 0  # the probe went on
        assert len(r["pickup_s"]) == 1 and r["burst_jobs"] == 2 * r["concurrency"]
        assert r["all_busy_s"] is not None  # every loop ran a burst job at the same time
    assert "| 2 |" in done.stdout  # the table


def test_the_dashboard_bench_renders_every_page_it_times() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.dashboard", "--jobs", "300", "--calls",
                          "2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout)
    assert figures["jobs"] == 300
    assert figures["overview first render"]["ttfb_ms"] > 0
    for name in ("overview refresh (X-Live)", "jobs page, first page"):
        assert figures[name]["ttfb"]["p99_ms"] <= figures[name]["total"]["max_ms"]
    assert figures["api GET /jobs/stats"]["p99_ms"] > 0
