"""`queue-pump status` and `queue-pump healthcheck`: a client of the pump's health endpoint, on the
standard library alone (no event loop, no httpx). Imported only when asked for."""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import KNOBS_BY_ATTR, ConfigError, load_env
from .parsing import OneLineParser

# Where the pump's endpoint is, as the table declares it: its variables and their defaults.
HOST, PORT = KNOBS_BY_ATTR["health_host"], KNOBS_BY_ATTR["health_port"]


def _health_url(environ: Mapping[str, str]) -> str | None:
    # The pump reads ./.env too: a port set only there must be found here as well.
    with contextlib.suppress(ConfigError):
        environ = load_env(None, environ)
    host = environ.get(HOST.env) or HOST.default or ""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a wildcard bind is reached through loopback
    host = f"[{host}]" if ":" in host else host
    port = environ.get(PORT.env) or PORT.default or ""
    if port.strip() == "0":
        return None  # the endpoint is off: there is nothing to ask
    return f"http://{host}:{port}"


def fetch_health(base: str, timeout_s: float) -> tuple[int, dict[str, Any] | None]:
    """GET /healthz with the standard library: no curl in the image, no event loop needed.
    The body is None when the answer is not a queue-pump health document."""
    try:
        with urllib.request.urlopen(base.rstrip("/") + "/healthz", timeout=timeout_s) as resp:
            return int(resp.status), _pump_body(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, _pump_body(err.read())


def _pump_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if isinstance(body, dict) and "version" in body and "loops" in body:
        return body
    return None


def _bad_url(command: str, url: str) -> int | None:
    """One line for a --url that cannot be a health endpoint (urllib would say less)."""
    if url.startswith(("http://", "https://")):
        return None
    print(f"{command}: --url {url!r} has no http:// or https:// scheme; expected e.g. "
          "http://127.0.0.1:8080", file=sys.stderr)
    return 2


def _not_a_pump(command: str, url: str, status: int) -> int:
    print(f"{command}: {url} answered HTTP {status}, but not as a queue-pump health endpoint "
          f"(/healthz); is --url (or {PORT.env}) the pump's?", file=sys.stderr)
    return 1


def _url_parser(prog: str, description: str, environ: Mapping[str, str]) -> OneLineParser:
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--url", default=_health_url(environ),
                        help=f"the pump's health endpoint (default from {HOST.env}/"
                             f"{PORT.env}: %(default)s)")
    parser.add_argument("--timeout-s", type=float, default=3.0, help="default %(default)s")
    return parser


def _no_endpoint(command: str) -> int:
    print(f"{command}: the health endpoint is off ({PORT.env}=0); turn it on or "
          "pass --url", file=sys.stderr)
    return 1


def cmd_healthcheck(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = _url_parser("queue-pump healthcheck",
                       "Exit 0 when the pump at --url is healthy, 1 otherwise (for HEALTHCHECK).",
                       environ).parse_args(argv)
    if args.url is None:
        return _no_endpoint("queue-pump healthcheck")
    bad = _bad_url("queue-pump healthcheck", args.url)
    if bad is not None:
        return bad
    try:
        status, body = fetch_health(args.url, args.timeout_s)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {args.url} did not answer ({type(exc).__name__})", file=sys.stderr)
        return 1
    if body is None:
        return _not_a_pump("unhealthy", args.url, status)
    if status == 200:
        print(f"healthy: {body.get('state', '?')}")
        return 0
    stuck = [loop["name"] for loop in body.get("loops", []) if loop.get("stuck")]
    print(f"unhealthy: HTTP {status}" + (f", stuck loops: {', '.join(stuck)}" if stuck else ""),
          file=sys.stderr)
    for problem in body.get("problems", []):
        print(f"  {problem}", file=sys.stderr)
    return 1


def format_status(body: dict[str, Any], url: str) -> str:
    counters = body.get("counters", {})
    since = body.get("seconds_since_last_success")
    healthy = body.get("healthy", body.get("status") == "ok")
    lines = [
        f"queue-pump {body.get('version', '?')} at {url}: "
        f"{'healthy' if healthy else 'UNHEALTHY'}, {body.get('state', '?')}, "
        f"{'ready' if body.get('ready') else 'not ready'}",
        f"  worker {body.get('worker_id') or '?'}, runner {body.get('runner') or '?'}",
        *(f"  problem: {p}" for p in body.get("problems", [])),
        f"  uptime {_ago(body.get('uptime_s'))}, last success "
        + ("never" if since is None else f"{_ago(since)} ago")
        + f", {body.get('consecutive_failures', 0)} failures in a row, "
          f"{body.get('in_flight', 0)} in flight",
        f"  calls {counters.get('calls', 0)}: jobs processed {counters.get('processed', 0)}, "
        f"idle {counters.get('idle', 0)}, errors {counters.get('errors', 0)}",
    ]
    backlog = body.get("backlog") or {}
    if backlog:
        lines.append("  " + backlog_text(backlog))
    errors = body.get("errors") or {}
    if errors:
        lines.append("  errors by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(
            errors.items())))
    for loop in body.get("loops", []):
        flag = "  STUCK" if loop.get("stuck") else ""
        lines.append(f"  loop {loop['name']}: {loop['state']}"
                     f"{', in flight' if loop.get('in_flight') else ''}{flag}")
    return "\n".join(lines)


def backlog_text(backlog: dict[str, Any]) -> str:
    """The runner's backlog per queue, as its latest answer said (`status`, `top --pump`)."""
    return "backlog (jobs due): " + ", ".join(f"{queue} {n}" for queue, n in sorted(
        backlog.items()))


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def cmd_status(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = _url_parser("queue-pump status", "Show a running pump's health in a few lines.",
                       environ).parse_args(argv)
    if args.url is None:
        return _no_endpoint("queue-pump status")
    bad = _bad_url("queue-pump status", args.url)
    if bad is not None:
        return bad
    try:
        status, body = fetch_health(args.url, args.timeout_s)
    except (OSError, ValueError) as exc:
        print(f"queue-pump status: no pump answers at {args.url} ({type(exc).__name__}); is it "
              f"running, and is {PORT.env} the same?", file=sys.stderr)
        return 1
    if body is None:
        return _not_a_pump("queue-pump status", args.url, status)
    print(format_status(body, args.url))
    return 0 if status == 200 else 1
