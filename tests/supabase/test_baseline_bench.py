"""bench/baseline.py still runs: one cron row and one pump row, tiny windows, on the real kit.
Figures are not checked (speed lives in bench/), only that every column is measured and the
burst was drained once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import kit

pytestmark = [pytest.mark.kit, pytest.mark.e2e]


def test_the_baseline_bench_measures_a_cron_row_and_a_pump_row(
        deno_bin: Path, pg_bin: Path, tmp_path: Path) -> None:
    env = {**os.environ, "QUEUE_PUMP_DENO": str(deno_bin), "QUEUE_PUMP_PG_BIN": str(pg_bin)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.baseline", "--only", "cron-1s-b5,pump-c1-b5",
         "--window", "2", "--burst", "20", "--drain-limit", "60", "--warmup", "1",
         "--results", str(tmp_path)], cwd=kit.ROOT, env=env, capture_output=True, text=True,
        timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["row"]: r for r in json.loads((tmp_path / "baseline.json").read_text())["rows"]}
    assert set(rows) == {"cron-1s-b5", "pump-c1-b5"}
    for r in rows.values():
        assert (r["drain_done"], r["drain_max_attempts"], r["drain_extrapolated"]) == (20, 1, False)
        assert r["latency_jobs"] == 2 and r["latency_p50_s"] is not None
        # 20 jobs at 5 a call is 4 calls at least (200 per 1,000); the cron ticks on meanwhile.
        assert r["calls_per_1000_jobs"] >= 200, r
        assert r["idle_calls_per_day"] >= 0 and r["function_cpu_s_per_1000"] >= 0
    assert "| cron every 1 s (driver) | 5 |" in out.stdout
