"""``python -m queue_pump.reference_runner enqueue``: put jobs into a running reference runner.

It reads the same .env as the runner and the pump, so trying the pump locally needs no token
copied into a shell: runner, enqueue, pump, in one directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .cli import UsageError, add_env_file_argument, with_env_file

PROG = "python -m queue_pump.reference_runner enqueue"
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_COUNT = 10_000  # what POST /jobs takes in one request


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Enqueue jobs into a running reference runner (POST /jobs), with "
                               "AGENT_TOKEN and ORGANIZATION_ID from the environment or .env.")
    parser.add_argument("type", nargs="?", default="demo", help="job type (default demo)")
    parser.add_argument("--count", type=int, default=1, help="how many jobs (default 1)")
    parser.add_argument("--payload", default='{"duration_ms": 100}',
                        help="the jobs' JSON payload (default %(default)s)")
    parser.add_argument("--queue", default="agent", help="queue (default agent)")
    parser.add_argument("--wait-s", type=float, default=5.0,
                        help="how long to retry while nothing listens yet, e.g. a runner just "
                             "started in the background (default %(default)s)")
    parser.add_argument("--url", default=None,
                        help=f"the runner (default SUPABASE_URL, else {DEFAULT_URL})")
    add_env_file_argument(parser)
    return parser


def _request(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, Any]:
    if not 1 <= args.count <= MAX_COUNT:
        raise UsageError(f"--count must be between 1 and {MAX_COUNT}, got {args.count}")
    try:
        payload = json.loads(args.payload)
    except ValueError:
        raise UsageError(f"--payload must be a JSON object, got {args.payload!r}") from None
    if not isinstance(payload, dict):
        raise UsageError(f"--payload must be a JSON object, got {args.payload!r}")
    for var in ("AGENT_TOKEN", "ORGANIZATION_ID"):
        if not environ.get(var, "").strip():
            raise UsageError(f"{var} is not set (the same value the runner was started with)")
    url = (args.url or environ.get("SUPABASE_URL") or DEFAULT_URL).rstrip("/")
    job = {"type": args.type, "payload": payload, "queue": args.queue}
    return url, {"jobs": [job] * args.count}


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """0 when the jobs were taken, 2 on bad arguments, 1 when the runner says no or is away."""
    args = build_parser().parse_args(argv)
    try:
        environ = with_env_file(args.env_file, environ)
        url, body = _request(args, environ)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    headers = {"X-Agent-Token": environ["AGENT_TOKEN"],
               "X-Organization-Id": environ["ORGANIZATION_ID"]}
    try:
        resp = _post(url + "/jobs", body, headers, args.wait_s)
    except httpx.HTTPError as exc:
        print(f"{PROG}: no runner answers at {url} ({type(exc).__name__}); is "
              "`queue-pump runner` running there?", file=sys.stderr)
        return 1
    if resp.status_code not in (200, 201):
        hint = (" (the runner was started with another AGENT_TOKEN or ORGANIZATION_ID)"
                if resp.status_code == 401 else "")
        print(f"{PROG}: {url}/jobs answered {resp.status_code}: {_error(resp)}{hint}",
              file=sys.stderr)
        return 1
    jobs = resp.json().get("jobs", [])
    ids = [job["id"] for job in jobs]
    print(f"enqueued {len(jobs)} {args.type} job(s) in queue {args.queue} at {url}"
          + (f": ids {ids[0]}..{ids[-1]}" if ids else ""))
    return 0


def _post(url: str, body: Any, headers: dict[str, str], wait_s: float) -> httpx.Response:
    """POST once; while the connection is refused, try again every 0.2 s for ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return httpx.post(url, json=body, headers=headers, timeout=10.0)
        except httpx.ConnectError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _error(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error"))[:300]
    except ValueError:
        return resp.text[:300]
