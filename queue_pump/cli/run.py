"""`queue-pump run` and `queue-pump config`: the settings from the environment, .env and flags
(one flag per knob), checked once, then handed to the wiring (app.serve). No policy here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config import (
    KNOBS,
    PREFIX,
    ConfigError,
    Kind,
    Settings,
    describe_knobs,
    env_example,
    env_of,
    from_mapping,
    load_env,
    missing_env_note,
)
from ..exits import Mode
from .parsing import OneLineParser, print_problems, refusing_terminal_libraries

if TYPE_CHECKING:
    from ..schedules import Schedule

_EXIT_CODES = """exit codes:
  0    clean stop, or --once/--drain finished
  1    --once/--drain: a call failed or --drain gave up; or a loop died of a bug
  2    bad configuration or bad arguments (one line per problem on stderr)
  3    the shutdown grace ran out and calls in flight were cancelled
  130  a second SIGINT; 143 a second SIGTERM: exit at once"""


def _flag(env: str) -> str:
    name = env.removeprefix(PREFIX).lower().replace("_", "-")
    return f"--{name}"


def _help_width() -> int:
    import shutil

    return min(shutil.get_terminal_size((80, 24)).columns, 100)


def _build_run_parser(prog: str = "queue-pump") -> OneLineParser:
    width = _help_width()
    parser = OneLineParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keep calling a job runner endpoint: fast while there is work, slow while\n"
                    "idle, patient when it fails.\n\nother commands: queue-pump "
                    "{run,runner,demo,status,healthcheck,config} --help\n"
                    f"the operator's ({env_of('admin_token')}): queue-pump "
                    "{jobs,top,dashboard} --help",
        epilog="environment variables (also read from .env; the real environment wins;\n"
               "a flag wins over both):\n" + describe_knobs(width) + "\n\nflags: every "
               f"variable but the secrets is also a flag: {env_of('idle_sleep_s')}\nas "
               f"--idle-sleep-ms, {env_of('supabase_url')} as --supabase-url, and so on (e.g.\n"
               "--concurrency 4). Secrets come from the environment or the .env file only.\n\n"
               + _EXIT_CODES,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="make exactly one call and exit")
    mode.add_argument("--drain", action="store_true",
                      help="call until the first idle answer, then exit 0 (for a cron pass)")
    parser.add_argument("--env-file", metavar="PATH", help="read this file instead of ./.env")
    parser.add_argument("--version", action="version", version=f"queue-pump {__version__}")
    _add_knob_flags(parser)
    return parser


def _add_knob_flags(parser: argparse.ArgumentParser) -> None:
    knobs = parser.add_argument_group("settings (each overrides its environment variable)")
    for knob in KNOBS:
        if knob.secret:
            continue  # secrets on a command line show up in ps and shell history
        # A switch may stand alone (--allow-insecure-http) or take a value (... 0).
        extra: dict[str, Any] = {"nargs": "?", "const": "1"} if knob.kind is Kind.BOOL else {}
        knobs.add_argument(_flag(knob.env), dest=knob.env, metavar="VALUE", default=None,
                           help=argparse.SUPPRESS, **extra)


def _refuse_secret_flags(argv: Sequence[str], prog: str) -> None:
    """`--agent-token x` would otherwise read "unrecognized arguments": say why there is none."""
    for knob in KNOBS:
        flag = _flag(knob.env)
        if knob.secret and any(a == flag or a.startswith(flag + "=") for a in argv):
            print(f"{prog}: {flag} does not exist: {knob.env} is a secret and comes from the "
                  "environment or the .env file (--env-file PATH), never the command line, "
                  "where ps and shell history would show it", file=sys.stderr)
            sys.exit(2)


def _load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    merged = load_env(args.env_file, environ)
    flags = {}
    for knob in KNOBS:
        value = getattr(args, knob.env, None)
        if value is not None:
            merged[knob.env] = value
            flags[knob.env] = _flag(knob.env)
    try:
        return from_mapping(merged)
    except ConfigError as err:
        # A value given as a flag is reported under that flag, as the user typed it.
        raise ConfigError([_as_flag(p, flags) for p in err.problems]) from None


def _as_flag(problem: str, flags: Mapping[str, str]) -> str:
    for env, flag in flags.items():
        if problem.startswith(f"{env}="):
            return f"{flag} " + problem.removeprefix(f"{env}=")
    return problem


def load_schedules(settings: Settings) -> list[Schedule]:
    """The schedule file, read and checked once, before anything starts (ConfigError)."""
    if not settings.schedules:
        return []
    from ..schedules import load_schedules as load

    return list(load(settings.schedules, allow_insecure_http=settings.allow_insecure_http))


def cmd_run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    _refuse_secret_flags(argv, "queue-pump")
    args = _build_run_parser().parse_args(argv)
    mode = Mode.ONCE if args.once else Mode.DRAIN if args.drain else Mode.FOREVER
    try:
        settings = _load_settings(args, environ)
        # A bad file is exit 2, like any other bad setting; one-shot runs fire no schedules.
        schedules = load_schedules(settings) if mode is Mode.FOREVER else []
    except ConfigError as err:
        return print_problems(missing_env_note(args.env_file, err.problems))
    # The wiring pulls in asyncio, httpx & co: --help and config should not pay for them.
    import asyncio

    with refusing_terminal_libraries():
        from ..app import serve

    return asyncio.run(serve(settings, mode, environ, schedules))


def cmd_config(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = OneLineParser(prog="queue-pump config",
                           description="Check the configuration and print it, secrets masked. "
                                       "Takes the same setting flags as run.")
    parser.add_argument("--env-file", metavar="PATH")
    parser.add_argument("--env-example", action="store_true",
                        help="print a .env.example listing every variable with its default")
    _add_knob_flags(parser)
    _refuse_secret_flags(argv, "queue-pump config")
    args = parser.parse_args(argv)
    if args.env_example:
        print(env_example(), end="")
        return 0
    try:
        settings = _load_settings(args, environ)
        # The file is configuration too: check it here, not at the first run.
        schedules = load_schedules(settings)
    except ConfigError as err:
        return print_problems(err.problems)
    view = settings.public_view()
    if schedules:
        from datetime import UTC, datetime

        from ..schedules import describe

        view["schedules"] = describe(schedules, datetime.now(UTC))
    import json

    print(json.dumps(view, indent=2, default=str))
    return 0
