"""The Supabase kit measured: pump -> Deno function -> PostgreSQL, and the claim on its own.

    .venv/bin/python -m bench.supabase_kit throughput   # jobs/s at 1x1, 1x8, 3x8 (+ Node 1x1)
    .venv/bin/python -m bench.supabase_kit claim        # claim p50/p99 at 1k, 100k, 1M rows
    .venv/bin/python -m bench.supabase_kit claim-batch  # claim_batch(N) vs N claims, per job
    .venv/bin/python -m bench.supabase_kit throughput --batch 5,10,20   # 3x8, JOB_BATCH_SIZE
    .venv/bin/python -m bench.supabase_kit restart      # pg_ctl restart -m fast -> a job done
    .venv/bin/python -m bench.supabase_kit memory       # the runner's peak RSS, big payloads
    .venv/bin/python -m bench.supabase_kit race         # enqueue with dedupe keys vs purge
    .venv/bin/python -m bench.supabase_kit cost --against /tmp/kit-before   # CPU per job, A/B
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
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.run import ROOT, load, save
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


def runners(deno: Any, url: str, count: int = 2, **env: str) -> list[kit.DenoFunction]:
    return [kit.DenoFunction(deno, "ai-job-runner",
                             {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": url, "DB_POOL_MAX": "16",
                              **env}) for _ in range(count)]


def run_variant(pg: kit.PgCluster, deno: Any, name: str, pumps: int, concurrency: int,
                jobs: int, tick_ms: int, batch: int = 1) -> dict[str, Any]:
    with database(pg, f"bench_{name.replace('x', '_').replace('-', '_')}") as url:
        enqueue(url, jobs)
        fns = runners(deno, url, JOB_BATCH_SIZE=str(batch))
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
        result = {"variant": name, "pumps": pumps, "concurrency": concurrency, "batch": batch,
                  "exit": codes, **drained_rate(url)}
        print(json.dumps(result), file=sys.stderr)
        return result


def cmd_throughput(args: argparse.Namespace) -> None:
    pg_bin, deno = _deps()
    # (name, pumps, concurrency, jobs, tick ms, JOB_BATCH_SIZE): tick 0 measures the queue; the
    # tick250 row is the default QUEUE_PUMP_TICK_SLEEP_MS=250, about 4 calls a second a loop.
    variants = [("1x1", 1, 1, 300, 0, 1), ("1x8", 1, 8, 1500, 0, 1), ("3x8", 3, 8, 3000, 0, 1),
                ("3x8-tick250", 3, 8, 600, 250, 1)]
    if shutil.which("node"):
        variants.append(("node-1x1", 1, 1, 300, 0, 1))
    if args.batch:
        # --batch 5,10,20: the 3x8 drain with that JOB_BATCH_SIZE, beside the rows above.
        variants = [v for v in variants if v[0] in ("3x8",)] + [
            (f"3x8-b{b}", 3, 8, args.jobs, 0, b) for b in args.batch]
    rows: dict[str, list[dict[str, Any]]] = {}
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        for r in range(args.rounds):
            for name, pumps, conc, jobs, tick, batch in variants:
                row = run_variant(pg, deno, f"{name}-r{r}", pumps, conc, jobs, tick, batch)
                rows.setdefault(name, []).append(row)
    summary = [{"variant": name, "jobs": runs[0]["jobs"], "batch": runs[0]["batch"],
                "jobs_per_s": statistics.median(x["jobs_per_s"] for x in runs),
                "runs": [x["jobs_per_s"] for x in runs],
                "all_done_once": all(x["done"] == x["jobs"] and x["max_attempts"] == 1
                                     for x in runs)} for name, runs in rows.items()]
    save("supabase_throughput", {"rounds": args.rounds, "summary": summary, "runs": rows,
                                 "load": load()})
    print("| pumps x concurrency | JOB_BATCH_SIZE | jobs | jobs/s (median) | rounds |"
          " each job once |")
    print("|---|---:|---:|---:|---|---|")
    for s in summary:
        print(f"| {s['variant']} | {s['batch']} | {s['jobs']} | {s['jobs_per_s']:.0f} |"
              f" {', '.join(f'{x:.0f}' for x in s['runs'])} | {s['all_done_once']} |")


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


def claim_batch_cost(url: str, batch: int, jobs: int) -> dict[str, Any]:
    """Jobs claimed per second from one connection: `batch` claims in one claim_batch
    statement, against one claim statement per job (batch 1), each job completed after."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo') from generate_series(1, %s)",
                     (ORG, jobs))
        conn.execute("vacuum analyze queue_pump.jobs")
        sql = ("select id from queue_pump.claim(%s, 'agent', 'bench', 60)" if batch == 1 else
               f"select id from queue_pump.claim_batch(%s, 'agent', 'bench', 60, {batch})")
        taken, claim_s = 0, 0.0
        times = []
        while taken < jobs:
            t0 = time.perf_counter()
            ids = [r[0] for r in conn.execute(sql, (ORG,)).fetchall()]
            dt = time.perf_counter() - t0
            if not ids:
                break
            claim_s += dt
            times.append(dt * 1000)
            taken += len(ids)
            conn.execute("select queue_pump.complete(x, 'bench') from unnest(%s::bigint[]) x",
                         (ids,))
    times.sort()
    return {"batch": batch, "jobs": taken, "statements": len(times),
            "statement_p50_ms": round(times[len(times) // 2], 3),
            "claim_us_per_job": round(claim_s / taken * 1e6, 1)}


def cmd_claim_batch(args: argparse.Namespace) -> None:
    pg_bin, _ = _deps()
    results = []
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        for r in range(args.rounds):
            for batch in (1, 5, 10, 20, 100):
                url = pg.create_database(f"bench_cb_{batch}_{r}", template="kit_template")
                results.append(claim_batch_cost(url, batch, args.jobs))
                print(json.dumps(results[-1]), file=sys.stderr)
    save("supabase_claim_batch", {"results": results, "load": load()})
    print("| max_jobs | statements | statement p50 ms | claim time per job (us, median) |")
    print("|---:|---:|---:|---:|")
    for batch in (1, 5, 10, 20, 100):
        rs = [x for x in results if x["batch"] == batch]
        print(f"| {batch} | {rs[0]['statements']} |"
              f" {statistics.median(x['statement_p50_ms'] for x in rs)} |"
              f" {statistics.median(x['claim_us_per_job'] for x in rs)} |")


# --- recovery from a database restart -------------------------------------------------------


def start_pumps(fns: list[kit.DenoFunction], pumps: int, concurrency: int,
                *extra: str) -> list[subprocess.Popen[bytes]]:
    cmds = [pump_cmd(fns[i % len(fns)], concurrency, f"bench-{i}", 0) for i in range(pumps)]
    return [subprocess.Popen([c[0], c[1], c[2], *extra], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for (c, env) in cmds]


def stop_pumps(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def scalar(url: str, query: str, *args: Any) -> Any:
    """One value, or None while the database is away."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(query, args).fetchone()  # type: ignore[arg-type]
    except psycopg.OperationalError:
        return None
    return None if row is None else row[0]


def wait_for(predicate: Any, timeout_s: float, step_s: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None:
            return value
        time.sleep(step_s)
    raise TimeoutError(f"not seen within {timeout_s} s")


def restart_round(pg: kit.PgCluster, deno: Any, name: str) -> dict[str, Any]:
    """3 pumps x 8 draining 0 ms jobs; `pg_ctl restart -m fast` once 1,500 are done; the time
    until the first job finished after the database came back (its postmaster start)."""
    url = pg.create_database(name, template="kit_template")
    enqueue(url, 30_000)
    fns = runners(deno, url)
    procs = start_pumps(fns, 3, 8)
    try:
        wait_for(lambda: scalar(url, "select 1 from queue_pump.jobs where status = 'done'"
                                     " offset 1500 limit 1"), 120)
        t0 = time.time()
        pg.restart("fast")
        returned = time.time()
        back = float(wait_for(lambda: scalar(
            url, "select extract(epoch from pg_postmaster_start_time())"), 30))
        first = float(wait_for(lambda: scalar(
            url, "select extract(epoch from min(finished_at)) from queue_pump.jobs"
                 " where finished_at > to_timestamp(%s)", back), 120))
    finally:
        stop_pumps(procs)
        for fn in fns:
            fn.stop()
    unavailable = sum(1 for fn in fns for line in fn.lines if "unavailable" in line)
    result = {"round": name, "restart_s": round(returned - t0, 3),
              "down_s": round(back - t0, 3),
              "restart_to_first_done_s": round(first - t0, 3),
              "back_to_first_done_s": round(first - back, 3),
              "function_503_log_lines": unavailable}
    print(json.dumps(result), file=sys.stderr)
    return result


def cmd_restart(args: argparse.Namespace) -> None:
    pg_bin, deno = _deps()
    rounds = []
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        for r in range(args.rounds):
            rounds.append(restart_round(pg, deno, f"bench_restart_{r}"))
    keys = ("down_s", "restart_to_first_done_s", "back_to_first_done_s")
    summary = {k: statistics.median(x[k] for x in rounds) for k in keys}
    save("supabase_restart", {"rounds": rounds, "median": summary})
    print("| round | database down (s) | restart -> first job done (s) |"
          " database back -> first job done (s) |")
    print("|---|---:|---:|---:|")
    for x in rounds:
        print(f"| {x['round'][-1]} | {x['down_s']:.2f} | {x['restart_to_first_done_s']:.2f} |"
              f" {x['back_to_first_done_s']:.2f} |")
    print(f"| median | {summary['down_s']:.2f} | {summary['restart_to_first_done_s']:.2f} |"
          f" {summary['back_to_first_done_s']:.2f} |")


# --- the runner's memory with big payloads -----------------------------------------------------

LIMIT_BYTES = 1024 * 1024  # the kit's payload limit, as PostgreSQL writes the JSON


def post_runner(fn: kit.DenoFunction, org: str = ORG) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", fn.port, timeout=600)
    try:
        conn.request("POST", "/functions/v1/ai-job-runner", body=b"{}", headers={
            "X-Agent-Token": TOKEN, "X-Organization-Id": org,
            "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")[:300]
    except (OSError, http.client.HTTPException) as err:
        return 0, f"{type(err).__name__}: {err}"
    finally:
        conn.close()


def memory_oversize(pg: kit.PgCluster, deno: Any) -> dict[str, Any]:
    """Jobs far over the limit, put in the table directly (as a job from before the limit
    would be): four 50 MB strings, then 24 MB of small objects; one runner call each."""
    url = pg.create_database("bench_mem_oversize", template="kit_template")
    [fn] = runners(deno, url, count=1)
    try:
        post_runner(fn)  # warm: the pool connected, the code compiled
        base = fn.peak_rss_kib()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into queue_pump.jobs (organization_id, job_type, payload)"
                         " select %s, 'echo', jsonb_build_object('blob', repeat('x', 50 << 20))"
                         " from generate_series(1, 4)", (ORG,))
        answers = [post_runner(fn) for _ in range(4)]
        after_strings = fn.peak_rss_kib()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into queue_pump.jobs (organization_id, job_type, payload)"
                         " select %s, 'echo', (select jsonb_agg(jsonb_build_object('a', g))"
                         " from generate_series(1, 2400000) g)", (ORG,))
        answers.append(post_runner(fn))
        after_objects = fn.peak_rss_kib()
        alive = fn.proc.poll() is None
    finally:
        fn.stop()
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("select status, left(coalesce(last_error, ''), 120)"
                            " from queue_pump.jobs order by created_at").fetchall()
    return {"baseline_kib": base, "peak_after_4x50MB_kib": after_strings,
            "peak_after_24MB_objects_kib": after_objects, "alive": alive,
            "answers": answers, "jobs": [list(r) for r in rows]}


def memory_at_limit(pg: kit.PgCluster, deno: Any, jobs: int) -> dict[str, Any]:
    """3 pumps x 8 over two functions drain jobs whose payload is exactly at the limit."""
    url = pg.create_database("bench_mem_at_limit", template="kit_template")
    with psycopg.connect(url, autocommit=True) as conn:
        pad = LIMIT_BYTES - len('{"ms": 0, "pad": ""}')
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'sleep',"
                     " jsonb_build_object('ms', 0, 'pad', repeat('x', %s)))"
                     " from generate_series(1, %s)", (ORG, pad, jobs))
        size = conn.execute("select max(octet_length(payload::text)) from queue_pump.jobs"
                            ).fetchone()
    fns = runners(deno, url)
    try:
        base = [fn.peak_rss_kib() for fn in fns]
        procs = start_pumps(fns, 3, 8, "--drain")
        for p in procs:
            p.wait(timeout=900)
        peaks = [fn.peak_rss_kib() for fn in fns]
    finally:
        for fn in fns:
            fn.stop()
    return {"payload_bytes": size[0] if size else None, "jobs": jobs,
            "baseline_kib": base, "peak_kib": peaks, **drained_rate(url)}


def cmd_memory(args: argparse.Namespace) -> None:
    pg_bin, deno = _deps()
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        over = memory_oversize(pg, deno)
        print(json.dumps(over), file=sys.stderr)
        at = memory_at_limit(pg, deno, args.jobs)
        print(json.dumps(at), file=sys.stderr)
    save("supabase_memory", {"oversize": over, "at_limit": at})
    mib = 1024
    print("| case | runner peak RSS (MiB) |")
    print("|---|---:|")
    print(f"| idle, after one call | {over['baseline_kib'] / mib:.0f} |")
    print(f"| after claiming 4 jobs of 50 MB | {over['peak_after_4x50MB_kib'] / mib:.0f} |")
    print(f"| after claiming 24 MB of small objects | "
          f"{over['peak_after_24MB_objects_kib'] / mib:.0f} (alive: {over['alive']}) |")
    print(f"| 3x8 draining {at['jobs']} jobs of {at['payload_bytes']} bytes (each function) | "
          f"{', '.join(f'{k / mib:.0f}' for k in at['peak_kib'])} |")


# --- enqueue with dedupe keys, racing purge ----------------------------------------------------

RACE_LOG = """
create table public.bench_deleted (id bigint);
create function public.bench_log_delete() returns trigger language plpgsql as
  $$ begin insert into public.bench_deleted values (old.id); return null; end $$;
create trigger bench_log_delete after delete on queue_pump.jobs
  for each row execute function public.bench_log_delete();
"""


class RaceCounts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.ids: set[int] = set()
        self.null_ids = 0
        self.samples: list[str] = []

    def take(self, limit: int) -> bool:
        with self.lock:
            if self.sent >= limit:
                return False
            self.sent += 1
            return True

    def record(self, status: int, body: bytes) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status in (200, 201):
                job_id = json.loads(body).get("id")
                if job_id is None:
                    self.null_ids += 1
                else:
                    self.ids.add(int(job_id))
            elif len(self.samples) < 5:
                self.samples.append(f"{status} {body[:200]!r}")


def race_enqueuer(port: int, counts: RaceCounts, limit: int, keys: int, seed: int) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG,
               "Content-Type": "application/json"}
    while counts.take(limit):
        body = json.dumps({"type": "echo", "dedupeKey": f"k{rng.randrange(keys)}"})
        try:
            conn.request("POST", "/functions/v1/enqueue", body=body, headers=headers)
            resp = conn.getresponse()
            counts.record(resp.status, resp.read())
        except (OSError, http.client.HTTPException) as err:
            counts.record(0, str(err).encode())
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.close()


def race_worker(url: str, stop: threading.Event, query: str, done: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(query, (ORG,)).fetchone()
            if row and row[0]:
                done.append(int(row[0]))


CLAIM_AND_COMPLETE = """
with c as (select id, locked_by from queue_pump.claim(%s, 'agent', null, 60))
select count(*) filter (where queue_pump.complete(c.id, c.locked_by)) from c
"""
PURGE = "select queue_pump.purge(interval '0 seconds', 1000) where %s::text is not null"


def cmd_race(args: argparse.Namespace) -> None:
    pg_bin, deno = _deps()
    counts = RaceCounts()
    completed: list[int] = []
    purged: list[int] = []
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        url = pg.create_database("bench_race", template="kit_template")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RACE_LOG)
        fn = kit.DenoFunction(deno, "enqueue", {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": url,
                                                 "DB_POOL_MAX": "8"})
        stop = threading.Event()
        workers = [threading.Thread(target=race_worker, args=(url, stop, q, sink))
                   for q, sink in ((CLAIM_AND_COMPLETE, completed), (CLAIM_AND_COMPLETE,
                                   completed), (PURGE, purged))]
        enqueuers = [threading.Thread(target=race_enqueuer,
                                      args=(fn.port, counts, args.enqueues, args.keys, i))
                     for i in range(8)]
        started = time.monotonic()
        try:
            for t in workers + enqueuers:
                t.start()
            for t in enqueuers:
                t.join()
        finally:
            stop.set()
            for t in workers:
                t.join()
            fn.stop()
        elapsed = time.monotonic() - started
        with psycopg.connect(url, autocommit=True) as conn:
            present = {r[0] for r in conn.execute("select id from queue_pump.jobs")}
            deleted = {r[0] for r in conn.execute("select id from public.bench_deleted")}
    lost = sorted(counts.ids - present - deleted)
    stack_lines = sum(1 for line in fn.lines if "    at " in line)
    result = {"enqueues": counts.sent, "seconds": round(elapsed, 1), "keys": args.keys,
              "statuses": {str(k): v for k, v in sorted(counts.statuses.items())},
              "null_ids": counts.null_ids, "lost_ids": len(lost), "lost_sample": lost[:5],
              "jobs_completed": sum(completed), "jobs_purged": sum(purged),
              "function_stack_trace_lines": stack_lines, "not_2xx_samples": counts.samples}
    save("supabase_race", result)
    print(json.dumps(result, indent=2))


# --- CPU per job, this tree against another ------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> tuple[float, float]:
    """(own, waited-for children's) CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return ((int(fields[11]) + int(fields[12])) / TICKS,
            (int(fields[13]) + int(fields[14])) / TICKS)


def _postgres_cpu_s(postmaster: int) -> float:
    """The server's CPU: the postmaster, its exited children and its live ones (backends)."""
    own, exited = _cpu_s(postmaster)
    live = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    live += (int(fields[11]) + int(fields[12])) / TICKS
    return own + exited + live


def cost_round(deno: Any, pg_bin: Any, code: Path, jobs: int, name: str) -> dict[str, Any]:
    """3 pumps x 8 over two functions drain `jobs` 0 ms jobs; the kit's SQL and functions
    come from `code` (a checkout), the pump from here. CPU per job of each part."""
    import resource

    migrations = sorted((code / "supabase" / "migrations").glob("*.sql"))
    with kit.cluster(pg_bin) as pg:
        pg.create_roles()
        url = pg.create_database(name)
        with psycopg.connect(url, autocommit=True) as conn:
            for path in migrations:
                with conn.transaction():
                    conn.execute(path.read_text())  # type: ignore[arg-type]
        enqueue(url, jobs)
        with psycopg.connect(url, autocommit=True) as conn:
            # Analyzed now, so that autovacuum's analyze of the new rows does not land in one
            # round's window and not in another's.
            conn.execute("vacuum analyze queue_pump.jobs")
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        fns = [kit.DenoFunction(deno, "ai-job-runner",
                                {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": url, "DB_POOL_MAX": "16"},
                                functions=code / "supabase" / "functions") for _ in range(2)]
        try:
            pg0 = _postgres_cpu_s(postmaster)
            fn0 = sum(_cpu_s(f.proc.pid)[0] for f in fns)
            ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cmds = [pump_cmd(fns[i % 2], 8, f"bench-{i}", 0) for i in range(3)]
            procs = [subprocess.Popen(c, env=e, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for c, e in cmds]
            for p in procs:
                p.wait(timeout=600)
            ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            fn1 = sum(_cpu_s(f.proc.pid)[0] for f in fns)
        finally:
            for f in fns:
                f.stop()
        pg1 = _postgres_cpu_s(postmaster)
        rate = drained_rate(url)
    pumps = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    per_job = {"functions_us": (fn1 - fn0) / jobs * 1e6, "postgres_us": (pg1 - pg0) / jobs * 1e6,
               "pumps_us": pumps / jobs * 1e6}
    per_job = {k: round(v) for k, v in per_job.items()}
    result = {"code": str(code), **rate, **per_job, "total_us": sum(per_job.values()),
              "load": load()}
    print(json.dumps(result), file=sys.stderr)
    return result


def cmd_cost(args: argparse.Namespace) -> None:
    pg_bin, deno = _deps()
    trees = [("before", Path(args.against).resolve()), ("after", ROOT)] if args.against \
        else [("here", ROOT)]
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.rounds):  # alternating, so that the machine's load hits both alike
        for label, code in trees:
            runs.setdefault(label, []).append(
                cost_round(deno, pg_bin, code, args.jobs, f"bench_cost_{label}_{r}"))
    keys = ("jobs_per_s", "functions_us", "postgres_us", "pumps_us", "total_us")
    summary = {label: {k: statistics.median(x[k] for x in rs) for k in keys}
               for label, rs in runs.items()}
    save("supabase_cost", {"rounds": args.rounds, "jobs": args.jobs, "summary": summary,
                           "runs": runs})
    print(f"| code | jobs/s (median of {args.rounds}) | functions us/job | PostgreSQL us/job |"
          " pumps us/job | total us/job | jobs/s, each round |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, m in summary.items():
        each = ", ".join(f"{x['jobs_per_s']:.0f}" for x in runs[label])
        print(f"| {label} | {m['jobs_per_s']:.0f} | {m['functions_us']:.0f} |"
              f" {m['postgres_us']:.0f} | {m['pumps_us']:.0f} | {m['total_us']:.0f} | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.supabase_kit")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput", help="jobs/s drained through pumps and two functions")
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--batch", type=lambda v: [int(x) for x in v.split(",")], default=None,
                   help="JOB_BATCH_SIZE values to drain 3x8 with, e.g. 5,10,20 (default: the"
                        " one-job rows)")
    t.add_argument("--jobs", type=int, default=10_000, help="jobs per --batch round")
    cb = sub.add_parser("claim-batch", help="claim_batch(N) against N claims, one connection")
    cb.add_argument("--rounds", type=int, default=3)
    cb.add_argument("--jobs", type=int, default=5000)
    c = sub.add_parser("claim")
    c.add_argument("--samples", type=int, default=2000)
    r = sub.add_parser("restart")
    r.add_argument("--rounds", type=int, default=3)
    m = sub.add_parser("memory")
    m.add_argument("--jobs", type=int, default=600)
    race = sub.add_parser("race")
    race.add_argument("--enqueues", type=int, default=50_000)
    race.add_argument("--keys", type=int, default=50)
    cost = sub.add_parser("cost")
    cost.add_argument("--against", help="another checkout (e.g. a git worktree of the code"
                                        " before): its kit's SQL and functions, alternated")
    cost.add_argument("--rounds", type=int, default=7)
    cost.add_argument("--jobs", type=int, default=10_000)
    a = sub.add_parser("all")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--samples", type=int, default=2000)
    a.add_argument("--batch", default=None)
    a.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    if args.cmd in ("throughput", "all"):
        cmd_throughput(args)
    if args.cmd in ("claim", "all"):
        cmd_claim(args)
    if args.cmd == "claim-batch":
        cmd_claim_batch(args)
    if args.cmd == "restart":
        cmd_restart(args)
    if args.cmd == "memory":
        cmd_memory(args)
    if args.cmd == "race":
        cmd_race(args)
    if args.cmd == "cost":
        cmd_cost(args)


if __name__ == "__main__":
    main()
