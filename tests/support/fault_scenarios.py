"""The fault matrix: each way a runner can fail, played against the real pump process.

One scenario: the pump starts against a runner (the loopback double, a bound port that refuses
connections, or a name that does not resolve) that fails in one way. For a fixed window after the
first failed call the fault stays on; then it clears (the double answers idle, the port starts
listening) and the time to the next successful call is measured. Before the pump is stopped with
SIGTERM its /healthz, /metrics and peak memory (VmHWM) are read.

``check()`` turns a result into a list of broken promises; tests/process/test_faults.py asserts
it is empty, bench/fault_matrix.py prints the figures as a table. Both run the same code.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

from queue_pump.config.settings import KNOBS_BY_ENV
from queue_pump.loop.backoff import RETRY_AFTER_SPREAD

from . import net
from .env import TOKEN
from .net import free_port
from .proc import pump_env, start
from .runner_double import IDLE, Reply, RunnerDouble

WINDOW_S = 2.5  # how long each fault stays on, from the first failed call
BASE_MS = 50  # QUEUE_PUMP_BACKOFF_BASE_MS
MAX_MS = 500  # QUEUE_PUMP_BACKOFF_MAX_MS
TIMEOUT_MS = 1000  # QUEUE_PUMP_HTTP_TIMEOUT_MS (its minimum)
RETRY_AFTER_S = 1  # what the 429/503 scenarios ask for, above MAX_MS on purpose
# Recovery may take one max-backoff (plus whatever the fault itself holds the call for); this is
# what the process, the loopback and a busy 2-core box may add on top.
RECOVERY_SLACK_S = 0.75
# The pump idles at ~35 MiB; one 64 MiB answer buffered would take it past 100 MiB.
PEAK_LIMIT_KB = 80 * 1024
# The chance that a correct pump makes more calls than the backoff bound says.
BOUND_PROBABILITY = 1e-6
GAP_TOLERANCE_S = 0.05  # clock/thread jitter allowed when checking gaps against logged delays
ECHO = {"error": f"bad X-Agent-Token {TOKEN}"}  # a runner that echoes the token back

BASE_S, MAX_S, TIMEOUT_S = BASE_MS / 1000, MAX_MS / 1000, TIMEOUT_MS / 1000
# The default run measures the pump's default transport; -m slow the other one too.
TRANSPORTS = KNOBS_BY_ENV["QUEUE_PUMP_HTTP_TRANSPORT"].choices
DEFAULT_TRANSPORT = str(KNOBS_BY_ENV["QUEUE_PUMP_HTTP_TRANSPORT"].default)
OTHER_TRANSPORT = next(t for t in TRANSPORTS if t != DEFAULT_TRANSPORT)


def _http_date(seconds_from_now: int) -> str:
    # Whole seconds: the wait is then between seconds_from_now - 1 and seconds_from_now.
    return formatdate(math.floor(time.time()) + seconds_from_now, usegmt=True)


@dataclass(frozen=True)
class Fault:
    name: str
    answer: Callable[[], Reply] | None  # the double's answer to every call; None: socket fault
    reason: str  # the call_failed reason the pump must give
    status: int | None = None
    pacing: str = "backoff"  # backoff | cap | retry_after | timeout: what spaces the calls
    min_wait_s: float = 0.0  # retry_after: the least wait the header asks for
    max_wait_s: float = 0.0  # retry_after: the most
    target: str = "double"  # double | refused | dns
    echoes_token: bool = False  # the error body carries the token: the log must mask it

    @property
    def kind(self) -> str:
        return "configuration" if self.pacing == "cap" else "retryable"


FAULTS: tuple[Fault, ...] = (
    Fault("500", lambda: Reply(500, ECHO), "http_status", 500, echoes_token=True),
    Fault("502 HTML body", lambda: Reply(
        502, raw=f"<html><body><h1>502 Bad Gateway</h1>{TOKEN}</body></html>".encode(),
        headers={"Content-Type": "text/html"}), "http_status", 502),
    Fault("503 Retry-After seconds", lambda: Reply(
        503, ECHO, headers={"Retry-After": str(RETRY_AFTER_S)}), "http_status", 503,
        "retry_after", RETRY_AFTER_S, RETRY_AFTER_S, echoes_token=True),
    Fault("503 Retry-After HTTP date", lambda: Reply(
        503, ECHO, headers={"Retry-After": _http_date(2)}), "http_status", 503,
        "retry_after", 0.9, 2.0, echoes_token=True),
    Fault("429 Retry-After seconds", lambda: Reply(
        429, ECHO, headers={"Retry-After": str(RETRY_AFTER_S)}), "http_status", 429,
        "retry_after", RETRY_AFTER_S, RETRY_AFTER_S, echoes_token=True),
    Fault("429 Retry-After HTTP date", lambda: Reply(
        429, ECHO, headers={"Retry-After": _http_date(2)}), "http_status", 429,
        "retry_after", 0.9, 2.0, echoes_token=True),
    Fault("401", lambda: Reply(401, ECHO), "http_status", 401, "cap", echoes_token=True),
    Fault("403", lambda: Reply(403, ECHO), "http_status", 403, "cap", echoes_token=True),
    Fault("404", lambda: Reply(404, {"error": "not found"}), "http_status", 404, "cap"),
    Fault("connection refused", None, "connect", target="refused"),
    Fault("DNS failure", None, "dns", target="dns"),
    Fault("dropped before the answer", lambda: Reply(drop=True), "network"),
    Fault("partial body", lambda: Reply(body={"processed": True, "jobId": 1}, partial=True),
          "network"),
    Fault("invalid JSON", lambda: Reply(raw=b'{"processed": tru'), "bad_json", 200),
    Fault("JSON not an object", lambda: Reply(body=[{"processed": True}]), "not_object", 200),
    Fault("64 MiB body", lambda: Reply(stream_bytes=64 * 1024 * 1024), "too_large"),
    Fault("answer never comes", lambda: Reply(delay_s=TIMEOUT_S + 2.0), "timeout",
          pacing="timeout"),
)
FAULTS_BY_NAME = {f.name: f for f in FAULTS}


# --- the promised bounds ---------------------------------------------------------------------
def _log_p_sum_at_most(window_s: float, caps: list[float]) -> float:
    """Chernoff: log P(U1 + ... + Un <= window) for independent Ui ~ uniform(0, cap_i)."""
    best = 0.0
    for k in range(1, 400):
        lam = 10 ** (k / 40 - 2)
        log_p = lam * window_s
        for cap in caps:
            x = lam * cap
            log_p += math.log(-math.expm1(-x) / x)
        best = min(best, log_p)
    return best


def backoff_bound(window_s: float, base_s: float, max_s: float,
                  probability: float = BOUND_PROBABILITY) -> int:
    """Most calls a full-jitter pump makes in ``window_s``, except with ``probability``.

    N calls in the window need their first N-1 waits (uniform in [0, min(max, base*2^(i-1))]) to
    fit in it; the smallest N whose chance of that is below ``probability`` bounds the calls.
    """
    caps: list[float] = []
    while True:
        caps.append(min(max_s, base_s * 2 ** len(caps)))
        if _log_p_sum_at_most(window_s, caps) <= math.log(probability):
            return len(caps)
        if len(caps) > 10_000:
            raise ValueError("no bound: base/max too small for the window")


def calls_bound(fault: Fault) -> int:
    if fault.pacing == "backoff":
        return backoff_bound(WINDOW_S, BASE_S, MAX_S)
    least_gap = {"cap": MAX_S, "retry_after": fault.min_wait_s, "timeout": TIMEOUT_S}[
        fault.pacing] - GAP_TOLERANCE_S
    return math.floor(WINDOW_S / least_gap) + 1


def recovery_bound_s(fault: Fault) -> float | None:
    if fault.target == "dns":
        return None  # the name never resolves: there is nothing to recover to
    held = {"retry_after": fault.max_wait_s * (1 + RETRY_AFTER_SPREAD),
            "timeout": TIMEOUT_S}.get(fault.pacing, 0.0)
    return max(MAX_S, held) + (MAX_S if fault.pacing == "timeout" else 0.0) + RECOVERY_SLACK_S


# --- running one scenario --------------------------------------------------------------------
class _PortTaken(Exception):
    pass


@dataclass
class Result:
    fault: Fault
    call_times: list[float]  # when each failed call reached the runner (or was logged)
    window_start: float
    calls_in_window: int
    bound: int
    recovery_s: float | None
    recovery_bound_s: float | None
    peak_kb: int
    alive_after_window: bool
    exit_code: int
    stdout: str
    stderr: str
    events: list[tuple[float, dict[str, Any]]]
    health: list[str] = field(default_factory=list)  # /healthz and /metrics bodies read

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e.get("event") == name]

    @property
    def metrics_errors(self) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for text in self.health for line in
                   text.splitlines() if line.startswith("queue_pump_call_errors_total{"))


def _reader(stream: Any, lines: list[tuple[float, str]]) -> None:
    for line in stream:
        lines.append((time.monotonic(), line))


def _wait(cond: Callable[[], bool], proc: subprocess.Popen[str], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(0.01)
    return cond()


def peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def run_fault(fault: Fault, *, untraced: bool = False, **env: str) -> Result:
    """One scenario; ``env`` overrides the pump's settings (to show the checks can fail).
    ``untraced``: the pump runs outside coverage measurement, when the suite is measured."""
    for _ in range(3):
        try:
            return _run_once(fault, env, untraced)
        except _PortTaken:
            continue  # another process took the health port between the pick and the bind
    raise RuntimeError(f"{fault.name}: the health port was taken three times")


def _run_once(fault: Fault, overrides: dict[str, str], untraced: bool) -> Result:
    ok_at: list[float] = []
    answer = fault.answer

    def ok(_: int) -> Reply:
        if not ok_at:
            ok_at.append(time.monotonic())
        return IDLE

    def failing(_: int) -> Reply:
        assert answer is not None
        return answer()

    double = RunnerDouble(ok if fault.target == "refused" else failing,
                          listen=fault.target != "refused")
    with double.running():
        url = "https://runner.invalid" if fault.target == "dns" else double.url
        port = free_port()
        env = pump_env(url, **{"QUEUE_PUMP_BACKOFF_BASE_MS": str(BASE_MS),
                               "QUEUE_PUMP_BACKOFF_MAX_MS": str(MAX_MS),
                               "QUEUE_PUMP_HTTP_TIMEOUT_MS": str(TIMEOUT_MS),
                               "QUEUE_PUMP_IDLE_SLEEP_MS": "60000",
                               "QUEUE_PUMP_HEALTH_PORT": str(port), **overrides})
        if untraced:  # coverage starts in a child that inherits these (patch = subprocess)
            for name in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"):
                env.pop(name, None)
        proc = start(env)
        out: list[tuple[float, str]] = []
        err: list[tuple[float, str]] = []
        readers = [threading.Thread(target=_reader, args=(s, sink), daemon=True)
                   for s, sink in ((proc.stdout, out), (proc.stderr, err))]
        for reader in readers:
            reader.start()
        try:
            def failed_times() -> list[float]:
                return [t for t, line in list(out) if '"event": "call_failed"' in line]

            if not _wait(lambda: bool(failed_times()), proc, 20):
                proc.wait(timeout=5)
                for reader in readers:
                    reader.join(timeout=5)
                text = "".join(line for _, line in err)
                if proc.returncode == 2 and "cannot be bound" in text:
                    raise _PortTaken
                raise AssertionError(f"{fault.name}: no failed call; exit {proc.returncode}, "
                                     f"stderr {text[-500:]!r}")
            t0 = double.seen[0].at if fault.target == "double" else failed_times()[0]
            time.sleep(max(0.0, t0 + WINDOW_S - time.monotonic()))
            # The fault holds until a second failed call, however busy the machine: "it kept
            # trying" must not hinge on a Retry-After wait fitting the window to the millisecond.
            _wait(lambda: len(double.seen if fault.target == "double" else failed_times()) > 1,
                  proc, 20)
            alive = proc.poll() is None
            health = [net.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
                      for path in ("/healthz", "/metrics")] if alive else []
            cleared = time.monotonic()
            if fault.target == "double":
                double.script = ok
            elif fault.target == "refused":
                double.listen()
            bound_s = recovery_bound_s(fault)
            recovery = None
            if bound_s is not None and _wait(lambda: bool(ok_at), proc, bound_s + 5):
                recovery = ok_at[0] - cleared
                _wait(lambda: any('"event": "recovered"' in line for _, line in list(out)),
                      proc, 5)
            if proc.poll() is None:
                health += [net.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
                           for path in ("/healthz", "/metrics")]
            peak = peak_kb(proc.pid) if proc.poll() is None else 0
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(timeout=5)

    if fault.target == "double":
        times = [s.at for s in double.seen if s.at < cleared]
    else:
        times = failed_times()
    events = []
    for t, line in out:
        if line.startswith("{"):
            events.append((t, json.loads(line)))
    return Result(
        fault=fault, call_times=times, window_start=t0,
        calls_in_window=sum(1 for t in times if t0 <= t <= t0 + WINDOW_S),
        bound=calls_bound(fault), recovery_s=recovery, recovery_bound_s=recovery_bound_s(fault),
        peak_kb=peak, alive_after_window=alive, exit_code=code,
        stdout="".join(line for _, line in out), stderr="".join(line for _, line in err),
        events=events, health=health)


def run_matrix(faults: Iterable[Fault], jobs: int = 4, **env: str) -> dict[str, Future[Result]]:
    """Start every scenario on a pool of ``jobs`` threads; each pump is its own process."""
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="fault")
    futures = {f.name: pool.submit(run_fault, f, **env) for f in faults}
    pool.shutdown(wait=False)
    return futures


# --- what must hold ----------------------------------------------------------------------------
def check(r: Result, *, timed: bool = True) -> list[str]:
    """Every broken promise in one result, one line each; empty means the pump behaved.

    ``timed=False`` (the tests) leaves out the one wall-clock bound across processes, the
    recovery time: a busy machine can stretch it, and the promise behind it is checked from the
    log instead (every announced delay is within the pacing rule). bench/fault_matrix.py keeps
    it. Every other check is an upper bound on calls or a lower bound on gaps, which load can
    only make easier to meet."""
    f = r.fault
    problems = []
    if not r.alive_after_window:
        problems.append("the pump died during the fault")
    if r.exit_code != 0:
        problems.append(f"exit code {r.exit_code} on SIGTERM, expected 0")
    if r.calls_in_window > r.bound:
        problems.append(f"{r.calls_in_window} calls in {WINDOW_S} s, bound {r.bound}")
    if len(r.call_times) < 2:
        problems.append(f"only {len(r.call_times)} failed call(s): it stopped trying")
    if r.recovery_bound_s is not None and r.recovery_s is None:
        problems.append("no successful call after the fault cleared")
    elif timed and r.recovery_bound_s is not None and r.recovery_s is not None \
            and r.recovery_s > r.recovery_bound_s:
        problems.append(f"recovery took {r.recovery_s} s, bound {r.recovery_bound_s} s")
    if not 0 < r.peak_kb <= PEAK_LIMIT_KB:
        problems.append(f"peak memory {r.peak_kb} kB, limit {PEAK_LIMIT_KB} kB")

    # The streak in the log: one call_failed line per failed call, numbered, no traceback.
    failed = r.named("call_failed")
    if len(failed) < len(r.call_times) - 1 or not failed:  # the last may be logged after SIGTERM
        problems.append(f"{len(failed)} call_failed lines for {len(r.call_times)} failed calls")
    if [e.get("attempt") for e in failed] != list(range(1, len(failed) + 1)):
        problems.append("call_failed attempts are not 1, 2, 3, ...")
    for e in failed:
        wanted = {"kind": f.kind, "reason": f.reason}
        if f.status is not None:
            wanted["status"] = f.status
        if any(e.get(k) != v for k, v in wanted.items()):
            problems.append(f"call_failed {e} does not say {wanted}")
            break
        if {"exc_info", "exception", "stack"} & e.keys():
            problems.append("a call_failed line carries a traceback")
            break
        delay, attempt = e.get("next_delay_s"), e.get("attempt", 1)
        if not _delay_ok(f, attempt, delay, e.get("retry_after_s")):
            problems.append(f"attempt {attempt}: next_delay_s={delay} breaks the {f.pacing} rule")
            break
    if f.echoes_token and not all("***" in e.get("detail", "") for e in failed):
        problems.append("the runner's echoed token is not masked as *** in detail")
    # The gaps between calls are at least the waits the log announced.
    if f.target == "double":
        for (i, e), gap in zip(enumerate(failed), _gaps(r.call_times), strict=False):
            if e.get("next_delay_s") is not None and gap < e["next_delay_s"] - GAP_TOLERANCE_S:
                problems.append(f"call {i + 2} came {gap:.3f} s after call {i + 1}, the log "
                                f"promised {e['next_delay_s']} s")
                break
    if r.recovery_bound_s is not None:
        recovered = r.named("recovered")
        if not recovered or recovered[0].get("after_failures") != len(failed):
            problems.append(f"recovered {recovered} does not count {len(failed)} failures")
    if "Traceback" in r.stdout or "Traceback" in r.stderr:
        problems.append("a traceback was printed")
    if r.stderr.strip():
        problems.append(f"stderr is not empty: {r.stderr[:300]!r}")
    for where, text in (("stdout", r.stdout), ("stderr", r.stderr),
                        *(("/healthz or /metrics", h) for h in r.health)):
        if TOKEN in text:
            problems.append(f"the token appears in {where}")
    if len(r.health) < 2:
        problems.append("/healthz and /metrics were not read")
    elif r.metrics_errors < 1:
        problems.append("/metrics counted no call errors")
    return problems


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def _delay_ok(f: Fault, attempt: int, delay: Any, retry_after: Any) -> bool:
    if not isinstance(delay, int | float):
        return False
    if f.pacing == "cap":
        return math.isclose(delay, MAX_S, abs_tol=0.001)
    if f.pacing == "retry_after":
        return (isinstance(retry_after, int | float)
                and retry_after - 0.001 <= delay <= retry_after * (1 + RETRY_AFTER_SPREAD) + 0.001
                and f.min_wait_s - 0.001 <= delay)
    return 0 <= delay <= min(MAX_S, BASE_S * 2 ** min(attempt - 1, 60)) + 0.001


def table(results: Iterable[Result]) -> str:
    """The markdown fault matrix of docs/RELIABILITY.md."""
    rows = ["| fault | pump's reason | calls in the 2.5 s window (bound) | recovery after the "
            "fault clears (bound) | peak RSS (VmHWM) | verdict |",
            "|---|---|---|---|---|---|"]
    for r in results:
        rec = ("n/a (name never resolves)" if r.recovery_bound_s is None else
               f"{r.recovery_s:.2f} s (≤ {r.recovery_bound_s:.2f} s)" if r.recovery_s is not None
               else f"none (≤ {r.recovery_bound_s:.2f} s)")
        reason = r.fault.reason + (f" {r.fault.status}" if r.fault.status else "")
        problems = check(r)
        rows.append(f"| {r.fault.name} | {r.fault.kind}: {reason} | {r.calls_in_window} "
                    f"(≤ {r.bound}) | {rec} | {r.peak_kb / 1024:.1f} MiB | "
                    f"{'ok' if not problems else 'FAIL: ' + '; '.join(problems)} |")
    return "\n".join(rows)
