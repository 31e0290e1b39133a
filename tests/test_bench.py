"""The benchmark harness still runs: one short round of the real pump and its floor against the
stand-in runner, and the report renders what it saved. Figures are not checked here (speed
lives in bench/, not in timed tests); that every job was drained exactly is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def test_throughput_round_drains_every_job_and_reports_it() -> None:
    name = "test-smoke"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "throughput", "--concurrency", "1,4",
         "--job-ms", "0", "--rounds", "1", "--target-s", "0.2", "--max-jobs", "400",
         "--variants", "pump-aiohttp,pump-httpx,bare-httpx-aiohttp", "--name", name],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    saved = ROOT / "bench" / "results" / f"{name}.json"
    try:
        data = json.loads(saved.read_text())
        runs = data["runs"]
        assert {(r["variant"], r["concurrency"]) for r in runs} == {
            (v, c) for v in ("pump-aiohttp", "pump-httpx", "bare-httpx-aiohttp") for c in (1, 4)}
        for run in runs:
            assert run["rc"] == 0 and run["processed"] == run["jobs"] >= 50, run
            assert run["rate"] > 0
        pump = next(r for r in data["summary"]
                    if r["variant"] == "pump-aiohttp" and r["concurrency"] == 4)
        assert pump["failed"] == 0 and pump["vs_floor"] > 0  # measured against its floor

        sys.path.insert(0, str(ROOT))
        try:
            from bench import report
        finally:
            sys.path.remove(str(ROOT))
        table = report.throughput_table(data)
        assert "pump, aiohttp (httpx-aiohttp)" in table
        assert table.count("\n") == 1 + 2  # header, rule, one row per concurrency
    finally:
        saved.unlink(missing_ok=True)
