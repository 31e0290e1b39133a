"""The Supabase kit measured: pump -> Deno function -> PostgreSQL, and the claim on its own.

    .venv/bin/python -m bench.supabase_kit throughput   # jobs/s at 1x1, 1x8, 3x8 (+ Node 1x1)
    .venv/bin/python -m bench.supabase_kit claim        # claim p50/p99 at 1k, 100k, 1M rows
    .venv/bin/python -m bench.supabase_kit all

Needs what the kit's tests need (PostgreSQL's server binaries, Deno: scripts/get-deno.sh, and
node for the Node baseline); everything runs on 127.0.0.1 in a throwaway cluster. Results go to
bench/results/supabase_*.json and a Markdown table on stdout (docs/BENCHMARKS.md).

Throughput is counted by the database: jobs / (last finished_at - first started_at), so pump
and function start-up are left out. Jobs take 0 ms (the `echo` handler); each variant drains
its own fresh database through two function processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from bench.run import ROOT, save
from tests.supabase import kit

TOKEN = "bench-token-5f3a9c0d"  # the functions want 16+ characters
ORG = "bench-org"


def _deps() -> tuple[Any, Any]:
    pg_bin, deno = kit.find_pg_bin(), kit.find_deno()
    if pg_bin is None or deno is None:
        sys.exit(kit.PG_HINT if pg_bin is None else kit.DENO_HINT)
    return pg_bin, deno


@contextlib.contextmanager
def database(pg: kit.PgCluster, name: str) -> Iterator[str]:
    url = pg.create_database(name, template="kit_template")
    yield url


def enqueue(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo') from generate_series(1, %s)",
                     (ORG, n))


def drained_rate(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) filter (where status = 'done'), count(*),"
            " extract(epoch from max(finished_at) - min(started_at)),"
            " max(attempts) from queue_pump.jobs").fetchone()
    assert row is not None
    done, total, seconds, max_attempts = row
    return {"jobs": total, "done": done, "seconds": round(float(seconds), 3),
            "jobs_per_s": round(done / float(seconds), 1), "max_attempts": max_attempts}


def pump_cmd(fn: kit.DenoFunction, concurrency: int, worker: str,
             tick_ms: int) -> tuple[list[str], dict[str, str]]:
    from tests.support.proc import pump_env

    env = pump_env(fn.base_url, AGENT_TOKEN=TOKEN, ORGANIZATION_ID=ORG,
                   QUEUE_PUMP_CONCURRENCY=str(concurrency), QUEUE_PUMP_TICK_SLEEP_MS=str(tick_ms),
                   QUEUE_PUMP_WORKER_ID=worker, QUEUE_PUMP_LOG_EVERY="0")
    return [sys.executable, "-m", "queue_pump", "--drain"], env


def node_cmd(fn: kit.DenoFunction) -> tuple[list[str], dict[str, str] | None]:
    env = {**os.environ, "AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": ORG}
    return ["node", str(ROOT / "bench" / "node_loop.mjs"), fn.base_url, "1"], env


def run_variant(pg: kit.PgCluster, deno: Any, name: str, pumps: int, concurrency: int,
                jobs: int, tick_ms: int) -> dict[str, Any]:
    with database(pg, f"bench_{name.replace('x', '_').replace('-', '_')}") as url:
        enqueue(url, jobs)
        fns = [kit.DenoFunction(deno, "ai-job-runner",
                                {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": url,
                                 "DB_POOL_MAX": "16"}) for _ in range(2)]
        try:
            cmds = ([node_cmd(fns[0])] if name.startswith("node-") else
                    [pump_cmd(fns[i % 2], concurrency, f"bench-{i}", tick_ms)
                     for i in range(pumps)])
            procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for cmd, env in cmds]
            codes = [p.wait(timeout=600) for p in procs]
        finally:
            for fn in fns:
                fn.stop()
        result = {"variant": name, "pumps": pumps, "concurrency": concurrency, "exit": codes,
                  **drained_rate(url)}
        print(json.dumps(result), file=sys.stderr)
        return result


def cmd_throughput(args: argparse.Namespace) -> None:
    pg_bin, deno = _deps()
    # (name, pumps, concurrency, jobs, tick ms): tick 0 measures the queue; the last pump row
    # is the default QUEUE_PUMP_TICK_SLEEP_MS=250, which caps a loop at about 4 calls a second.
    variants = [("1x1", 1, 1, 300, 0), ("1x8", 1, 8, 1500, 0), ("3x8", 3, 8, 3000, 0),
                ("3x8-tick250", 3, 8, 600, 250)]
    if shutil.which("node"):
        variants.append(("node-1x1", 1, 1, 300, 0))
    rows: dict[str, list[dict[str, Any]]] = {}
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        for r in range(args.rounds):
            for name, pumps, conc, jobs, tick in variants:
                row = run_variant(pg, deno, f"{name}-r{r}", pumps, conc, jobs, tick)
                rows.setdefault(name, []).append(row)
    summary = [{"variant": name, "jobs": runs[0]["jobs"],
                "jobs_per_s": statistics.median(x["jobs_per_s"] for x in runs),
                "runs": [x["jobs_per_s"] for x in runs],
                "all_done_once": all(x["done"] == x["jobs"] and x["max_attempts"] == 1
                                     for x in runs)} for name, runs in rows.items()]
    save("supabase_throughput", {"rounds": args.rounds, "summary": summary, "runs": rows})
    print("| pumps x concurrency | jobs | jobs/s (median) | rounds | each job once |")
    print("|---|---:|---:|---|---|")
    for s in summary:
        print(f"| {s['variant']} | {s['jobs']} | {s['jobs_per_s']:.0f} |"
              f" {', '.join(f'{x:.0f}' for x in s['runs'])} | {s['all_done_once']} |")
    print("| pg_cron, 1 call a minute (computed) | - | 0.017 | - | - |")


def _template(pg: kit.PgCluster) -> None:
    pg.create_roles()
    kit.apply_migrations(pg.create_database("kit_template"))


def claim_latency(url: str, rows: int, samples: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("select count(*) from queue_pump.jobs").fetchone()
        assert have is not None
        conn.execute(
            "insert into queue_pump.jobs (organization_id, queue, job_type, status, attempts,"
            " finished_at) select 'org-' || (n %% 50), 'agent', 'echo', 'done', 1, now()"
            " from generate_series(1, %s) n", (max(rows - samples - have[0], 0),))
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo') from generate_series(1, %s)",
                     (ORG, samples))
        conn.execute("vacuum analyze queue_pump.jobs")
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            row = conn.execute("select id from queue_pump.claim(%s, 'agent', 'bench', 60)",
                               (ORG,)).fetchone()
            times.append((time.perf_counter() - t0) * 1000)
            assert row is not None
            conn.execute("select queue_pump.complete(%s, 'bench')", (row[0],))
    times.sort()
    return {"rows": rows, "samples": samples, "p50_ms": round(times[len(times) // 2], 3),
            "p99_ms": round(times[int(len(times) * 0.99)], 3), "mean_ms":
            round(statistics.fmean(times), 3)}


def cmd_claim(args: argparse.Namespace) -> None:
    pg_bin, _ = _deps()
    results = []
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        url = pg.create_database("bench_claim", template="kit_template")
        for rows in (1_000, 100_000, 1_000_000):
            results.append(claim_latency(url, rows, args.samples))
            print(json.dumps(results[-1]), file=sys.stderr)
    save("supabase_claim", {"results": results})
    print("| rows in the table | claims | p50 ms | p99 ms | mean ms |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['samples']} | {r['p50_ms']} | {r['p99_ms']} |"
              f" {r['mean_ms']} |")
    ratio = results[-1]["p99_ms"] / results[0]["p99_ms"]
    print(f"\np99 at 1,000,000 rows / p99 at 1,000 rows: {ratio:.2f} (target: at most 2)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.supabase_kit")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--rounds", type=int, default=3)
    c = sub.add_parser("claim")
    c.add_argument("--samples", type=int, default=2000)
    a = sub.add_parser("all")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    if args.cmd in ("throughput", "all"):
        cmd_throughput(args)
    if args.cmd in ("claim", "all"):
        cmd_claim(args)


if __name__ == "__main__":
    main()
