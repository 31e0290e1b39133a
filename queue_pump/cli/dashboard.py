"""`queue-pump dashboard`: the queue and its pumps in a browser (queue_pump/dashboard/).

It reads the same .env as `queue-pump jobs` (and the admin token), and hands the web app a
backend made of the operator client and the health client: the browser talks to this process
only, so the admin token never reaches it. Loopback by default; any other address needs the
dashboard's password (the knob table). The web app and Jinja2 (the ``dashboard`` extra) are
imported here only, so the pump never loads them."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import ConfigError, env_of, is_loopback_host, load_env, some_from_mapping
from .parsing import OneLineParser, refusing_terminal_libraries

with refusing_terminal_libraries():  # httpx would load rich for its own command line
    from .operator_client import (
        EXIT_USAGE,
        OperatorClient,
        OperatorError,
        load_config,
        missing_config_hint,
    )

PROG = "queue-pump dashboard"
# Every open tab asks this often: not faster than a person reads, nor so slow it is not live.
MIN_REFRESH_S, MAX_REFRESH_S = 0.2, 3600.0
INSTALL = ("queue-pump dashboard needs its extra, which is not installed: pip install "
           "'queue-pump[dashboard]'")


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG, description="The queue and its pumps in a browser: counts, the last hour, "
                               "failures, jobs, one job's history; retry and cancel. Reads "
                               f".env as queue-pump jobs does ({env_of('admin_token')}).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default %(default)s; any other address "
                             f"needs {env_of('dashboard_password')})")
    parser.add_argument("--port", type=int, default=8765, help="default %(default)s")
    parser.add_argument("--pump", metavar="URL", action="append", default=[],
                        help="a pump's health endpoint, e.g. http://127.0.0.1:8080 (repeat "
                             "for several)")
    parser.add_argument("--refresh-s", type=float, default=2.0,
                        help="live refresh while the tab is visible (default %(default)s s)")
    parser.add_argument("--env-file", metavar="PATH", help="read this file instead of ./.env")
    return parser


class OperatorBackend:
    """The dashboard's Backend: the operator client (one per thread would be wasteful: httpx's
    client is safe to share) and the health client."""

    def __init__(self, client: OperatorClient) -> None:
        self._client = client

    def call(self, method: str, path: str = "", *, params: Mapping[str, Any] | None = None,
             body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from ..dashboard import ApiError

        try:
            return self._client.call(method, path, params=params, body=body)
        except OperatorError as exc:
            raise ApiError(exc.message, exc.status) from None

    def pump_health(self, url: str) -> dict[str, Any] | str:
        from .health_client import fetch_health

        try:
            status, body = fetch_health(url, 1.0)
        except (OSError, ValueError) as exc:
            return f"no pump answers at {url} ({type(exc).__name__})"
        return body if body is not None else f"{url} answered HTTP {status}, not as a pump"


def _settings(args: Any, environ: Mapping[str, str]) -> tuple[Any, str]:
    config = load_config(args.env_file, environ)
    password = some_from_mapping(load_env(args.env_file, environ),
                                 ("dashboard_password",))["dashboard_password"]
    return config, password


def _refusal(args: Any, password: str) -> str | None:
    if not 0 <= args.port <= 65535:
        return f"--port {args.port} is not a port; expected 0-65535"
    if not is_loopback_host(args.host) and not password:
        return (f"--host {args.host} is not loopback: set {env_of('dashboard_password')} "
                "(16+ characters) so the page asks for it, or keep the default 127.0.0.1")
    if not MIN_REFRESH_S <= args.refresh_s <= MAX_REFRESH_S:
        return (f"--refresh-s {args.refresh_s:g} is out of range; expected {MIN_REFRESH_S:g} "
                f"to {MAX_REFRESH_S:g} seconds")
    return None


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = _parser().parse_args(argv)
    try:
        import jinja2  # noqa: F401 - only to say how to get it, before anything else
    except ImportError:
        print(f"{PROG}: {INSTALL}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config, password = _settings(args, environ)
    except ConfigError as err:
        hint = missing_config_hint(err.problems)
        for problem in err.problems:
            print(f"{PROG}: config: {problem}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return EXIT_USAGE
    refused = _refusal(args, password)
    if refused:
        print(f"{PROG}: {refused}", file=sys.stderr)
        return EXIT_USAGE
    from ..dashboard import DashboardConfig

    dash = DashboardConfig(where=f"{config.organization_id} at {config.url}", password=password,
                           pumps=tuple(args.pump), refresh_s=args.refresh_s,
                           bound_loopback=is_loopback_host(args.host))
    with OperatorClient(config) as client:
        try:
            return asyncio.run(_serve(dash, OperatorBackend(client), args.host, args.port))
        except OSError as exc:
            print(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0


async def _serve(dash: Any, backend: OperatorBackend, host: str, port: int) -> int:
    from ..dashboard import start_dashboard

    served = await start_dashboard(dash, backend, host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{PROG}: serving {served.url}/ for {dash.where}"
          + (" (login required)" if dash.password else "") + "; Ctrl-C stops", flush=True)
    try:
        await stop.wait()
    finally:
        await served.close()
    return 0
