"""Soak run: the real pump process against the reference runner process, with faults, for a while.

    python -m bench.soak --duration-s 600          # the full run (about 10 min)
    python -m bench.soak --duration-s 30           # the CI version

The runner (``python -m queue_pump.reference_runner``, its own process) answers about 20 % of
calls with a fault: 10 % 503 without Retry-After (backoff), 5 % 429 with ``Retry-After: 1``,
5 % a dropped connection. A feeder thread keeps the queue from running dry through
``POST /jobs``. The pump runs with 8 loops.

It reports calls, jobs and errors by kind (from the pump's /metrics and the runner's
/jobs/stats), the pump's RSS and open descriptors after the warm-up and at the end, prints a
JSON summary and a table, and exits 1 when:

- the pump's RSS grew more than 10 % between the end of the warm-up and the end of the run;
- its open descriptors grew by more than its connection pool can explain (concurrency + 2);
- the calls do not add up: in /metrics (calls_total by outcome vs jobs_total, call_errors_total
  and the duration histogram's count), and between the pump's final counters (the
  ``pump_stopped`` line) and the runner's own count of the calls it received;
- the pump died, did not stop cleanly (exit 0) on SIGTERM, printed a traceback or the token.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port

ORG = "soak-org"
FAULTS = {"error_rate": 0.10, "rate_limit_rate": 0.05, "drop_rate": 0.05}  # ~20 % of calls
RSS_GROWTH_LIMIT = 0.10
LOW_WATER = 300  # feeder tops the queue up below this many queued jobs
BATCH = 500



@dataclass
class Sample:
    t_s: float
    rss_kb: int
    fds: int


@dataclass
class Feeder:
    url: str
    headers: dict[str, str]
    job_ms: int
    stop: threading.Event = field(default_factory=threading.Event)
    enqueued: int = 0
    ran_dry: int = 0
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        payload = {"duration_ms": self.job_ms, "fail_rate": 0.02}
        batch = {"jobs": [{"type": "soak", "payload": payload} for _ in range(BATCH)]}
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as http:
            while not self.stop.wait(0.2):
                try:
                    queued = http.get("/jobs/stats", params={"queue": "agent"}).json()["queued"]
                    if queued == 0:
                        self.ran_dry += 1
                    if queued < LOW_WATER:
                        answer = http.post("/jobs", json=batch)
                        answer.raise_for_status()
                        self.enqueued += len(answer.json()["jobs"])
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    if len(self.errors) > 50:
                        return


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) from /proc/<pid>/status and the open descriptor count."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def metrics(url: str) -> dict[str, Any]:
    """The pump's /metrics, summed into what the soak checks."""
    text = httpx.get(url + "/metrics", timeout=5).text
    calls: dict[str, float] = {}
    errors: dict[str, float] = {}
    jobs = 0.0
    histogram_count = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "queue_pump_calls_total":
                calls[s.labels["outcome"]] = calls.get(s.labels["outcome"], 0) + s.value
            elif s.name == "queue_pump_call_errors_total":
                key = f"{s.labels['kind']}:{s.labels['reason']}"
                errors[key] = errors.get(key, 0) + s.value
            elif s.name == "queue_pump_jobs_total":
                jobs += s.value
            elif s.name == "queue_pump_call_duration_seconds_count":
                histogram_count += s.value
    return {"calls": {k: int(v) for k, v in calls.items()},
            "calls_total": int(sum(calls.values())),
            "errors_by_kind": {k: int(v) for k, v in sorted(errors.items())},
            "errors_total": int(sum(errors.values())), "jobs_total": int(jobs),
            "histogram_count": int(histogram_count)}


def metrics_consistent(m: dict[str, Any]) -> list[str]:
    problems = []
    calls = m["calls"]
    if calls.get("processed", 0) != m["jobs_total"]:
        problems.append(f"metrics: calls_total{{processed}}={calls.get('processed', 0)} != "
                        f"jobs_total={m['jobs_total']}")
    if calls.get("error", 0) != m["errors_total"]:
        problems.append(f"metrics: calls_total{{error}}={calls.get('error', 0)} != "
                        f"call_errors_total={m['errors_total']}")
    if m["calls_total"] != m["histogram_count"]:
        problems.append(f"metrics: calls_total={m['calls_total']} != "
                        f"call_duration_seconds_count={m['histogram_count']}")
    return problems


def _drain(stream: Any, sink: list[str]) -> None:
    for line in stream:
        if len(sink) < 10_000:
            sink.append(line)


def start_runner(env: dict[str, str], db: str, job_ms: int) -> tuple[subprocess.Popen[str], str,
                                                                      list[str]]:
    args = [sys.executable, "-m", "queue_pump.reference_runner", "--port", "0", "--db", db,
            "--seed", "1", "--seed-jobs", "1000", "--seed-duration-ms", str(job_ms),
            "--error-rate", str(FAULTS["error_rate"]), "--error-status", "503",
            "--rate-limit-rate", str(FAULTS["rate_limit_rate"]),
            "--drop-rate", str(FAULTS["drop_rate"])]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"runner listening on (http://\S+)", line)
        if found:
            threading.Thread(target=_drain, args=(proc.stderr, lines), daemon=True).start()
            return proc, found.group(1), lines
    proc.kill()
    raise SystemExit(f"soak: the reference runner did not start: {''.join(lines)[-500:]}")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"soak: the pump exited with {proc.returncode} at start-up")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("soak: the pump's health endpoint never answered")


def run(duration_s: float, concurrency: int, warmup_s: float, tick_ms: int, job_ms: int,
        out_json: str | None, transport: str | None = None) -> int:
    token = "soak-" + secrets.token_urlsafe(16)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("QUEUE_PUMP_", "NOTIFY_"))}
    base_env.update({"AGENT_TOKEN": token, "ORGANIZATION_ID": ORG, "PYTHONUNBUFFERED": "1"})
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="queue-pump-soak-") as tmp:
        runner, runner_url, runner_err = start_runner(base_env, str(Path(tmp) / "runner.db"),
                                                      job_ms)
        headers = {"X-Agent-Token": token, "X-Organization-Id": ORG}
        feeder = Feeder(runner_url, headers, job_ms)
        feed_thread = threading.Thread(target=feeder.run, daemon=True)
        feed_thread.start()

        health_port = free_port()
        pump_env = {**base_env, "SUPABASE_URL": runner_url,
                    "QUEUE_PUMP_CONCURRENCY": str(concurrency),
                    "QUEUE_PUMP_TICK_SLEEP_MS": str(tick_ms), "QUEUE_PUMP_IDLE_SLEEP_MS": "500",
                    "QUEUE_PUMP_BACKOFF_BASE_MS": "50", "QUEUE_PUMP_BACKOFF_MAX_MS": "2000",
                    "QUEUE_PUMP_HTTP_TIMEOUT_MS": "30000", "QUEUE_PUMP_LOG_EVERY": "1000",
                    "QUEUE_PUMP_LOG_FORMAT": "json", "QUEUE_PUMP_HEALTH_PORT": str(health_port),
                    "QUEUE_PUMP_WORKER_ID": "soak-pump"}
        if transport:
            pump_env["QUEUE_PUMP_HTTP_TRANSPORT"] = transport
        health = f"http://127.0.0.1:{health_port}"
        log_path, err_path = Path(tmp) / "pump.log", Path(tmp) / "pump.err"
        started = time.monotonic()
        with open(log_path, "wb") as log_file, open(err_path, "wb") as err_file:
            pump = subprocess.Popen([sys.executable, "-m", "queue_pump"], env=pump_env,
                                    stdout=log_file, stderr=err_file)
        try:
            wait_healthy(health, pump)
            time.sleep(max(0.0, started + warmup_s - time.monotonic()))
            first = proc_status(pump.pid)
            first_metrics = metrics(health)
            samples = [Sample(round(time.monotonic() - started, 1), first["VmRSS"],
                              first["fds"])]
            end_at = started + warmup_s + duration_s
            while time.monotonic() < end_at and pump.poll() is None:
                time.sleep(min(5.0, max(0.0, end_at - time.monotonic())))
                if pump.poll() is None:
                    st = proc_status(pump.pid)
                    samples.append(Sample(round(time.monotonic() - started, 1), st["VmRSS"],
                                          st["fds"]))
            if pump.poll() is not None:
                problems.append(f"the pump died during the soak (exit {pump.returncode})")
                last = {"VmRSS": samples[-1].rss_kb, "VmHWM": 0, "fds": samples[-1].fds}
                last_metrics = first_metrics
            else:
                last = proc_status(pump.pid)
                last_metrics = metrics(health)
                pump.send_signal(signal.SIGTERM)
            code = pump.wait(timeout=60)
        finally:
            if pump.poll() is None:
                pump.kill()
                pump.wait()
            feeder.stop.set()
            feed_thread.join(timeout=15)
        stopped_at = time.monotonic()
        runner_stats = httpx.get(runner_url + "/jobs/stats", headers=headers, timeout=10).json()
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            runner.kill()
            problems.append("the reference runner did not stop within 60 s of SIGTERM")
        pump_out = log_path.read_text(errors="replace")
        pump_err = err_path.read_text(errors="replace")

    events = [json.loads(line) for line in pump_out.splitlines() if line.startswith("{")]
    stopped = next((e for e in events if e.get("event") == "pump_stopped"), {})
    failed_lines = sum(1 for e in events if e.get("event") == "call_failed")
    rc = runner_stats["calls"]

    if code != 0:
        problems.append(f"the pump exited {code} on SIGTERM, expected 0")
    if "Traceback" in pump_out or "Traceback" in pump_err:
        problems.append("the pump printed a traceback")
    if token in pump_out or token in pump_err:
        problems.append("the pump printed the token")
    if feeder.errors:
        problems.append(f"the feeder failed {len(feeder.errors)} times: {feeder.errors[0]}")
    growth = (last["VmRSS"] - first["VmRSS"]) / first["VmRSS"]
    if growth > RSS_GROWTH_LIMIT:
        problems.append(f"RSS grew {growth:.1%} ({first['VmRSS']} -> {last['VmRSS']} kB), "
                        f"limit {RSS_GROWTH_LIMIT:.0%}")
    fd_slack = concurrency + 2  # the connection pool may hold anywhere from 0 to this many
    if last["fds"] - first["fds"] > fd_slack:
        problems.append(f"open descriptors grew {first['fds']} -> {last['fds']} "
                        f"(more than the pool's {fd_slack})")
    for m in (first_metrics, last_metrics):
        problems += metrics_consistent(m)
    calls = {k: stopped.get(k) for k in ("calls", "processed", "idle", "errors")}
    if not stopped:
        problems.append("no pump_stopped line in the pump's log")
    else:
        if calls["calls"] != calls["processed"] + calls["idle"] + calls["errors"]:
            problems.append(f"pump: calls {calls['calls']} != processed+idle+errors "
                            f"{calls['processed']}+{calls['idle']}+{calls['errors']}")
        runner_errors = (rc["faulted"] + rc["unauthorized"] + rc["badRequest"]
                         + rc["shuttingDown"] + rc["internalError"])
        for name, ours, theirs in (("calls", calls["calls"], rc["total"]),
                                   ("processed", calls["processed"], rc["processed"]),
                                   ("idle", calls["idle"], rc["idle"]),
                                   ("errors", calls["errors"], runner_errors)):
            if ours != theirs:
                problems.append(f"{name}: the pump counted {ours}, the runner {theirs}")
        if failed_lines != calls["errors"]:
            problems.append(f"{failed_lines} call_failed lines for {calls['errors']} errors")

    wall = stopped_at - started
    summary = {
        "duration_s": duration_s, "warmup_s": warmup_s, "wall_s": round(wall, 1),
        "concurrency": concurrency, "tick_ms": tick_ms, "job_ms": job_ms,
        "transport": transport or "(the pump's default)",
        "faults": FAULTS, "pump_exit_code": code,
        "pump": calls, "pump_errors_by_kind_at_end": last_metrics["errors_by_kind"],
        "runner_calls": rc, "runner_jobs": {k: runner_stats.get(k) for k in
                                            ("queued", "running", "done", "failed", "total")},
        "jobs_enqueued_by_feeder": feeder.enqueued, "queue_ran_dry_polls": feeder.ran_dry,
        "calls_per_s_after_warmup": round(
            (last_metrics["calls_total"] - first_metrics["calls_total"]) / duration_s, 1),
        "rss_kb": {"start": first["VmRSS"], "end": last["VmRSS"], "peak_vmhwm": last["VmHWM"],
                   "growth_pct": round(growth * 100, 2)},
        "fds": {"start": first["fds"], "end": last["fds"]},
        "rss_samples_kb": [s.rss_kb for s in samples],
        "problems": problems, "ok": not problems,
    }
    print(json.dumps(summary, indent=2))
    print_table(summary)
    if out_json:
        Path(out_json).write_text(json.dumps(summary, indent=2) + "\n")
    if runner_err and any("Traceback" in line for line in runner_err):
        print("note: the reference runner logged a traceback (see above)", file=sys.stderr)
    return 0 if not problems else 1


def print_table(s: dict[str, Any]) -> None:
    p, rc = s["pump"], s["runner_calls"]
    kinds = ", ".join(f"{k} {v}" for k, v in s["pump_errors_by_kind_at_end"].items()) or "none"
    fk = rc["faultedByKind"]
    rows = [
        ("run", f"{s['duration_s']:g} s after {s['warmup_s']:g} s warm-up, concurrency "
                f"{s['concurrency']}, tick {s['tick_ms']} ms, jobs of {s['job_ms']} ms, "
                f"transport {s['transport']}"),
        ("pump calls", f"{p['calls']} = {p['processed']} processed + {p['idle']} idle + "
                       f"{p['errors']} errors ({s['calls_per_s_after_warmup']} calls/s)"),
        ("runner calls", f"{rc['total']} = {rc['processed']} processed + {rc['idle']} idle + "
                         f"{rc['faulted']} faulted (error {fk['error']}, 429 {fk['rateLimit']}, "
                         f"drop {fk['drop']}) + {rc['shuttingDown']} shutting down"),
        ("pump errors by kind", kinds + " (at the last /metrics scrape)"),
        ("jobs", f"{s['runner_jobs']['done']} done, {s['runner_jobs']['failed']} failed, "
                 f"{s['jobs_enqueued_by_feeder']} enqueued by the feeder, queue empty at "
                 f"{s['queue_ran_dry_polls']} polls"),
        ("RSS", f"{s['rss_kb']['start']} kB -> {s['rss_kb']['end']} kB "
                f"({s['rss_kb']['growth_pct']:+.2f} %), peak {s['rss_kb']['peak_vmhwm']} kB"),
        ("open descriptors", f"{s['fds']['start']} -> {s['fds']['end']}"),
        ("pump exit on SIGTERM", str(s["pump_exit_code"])),
        ("verdict", "OK" if s["ok"] else "FAILED: " + "; ".join(s["problems"])),
    ]
    print()
    for key, value in rows:
        print(f"  {key:<22} {value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=600.0,
                        help="measured time after the warm-up (default 600)")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="warm-up before the first RSS/fd reading (default: a tenth of "
                             "the duration, 5 to 60 s)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tick-ms", type=int, default=10, help="the pump's tick sleep")
    parser.add_argument("--job-ms", type=int, default=10, help="how long each job runs")
    parser.add_argument("--transport", choices=("httpx", "aiohttp"),
                        help="QUEUE_PUMP_HTTP_TRANSPORT of the pump (default: the pump's own)")
    parser.add_argument("--json", metavar="PATH", help="also write the JSON summary here")
    args = parser.parse_args(argv)
    if not 1 <= args.duration_s <= 86_400 or not 1 <= args.concurrency <= 256:
        parser.error("--duration-s must be 1..86400 and --concurrency 1..256")
    warmup = args.warmup_s if args.warmup_s is not None else max(5.0, min(60.0,
                                                                           args.duration_s / 10))
    return run(args.duration_s, args.concurrency, warmup, args.tick_ms, args.job_ms, args.json,
               args.transport)


if __name__ == "__main__":
    sys.exit(main())
