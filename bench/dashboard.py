"""The dashboard at size: `queue-pump dashboard` (the real command, its own process) over the
reference runner's operator API with N jobs in one organization.

    .venv/bin/python -m bench.dashboard --jobs 1000000 --calls 100

The SQLite file is filled as bench/operator_list.py fills it (97 % done, 2 % failed, 1 % queued
over the last 30 days); the runner serves it on loopback from this process's thread. Measured,
with httpx over loopback:
- the overview's first render: the first GET / after the dashboard started (templates not yet
  compiled, no connection to the runner yet): time to first byte and to the last byte;
- its refresh: GET / with X-Live: 1, what the page's script asks every 2 s while the tab is
  visible, p50 and p99 over ``--calls``; and the jobs page's first page, the same way;
- the operator API's queries behind them, called straight: GET /jobs/stats (the overview's one
  query, the largest: counts over every job) and GET /jobs (the list's first page), p50/p99.
Not a test: the figures depend on the machine."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.operator_list import ADMIN, ORG, filled_runner, percentiles

SERVING = re.compile(rb"serving (http://\S+)/ ")


def timed_get(http: httpx.Client, url: str, **kwargs: Any) -> tuple[float, float, int]:
    """Seconds to the first byte (the answer's head) and to the last; the status."""
    t0 = time.perf_counter()
    with http.stream("GET", url, **kwargs) as response:
        first = time.perf_counter() - t0
        response.read()
        return first, time.perf_counter() - t0, response.status_code


def start_dashboard(runner_url: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    env.update(SUPABASE_URL=runner_url, ADMIN_TOKEN=ADMIN, ORGANIZATION_ID=ORG,
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "queue_pump", "dashboard", "--port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = SERVING.search(line)
    if not found:
        proc.kill()
        raise SystemExit(f"the dashboard did not start: {line!r} {proc.stderr.read()!r}")
    return proc, found.group(1).decode()


def series(http: httpx.Client, url: str, calls: int, **kwargs: Any) -> dict[str, Any]:
    firsts, lasts = [], []
    for _ in range(calls):
        first, last, status = timed_get(http, url, **kwargs)
        assert status == 200, (url, status)
        firsts.append(first)
        lasts.append(last)
    return {"ttfb": percentiles(firsts), "total": percentiles(lasts)}


def measure(runner_url: str, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    api = runner_url + "/functions/v1/jobs"
    headers = {"X-Admin-Token": ADMIN, "X-Organization-Id": ORG}
    proc, url = start_dashboard(runner_url)
    try:
        with httpx.Client(timeout=120) as http:
            first, last, status = timed_get(http, url + "/")
            assert status == 200
            out["overview first render"] = {"ttfb_ms": round(first * 1000, 2),
                                            "total_ms": round(last * 1000, 2)}
            out["overview refresh (X-Live)"] = series(http, url + "/", calls,
                                                      headers={"X-Live": "1"})
            out["jobs page, first page"] = series(http, url + "/jobs", calls)
            out["jobs page, status=failed"] = series(http, url + "/jobs?status=failed", calls)
        with httpx.Client(timeout=120, headers=headers) as http:
            out["api GET /jobs/stats"] = series(http, api + "/stats", calls)["total"]
            out["api GET /jobs (first page)"] = series(http, api, calls)["total"]
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "jobs.sqlite3")
        with filled_runner(path, args.jobs) as (url, filled_s):
            figures = measure(url, args.calls)
    print(json.dumps({"jobs": args.jobs, "calls": args.calls, "fill_s": round(filled_s, 1),
                      **figures}, indent=2))


if __name__ == "__main__":
    main()
