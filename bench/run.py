"""The benchmark harness: the pump as a real process against the stand-in runner (bench/runner.py).

Every figure is a median over rounds; within a round the variants run one after another in a
rotating order, so background load hits them alike. Results go to bench/results/*.json
(git-ignored); bench/report.py turns them into the tables and plots of docs/BENCHMARKS.md.

    .venv/bin/python bench/run.py capacity            # the stand-in runner is not the bottleneck
    .venv/bin/python bench/run.py throughput          # drain rate: C x job time x variant
    .venv/bin/python bench/run.py idle                # RSS and CPU while idle
    .venv/bin/python bench/run.py startup             # process start -> first call
    .venv/bin/python bench/run.py pickup              # enqueue -> claim on an idle queue
    .venv/bin/python bench/run.py modes               # fixed vs adaptive idle vs wake-ups
    .venv/bin/python bench/run.py profile             # cProfile of a drain: own-code share
    .venv/bin/python bench/run.py size                # installed size per transport choice
    .venv/bin/python bench/run.py all

Run it with the project's venv python: the pump and the bare Python loops run under the same
interpreter. Only 127.0.0.1 is contacted (size: PyPI, through pip). Every run is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (python bench/run.py): the repo's own packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.net import free_port
from tests.support.proc import wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PY = sys.executable
TOKEN = "bench-token-5f3a9c0d"  # long enough that the log redactor masks nothing else
TICKS = os.sysconf("SC_CLK_TCK")

TRANSPORTS = ("httpx", "aiohttp")
# variant -> the bare loop it is measured against (its floor)
FLOOR = {"pump-httpx": "bare-httpx", "pump-aiohttp": "bare-httpx-aiohttp"}


def log(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "node": _node_version(), "loadavg": load()}


def _node_version() -> str | None:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **data}
    path.write_text(json.dumps(data, indent=2))
    log("wrote", path)
    return path


# --- the stand-in runner ------------------------------------------------------------------


class Runner:
    def __init__(self, workers: int = 1, max_seconds: float = 3600) -> None:
        self.proc = subprocess.Popen(
            [PY, str(HERE / "runner.py"), "--port", "0", "--workers", str(workers),
             "--max-seconds", str(int(max_seconds))],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            self.close()
            raise RuntimeError(f"runner did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _req(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, method=method, data=b"" if method ==
                                         "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def reset(self, jobs: int, job_ms: float = 0) -> None:
        self._req("POST", f"/_bench/reset?jobs={jobs}&job_ms={job_ms}")

    def enqueue(self, jobs: int = 1) -> None:
        self._req("POST", f"/_bench/enqueue?jobs={jobs}")

    def stats(self) -> dict[str, Any]:
        return self._req("GET", "/_bench/stats")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def runner(workers: int = 1, max_seconds: float = 3600) -> Iterator[Runner]:
    r = Runner(workers, max_seconds)
    try:
        yield r
    finally:
        r.close()


# --- the things measured ---------------------------------------------------------------------


def pump_env(url: str, *, transport: str, concurrency: int = 1, tick_ms: int | None = 0,
             idle_ms: int | None = None, health_port: int = 0) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
           "LANG": "C.UTF-8", "SUPABASE_URL": url, "AGENT_TOKEN": TOKEN,
           "ORGANIZATION_ID": "bench-org", "QUEUE_PUMP_CONCURRENCY": str(concurrency),
           "QUEUE_PUMP_HTTP_TRANSPORT": transport, "QUEUE_PUMP_HEALTH_PORT": str(health_port)}
    if tick_ms is not None:
        env["QUEUE_PUMP_TICK_SLEEP_MS"] = str(tick_ms)
    if idle_ms is not None:
        env["QUEUE_PUMP_IDLE_SLEEP_MS"] = str(idle_ms)
    return env


BEFORE_PATH = ""  # --before-path: a copy of queue_pump/ to run as the "before-pump-*" variants


def command(variant: str, url: str, concurrency: int) -> tuple[list[str], dict[str, str] | None]:
    if variant.startswith("before-pump-"):
        argv, env = command(variant.removeprefix("before-"), url, concurrency)
        assert env is not None and BEFORE_PATH, "before-pump-* needs --before-path"
        env["PYTHONPATH"] = BEFORE_PATH
        return argv, env
    if variant.startswith("pump-"):
        transport = variant.removeprefix("pump-")
        return ([PY, "-m", "queue_pump", "--drain"],
                pump_env(url, transport=transport, concurrency=concurrency))
    if variant == "node":
        return (["node", str(HERE / "node_loop.mjs"), url, str(concurrency)], None)
    client = variant.removeprefix("bare-")
    return ([PY, str(HERE / "bare.py"), "--url", url, "--client", client, "--concurrency",
             str(concurrency)], None)


@dataclass
class Drain:
    rate: float  # claims per second at the runner, first claim -> last claim
    processed: int
    seconds: float  # wall time of the whole process, start-up included
    cpu_s: float  # user+system CPU of the process (start-up included)
    rc: int


def drain_once(r: Runner, variant: str, concurrency: int, job_ms: float, jobs: int,
               timeout_s: float) -> Drain:
    r.reset(jobs, job_ms)
    argv, env = command(variant, r.url, concurrency)
    with tempfile.TemporaryDirectory() as cwd, tempfile.TemporaryFile() as errors:
        started = time.monotonic()  # cwd: no stray .env is read
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=errors)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            # Wait for the exit without reaping, so the timer can never signal a reused pid;
            # then reap with wait4 for the child's CPU time.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        finally:
            timer.cancel()
            timer.join()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        errors.seek(0)
        err = errors.read().decode(errors="replace")
    s = r.stats()
    processed = int(s["processed"])
    span = s["last_claim"] - s["first_claim"]
    rate = (processed - 1) / span if processed > 1 and span > 0 else 0.0
    if proc.returncode != 0 or processed != jobs:
        log(f"  ! {variant} C={concurrency} job={job_ms}ms rc={proc.returncode} "
            f"processed={processed}/{jobs} {err.strip()[-300:]}")
    return Drain(rate, processed, seconds, usage.ru_utime + usage.ru_stime, proc.returncode)


def cmd_throughput(args: argparse.Namespace) -> None:
    global BEFORE_PATH
    BEFORE_PATH = getattr(args, "before_path", "") or ""
    variants = args.variants.split(",")
    if "node" in variants and not _node_version():
        variants.remove("node")
    scenarios = [(c, j) for j in args.job_ms for c in args.concurrency]
    results: dict[str, Any] = {"target_s": args.target_s, "rounds": args.rounds, "runs": []}
    estimate: dict[tuple[str, int, float], float] = {}
    with runner(args.workers) as r:
        for c, j in scenarios:
            limit = c * 1000 / j if j else None
            log(f"scenario C={c} job={j}ms limit={limit}")
            order = list(variants)
            for rnd in range(-1, args.rounds):  # round -1 calibrates the job count
                for variant in order:
                    key = (variant, c, j)
                    if rnd < 0:
                        jobs = int(min(limit * 0.5, 1000)) if limit else 1000
                    else:
                        jobs = int(estimate[key] * args.target_s)
                    jobs = max(jobs, 10 * c, 50)
                    jobs = min(jobs, args.max_jobs)
                    timeout = max(60.0, 5 * args.target_s + 30)
                    d = drain_once(r, variant, c, j, jobs, timeout)
                    if rnd < 0:
                        estimate[key] = max(d.rate, 1.0)
                        continue
                    estimate[key] = max(d.rate, 1.0)
                    results["runs"].append({"variant": variant, "concurrency": c, "job_ms": j,
                                            "round": rnd, "jobs": jobs, "rate": d.rate,
                                            "processed": d.processed, "rc": d.rc,
                                            "wall_s": d.seconds, "cpu_s": d.cpu_s,
                                            "load1": load()[0]})
                    log(f"  r{rnd} {variant:<20} jobs={jobs:<6} {d.rate:9.1f}/s "
                        f"cpu={d.cpu_s:.2f}s load={load()[0]}")
                order = order[1:] + order[:1]  # rotate: nobody always goes first
    results["summary"] = summarize(results["runs"])
    save(args.name, results)
    print_summary(results["summary"])


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["concurrency"], run["job_ms"]), []).append(run)
    rows = []
    for (variant, c, j), group in groups.items():
        ok = [g for g in group if g["rc"] == 0 and g["processed"] == g["jobs"]]
        rates = [g["rate"] for g in ok]
        rows.append({"variant": variant, "concurrency": c, "job_ms": j,
                     "limit": c * 1000 / j if j else None,
                     "median": median(rates), "min": min(rates) if rates else None,
                     "max": max(rates) if rates else None, "n": len(rates),
                     "failed": len(group) - len(ok),
                     "load1_median": median([g["load1"] for g in group])})
    by_key = {(row["variant"], row["concurrency"], row["job_ms"]): row for row in rows}
    for row in rows:
        floor = by_key.get((FLOOR.get(row["variant"], ""), row["concurrency"], row["job_ms"]))
        if floor and floor["median"] and row["median"]:
            row["vs_floor"] = row["median"] / floor["median"]
        if row["limit"] and row["median"]:
            row["vs_limit"] = row["median"] / row["limit"]
    return rows


def print_summary(rows: list[dict[str, Any]]) -> None:
    for row in sorted(rows, key=lambda r: (r["job_ms"], r["concurrency"], r["variant"])):
        extra = ""
        if "vs_floor" in row:
            extra += f" {row['vs_floor']:.2f}x floor"
        if "vs_limit" in row:
            extra += f" {100 * row['vs_limit']:.0f}% of limit"
        print(f"C={row['concurrency']:<3} job={row['job_ms']:<3}ms {row['variant']:<20} "
              f"{row['median'] or 0:9.1f}/s (n={row['n']}, failed={row['failed']}){extra}")


def cmd_capacity(args: argparse.Namespace) -> None:
    """The stand-in runner against the fastest client there is, and the aiohttp loop."""
    ns = argparse.Namespace(**{**vars(args), "variants": "bare-raw,bare-aiohttp",
                               "name": "capacity"})
    cmd_throughput(ns)


# --- idle, start-up, pickup ------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def proc_sched_s(pid: int) -> float:
    """CPU time of every live thread, in ns from /proc/<pid>/task/*/schedstat: /proc/<pid>/stat
    counts in clock ticks (10 ms), too coarse for an idle pump's few milliseconds a minute."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[key] = int(value.split()[0])
    return out


def first_idle_answer(r: Runner, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the pump's first idle call; a pump that died or never called is an error, not a
    result of 0 calls or 0 CPU."""
    if not met(lambda: r.stats()["idle"] >= 1 or proc.poll() is not None, 30):
        raise RuntimeError("the pump made no call within 30 s")
    if proc.poll() is not None:
        raise RuntimeError(f"the pump exited {proc.returncode} before its first idle call")


def met(predicate: Any, timeout_s: float, step_s: float = 0.01) -> bool:
    """Whether ``predicate()`` came to hold within ``timeout_s`` (the suite's wait_until)."""
    try:
        wait_until(predicate, timeout_s, step_s)
    except TimeoutError:
        return False
    return True


@contextlib.contextmanager
def pump_forever(env: dict[str, str], cwd: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([PY, "-m", "queue_pump"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def scrape_calls(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("queue_pump_calls_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def idle_one(transport: str, health: bool, warmup_s: float, seconds: float,
             result: dict[str, Any]) -> None:
    with runner(max_seconds=warmup_s + seconds + 120) as r, \
            tempfile.TemporaryDirectory() as cwd:
        r.reset(0)
        port = free_port() if health else 0
        env = pump_env(r.url, transport=transport, tick_ms=None, health_port=port)
        with pump_forever(env, cwd) as proc:
            first_idle_answer(r, proc)
            time.sleep(warmup_s)
            cpu0, t0, calls0 = proc_cpu_s(proc.pid), time.monotonic(), r.stats()["idle"]
            sched0 = proc_sched_s(proc.pid)
            time.sleep(seconds)
            cpu1, t1, calls1 = proc_cpu_s(proc.pid), time.monotonic(), r.stats()["idle"]
            sched1 = proc_sched_s(proc.pid)
            status = proc_status(proc.pid)
            metrics_calls = scrape_calls(port) if health else None
        elapsed = t1 - t0
        cpu = cpu1 - cpu0
        sched = sched1 - sched0
        result.update({"transport": transport, "health": health, "window_s": elapsed,
                       "stat_cpu_s": cpu, "cpu_s": sched, "cpu_s_per_hour": sched / elapsed * 3600,
                       "cpu_percent": 100 * sched / elapsed, "rss_kb": status.get("VmRSS"),
                       "rss_anon_kb": status.get("RssAnon"), "rss_file_kb": status.get("RssFile"),
                       "hwm_kb": status.get("VmHWM"), "threads": status.get("Threads"),
                       "idle_calls": calls1 - calls0,
                       "calls_per_hour": (calls1 - calls0) / elapsed * 3600,
                       "metrics_calls_total": metrics_calls, "load1": load()[0]})


def cmd_idle(args: argparse.Namespace) -> None:
    """Idle pumps side by side (they barely run): default idle sleep, health on and off."""
    configs = [(t, h) for t in TRANSPORTS for h in (True, False)]
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        threads, outs = [], []
        for transport, health in configs:
            out: dict[str, Any] = {"round": rnd}
            outs.append(out)
            thread = threading.Thread(target=idle_one, args=(transport, health, args.warmup_s,
                                                              args.seconds, out))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(args.warmup_s + args.seconds + 200)
        for out in outs:
            log(f"  idle {out.get('transport')} health={out.get('health')} "
                f"cpu={out.get('cpu_s', 0):.4f}s/{out.get('window_s', 0):.0f}s "
                f"({out.get('cpu_percent', 0):.4f}%) rss={out.get('rss_kb')} kB")
        runs += outs
    save("idle", {"warmup_s": args.warmup_s, "seconds": args.seconds, "runs": runs})


def cmd_startup(args: argparse.Namespace) -> None:
    runs = []
    with runner() as r, tempfile.TemporaryDirectory() as cwd:
        for rnd in range(args.rounds):
            for transport in (TRANSPORTS if rnd % 2 == 0 else TRANSPORTS[::-1]):
                r.reset(0)
                env = pump_env(r.url, transport=transport, tick_ms=None)
                started = time.time()
                with pump_forever(env, cwd) as proc:
                    seen = met(lambda: r.stats()["first_request"] > 0, 20, 0.002)
                    first = r.stats()["first_request"]
                    time.sleep(0.3)
                    status = proc_status(proc.pid)
                run = {"transport": transport, "round": rnd,
                       "to_first_call_s": first - started if seen else None,
                       "rss_kb_after_first_call": status.get("VmRSS"), "load1": load()[0]}
                runs.append(run)
                log(f"  startup {transport}: {run['to_first_call_s']}")
    save("startup", {"runs": runs})


def pickup_one(idle_ms: int, samples: int, transport: str, seed: int,
               result: dict[str, Any]) -> None:
    rng = random.Random(seed)
    idle_s = idle_ms / 1000
    with runner(max_seconds=samples * (idle_s * 3 + 10) + 120) as r, \
            tempfile.TemporaryDirectory() as cwd:
        r.reset(0)
        env = pump_env(r.url, transport=transport, tick_ms=None, idle_ms=idle_ms)
        with pump_forever(env, cwd) as proc:
            first_idle_answer(r, proc)
            t0, s0 = time.monotonic(), r.stats()
            latencies = []
            for _ in range(samples):
                # A random moment in the pump's idle cycle: arrivals do not know its phase.
                # At least one whole cycle after the last claim, so the pump is idling again
                # (right after a claim it calls again at tick pace and would catch it at once).
                time.sleep(rng.uniform(idle_s + 0.5, 2 * idle_s + 0.5))
                before = int(r.stats()["pickups"])
                r.enqueue(1)
                if not met(lambda b=before: int(r.stats()["pickups"]) > b,
                                  idle_s * 1.5 + 10, 0.05):
                    continue
                latencies.append(r.stats()["last_pickup"])
            t1, s1 = time.monotonic(), r.stats()
    elapsed = t1 - t0
    idle_calls = s1["idle"] - s0["idle"]
    result.update({"idle_ms": idle_ms, "transport": transport, "latencies_s": latencies,
                   "mean_s": statistics.fmean(latencies) if latencies else None,
                   "median_s": median(latencies), "max_s": max(latencies, default=None),
                   "window_s": elapsed, "idle_calls": idle_calls,
                   "all_calls": s1["requests"] - s0["requests"],
                   "measured_calls_per_hour": (s1["requests"] - s0["requests"]) / elapsed * 3600,
                   "computed_idle_calls_per_hour": 3600 / idle_s})


def cmd_pickup(args: argparse.Namespace) -> None:
    threads, outs = [], []
    for i, idle_ms in enumerate(args.idle_ms):
        samples = args.samples or max(6, min(20, int(60 / (idle_ms / 1000))))
        out: dict[str, Any] = {}
        outs.append(out)
        thread = threading.Thread(target=pickup_one,
                                  args=(idle_ms, samples, args.transport, 1000 + i, out))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(3600)
    for out in outs:
        log(f"  pickup idle={out.get('idle_ms')}ms mean={out.get('mean_s')} "
            f"n={len(out.get('latencies_s', []))}")
    save("pickup", {"transport": args.transport, "runs": outs})


# --- idle modes: fixed polling vs adaptive idle vs wake-ups (issue 8's figures) -------------

WAKE_TOKEN = "bench-wake-token-8c41e2a9"
# mode -> (idle sleep ms, idle max sleep ms, wake after each enqueue)
MODES = {"fixed-10s": (10000, 10000, False), "adaptive-1-60s": (1000, 60000, False),
         "adaptive-1-60s+wake": (1000, 60000, True)}


def wake(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/wake", method="POST", data=b"",
                                     headers={"Authorization": f"Bearer {WAKE_TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def modes_one(mode: str, quiet_s: float, samples: int, gap_s: tuple[float, float], seed: int,
              transport: str, result: dict[str, Any], warmup_s: float = 0.0) -> None:
    """One pump in `mode` against its own stand-in runner: first a quiet window (no work at all:
    idle calls per hour), then `samples` single jobs, each after a random gap, enqueued the way a
    database insert would be (and, in a wake mode, followed by the webhook's POST /wake)."""
    idle_ms, max_ms, wakes = MODES[mode]
    rng = random.Random(seed)
    bound = warmup_s + quiet_s + samples * (gap_s[1] + 70) + 120
    with runner(max_seconds=bound) as r, tempfile.TemporaryDirectory() as cwd:
        r.reset(0)
        port = free_port()
        env = pump_env(r.url, transport=transport, tick_ms=None, idle_ms=idle_ms,
                       health_port=port)
        env["QUEUE_PUMP_IDLE_MAX_SLEEP_MS"] = str(max_ms)
        if wakes:
            env["QUEUE_PUMP_WAKE_TOKEN"] = WAKE_TOKEN
        with pump_forever(env, cwd) as proc:
            first_idle_answer(r, proc)
            time.sleep(warmup_s)  # past the adaptive ramp: the steady idle rate
            t0, s0 = time.monotonic(), r.stats()
            time.sleep(quiet_s)
            t1, s1 = time.monotonic(), r.stats()
            latencies = []
            for _ in range(samples):
                time.sleep(rng.uniform(*gap_s))
                before = int(r.stats()["pickups"])
                r.enqueue(1)
                if wakes:
                    wake(port)
                # The runner times enqueue -> claim itself: polling its stats faster buys nothing.
                if met(lambda b=before: int(r.stats()["pickups"]) > b, max_ms / 1000 * 1.5
                              + 10, 0.05):
                    latencies.append(r.stats()["last_pickup"])
            t2, s2 = time.monotonic(), r.stats()
    result.update({
        "mode": mode, "idle_ms": idle_ms, "idle_max_ms": max_ms, "wake": wakes,
        "warmup_s": warmup_s,
        "quiet_window_s": t1 - t0, "quiet_calls": s1["requests"] - s0["requests"],
        "quiet_calls_per_hour": (s1["requests"] - s0["requests"]) / (t1 - t0) * 3600,
        "busy_window_s": t2 - t1, "busy_calls": s2["requests"] - s1["requests"],
        "busy_calls_per_hour": (s2["requests"] - s1["requests"]) / (t2 - t1) * 3600
        if samples else None,
        "latencies_s": latencies, "samples": samples})


def cmd_modes(args: argparse.Namespace) -> None:
    """Every mode x --pumps pumps at once (idle pumps barely run, so they do not disturb each
    other); about quiet_s + samples x mean gap of wall time in all."""
    threads, outs = [], []
    for mode in args.modes.split(","):
        for i in range(args.pumps):
            out: dict[str, Any] = {"pump": i}
            outs.append(out)
            thread = threading.Thread(target=modes_one, args=(
                mode, args.quiet_s, args.samples, (args.gap_min_s, args.gap_max_s),
                zlib.crc32(f"{mode}/{i}".encode()), args.transport, out, args.warmup_s))
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join(args.warmup_s + args.quiet_s + args.samples * (args.gap_max_s + 70) + 300)
    for out in outs:
        lat = out.get("latencies_s", [])
        busy = out.get("busy_calls_per_hour")
        log(f"  {out.get('mode')} #{out.get('pump')}: quiet "
            f"{out.get('quiet_calls_per_hour', 0):.0f} calls/h, with jobs "
            f"{'-' if busy is None else f'{busy:.0f}'} calls/h, pickup "
            f"median {median(lat)} over {len(lat)}")
    save(args.name, {"transport": args.transport, "quiet_s": args.quiet_s,
                     "warmup_s": args.warmup_s, "gap_s": [args.gap_min_s, args.gap_max_s],
                     "runs": outs})


# --- where a call's time goes ---------------------------------------------------------------


PROFILED = """
import cProfile, pstats, sys
from queue_pump.cli import main
profiler = cProfile.Profile()
code = profiler.runcall(main, ["run", "--drain"])
profiler.dump_stats(sys.argv[1])
sys.exit(code)
"""


def cmd_profile(args: argparse.Namespace) -> None:
    """The pump under cProfile draining an instant runner at concurrency 1: the functions with
    the most own time, and the share spent in queue_pump's own code (the rest is the event loop,
    the HTTP stack and the kernel). cProfile slows every call, so read shares, not rates."""
    import pstats

    with runner() as r, tempfile.TemporaryDirectory() as cwd:
        r.reset(args.jobs, 0)
        out = Path(cwd) / "pump.prof"
        env = pump_env(r.url, transport=args.transport)
        subprocess.run([PY, "-c", PROFILED, str(out)], env=env, cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, timeout=600)
        processed = int(r.stats()["processed"])
        stats = pstats.Stats(str(out))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())
    package = str(ROOT / "queue_pump") + os.sep
    ours = sum(v[2] for k, v in entries.items() if k[0].startswith(package))
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[: args.top]
    top = [{"function": f"{Path(k[0]).parent.name}/{Path(k[0]).name}:{k[1]}:{k[2]}",
            "calls": v[1], "own_s": v[2], "share": v[2] / total} for k, v in rows]
    print(f"{processed} jobs, {total:.2f} s of own time profiled; queue_pump/* code: "
          f"{ours:.2f} s ({100 * ours / total:.1f} %), {1e6 * ours / max(processed, 1):.0f} µs "
          f"per job (profiled)")
    for row in top:
        print(f"  {100 * row['share']:5.1f} %  {row['calls']:>8}  {row['function']}")
    save("profile", {"transport": args.transport, "jobs": processed, "total_own_s": total,
                     "queue_pump_own_s": ours, "top": top})


# --- installed size --------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            pins[name.strip().lower()] = rest.split()[0].rstrip("\\").strip(" ;")
    return pins


def _du_kb(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def cmd_size(args: argparse.Namespace) -> None:
    """Fresh venvs: the base runtime dependencies, then with aiohttp + httpx-aiohttp added."""
    pins = _pins()
    base = ["httpx", "tenacity", "python-dotenv", "structlog", "prometheus-client"]
    extra = ["aiohttp", "httpx-aiohttp"]
    out: dict[str, Any] = {"pins": {n: pins.get(n) for n in base + extra}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, names in (("empty", []), ("httpx", base), ("aiohttp", base + extra)):
            venv = Path(tmp) / label
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            if names:
                specs = [f"{n}=={pins[n]}" if n in pins else n for n in names]
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                                "--disable-pip-version-check", *specs], check=True, timeout=600)
            site = next((venv / "lib").glob("python3*/site-packages"))
            frozen = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True,
                                    text=True, check=True).stdout.split()
            out[label] = {"site_packages_kb": _du_kb(site), "packages": frozen}
            log(f"  size {label}: {out[label]['site_packages_kb']} kB, {len(frozen)} packages")
    for label in ("httpx", "aiohttp"):
        out[label]["deps_kb"] = out[label]["site_packages_kb"] - out["empty"]["site_packages_kb"]
    save("size", out)


def main(argv: list[str] | None = None) -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where the JSON results go (default: bench/results)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",")]

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    t = sub.add_parser("throughput", help="drain rate per variant, concurrency and job time")
    t.add_argument("--variants", default="pump-httpx,pump-aiohttp,bare-httpx,"
                   "bare-httpx-aiohttp,bare-aiohttp,node")
    t.add_argument("--concurrency", type=ints, default=[1, 16, 64])
    t.add_argument("--job-ms", type=floats, default=[0.0, 20.0])
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--target-s", type=float, default=2.0, help="aimed length of one drain")
    t.add_argument("--max-jobs", type=int, default=40000)
    t.add_argument("--workers", type=int, default=1, help="stand-in runner processes")
    t.add_argument("--name", default="throughput")
    t.add_argument("--before-path", default="",
                   help="a directory holding an older queue_pump/ package: variants "
                        "before-pump-httpx and before-pump-aiohttp run it (PYTHONPATH)")
    c = sub.add_parser("capacity", help="the stand-in runner with the fastest clients")
    c.add_argument("--concurrency", type=ints, default=[1, 16, 64])
    c.add_argument("--job-ms", type=floats, default=[0.0, 20.0])
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--target-s", type=float, default=2.0)
    c.add_argument("--max-jobs", type=int, default=80000)
    c.add_argument("--workers", type=int, default=1)
    i = sub.add_parser("idle", help="RSS and CPU while idle at the default idle sleep")
    i.add_argument("--seconds", type=float, default=120.0)
    i.add_argument("--warmup-s", type=float, default=15.0)
    i.add_argument("--rounds", type=int, default=1)
    s = sub.add_parser("startup", help="process start -> first call")
    s.add_argument("--rounds", type=int, default=9)
    p = sub.add_parser("pickup", help="enqueue -> claim on an idle queue")
    p.add_argument("--idle-ms", type=ints, default=[1000, 5000, 10000, 30000])
    p.add_argument("--samples", type=int, default=0, help="per setting; 0: 6-20 by idle time")
    p.add_argument("--transport", default="aiohttp", choices=TRANSPORTS)
    m = sub.add_parser("modes", help="fixed 10 s vs adaptive 1-60 s vs wake-ups: idle calls per "
                       "hour and pickup latency")
    m.add_argument("--modes", default=",".join(MODES))
    m.add_argument("--pumps", type=int, default=3, help="pumps per mode, side by side")
    m.add_argument("--warmup-s", type=float, default=0.0,
                   help="idle time before the quiet window (70: past the 1-60 s ramp)")
    m.add_argument("--quiet-s", type=float, default=300.0, help="no work: idle calls per hour")
    m.add_argument("--name", default="modes")
    m.add_argument("--samples", type=int, default=5, help="single jobs per pump after the quiet")
    m.add_argument("--gap-min-s", type=float, default=30.0)
    m.add_argument("--gap-max-s", type=float, default=120.0)
    m.add_argument("--transport", default="aiohttp", choices=TRANSPORTS)
    f = sub.add_parser("profile", help="cProfile of a drain at concurrency 1: where time goes")
    f.add_argument("--jobs", type=int, default=5000)
    f.add_argument("--top", type=int, default=15)
    f.add_argument("--transport", default="aiohttp", choices=TRANSPORTS)
    sub.add_parser("size", help="installed size of the dependencies per transport choice")
    sub.add_parser("all", help="everything above with the defaults")
    args = parser.parse_args(argv)

    RESULTS = args.results
    log("machine", machine())
    if args.cmd == "all":
        for name in ("capacity", "throughput", "startup", "idle", "pickup", "modes", "profile",
                     "size"):
            main(["--results", str(RESULTS), name])
        return 0
    handler = {"throughput": cmd_throughput, "capacity": cmd_capacity, "idle": cmd_idle,
               "startup": cmd_startup, "pickup": cmd_pickup, "modes": cmd_modes,
               "profile": cmd_profile,
               "size": cmd_size}[args.cmd]
    handler(args)
    log("load", load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
