"""Issue 24 measured on a real PostgreSQL and real Deno functions under real pumps (3 pumps x 8
loops over 2 function processes, as the kit's end-to-end test runs):

    .venv/bin/python -m bench.queue_features priority     # start order of 3,000 jobs, 3 priorities
    .venv/bin/python -m bench.queue_features concurrency  # a key limited to 2, sampled + history
    .venv/bin/python -m bench.queue_features rate         # a key limited to 10 starts/s, 30 s
    .venv/bin/python -m bench.queue_features fanout       # 100 children + a fan-in; a failed child
    .venv/bin/python -m bench.queue_features batch        # 1,000 jobs: an array body vs 1,000 POSTs
    .venv/bin/python -m bench.queue_features all

Claim p99 and end-to-end throughput before and after: `bench.supabase_kit claim|throughput`, run
in this checkout and in one of the code before (docs/BENCHMARKS.md says how). Results go to
bench/results/queue_features_*.json and Markdown on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench.run import save
from bench.supabase_kit import ORG, TOKEN, _deps, _template, pump_cmd, stop_pumps
from tests.supabase import kit

PUMPS, LOOPS = 3, 8


@contextlib.contextmanager
def stack(name: str, **env: str) -> Iterator[tuple[str, list[kit.DenoFunction], Any]]:
    """A throwaway cluster with the kit, a database, and 2 ai-job-runner processes."""
    pg_bin, deno = _deps()
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        url = pg.create_database(name, template="kit_template")
        fns = [kit.DenoFunction(deno, "ai-job-runner",
                                {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": url, "DB_POOL_MAX": "16",
                                 **env}) for _ in range(2)]
        try:
            yield url, fns, deno
        finally:
            for fn in fns:
                fn.stop()


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def pumps(fns: list[kit.DenoFunction], drain: bool = False) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(PUMPS):
        cmd, env = pump_cmd(fns[i % len(fns)], LOOPS, f"bench-{i}", 0)
        if not drain:
            cmd = cmd[:-1]  # no --drain: held-back jobs make the queue answer idle meanwhile
        env["QUEUE_PUMP_IDLE_SLEEP_MS"] = "100"  # the lowest the pump takes
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    return procs


def wait_done(url: str, n: int, procs: list[subprocess.Popen[bytes]],
              timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a pump exited: {[p.poll() for p in procs]}")
        [(done,)] = sql(url, "select count(*) from queue_pump.jobs"
                             " where status in ('done', 'failed', 'cancelled')")
        if done >= n:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{n} jobs not finished in {timeout_s} s")


def claims(url: str, where: str = "true") -> list[tuple[Any, ...]]:
    """(at, job id, priority, key) of every `claimed` event, in the order of the clock."""
    return sql(url, "select e.at, j.id, j.priority, j.concurrency_key from queue_pump.job_events e"
                    " join queue_pump.jobs j on j.id = e.job_id where e.kind = 'claimed'"
                    f" and {where} order by e.at")


def most_at_once(url: str, key: str) -> int:
    """From the history: the most jobs of the key between `claimed` and their end at once."""
    rows = sql(url, "select e.at, e.kind from queue_pump.job_events e join queue_pump.jobs j"
                    " on j.id = e.job_id where j.concurrency_key = %s and e.kind in"
                    " ('claimed', 'completed', 'failed', 'yielded', 'lease_expired')", key)
    running = peak = 0
    for _, kind in sorted(rows):
        # lease_expired: the run ended (its worker died); the next `claimed` starts another.
        running += 1 if kind == "claimed" else -1
        peak = max(peak, running)
    return peak


# --- priority -------------------------------------------------------------------------------


def cmd_priority(_: argparse.Namespace) -> dict[str, Any]:
    with stack("qf_priority") as (url, fns, _):
        # Enqueued lowest first, so that FIFO would be the exact opposite of the right order.
        for priority in (-10, 0, 10):
            sql(url, "select queue_pump.enqueue(%s, 'agent', 'echo', priority => %s)"
                     " from generate_series(1, 1000)", ORG, priority)
        t0 = time.monotonic()
        procs = pumps(fns)
        wait_done(url, 3000, procs)
        seconds = time.monotonic() - t0
        stop_pumps(procs)
        order = [row[2] for row in claims(url)]
    # A start out of order: a lower priority started while a higher one had not yet started.
    # With 24 loops claiming at once, SKIP LOCKED lets a few through at each boundary.
    inversions = sum(1 for i, p in enumerate(order) if any(q > p for q in order[i + 1:i + 200]))
    positions = {p: [i for i, q in enumerate(order) if q == p] for p in (10, 0, -10)}
    result = {"jobs": len(order), "seconds": round(seconds, 2),
              "started_out_of_order": inversions,
              "span": {str(p): [min(v), max(v)] for p, v in positions.items()}}
    print(json.dumps(result), file=sys.stderr)
    save("queue_features_priority", result)
    print("| priority | jobs | first start (position) | last start (position) |")
    print("|---:|---:|---:|---:|")
    for p, v in positions.items():
        print(f"| {p} | {len(v)} | {min(v)} | {max(v)} |")
    print(f"\nstarts out of priority order: {inversions} of {len(order)}")
    return result


# --- concurrency ----------------------------------------------------------------------------


def sampler(url: str, key: str, stop: threading.Event, seen: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute("select count(*) from queue_pump.jobs where concurrency_key = %s"
                               " and status = 'running'", (key,)).fetchone()
            assert row is not None
            seen.append(int(row[0]))
            stop.wait(0.02)


def concurrency_round(kill: bool) -> dict[str, Any]:
    name = "qf_conc_kill" if kill else "qf_conc"
    # A short lease for the killed round: the jobs the dead function held are run again after it.
    with stack(name, JOB_LEASE_SECONDS="4") as (url, fns, _):
        sql(url, "select queue_pump.set_concurrency_limit(%s, 'agent', 'api', 2)", ORG)
        sql(url, "select queue_pump.enqueue(%s, 'agent', 'sleep', '{\"ms\": 20}'::jsonb,"
                 " concurrency_key => 'api') from generate_series(1, 200)", ORG)
        sql(url, "select queue_pump.enqueue(%s, 'agent', 'sleep', '{\"ms\": 20}'::jsonb,"
                 " concurrency_key => 'k' || (n %% 10)) from generate_series(1, 2000) n", ORG)
        stop, seen = threading.Event(), []  # type: ignore[var-annotated]
        watcher = threading.Thread(target=sampler, args=(url, "api", stop, seen))
        watcher.start()
        t0 = time.monotonic()
        procs = pumps(fns)
        if kill:
            while not sql(url, "select 1 from queue_pump.jobs where concurrency_key = 'api'"
                               " and status = 'done' offset 40"):
                time.sleep(0.05)
            fns[0].kill()  # SIGKILL, mid-drain: its running jobs keep their slots until the lease
        wait_done(url, 2200, procs)
        seconds = time.monotonic() - t0
        stop.set()
        watcher.join()
        stop_pumps(procs)
        others = sql(url, "select extract(epoch from max(finished_at) - min(started_at))"
                          " from queue_pump.jobs where concurrency_key <> 'api'")[0][0]
        api_s = sql(url, "select extract(epoch from max(finished_at) - min(started_at))"
                         " from queue_pump.jobs where concurrency_key = 'api'")[0][0]
        reruns = sql(url, "select count(*) from queue_pump.jobs where attempts > 1")[0][0]
        result = {"killed_a_function": kill, "samples": len(seen), "max_sampled": max(seen),
                  "max_from_history": most_at_once(url, "api"), "seconds": round(seconds, 2),
                  "api_jobs_per_s": round(200 / float(api_s), 1),
                  "other_jobs_per_s": round(2000 / float(others), 1), "jobs_run_again": reruns}
    print(json.dumps(result), file=sys.stderr)
    return result


def cmd_concurrency(_: argparse.Namespace) -> list[dict[str, Any]]:
    rounds = [concurrency_round(False), concurrency_round(True)]
    save("queue_features_concurrency", {"rounds": rounds})
    print("| round | samples (every 20 ms) | max running, sampled | max running, history |"
          " key `api` jobs/s | other keys jobs/s | jobs run again |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        what = "a function SIGKILLed mid-drain" if r["killed_a_function"] else "plain drain"
        print(f"| {what} | {r['samples']} | {r['max_sampled']} | {r['max_from_history']} |"
              f" {r['api_jobs_per_s']} | {r['other_jobs_per_s']} | {r['jobs_run_again']} |")
    return rounds


# --- rate -----------------------------------------------------------------------------------


# A probe the kit does not have: every start the rate window admitted, at the clock it used.
ADMISSIONS = """
create table public.admitted (at timestamptz not null);
create function public.log_admitted() returns trigger language plpgsql as $$
begin
  if cardinality(new.starts) > 0 and new.starts[cardinality(new.starts)]
       is distinct from old.starts[cardinality(old.starts)] then
    insert into public.admitted values (new.starts[cardinality(new.starts)]);
  end if;
  return new;
end $$;
create trigger log_admitted after update on queue_pump.key_state
  for each row execute function public.log_admitted();
"""


def most_in_a_second(times: list[Any]) -> int:
    offsets = sorted((t - times[0]).total_seconds() for t in times)
    return max(sum(1 for o in offsets if a <= o < a + 1.0) for a in offsets)


def cmd_rate(args: argparse.Namespace) -> dict[str, Any]:
    with stack("qf_rate") as (url, fns, _):
        sql(url, ADMISSIONS)
        sql(url, "select queue_pump.set_rate_limit(%s, 'agent', 'api', 10, interval '1 second')",
            ORG)
        sql(url, "select queue_pump.enqueue(%s, 'agent', 'echo', concurrency_key => 'api')"
                 " from generate_series(1, %s)", ORG, 10 * args.seconds + 100)
        procs = pumps(fns)
        time.sleep(args.seconds + 1)
        stop_pumps(procs)
        starts = [row[0] for row in claims(url)]
        admitted = [row[0] for row in sql(url, "select at from public.admitted order by at")]
    first = starts[0]
    offsets = [(t - first).total_seconds() for t in starts]
    per_second = Counter(int(o) for o in offsets if o < args.seconds)
    counts = [per_second.get(s, 0) for s in range(args.seconds)]
    # The most starts in any window of 1 s (sliding), from the clock of the claims' events.
    window_max = most_in_a_second(starts)
    result = {"seconds": args.seconds, "per_second": counts, "total": sum(counts),
              "max_in_any_1s_window": window_max,
              "max_in_any_1s_window_by_admission_clock": most_in_a_second(admitted)}
    print(json.dumps(result), file=sys.stderr)
    save("queue_features_rate", result)
    print(f"starts per second, {args.seconds} s: {', '.join(map(str, counts))}")
    print(f"total {sum(counts)}; most in any sliding 1 s window: {window_max} by the claims'"
          f" events, {result['max_in_any_1s_window_by_admission_clock']} by the clock the window"
          " admitted them at")
    return result


# --- dependencies ---------------------------------------------------------------------------


def cmd_fanout(_: argparse.Namespace) -> dict[str, Any]:
    with stack("qf_fanout") as (url, fns, _):
        [(root,)] = sql(url, "select queue_pump.enqueue(%s, 'agent', 'fanout',"
                             " '{\"children\": 100}'::jsonb)", ORG)
        procs = pumps(fns)
        wait_done(url, 102, procs)
        stop_pumps(procs)
        [(last_child_end, fan_in_start, fan_in_claimed, n)] = sql(
            url, "select (select max(finished_at) from queue_pump.jobs where job_type = 'echo'"
                 " and parent_id = %s), c.started_at, (select min(e.at) from queue_pump.job_events"
                 " e where e.job_id = c.id and e.kind = 'claimed'), cardinality(c.\"after\")"
                 " from queue_pump.jobs c where c.job_type = 'collect'", root)
        last_child_event = sql(url, "select max(e.at) from queue_pump.job_events e join"
                                    " queue_pump.jobs j on j.id = e.job_id where j.parent_id = %s"
                                    " and j.job_type = 'echo' and e.kind = 'completed'", root)[0][0]
        # A failed child: its dependents end failed, with the reason.
        [(bad,)] = sql(url, "select queue_pump.enqueue(%s, 'agent', 'fail',"
                            " '{\"message\": \"upstream 500\"}'::jsonb, max_attempts => 1)", ORG)
        [(dep,)] = sql(url, "select queue_pump.enqueue(%s, 'agent', 'echo', \"after\" =>"
                            " array[%s]::bigint[])", ORG, bad)
        procs = pumps(fns)
        wait_done(url, 104, procs)
        stop_pumps(procs)
        [(status, error)] = sql(url, "select status, last_error from queue_pump.jobs"
                                     " where id = %s", dep)
    result = {"children": n, "fan_in_claimed_after_last_child_completed_ms": round(
        (fan_in_claimed - last_child_event).total_seconds() * 1000, 2),
        "fan_in_started_after_last_child_finished": fan_in_start >= last_child_end,
        "dependent_of_failed_child": {"status": status, "last_error": error}}
    print(json.dumps(result, default=str), file=sys.stderr)
    save("queue_features_fanout", result)
    print(json.dumps(result, indent=2, default=str))
    return result


# --- batch ----------------------------------------------------------------------------------


def post(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, Any]:
    conn.request("POST", path, json.dumps(body), {
        "X-Agent-Token": TOKEN, "X-Organization-Id": ORG, "Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def cmd_batch(args: argparse.Namespace) -> dict[str, Any]:
    pg_bin, deno = _deps()
    rows: dict[str, list[float]] = {"http_batch": [], "http_single": [], "sql_enqueue_many": [],
                                    "sql_single": []}
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        url = pg.create_database("qf_batch", template="kit_template")
        fn = kit.DenoFunction(deno, "enqueue", {"AGENT_TOKEN": TOKEN, "SUPABASE_DB_URL": url})
        try:
            where = urlsplit(fn.url)
            conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
            jobs = [{"type": "echo", "payload": {"n": i}} for i in range(1000)]
            post(conn, where.path, jobs[:10])  # warm: connections, plans
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                status, answer = post(conn, where.path, jobs)
                rows["http_batch"].append(time.perf_counter() - t0)
                assert status == 201 and len(answer["jobs"]) == 1000, (status, answer)
                t0 = time.perf_counter()
                for job in jobs:
                    status, _ = post(conn, where.path, job)
                    assert status == 201
                rows["http_single"].append(time.perf_counter() - t0)
            with psycopg.connect(url, autocommit=True) as db:
                body = json.dumps([{"job_type": "echo", "payload": {"n": i}} for i in range(1000)])
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    db.execute("select count(*) from queue_pump.enqueue_many(%s, 'agent', %s)",
                               (ORG, body))
                    rows["sql_enqueue_many"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for i in range(1000):
                        db.execute("select queue_pump.enqueue(%s, 'agent', 'echo',"
                                   " jsonb_build_object('n', %s::int))", (ORG, i))
                    rows["sql_single"].append(time.perf_counter() - t0)
        finally:
            fn.stop()
    result = {"rounds": args.rounds, "seconds": rows,
              "median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in rows.items()}}
    print(json.dumps(result), file=sys.stderr)
    save("queue_features_batch", result)
    m = result["median_ms"]
    print("| 1,000 jobs | median ms | rounds (ms) |")
    print("|---|---:|---|")
    for k, v in rows.items():
        print(f"| {k} | {m[k]} | {', '.join(f'{x * 1000:.0f}' for x in v)} |")
    print(f"\nHTTP: one array body is {m['http_single'] / m['http_batch']:.1f}x faster than"
          f" 1,000 POSTs; SQL: enqueue_many {m['sql_single'] / m['sql_enqueue_many']:.1f}x"
          " faster than 1,000 enqueue calls")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_features")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("priority")
    sub.add_parser("concurrency")
    r = sub.add_parser("rate")
    r.add_argument("--seconds", type=int, default=30)
    sub.add_parser("fanout")
    b = sub.add_parser("batch")
    b.add_argument("--rounds", type=int, default=5)
    a = sub.add_parser("all")
    a.add_argument("--seconds", type=int, default=30)
    a.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    commands = {"priority": cmd_priority, "concurrency": cmd_concurrency, "rate": cmd_rate,
                "fanout": cmd_fanout, "batch": cmd_batch}
    for name, run in commands.items():
        if args.cmd in (name, "all"):
            print(f"\n## {name}\n")
            run(args)


if __name__ == "__main__":
    main()
