"""The entry: which command was asked for, and its handler, imported only then, so each command
pays only for what it uses (`--help` and `config` never load the event loop or httpx)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from .run import cmd_config, cmd_run

COMMANDS = ("run", "runner", "demo", "status", "healthcheck", "config", "jobs", "top",
            "dashboard")


def _cmd_runner(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    from ..config import env_of
    from ..reference_runner import cli as runner_cli
    from .parsing import OneLineParser

    parser = OneLineParser(prog="queue-pump runner",
                           description="The reference job runner: the runner contract over real "
                                       f"HTTP, jobs in SQLite. Needs {env_of('agent_token')} and "
                                       f"{env_of('organization_id')}.")
    runner_cli.add_arguments(parser)
    return runner_cli.main(parser.parse_args(argv), environ)


def _cmd_demo(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv, environ)


def _cmd_status(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    from .health_client import cmd_status

    return cmd_status(argv, environ)


def _cmd_healthcheck(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    from .health_client import cmd_healthcheck

    return cmd_healthcheck(argv, environ)


def _cmd_jobs(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    from .jobs import main as jobs_main

    return jobs_main(argv, environ)


def _cmd_top(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    from .top import main as top_main

    return top_main(argv, environ)


def _cmd_dashboard(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    from .dashboard import main as dashboard_main

    return dashboard_main(argv, environ)


HANDLERS: dict[str, Callable[[Sequence[str], Mapping[str, str]], int]] = {
    "run": cmd_run,
    "config": cmd_config,
    "runner": _cmd_runner,
    "demo": _cmd_demo,
    "status": _cmd_status,
    "healthcheck": _cmd_healthcheck,
    "jobs": _cmd_jobs,
    "top": _cmd_top,
    "dashboard": _cmd_dashboard,
}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    command = argv[0] if argv and argv[0] in COMMANDS else "run"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        return HANDLERS[command](rest, environ)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers are installed (during start-up): no traceback.
        return 128 + signal.SIGINT
