#!/usr/bin/env python3
"""Drive the reference runner for scripts/ci/deploy-checks.sh (standard library only).

    jobs.py URL enqueue N [--duration-ms MS]     queue N jobs of type "ci"
    jobs.py URL stats                            print /jobs/stats counts on one line
    jobs.py URL wait --done N [--running N] [--timeout S]
                                                 poll /jobs/stats until done >= N (and, with
                                                 --running, running >= that); exit 1 on
                                                 timeout, printing the last counts

AGENT_TOKEN and ORGANIZATION_ID come from the environment (never from the command line, where
ps would show them) and are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from typing import Any

KEYS = ("queued", "running", "done", "failed", "total")


def _request(url: str, body: Any = None) -> Any:
    headers = {
        "X-Agent-Token": os.environ["AGENT_TOKEN"],
        "X-Organization-Id": os.environ["ORGANIZATION_ID"],
        "Content-Type": "application/json",
    }
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers=headers, method="GET" if body is None else "POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def stats(base: str) -> dict[str, int]:
    body = _request(base.rstrip("/") + "/jobs/stats")
    return {k: int(body[k]) for k in KEYS}


def line(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={counts[k]}" for k in KEYS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    sub = parser.add_subparsers(dest="cmd", required=True)
    enq = sub.add_parser("enqueue")
    enq.add_argument("n", type=int)
    enq.add_argument("--duration-ms", type=int, default=10)
    sub.add_parser("stats")
    wait = sub.add_parser("wait")
    wait.add_argument("--done", type=int, required=True)
    wait.add_argument("--running", type=int, default=0)
    wait.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    if args.cmd == "enqueue":
        jobs = [{"type": "ci", "payload": {"duration_ms": args.duration_ms}} for _ in range(args.n)]
        _request(args.url.rstrip("/") + "/jobs", {"jobs": jobs})
        print(f"enqueued {args.n} job(s) of {args.duration_ms} ms: {line(stats(args.url))}")
        return 0
    if args.cmd == "stats":
        print(line(stats(args.url)))
        return 0
    deadline = time.monotonic() + args.timeout
    counts = stats(args.url)
    while counts["done"] < args.done or counts["running"] < args.running:
        if time.monotonic() > deadline:
            print(f"timed out after {args.timeout:.0f}s: {line(counts)}", file=sys.stderr)
            return 1
        time.sleep(0.2)
        counts = stats(args.url)
    print(line(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
