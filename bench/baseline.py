"""The pump against Supabase's own pattern, on one machine: a cron tick that invokes the kit's
runner, which drains a batch per invocation.

    flock /work/notes/bench.lock .venv/bin/python -m bench.baseline            # everything
    .venv/bin/python -m bench.baseline --pump-src /tmp/idle-cost-src          # another pump
    .venv/bin/python -m bench.baseline --only cron-1s-b5,pump-c1-b10 --window 20

The baseline is Supabase's documented pattern: Supabase Cron (pg_cron) ticks every 1 s or
every 10 s and invokes the Edge Function through pg_net (fire and forget: a tick does not
wait for the previous invocation); the function drains up to 5 jobs per invocation ("Consuming
messages with Edge Functions"), or 100 (the "Automatic embeddings" architecture). Debian's
pg_cron cannot schedule in seconds, so a small driver process (`baseline driver`) stands in
for pg_cron + pg_net: it POSTs to the function on each tick from a thread of its own. Both
sides call the same function (ai-job-runner, JOB_BATCH_SIZE set per row) on the same
PostgreSQL; each row has a database and a function process of its own.

Per row:
  drain     a burst of --burst jobs (default 1,000) enqueued in one statement while the
            caller idles: seconds from the burst to its last job done (the database's clock),
            and of those the wait until the first job started (the caller's next call).
            The slowest cron rows cannot finish in the time given (--drain-limit): their
            drain time is extrapolated from the jobs done in that window, and marked so.
  latency   one job a second (at a random point of each second) for --window seconds:
            started_at - created_at, p50 and p99.
  calls     invocations per 1,000 jobs (during the drain) and per idle day (counted over
            --window seconds with an empty queue, times 86,400 / window).
  CPU       seconds per 1,000 jobs during the drain, from /proc: the function process, and
            the pump (or the driver, standing in for pg_cron + pg_net, which on Supabase run
            inside PostgreSQL and are not billed as a function).

The idle and latency phases of every row run at the same time (they are light); the drains
run one after another, except the cron rows, whose drains are paced by the tick, not the CPU.
Results: bench/results/baseline.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.run import load, save
from bench.supabase_kit import ORG, TOKEN, _cpu_s, _deps
from tests.supabase import kit

DAY_S = 86_400
# The pump's settings in every pump row: a processed answer is followed at once by the next
# call (TICK 0); an idle one by 1 s, doubling while idle up to 10 s (the cron rows' range).
PUMP_SETTINGS = {"QUEUE_PUMP_TICK_SLEEP_MS": "0", "QUEUE_PUMP_IDLE_SLEEP_MS": "1000",
                 "QUEUE_PUMP_IDLE_MAX_SLEEP_MS": "10000", "QUEUE_PUMP_LOG_EVERY": "0"}


@dataclass
class Row:
    name: str
    kind: str          # "cron" or "pump"
    batch: int         # JOB_BATCH_SIZE of the function
    interval_s: float = 0.0
    concurrency: int = 1
    url: str = ""
    fn: kit.DenoFunction | None = None
    caller: subprocess.Popen[str] | None = None
    health_port: int = 0
    ticks: list[float] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


ROWS = [Row("cron-1s-b5", "cron", 5, interval_s=1), Row("cron-1s-b100", "cron", 100, interval_s=1),
        Row("cron-10s-b5", "cron", 5, interval_s=10),
        Row("cron-10s-b100", "cron", 100, interval_s=10)] + [
    Row(f"pump-c{c}-b{b}", "pump", b, concurrency=c) for c in (1, 8) for b in (1, 5, 10)]


# --- the stand-in for pg_cron + pg_net --------------------------------------------------------


def driver(url: str, interval_s: float) -> None:
    """Tick every interval_s; each tick POSTs to url from a new thread (pg_net does not wait
    for the answer either) and prints one line, which the bench counts."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    headers = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG,
               "Content-Type": "application/json"}

    def invoke() -> None:
        req = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
        with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=600) as resp:
            resp.read()

    next_at = time.monotonic()
    while not stop.is_set():
        threading.Thread(target=invoke, daemon=True).start()
        print("tick", flush=True)
        next_at += interval_s
        stop.wait(max(0.0, next_at - time.monotonic()))


# --- the rows' parts ------------------------------------------------------------------------------


def start_row(pg: kit.PgCluster, deno: Any, row: Row, pump_src: Path | None) -> None:
    row.url = pg.create_database(f"baseline_{row.name.replace('-', '_')}", template="kit_template")
    row.fn = kit.DenoFunction(deno, "ai-job-runner", {
        "AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": row.url, "DB_POOL_MAX": "16",
        "JOB_BATCH_SIZE": str(row.batch)})
    if row.kind == "cron":
        row.caller = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline", "driver", "--url", row.fn.url,
             "--interval", str(row.interval_s)], stdout=subprocess.PIPE, text=True,
            stderr=subprocess.DEVNULL, cwd=kit.ROOT)
        threading.Thread(target=_count_ticks, args=(row,), daemon=True).start()
        return
    from tests.support.proc import pump_env

    row.health_port = kit.free_port()
    env = pump_env(row.fn.base_url, AGENT_TOKEN=TOKEN, ORGANIZATION_ID=ORG,
                   QUEUE_PUMP_CONCURRENCY=str(row.concurrency),
                   QUEUE_PUMP_HEALTH_PORT=str(row.health_port), **PUMP_SETTINGS)
    if pump_src is not None:
        env["PYTHONPATH"] = str(pump_src)
    row.caller = subprocess.Popen([sys.executable, "-m", "queue_pump"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  text=True, cwd=pump_src or kit.ROOT)


def _count_ticks(row: Row) -> None:
    assert row.caller is not None and row.caller.stdout is not None
    for _ in row.caller.stdout:
        row.ticks.append(time.monotonic())


def calls(row: Row) -> int:
    """Invocations so far: the driver's ticks, or the pump's own count of calls."""
    if row.kind == "cron":
        return len(row.ticks)
    url = f"http://127.0.0.1:{row.health_port}/healthz"
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(json.loads(resp.read())["counters"]["calls"])
        except OSError as err:  # a 503 while unhealthy still carries the counters
            body = getattr(err, "read", None)
            if body is not None:
                return int(json.loads(body())["counters"]["calls"])
            time.sleep(0.1)
    raise RuntimeError(f"{row.name}: the pump's health endpoint did not answer")


def cpu(row: Row) -> tuple[float, float]:
    """(function, caller) CPU seconds so far."""
    assert row.fn is not None and row.caller is not None
    return _cpu_s(row.fn.proc.pid)[0], _cpu_s(row.caller.pid)[0]


def stop_row(row: Row) -> None:
    if row.caller is not None and row.caller.poll() is None:
        row.caller.send_signal(signal.SIGTERM)
        try:
            row.caller.wait(timeout=60)
        except subprocess.TimeoutExpired:
            row.caller.kill()
    if row.fn is not None:
        row.fn.stop()


def sql(url: str, query: str, *args: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchone() if cur.description else None


# --- the phases -----------------------------------------------------------------------------------


def idle_phase(rows: list[Row], window_s: float) -> None:
    before = {r.name: calls(r) for r in rows}
    time.sleep(window_s)
    for r in rows:
        n = calls(r) - before[r.name]
        r.result.update(idle_calls=n, idle_window_s=window_s,
                        idle_calls_per_day=round(n * DAY_S / window_s))


def latency_phase(rows: list[Row], window_s: float) -> None:
    # One job a second at a random point of each second (seeded, the same for every row): a
    # job enqueued in step with a cron tick would otherwise wait always the same.
    rng = random.Random(25)
    start = time.monotonic()
    for i in range(int(window_s)):
        time.sleep(max(0.0, start + i + rng.random() - time.monotonic()))
        for r in rows:
            sql(r.url, "select queue_pump.enqueue(%s, 'agent', 'echo', jsonb_build_object("
                       "'latency', true))", ORG)
    deadline = time.monotonic() + 30
    for r in rows:
        while time.monotonic() < deadline and sql(
                r.url, "select count(*) from queue_pump.jobs where status <> 'done'")[0]:
            time.sleep(0.2)
        lat = sorted(x[0] for x in psycopg.connect(r.url, autocommit=True).execute(
            "select extract(epoch from started_at - created_at)::float8 from queue_pump.jobs"
            " where payload ? 'latency' and started_at is not null"))
        r.result.update(latency_jobs=len(lat),
                        latency_p50_s=round(statistics.median(lat), 3) if lat else None,
                        latency_p99_s=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3)
                        if lat else None)


def drain(row: Row, burst: int, limit_s: float) -> None:
    c0, (f0, p0) = calls(row), cpu(row)
    sql(row.url, "select queue_pump.enqueue(%s, 'agent', 'echo', jsonb_build_object('burst',"
                 " true)) from generate_series(1, %s)", ORG, burst)
    started = time.monotonic()
    done = 0
    while time.monotonic() - started < limit_s:
        done = sql(row.url, "select count(*) from queue_pump.jobs where payload ? 'burst'"
                            " and status = 'done'")[0]
        if done >= burst:
            break
        time.sleep(0.05)
    c1, (f1, p1) = calls(row), cpu(row)
    seconds, first, attempts = sql(
        row.url, "select extract(epoch from max(finished_at) - min(created_at))::float8,"
                 " extract(epoch from min(started_at) - min(created_at))::float8,"
                 " max(attempts) from queue_pump.jobs where payload ? 'burst'"
                 " and status = 'done'")
    per_k = 1000 / max(done, 1)
    row.result.update(
        drain_jobs=burst, drain_done=done, drain_max_attempts=attempts,
        drain_s=round(seconds * burst / done, 1) if done else None,
        # Of which: the wait for the caller's next call (a tick, or a pump's idle sleep).
        drain_first_start_s=round(first, 2) if done else None,
        drain_extrapolated=done < burst,
        calls_per_1000_jobs=round((c1 - c0) * per_k),
        function_cpu_s_per_1000=round((f1 - f0) * per_k, 3),
        caller_cpu_s_per_1000=round((p1 - p0) * per_k, 3))


# --- the run --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    pg_bin, deno = _deps()
    rows = [r for r in ROWS if not args.only or r.name in args.only.split(",")]
    with kit.cluster(pg_bin) as pg:
        pg.create_roles()
        kit.apply_migrations(pg.create_database("kit_template"))
        try:
            for r in rows:
                start_row(pg, deno, r, args.pump_src)
            time.sleep(args.warmup)  # every caller past its first calls; the pumps' idle ramped
            idle_phase(rows, args.window)
            latency_phase(rows, args.window)
            fast = [r for r in rows
                    if r.kind == "pump" or (r.batch >= 100 and r.interval_s <= 1)]
            for r in fast:
                drain(r, args.burst, args.drain_limit)
                print(json.dumps({"row": r.name, **r.result}), file=sys.stderr)
            slow = [r for r in rows if r not in fast]
            threads = [threading.Thread(target=drain, args=(r, args.burst, args.drain_limit))
                       for r in slow]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for r in rows:
                stop_row(r)
    for r in rows:
        r.result.update(row=r.name, kind=r.kind, batch=r.batch, interval_s=r.interval_s,
                        concurrency=r.concurrency)
    results = [r.result for r in rows]
    save("baseline", {"args": {k: str(v) for k, v in vars(args).items()},
                      "pump_settings": PUMP_SETTINGS, "load": load(), "rows": results})
    table(results, args)


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"| caller | JOB_BATCH_SIZE | drain {args.burst:,} jobs (s) |"
          f" latency p50 / p99 (s, {args.window:.0f} jobs) | invocations per 1,000 jobs |"
          f" invocations per idle day ({args.window:.0f} s window) |"
          " function CPU s / 1,000 jobs | caller CPU s / 1,000 jobs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for x in results:
        who = (f"cron every {x['interval_s']:.0f} s (driver)" if x["kind"] == "cron"
               else f"pump C={x['concurrency']}")
        drain_s = f"{x['drain_s']}" + (" (extrapolated)" if x["drain_extrapolated"] else "")
        if x.get("drain_first_start_s") is not None:
            drain_s += f" ({x['drain_first_start_s']} to the first start)"
        print(f"| {who} | {x['batch']} | {drain_s} | {x['latency_p50_s']} /"
              f" {x['latency_p99_s']} | {x['calls_per_1000_jobs']} |"
              f" {x['idle_calls_per_day']:,} | {x['function_cpu_s_per_1000']} |"
              f" {x['caller_cpu_s_per_1000']} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    d = sub.add_parser("driver", help="the stand-in for pg_cron + pg_net (used by the bench)")
    d.add_argument("--url", required=True)
    d.add_argument("--interval", type=float, required=True)
    parser.add_argument("--only", help="comma-separated rows, e.g. cron-1s-b5,pump-c8-b10")
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds of the idle window and of the 1 job/s latency window")
    parser.add_argument("--burst", type=int, default=1000, help="jobs of the drain burst")
    parser.add_argument("--drain-limit", type=float, default=240.0,
                        help="longest a drain is watched; slower ones are extrapolated")
    parser.add_argument("--warmup", type=float, default=12.0,
                        help="seconds between starting the callers and the idle window")
    parser.add_argument("--results", type=Path, default=None,
                        help="directory for baseline.json (default bench/results)")
    parser.add_argument("--pump-src", type=Path, default=None,
                        help="a source tree whose queue_pump the pump rows run"
                             " (e.g. git archive of another branch); default: this one")
    args = parser.parse_args()
    if args.cmd == "driver":
        driver(args.url, args.interval)
        return
    if args.results is not None:
        import bench.run

        bench.run.RESULTS = args.results
    run(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
