"""Idle cost against concurrency: calls per idle hour, pickup latency at idle, and how soon a
burst after a quiet spell has every loop busy. Issue 25: C=8 and C=64 should cost no more
than 1.1 times C=1 while the queue is empty, and nobody should wait longer for it.

Each concurrency gets a fresh reference runner (this tree's, a process of its own, SQLite in a
temporary directory) and a fresh pump process, run by ``--pump-python`` (default: this
interpreter), so the same runner can be measured against an older pump, e.g. main's:

    git archive main queue_pump | tar -x -C /tmp/qp-main
    python3 -m venv --without-pip /tmp/mainvenv
    # main's package first, this venv's libraries after it (no editable finder in between):
    printf '/tmp/qp-main\\n%s\\n' "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/mainvenv/lib/python3.11/site-packages/deps.pth
    flock /work/notes/bench.lock .venv/bin/python bench/idle_loops.py --label before \\
        --pump-python /tmp/mainvenv/bin/python --json /tmp/idle-before.json
    flock /work/notes/bench.lock .venv/bin/python bench/idle_loops.py --label after \\
        --json /tmp/idle-after.json

Per concurrency, in this order:
1. idle calls: after a warm-up (every loop's first call, then the adaptive ramp), the runner's
   own call counter over ``--window-s``; calls per idle hour are extrapolated from that window
   (said so in the output);
2. pickup at idle: ``--pickups`` single jobs, each enqueued after a random quiet gap
   (``--gap-s``); the latency is the job's startedAt - createdAt, both on the runner's clock;
3. a burst after idle: ``--burst-per-loop`` x C jobs of ``--burst-job-ms`` each, enqueued in
   one request after a quiet gap; "all busy" is the first moment C of them run at once (from
   their startedAt/finishedAt), counted from the enqueue.

With ``--kit`` the runner is the Supabase kit instead (this tree's migrations on a throwaway
PostgreSQL cluster, the ai-job-runner function on Deno, as tests/supabase/kit.py starts them;
QUEUE_PUMP_DENO names Deno), and only the idle calls are counted, by the pump's own /healthz
``counters.calls`` (every call is an invocation).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

TOKEN = "bench-token-0123456789"
ORG = "bench-org"
AUTH = {"X-Agent-Token": TOKEN, "X-Organization-Id": ORG}


def start_runner(db: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": ORG}
    proc = subprocess.Popen([sys.executable, "-m", "queue_pump.reference_runner", "--port", "0",
                             "--db", db], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"runner listening on (http://\S+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found.group(1)
        if not line:
            break
    proc.kill()
    raise SystemExit("idle_loops: the reference runner did not start")


def start_pump(python: str, url: str, concurrency: int, args: argparse.Namespace
               ) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    env.update({"SUPABASE_URL": url, "AGENT_TOKEN": TOKEN, "ORGANIZATION_ID": ORG,
                "QUEUE_PUMP_CONCURRENCY": str(concurrency),
                "QUEUE_PUMP_IDLE_SLEEP_MS": str(args.idle_sleep_ms),
                "QUEUE_PUMP_IDLE_MAX_SLEEP_MS": str(args.idle_max_sleep_ms),
                "QUEUE_PUMP_TICK_SLEEP_MS": str(args.tick_ms),
                "QUEUE_PUMP_HEALTH_PORT": "0", "QUEUE_PUMP_LOG_LEVEL": "warning",
                "QUEUE_PUMP_LOG_FORMAT": "json"})
    # Started in an empty directory: "-m" puts the working directory first on sys.path, so
    # from this tree it would run this tree's pump whatever --pump-python says (and a ./.env
    # of a real deployment must not be read).
    return subprocess.Popen([python, "-m", "queue_pump"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True, cwd=args.pump_cwd)


class Runner:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, headers=AUTH, timeout=30)

    def calls(self) -> int:
        return int(self.http.get("/jobs/stats").json()["calls"]["total"])

    def enqueue(self, n: int, job_ms: int) -> list[int]:
        body = {"jobs": [{"type": "bench", "payload": {"duration_ms": job_ms}}] * n}
        answer = self.http.post("/jobs", json=body)
        answer.raise_for_status()
        return [job["id"] for job in answer.json()["jobs"]]

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.http.get(f"/jobs/{job_id}").json())

    def wait_done(self, ids: Sequence[int], timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        pending = list(ids)
        jobs: dict[int, dict[str, Any]] = {}
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"idle_loops: {len(pending)} jobs not done in {timeout_s} s")
            job = self.job(pending[0])
            if job["status"] in ("done", "failed"):
                jobs[pending.pop(0)] = job
            else:
                time.sleep(0.05)
        return [jobs[i] for i in ids]


def all_busy_after(jobs: list[dict[str, Any]], loops: int) -> float | None:
    """Seconds from the burst's enqueue to the first moment ``loops`` of its jobs ran at once."""
    created = min(job["createdAt"] for job in jobs)
    edges = sorted([(job["startedAt"], 1) for job in jobs] + [(job["finishedAt"], -1)
                                                              for job in jobs],
                   key=lambda edge: (edge[0], edge[1]))
    running = 0
    for at, step in edges:
        running += step
        if running >= loops:
            return float(at - created)
    return None


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pump_calls(health_url: str) -> int:
    """The calls a pump has made, from its /healthz (main's pump has the same counter)."""
    return int(httpx.get(health_url, timeout=5).json()["counters"]["calls"])


def kit_idle_calls(python: str, concurrencies: Sequence[int], args: argparse.Namespace
                   ) -> list[dict[str, Any]]:
    """Idle calls per concurrency against the kit: one cluster, a fresh database each."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from bench.supabase_kit import ORG as KIT_ORG
    from bench.supabase_kit import TOKEN as KIT_TOKEN
    from bench.supabase_kit import _deps, _template, database, runners
    from tests.supabase import kit

    pg_bin, deno = _deps()
    results = []
    with kit.cluster(pg_bin) as pg:
        _template(pg)
        for concurrency in concurrencies:
            with database(pg, f"idle_{concurrency}_{os.getpid()}") as url:
                (fn,) = runners(deno, url, count=1)
                port = free_port()
                env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
                env.update({"SUPABASE_URL": fn.base_url, "AGENT_TOKEN": KIT_TOKEN,
                            "ORGANIZATION_ID": KIT_ORG,
                            "QUEUE_PUMP_CONCURRENCY": str(concurrency),
                            "QUEUE_PUMP_IDLE_SLEEP_MS": str(args.idle_sleep_ms),
                            "QUEUE_PUMP_IDLE_MAX_SLEEP_MS": str(args.idle_max_sleep_ms),
                            "QUEUE_PUMP_HEALTH_PORT": str(port),
                            "QUEUE_PUMP_LOG_LEVEL": "warning"})
                pump = subprocess.Popen([python, "-m", "queue_pump"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        cwd=args.pump_cwd)
                health = f"http://127.0.0.1:{port}/healthz"
                try:
                    deadline = time.monotonic() + 60
                    while True:
                        try:
                            if pump_calls(health) >= concurrency:
                                break
                        except httpx.HTTPError:
                            pass
                        if time.monotonic() > deadline or pump.poll() is not None:
                            raise SystemExit("idle_loops: the pump did not start calling")
                        time.sleep(0.1)
                    time.sleep(args.warmup_s)
                    c0, t0 = pump_calls(health), time.monotonic()
                    time.sleep(args.window_s)
                    c1, t1 = pump_calls(health), time.monotonic()
                finally:
                    pump.send_signal(signal.SIGTERM)
                    pump.wait(60)
                    fn.stop()
            result = {"runner": "kit", "concurrency": concurrency,
                      "window_s": round(t1 - t0, 2), "idle_calls": c1 - c0,
                      "idle_calls_per_hour": round((c1 - c0) / (t1 - t0) * 3600)}
            print(json.dumps({"label": args.label, **result}), flush=True)
            results.append(result)
    return results


def measure(python: str, concurrency: int, args: argparse.Namespace,
            rng: random.Random) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        runner_proc, url = start_runner(os.path.join(tmp, "jobs.sqlite3"))
        runner = Runner(url)
        pump = start_pump(python, url, concurrency, args)
        try:
            deadline = time.monotonic() + 30
            while runner.calls() < concurrency:  # every loop made its first call
                if time.monotonic() > deadline or pump.poll() is not None:
                    raise SystemExit("idle_loops: the pump did not start calling")
                time.sleep(0.05)
            time.sleep(args.warmup_s)
            c0, t0 = runner.calls(), time.monotonic()
            time.sleep(args.window_s)
            c1, t1 = runner.calls(), time.monotonic()
            pickups = []
            for _ in range(args.pickups):
                time.sleep(rng.uniform(*args.gap_s))
                (job_id,) = runner.enqueue(1, 0)
                (job,) = runner.wait_done([job_id], 120)
                pickups.append(job["startedAt"] - job["createdAt"])
            time.sleep(rng.uniform(*args.gap_s))
            burst = runner.enqueue(args.burst_per_loop * concurrency, args.burst_job_ms)
            jobs = runner.wait_done(burst, 600)
        finally:
            pump.send_signal(signal.SIGTERM)
            pump.wait(60)
            runner_proc.send_signal(signal.SIGTERM)
            runner_proc.wait(60)
    window = t1 - t0
    return {"concurrency": concurrency, "window_s": round(window, 2), "idle_calls": c1 - c0,
            "idle_calls_per_hour": round((c1 - c0) / window * 3600),
            "pickup_s": [round(p, 4) for p in pickups],
            "pickup_median_s": round(statistics.median(pickups), 4) if pickups else None,
            "pickup_mean_s": round(statistics.fmean(pickups), 4) if pickups else None,
            "burst_jobs": len(jobs),
            "burst_first_s": min(j["startedAt"] for j in jobs) - min(j["createdAt"] for j in jobs),
            "all_busy_s": all_busy_after(jobs, concurrency)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/idle_loops.py",
        description="Calls per idle hour, pickup latency at idle and time until a burst has "
                    "every loop busy, per QUEUE_PUMP_CONCURRENCY, against the reference runner. "
                    "Run under flock /work/notes/bench.lock; the figures depend on the machine.")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated (1,8,64)")
    parser.add_argument("--pump-python", default=sys.executable,
                        help="the interpreter that runs the pump (another tree's, for before)")
    parser.add_argument("--label", default="", help="a name for this run in the output")
    parser.add_argument("--idle-sleep-ms", type=int, default=250)
    parser.add_argument("--idle-max-sleep-ms", type=int, default=1000,
                        help="adaptive idle's ceiling (250 and 1000: the issue's measurement)")
    parser.add_argument("--tick-ms", type=int, default=0)
    parser.add_argument("--warmup-s", type=float, default=5.0,
                        help="after every loop's first call, before the window")
    parser.add_argument("--window-s", type=float, default=60.0,
                        help="the idle window counted (calls per hour are extrapolated)")
    parser.add_argument("--pickups", type=int, default=10, help="single jobs timed at idle")
    parser.add_argument("--gap-s", type=float, nargs=2, default=(1.0, 3.0),
                        metavar=("MIN", "MAX"), help="quiet gap before each enqueue")
    parser.add_argument("--burst-per-loop", type=int, default=4)
    parser.add_argument("--burst-job-ms", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--kit", action="store_true",
                        help="against the Supabase kit (PostgreSQL + Deno): idle calls only")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    pump_cwd = tempfile.TemporaryDirectory(prefix="idle-loops-")
    args.pump_cwd = pump_cwd.name
    version = subprocess.run([args.pump_python, "-c", "import queue_pump; "
                              "print(queue_pump.__file__)"], cwd=args.pump_cwd,
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"the pump: {version} (run by {args.pump_python})", flush=True)
    if args.kit:
        return _kit(args, concurrencies)
    results = []
    for concurrency in concurrencies:
        result = measure(args.pump_python, concurrency, args, rng)
        results.append(result)
        print(json.dumps({"label": args.label, **result}), flush=True)
    base = next((r for r in results if r["concurrency"] == 1), None)
    print(f"\n{args.label or 'run'}: idle {args.idle_sleep_ms}-{args.idle_max_sleep_ms} ms, "
          f"per hour extrapolated from {args.window_s:g} s windows")
    print("| C | idle calls (window) | per idle hour | vs C=1 | pickup median / mean | "
          "burst: first job started / all loops busy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        ratio = f"{r['idle_calls_per_hour'] / base['idle_calls_per_hour']:.2f}x" if base else "-"
        busy = "-" if r["all_busy_s"] is None else f"{r['all_busy_s'] * 1000:.0f} ms"
        pickup = "-" if r["pickup_median_s"] is None else (
            f"{r['pickup_median_s'] * 1000:.0f} / {r['pickup_mean_s'] * 1000:.0f} ms")
        print(f"| {r['concurrency']} | {r['idle_calls']} in {r['window_s']} s | "
              f"{r['idle_calls_per_hour']} | {ratio} | {pickup} | "
              f"{r['burst_first_s'] * 1000:.0f} ms / {busy} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"label": args.label, "args": {k: v for k, v in vars(args).items()},
                       "results": results}, out, indent=1)
    return 0


def _kit(args: argparse.Namespace, concurrencies: Sequence[int]) -> int:
    results = kit_idle_calls(args.pump_python, concurrencies, args)
    base = next((r for r in results if r["concurrency"] == 1), None)
    print(f"\n{args.label or 'run'} against the kit: idle {args.idle_sleep_ms}-"
          f"{args.idle_max_sleep_ms} ms, per hour extrapolated from {args.window_s:g} s windows")
    print("| C | idle calls (window) | per idle hour | vs C=1 |")
    print("| --- | --- | --- | --- |")
    for r in results:
        ratio = f"{r['idle_calls_per_hour'] / base['idle_calls_per_hour']:.2f}x" if base else "-"
        print(f"| {r['concurrency']} | {r['idle_calls']} in {r['window_s']} s | "
              f"{r['idle_calls_per_hour']} | {ratio} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"label": args.label, "runner": "kit", "args": vars(args),
                       "results": results}, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
