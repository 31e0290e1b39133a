"""The operator API at size: `jobs ls`'s first page (GET /functions/v1/jobs, the same call
`queue-pump jobs ls` makes) and the claim's cost, with N jobs in one organization; on the
reference runner, or with --kit on the Supabase kit (a real PostgreSQL and the `jobs` function
under a real Deno).

    .venv/bin/python -m bench.operator_list --jobs 1000000 --calls 300
    .venv/bin/python -m bench.operator_list --kit --jobs 1000 1000000 --calls 300

With --kit the claim is measured twice at each size, in two databases filled alike: "before",
the migrations up to the hardening one (no history), and "after", every migration, each
finished job with a history of 3 events. A claim there is `queue_pump.claim` + `complete_job`
(`complete` before) over SQL, timed alone; its reads are counted from the transaction's own
statistics (pg_stat_xact_user_tables), which do not depend on the machine.

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
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


# --- the Supabase kit ------------------------------------------------------------------------

STEER_MIGRATION = "20261207000000_steer.sql"
KIT_FILL = """
insert into queue_pump.jobs (organization_id, queue, job_type, status, attempts, created_at,
                             updated_at, finished_at, run_at, last_error)
select %(org)s, 'agent', case when n %% 10 = 0 then 'render' else 'summarise' end, s,
       case when s = 'queued' then 0 else 1 end, t, t,
       case when s = 'queued' then null else t + interval '1 second' end, t,
       case when s = 'failed' then 'upstream said 502' end
  from (select n,
               now() - interval '30 days' + n * (2592000.0 / %(jobs)s) * interval '1 second' as t,
               case when r < 0.01 then 'queued' when r < 0.03 then 'failed' else 'done' end as s
          from (select n, random() as r from generate_series(1, %(jobs)s) n) x) y
"""
# Each finished job: enqueued, claimed, completed (or failed), as the functions write them.
KIT_HISTORY = """
insert into queue_pump.job_events (job_id, seq, at, kind, attempt, worker, data)
select j.id, g, j.created_at, (array['enqueued', 'claimed', 'completed'])[g],
       case when g > 1 then 1 end, case when g > 1 then 'bench/worker' end,
       case when g = 1 then '{"by": "sql"}'::jsonb end
  from queue_pump.jobs j cross join generate_series(1, 3) g where j.status <> 'queued';
update queue_pump.jobs set history_events = 3, history_bytes = 60 where status <> 'queued';
"""
COUNTED = ("select relname, seq_scan, coalesce(idx_scan, 0) as idx_scan, idx_tup_fetch"
           " from pg_stat_xact_user_tables where schemaname = 'queue_pump'")


def kit_database(pg: Any, name: str, jobs: int, with_history: bool) -> str:
    import psycopg

    from tests.supabase import kit

    url = str(pg.create_database(name))
    with psycopg.connect(url, autocommit=True) as conn:
        for path in kit.MIGRATIONS:
            if path.name == STEER_MIGRATION and not with_history:
                continue
            with conn.transaction():
                conn.execute(path.read_text())  # type: ignore[arg-type]
        conn.execute(KIT_FILL, {"org": ORG, "jobs": jobs})  # type: ignore[arg-type]
        if with_history:
            conn.execute(KIT_HISTORY)  # type: ignore[arg-type]
        conn.execute("vacuum analyze")
    return url


def kit_claims(url: str, count: int, with_history: bool) -> dict[str, Any]:
    import psycopg

    finish = "complete_job" if with_history else "complete"
    samples, reads = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'summarise')"
                     " from generate_series(1, %s)", (ORG, count))
        conn.execute("vacuum analyze queue_pump.jobs")
        for _ in range(count):
            with conn.transaction():
                before = {r[0]: r[1:] for r in conn.execute(COUNTED).fetchall()}
                t0 = time.perf_counter()
                row = conn.execute("select id from queue_pump.claim(%s, 'agent', 'bench', 60)",
                                   (ORG,)).fetchone()
                samples.append(time.perf_counter() - t0)
                after = {r[0]: r[1:] for r in conn.execute(COUNTED).fetchall()}
            assert row is not None
            reads.append({t: [a - b for a, b in zip(after[t], before.get(t, (0, 0, 0)),
                                                    strict=True)] for t in after})
            conn.execute(f"select queue_pump.{finish}(%s, 'bench')", (row[0],))
    jobs_reads = [r["jobs"] for r in reads]
    events = [r.get("job_events", [0, 0, 0]) for r in reads]
    return {**percentiles(samples),
            "jobs_seq_scans": max(r[0] for r in jobs_reads),
            "jobs_idx_tup_fetch_max": max(r[2] for r in jobs_reads),
            "jobs_idx_tup_fetch_median": statistics.median(r[2] for r in jobs_reads),
            "history_scans": max(e[0] + e[1] for e in events)}


def kit_main(args: argparse.Namespace) -> None:
    from tests.supabase import kit

    pg_bin, deno = kit.find_pg_bin(), kit.find_deno()
    if pg_bin is None or deno is None:
        raise SystemExit(f"{kit.PG_HINT}; {kit.DENO_HINT}")
    out: dict[str, Any] = {"jobs": args.jobs, "claims": args.claims, "calls": args.calls,
                           "sizes": {}}
    with kit.cluster(pg_bin) as pg:
        pg.create_roles()
        for jobs in args.jobs:
            size: dict[str, Any] = {}
            for label, history in (("before", False), ("after", True)):
                t0 = time.perf_counter()
                url = kit_database(pg, f"bench_{label}_{jobs}", jobs, history)
                size[f"fill_{label}_s"] = round(time.perf_counter() - t0, 1)
                if history:
                    size["list"] = kit_list(deno, url, args.calls)
                size[f"claim_{label}"] = kit_claims(url, args.claims, history)
                print(json.dumps({"jobs": jobs, label: size[f"claim_{label}"]}), file=sys.stderr)
            out["sizes"][str(jobs)] = size
    print(json.dumps(out, indent=2))


def kit_list(deno: Any, url: str, calls: int) -> dict[str, Any]:
    from tests.supabase import kit

    fn = kit.DenoFunction(deno, "jobs", {"ADMIN_TOKEN": ADMIN, "AGENT_TOKEN": AGENT + "-kit-0000",
                                         "SUPABASE_DB_URL": url})
    try:
        pages = list_pages(fn.base_url, calls)
        # the summary (`jobs stats`, what `top` asks for every second), over the whole table
        samples = []
        with httpx.Client(headers={"X-Admin-Token": ADMIN, "X-Organization-Id": ORG},
                          timeout=60) as http:
            for _ in range(max(calls // 10, 5)):
                t0 = time.perf_counter()
                response = http.get(fn.base_url + "/functions/v1/jobs/stats")
                samples.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text
        return {**pages, "stats": percentiles(samples)}
    finally:
        fn.stop()


@contextmanager
def filled_runner(path: str, jobs: int) -> Iterator[tuple[str, float]]:
    """A reference runner over a SQLite file filled with ``jobs`` jobs, served from a thread of
    its own: its URL and the seconds the fill took."""
    t0 = time.perf_counter()
    fill(path, jobs)
    filled_s = time.perf_counter() - t0
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start_runner(
        db=path, token=AGENT, organization_id=ORG, admin_token=ADMIN), loop).result(60)
    try:
        yield runner.url, filled_s
    finally:
        asyncio.run_coroutine_threadsafe(runner.close(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kit", action="store_true",
                        help="the Supabase kit (PostgreSQL + Deno) instead of the reference runner")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--claims", type=int, default=300)
    args = parser.parse_args()
    if args.kit:
        kit_main(args)
        return
    args.jobs = args.jobs[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "jobs.sqlite3")
        with filled_runner(path, args.jobs) as (url, filled_s):
            pages = list_pages(url, args.calls)
        claimed = claims(path, args.claims)
    print(json.dumps({"jobs": args.jobs, "fill_s": round(filled_s, 1), "list": pages,
                      "claim_and_complete": claimed}, indent=2))


if __name__ == "__main__":
    main()
