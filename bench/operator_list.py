"""The reference runner's operator API at size: `jobs ls`'s first page (GET /functions/v1/jobs,
the same call `queue-pump jobs ls` makes) and the claim's cost, with N jobs in one organization.

    .venv/bin/python -m bench.operator_list --jobs 1000000 --calls 300

The jobs are written straight into the SQLite file (97 % done, 2 % failed, 1 % queued, spread
over the last 30 days), then the runner serves it on loopback from this process's thread; each
figure is the wall time of one HTTP call made with httpx (a fresh page, no cursor), p50 and p99
over ``--calls`` calls, and of one claim + complete at the store (the runner call's own cost
without HTTP), over ``--claims`` (or as many jobs as are queued). Not a test: the figures
depend on the machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from queue_pump.reference_runner import JobStore, start_runner

ADMIN, AGENT, ORG = "bench-admin-token-0123456789", "bench-agent-token-0123", "bench-org"
QUERIES = {
    "first page (50, newest first)": {},
    "first page, status=failed": {"status": "failed"},
    "first page, type=render (1 in 10)": {"type": "render"},
    "first page, 500 jobs": {"limit": "500"},
}


def fill(path: str, jobs: int) -> None:
    JobStore(path).close()  # the schema
    conn = sqlite3.connect(path, isolation_level=None)
    now = time.time()
    rng = random.Random(22)
    conn.execute("BEGIN")
    batch = []
    for i in range(jobs):
        created = now - 30 * 86400 + i * (30 * 86400 / jobs)
        roll = rng.random()
        status = "queued" if roll < 0.01 else "failed" if roll < 0.03 else "done"
        finished = None if status == "queued" else created + 1
        batch.append(("", "agent", "render" if i % 10 == 0 else "summarise", status,
                      0 if status == "queued" else 1, created, created, finished, created,
                      "upstream said 502" if status == "failed" else None))
        if len(batch) == 50_000:
            _insert(conn, batch)
            batch = []
    _insert(conn, batch)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO jobs (organization_id, queue, type, status, attempts, created_at,"
        " updated_at, finished_at, run_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2)}


def list_pages(url: str, calls: int) -> dict[str, Any]:
    out = {}
    headers = {"X-Admin-Token": ADMIN, "X-Organization-Id": ORG}
    with httpx.Client(headers=headers, timeout=60) as http:
        for name, params in QUERIES.items():
            samples = []
            for _ in range(calls):
                t0 = time.perf_counter()
                response = http.get(url + "/functions/v1/jobs", params=params)
                samples.append(time.perf_counter() - t0)
                assert response.status_code == 200 and response.json()["jobs"], response.text
            out[name] = percentiles(samples)
    return out


def claims(path: str, count: int) -> dict[str, float]:
    store = JobStore(path)
    samples = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            job = store.claim("agent", "bench")
            if job is None:  # every queued job ran
                break
            store.complete(job)
            samples.append(time.perf_counter() - t0)
    finally:
        store.close()
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--claims", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "jobs.sqlite3")
        t0 = time.perf_counter()
        fill(path, args.jobs)
        filled_s = time.perf_counter() - t0
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        runner = asyncio.run_coroutine_threadsafe(start_runner(
            db=path, token=AGENT, organization_id=ORG, admin_token=ADMIN), loop).result(60)
        try:
            pages = list_pages(runner.url, args.calls)
        finally:
            asyncio.run_coroutine_threadsafe(runner.close(), loop).result(60)
            loop.call_soon_threadsafe(loop.stop)
        claimed = claims(path, args.claims)
    print(json.dumps({"jobs": args.jobs, "fill_s": round(filled_s, 1), "list": pages,
                      "claim_and_complete": claimed}, indent=2))


if __name__ == "__main__":
    main()
