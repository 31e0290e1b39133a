"""Figures for the issue 13 rows of docs/RELIABILITY.md: hostile runners and neighbours against
the real pump process, on this checkout or on another one (``--code DIR``, a directory that
holds a ``queue_pump`` package, e.g. an export of an older commit), so before and after are
measured the same way. One JSON object per scenario on stdout.

    .venv/bin/python -m bench.hostile                      # every scenario, this checkout
    .venv/bin/python -m bench.hostile --code /tmp/qp-before bomb herd
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from tests.support.proc import Live, pump_env
from tests.support.runner_double import IDLE, JOB, Reply, free_port, runner_double

CODE: str | None = None


def launch(url: str, nofile: int | None = None, **extra: str) -> Live:
    env = pump_env(url, **extra)
    if CODE:
        env["PYTHONPATH"] = CODE

    def limits() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([sys.executable, "-m", "queue_pump"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limits,
                            cwd="/tmp")
    return Live(proc)


def status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def stop(pump: Live, timeout_s: float = 60) -> dict[str, Any]:
    t0 = time.monotonic()
    pump.proc.send_signal(signal.SIGTERM)
    try:
        code = pump.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pump.proc.kill()
        code = pump.proc.wait()
    time.sleep(0.2)
    err = "".join(pump.err)
    return {"exit": code, "stop_s": round(time.monotonic() - t0, 2),
            "tracebacks": err.count("Traceback"), "stdout_bytes": sum(map(len, pump.lines))}


def wait_event(pump: Live, name: str, timeout_s: float) -> dict[str, Any] | None:
    try:
        return pump.wait_event(name, timeout_s=timeout_s)
    except (TimeoutError, AssertionError):
        return None


def bomb_payload(mib: int, layers: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(1024 * 1024)
    data = b"".join(packer.compress(zero) for _ in range(mib)) + packer.flush()
    for _ in range(layers - 1):
        data = gzip.compress(data, 9)
    return data


def bomb(transport: str, encoding: str) -> dict[str, Any]:
    payload = bomb_payload(1024, encoding.count("gzip"))
    reply = Reply(raw=payload, headers={"Content-Encoding": encoding})
    with runner_double(lambda _i: reply) as double:
        pump = launch(double.url, QUEUE_PUMP_HTTP_TRANSPORT=transport,
                      QUEUE_PUMP_HTTP_TIMEOUT_MS="3000", QUEUE_PUMP_BACKOFF_BASE_MS="60000",
                      QUEUE_PUMP_BACKOFF_MAX_MS="60000")
        t0 = time.monotonic()
        failed = wait_event(pump, "call_failed", 120)
        answer_s = time.monotonic() - t0
        peak = status(pump.proc.pid, "VmHWM")
        end = stop(pump)
    return {"scenario": f"bomb {encoding} 1 GiB over {transport}", "wire_bytes": len(payload),
            "reason": failed and f"{failed['kind']}: {failed['reason']}",
            "to_call_failed_s": round(answer_s, 2), "peak_rss_mib": round(peak / 1024, 1), **end}


def flood(transport: str) -> dict[str, Any]:
    reply = Reply(ext_chunks=131_072)  # 1 GiB of extensions around 128 kB of body
    with runner_double(lambda _i: reply) as double:
        pump = launch(double.url, QUEUE_PUMP_HTTP_TRANSPORT=transport,
                      QUEUE_PUMP_BACKOFF_BASE_MS="60000", QUEUE_PUMP_BACKOFF_MAX_MS="60000")
        double.wait_for(1)
        t0 = time.monotonic()
        failed = wait_event(pump, "call_failed", 120)
        took = time.monotonic() - t0
        cpu = _cpu_s(pump.proc.pid)
        end = stop(pump)
        sent = double.seen[0].sent_bytes
    return {"scenario": f"chunk-extension flood over {transport}",
            "reason": failed and f"{failed['kind']}: {failed['reason']}",
            "wire_mib_sent_before_hang_up": round(sent / 2**20, 1),
            "to_call_failed_s": round(took, 2), "pump_cpu_s": cpu, **end}


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


class _Trickle:
    def __init__(self, port: int, count: int, every_s: float) -> None:
        self.port, self.count, self.opened, self.every_s = port, count, 0, every_s
        self.socks: list[socket.socket | None] = [None] * count
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            for i, sock in enumerate(self.socks):
                try:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
                        self.opened += 1
                    sock.send(b"G")
                    self.socks[i] = sock
                except OSError:
                    if sock is not None:
                        sock.close()
                    self.socks[i] = None
            self.stop.wait(self.every_s)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def _probe(url: str) -> float | str:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
            return round(time.monotonic() - t0, 3)
    except Exception as exc:
        return type(exc).__name__


def health_flood(nofile: int, connections: int, every_s: float = 2.0) -> dict[str, Any]:
    port = free_port()
    with runner_double(lambda _i: IDLE) as double:
        pump = launch(double.url, nofile=nofile, QUEUE_PUMP_HEALTH_PORT=str(port),
                      QUEUE_PUMP_IDLE_SLEEP_MS="100", QUEUE_PUMP_CONCURRENCY="2")
        double.wait_for(2)
        threads_before = status(pump.proc.pid, "Threads")
        trickle = _Trickle(port, connections, every_s)
        trickle.thread.start()
        deadline = time.monotonic() + 30
        while trickle.opened < connections and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        calls0, t0 = len(double.seen), time.monotonic()
        probes = [_probe(f"http://127.0.0.1:{port}/healthz") for _ in range(5)]
        time.sleep(max(0.0, 10.0 - (time.monotonic() - t0)))
        calls = len(double.seen) - calls0
        window = time.monotonic() - t0
        threads = status(pump.proc.pid, "Threads")
        fds = len(os.listdir(f"/proc/{pump.proc.pid}/fd"))
        cpu = _cpu_s(pump.proc.pid)
        trickle.close()
        end = stop(pump)
    return {"scenario": f"{connections} connections, a byte each every {every_s:g} s, "
                        f"RLIMIT_NOFILE {nofile}",
            "healthz_s_or_error": probes, "runner_calls_per_s": round(calls / window, 1),
            "threads_before_during": [threads_before, threads], "fds": fds, "pump_cpu_s": cpu,
            **end}


def herd(loops: int, retry_after: str | None) -> dict[str, Any]:
    headers = {"Retry-After": retry_after} if retry_after else {}
    with runner_double(lambda _i: Reply(503, {"error": "down"}, headers=headers)) as double:
        pump = launch(double.url, QUEUE_PUMP_CONCURRENCY=str(loops))
        double.wait_for(1)
        first = double.seen[0].at
        time.sleep(max(0.0, first + 15.0 - time.monotonic()))
        times = [s.at - first for s in double.seen if s.at - first < 15.0]
        end = stop(pump)
    in5 = [t for t in times if t < 5.0]
    busiest = max(sum(1 for t in times if a <= t < a + 0.1) for a in times)
    late = [t for t in times if t >= 1.0]
    busiest_late = max((sum(1 for t in late if a <= t < a + 0.1) for a in late), default=0)
    return {"scenario": f"{loops} loops, 503" + (f" Retry-After {retry_after}" if retry_after
                                                  else ""),
            "calls_first_5_s": len(in5), "calls_15_s": len(times),
            "calls_per_s_after_first_s": round(len(late) / 14.0, 1),
            "most_calls_in_100ms": busiest, "most_calls_in_100ms_after_first_s": busiest_late,
            **end}


def wakes(kind: str) -> dict[str, Any]:
    port = free_port()
    token = "w" * 24
    with runner_double(lambda _i: IDLE) as double:
        pump = launch(double.url, QUEUE_PUMP_CONCURRENCY="4", QUEUE_PUMP_IDLE_SLEEP_MS="60000",
                      QUEUE_PUMP_HEALTH_PORT=str(port), QUEUE_PUMP_WAKE_TOKEN=token)
        double.wait_for(4)
        time.sleep(0.5)
        before, t0 = len(double.seen), time.monotonic()
        if kind == "signal":
            for _ in range(1000):  # ~1,000 a second
                os.kill(pump.proc.pid, signal.SIGUSR1)
                time.sleep(0.001)
        else:
            for _ in range(100):  # 100 a second
                request = urllib.request.Request(f"http://127.0.0.1:{port}/wake", method="POST",
                                                 data=b"", headers={"Authorization":
                                                                    f"Bearer {token}"})
                urllib.request.urlopen(request, timeout=5).read()
                time.sleep(max(0.0, 0.01 - 0.001))
        took = time.monotonic() - t0
        calls = len(double.seen) - before
        end = stop(pump)
    what = "1,000 SIGUSR1" if kind == "signal" else "100 POST /wake"
    return {"scenario": f"{what} in {took:.2f} s, 4 loops", "calls": calls,
            "calls_per_s": round(calls / took, 1), **end}


def huge_fields() -> dict[str, Any]:
    body = json.dumps({"processed": True, "jobId": "j", "jobType": "t" * 900_000,
                       "status": "done", "yielded": True}).encode()
    nonfinite = b'{"processed": true, "jobId": 1e999999, "jobType": NaN, "status": "done"}'
    out: dict[str, Any] = {"scenario": "900 kB jobType, yielded; then jobId 1e999999, NaN"}
    with runner_double(lambda _i: Reply(raw=body)) as double:
        pump = launch(double.url, QUEUE_PUMP_TICK_SLEEP_MS="0")
        double.wait_for(1)
        time.sleep(5.0)
        out["stdout_mb_in_5_s"] = round(sum(map(len, pump.lines)) / 1e6, 1)
        stop(pump)
    with runner_double(lambda _i: Reply(raw=nonfinite)) as double:
        pump = launch(double.url, QUEUE_PUMP_LOG_EVERY="1", QUEUE_PUMP_TICK_SLEEP_MS="100")
        double.wait_for(5)
        stop(pump)

    def strict(line: str) -> bool:
        try:
            json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            return True
        except ValueError:
            return False

    out["lines_not_json"] = sum(1 for line in pump.lines if not strict(line))
    out["lines"] = len(pump.lines)
    return out


def short_token() -> dict[str, Any]:
    with runner_double(lambda _i: Reply(500, {"error": "e"})) as double:
        pump = launch(double.url, AGENT_TOKEN="e")
        time.sleep(1.5)
        end = stop(pump)
    text = "".join(pump.lines)
    return {"scenario": "AGENT_TOKEN=e", "garbled_lines": text.count("***"),
            "stderr": "".join(pump.err).strip()[:160], **end}


def signals(sig: signal.Signals) -> dict[str, Any]:
    with runner_double(lambda _i: Reply(body=JOB.body, delay_s=1.0)) as double:
        pump = launch(double.url)
        double.wait_for(1)
        pump.proc.send_signal(sig)
        try:
            code: int | str = pump.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            code = "still running after 3 s"
            stop(pump)
        time.sleep(0.2)
        answered = double.seen[0].answered
    return {"scenario": f"{sig.name} during a 1 s call", "exit": code,
            "call_completed": answered,
            "pump_stopped": any('"pump_stopped"' in line for line in pump.lines)}


def redirect() -> dict[str, Any]:
    with runner_double(lambda _i: Reply(302, raw=b"", headers={"Location": "http://[::1/x"})
                       ) as double:
        pump = launch(double.url)
        failed = wait_event(pump, "call_failed", 10)
        end = stop(pump)
    return {"scenario": "302 Location: http://[::1/x",
            "logged": failed and f"{failed['kind']}: {failed['reason']}",
            "next_delay_s": failed and failed["next_delay_s"], **end}


SCENARIOS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "bomb": lambda: [bomb(t, e) for e in ("gzip, gzip", "gzip") for t in ("aiohttp", "httpx")],
    "flood": lambda: [flood(t) for t in ("aiohttp", "httpx")],
    "health": lambda: [health_flood(1024, 1100), health_flood(1024, 200)],
    "health256": lambda: [health_flood(256, 400), health_flood(256, 400, every_s=0.5)],
    "herd": lambda: [herd(256, None), herd(256, "5")],
    "wakes": lambda: [wakes("signal"), wakes("http")],
    "fields": lambda: [huge_fields()],
    "token": lambda: [short_token()],
    "signals": lambda: [signals(s) for s in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2)],
    "redirect": lambda: [redirect()],
}


def main(argv: Sequence[str] | None = None) -> int:
    global CODE
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", help="directory holding the queue_pump package to run")
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS], default=[])
    args = parser.parse_args(argv)
    CODE = os.path.abspath(args.code) if args.code else os.getcwd()
    for name in args.scenarios or list(SCENARIOS):
        for result in SCENARIOS[name]():
            print(json.dumps({"code": args.code or "this checkout", **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
