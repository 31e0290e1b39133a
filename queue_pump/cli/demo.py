"""queue-pump demo: the reference runner on loopback, a few hundred jobs, the real pump process.

Everything a new user needs to see the pump work, with no Supabase: jobs of mixed length, a
few that fail once and are retried, a runner that answers 503 now and then, a progress bar
and a summary read from the pump's own per-call log lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..config import PREFIX, env_of
from .parsing import OneLineParser

DEMO_ORG = "demo-org"
# The deployment's variables: the demo's pump must not inherit any of them.
CONTRACT_VARIABLES = frozenset(env_of(attr) for attr in (
    "supabase_url", "agent_token", "organization_id", "anon_key"))
# The demo's pump: fast ticks, short backoff, every call logged, no health endpoint.
DEMO_SETTINGS = {"tick_sleep_s": "0", "idle_sleep_s": "500", "backoff_base_s": "100",
                 "backoff_max_s": "2000", "log_format": "json", "log_level": "debug",
                 "health_port": "0", "worker_id": "demo-pump"}


@dataclass
class Tally:
    calls: int = 0
    processed: int = 0
    idle: int = 0
    errors: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    durations_ms: list[float] = field(default_factory=list)
    backlog: int | None = None  # the runner's latest, as its answers say (jobs due)
    peak_backlog: int | None = None

    def feed(self, event: Mapping[str, Any]) -> None:
        name = event.get("event")
        if name == "call":
            self.calls += 1
            self.durations_ms.append(float(event["duration_ms"]))
            if isinstance(event.get("backlog"), int):
                self.backlog = event["backlog"]
                self.peak_backlog = max(self.peak_backlog or 0, self.backlog)
            outcome = event.get("outcome")
            if outcome == "processed":
                self.processed += 1
            elif outcome == "idle":
                self.idle += 1
            else:
                self.errors += 1
        elif name == "call_failed":
            key = str(event.get("status") or event.get("reason"))
            self.errors_by_reason[key] = self.errors_by_reason.get(key, 0) + 1


def seed_jobs(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Mostly short jobs, some longer, a few slow; about 4 % fail once and are retried."""
    jobs = []
    for i in range(count):
        roll = rng.random()
        duration = (rng.randint(5, 30) if roll < 0.7 else rng.randint(50, 150) if roll < 0.95
                    else rng.randint(300, 500))
        payload: dict[str, Any] = {"duration_ms": duration}
        if rng.random() < 0.04:
            payload["fail_times"] = 1
        jobs.append({"type": rng.choice(["embed", "summarise", "classify", "render"]),
                     "payload": payload, "dedupeKey": f"demo-{i}"})
    return jobs


def bar(done: int, total: int, rate: float, errors: int, width: int = 30,
        backlog: int | None = None) -> str:
    filled = int(width * done / total) if total else width
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} jobs  "
            f"{rate:6.1f} jobs/s  errors {errors}"
            + ("" if backlog is None else f"  backlog {backlog}"))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run_demo(jobs: int, concurrency: int, fault_rate: float, seed: int,
                   timeout_s: float, out: TextIO) -> int:
    from ..reference_runner import Faults, JobSpec, start_runner

    token = secrets.token_urlsafe(24)  # a fresh secret per demo; never printed
    rng = random.Random(seed)
    runner = await start_runner(token=token, organization_id=DEMO_ORG,
                                faults=Faults(error_rate=fault_rate, error_status=503),
                                rng=random.Random(seed + 1))
    scratch = tempfile.TemporaryDirectory(prefix="queue-pump-demo-")
    workdir = scratch.name
    try:
        specs = [JobSpec(type=j["type"], payload=j["payload"], dedupe_key=j["dedupeKey"])
                 for j in seed_jobs(jobs, rng)]
        runner.store.enqueue_many(specs)
        total = runner.store.stats()["total"]
        env = {**_clean_environment(),
               **{env_of(attr): value for attr, value in DEMO_SETTINGS.items()},
               env_of("supabase_url"): runner.url, env_of("agent_token"): token,
               env_of("organization_id"): DEMO_ORG, env_of("concurrency"): str(concurrency)}
        print(f"queue-pump demo: reference runner at {runner.url}, {total} jobs queued; "
              f"starting the pump with concurrency {concurrency} "
              f"({fault_rate:.0%} of runner calls answer 503)", file=out)
        started = time.monotonic()
        # The pump starts in an empty directory, so no ./.env of a real deployment (a real
        # runner URL, queues or schedules) can point the demo at anything but its runner.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "queue_pump", env=env, cwd=workdir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        tally = Tally()
        reader = asyncio.create_task(_read_events(proc, tally))
        finished_at = None
        tty = out.isatty()
        last_line = 0.0
        while True:
            await asyncio.sleep(0.1)
            stats = runner.store.stats()
            done = stats["done"] + stats["failed"]
            elapsed = time.monotonic() - started
            if tty:
                print("\r" + bar(done, total, done / elapsed, tally.errors,
                                  backlog=tally.backlog), end="", file=out, flush=True)
            elif elapsed - last_line >= 2 or (done == total and finished_at is None):
                print(bar(done, total, done / elapsed, tally.errors, backlog=tally.backlog),
                      file=out, flush=True)
                last_line = elapsed
            if done == total and finished_at is None:
                finished_at = time.monotonic()
            # Let the pump meet the empty queue a couple of times, so the idle pace shows.
            if finished_at and time.monotonic() - finished_at > 1.2:
                break
            if proc.returncode is not None or elapsed > timeout_s:
                break
        if tty:
            print(file=out)
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
        await reader
        wall = (finished_at or time.monotonic()) - started
        stats = runner.store.stats()
        retried = sum(1 for job in _all_jobs(runner.store) if job.attempts > 1)
        _summary(out, stats, total, wall, tally, retried, code)
        if finished_at is None:
            print(f"queue-pump demo: jobs did not finish within {timeout_s:g} s", file=out)
            return 1
        return 0 if code == 0 else 1
    finally:
        await runner.close()
        scratch.cleanup()


def _clean_environment() -> dict[str, str]:
    """This environment without the pump's own variables (a shell that exported a real
    deployment's), and with this copy of queue_pump importable from any directory."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(PREFIX) and k not in CONTRACT_VARIABLES}
    here = str(Path(__file__).resolve().parents[2])  # the folder that holds queue_pump/
    keep["PYTHONPATH"] = os.pathsep.join(filter(None, [here, keep.get("PYTHONPATH")]))
    return keep


def _all_jobs(store: Any) -> list[Any]:
    jobs = []
    for job_id in range(1, store.stats()["total"] + 1):
        job = store.get(job_id)
        if job is not None:
            jobs.append(job)
    return jobs


async def _read_events(proc: asyncio.subprocess.Process, tally: Tally) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        try:
            tally.feed(json.loads(raw))
        except ValueError:
            continue


def _summary(out: TextIO, stats: Mapping[str, Any], total: int, wall: float, tally: Tally,
             retried_jobs: int, code: int) -> None:
    reasons = ", ".join(f"{k} x{v}" for k, v in sorted(tally.errors_by_reason.items()))
    rows = [
        ("jobs", f"{stats['done']} done, {stats['failed']} failed, of {total}"),
        ("wall time", f"{wall:.2f} s"),
        ("throughput", f"{(stats['done'] + stats['failed']) / wall:.1f} jobs/s"),
        ("runner calls", f"{tally.calls} ({tally.processed} processed, {tally.idle} idle, "
                         f"{tally.errors} failed)"),
        ("retries", f"{tally.errors} calls backed off and retried ({reasons or 'none'}); "
                    f"{retried_jobs} jobs failed once and were run again"),
        ("call latency", f"p50 {percentile(tally.durations_ms, 50):.1f} ms, "
                         f"p95 {percentile(tally.durations_ms, 95):.1f} ms"),
        ("calls while idle", f"{tally.idle}"),
        ("runner backlog", "not sent" if tally.peak_backlog is None else
         f"{tally.peak_backlog} due at most, {tally.backlog} at the end (the runner's answers)"),
        ("pump exit", f"{code} ({'clean stop on SIGTERM' if code == 0 else 'see above'})"),
    ]
    print("\nsummary", file=out)
    for key, value in rows:
        print(f"  {key:<17} {value}", file=out)
    print("\nnext: a runner of your own, and its jobs seen and steered with `queue-pump jobs` "
          "and `queue-pump top`: README, \"Try it locally\"", file=out)


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = OneLineParser(prog="queue-pump demo",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                           description="Run the real pump against the reference runner on "
                                       "loopback with seeded jobs; no Supabase needed.")
    parser.add_argument("--jobs", type=int, default=300, help="jobs to seed (1-100000)")
    parser.add_argument("--concurrency", type=int, default=4, help="pump loops (1-256)")
    parser.add_argument("--fault-rate", type=float, default=0.03,
                        help="share of runner calls answered with 503 (0-0.9)")
    parser.add_argument("--seed", type=int, default=7, help="random seed for jobs and faults")
    parser.add_argument("--timeout-s", type=float, default=300, help="give up after this long")
    args = parser.parse_args(argv)
    for name, value, low, high in (("--jobs", args.jobs, 1, 100_000),
                                   ("--concurrency", args.concurrency, 1, 256),
                                   ("--fault-rate", args.fault_rate, 0.0, 0.9),
                                   ("--timeout-s", args.timeout_s, 1, 86_400)):
        if not low <= value <= high:
            parser.error(f"{name} {value} is out of range; expected {low} to {high}")
    return asyncio.run(run_demo(args.jobs, args.concurrency, args.fault_rate, args.seed,
                                args.timeout_s, sys.stdout))
