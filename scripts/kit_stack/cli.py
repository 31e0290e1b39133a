"""kit-stack's command line: one line and exit 2 for bad input, never a traceback."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_errors import Failed, Usage

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "supabase" / "functions"
DENO_HINT = "Deno not found: run scripts/get-deno.sh (needs npm), put deno on PATH, or pass --deno"


def find_deno(given: str | None) -> Path:
    local = ROOT / ".tools" / "deno" / "node_modules" / "@deno" / "linux-x64-glibc" / "deno"
    if given:
        if Path(given).is_file() and os.access(given, os.X_OK):
            return Path(given)
        raise Usage(f"--deno {given}: not an executable file")
    for c in (os.environ.get("QUEUE_PUMP_DENO"), shutil.which("deno"), str(local)):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise Failed(DENO_HINT)


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise Usage(f"{self.prog}: {message}")


def parser() -> Parser:
    top = Parser(prog="kit-stack", description=(
        "The Supabase kit's throwaway local stack: PostgreSQL, Supabase's roles, the "
        "migrations, and every function on one port under /functions/v1/<name>."))
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    serve = sub.add_parser("serve", help=(
        "serve every function (or those named) on one port, in the foreground, with the "
        "environment given to this command; their logs go to --state"))
    serve.add_argument("names", nargs="*", help="functions to serve (default: all of them)")
    serve.add_argument("--port", type=port_number, default=54321,
                       help="the public port (0: one the system picks; default 54321)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--state", type=Path, required=True,
                       help="a folder for the functions' logs and private sockets")
    serve.add_argument("--functions", type=Path, default=FUNCTIONS,
                       help="the functions folder (default: this clone's supabase/functions)")
    serve.add_argument("--deno", help="the deno binary (default: QUEUE_PUMP_DENO, PATH, .tools)")
    up = sub.add_parser("up", help=(
        "make (or start again) the stack in --dir and print the .env lines for the pump and "
        "queue-pump jobs on stdout; run again, it applies only the migrations not yet applied "
        "and serves the functions as they now are"))
    up.add_argument("--dir", type=Path, required=True,
                    help="the stack's folder: new, empty, or a stack's from an earlier up")
    up.add_argument("--port", type=port_number, default=None,
                    help="the functions' port (default 54321, or the stack's; 0: any free one)")
    up.add_argument("--pg-port", type=port_number, default=None,
                    help="a new stack's PostgreSQL port on 127.0.0.1 (default: a free one); "
                    "a stack keeps its port")
    up.add_argument("--deno", help="the deno binary (default: QUEUE_PUMP_DENO, PATH, .tools)")
    down = sub.add_parser("down", help="stop the stack in --dir and remove that folder")
    down.add_argument("--dir", type=Path, required=True, help="the stack's folder")
    return top


def up(args: argparse.Namespace) -> int:
    from . import stack

    deno = find_deno(args.deno)
    folder = args.dir.resolve()
    try:
        lines = stack.up(folder, args.port, args.pg_port, deno)
    except Failed as err:
        if stack.read_state(folder) is None:
            raise
        raise Failed(f"{err} (the stack in {folder} is left as it is: fix that and run up "
                     "again, or down)") from None
    print(lines, end="", flush=True)
    return 0


def down(args: argparse.Namespace) -> int:
    from . import stack

    stack.down(args.dir.resolve())
    return 0


def serve(args: argparse.Namespace) -> int:
    from . import functions

    folder: Path = args.functions
    if not folder.is_dir():
        raise Usage(f"--functions {folder}: not a folder")
    known = functions.function_names(folder)
    unknown = [n for n in args.names if n not in known]
    if unknown:
        raise Usage(f"no function named {', '.join(unknown)} in {folder} "
                    f"(there: {', '.join(known) or 'none'})")
    names = args.names or known
    if not names:
        raise Usage(f"no functions in {folder}")
    deno = find_deno(args.deno)
    try:
        return functions.main(deno, folder.resolve(), names, args.state.resolve(), args.host,
                              args.port)
    except ValueError as err:  # a limit from the environment
        raise Usage(str(err)) from None


def main(argv: Sequence[str]) -> int:
    try:
        args = parser().parse_args(argv)
        return {"serve": serve, "up": up, "down": down}[args.command](args)
    except (Usage, Failed) as err:
        line = str(err) if str(err).startswith("kit-stack") else f"kit-stack: {err}"
        print(line, file=sys.stderr)
        return 2 if isinstance(err, Usage) else 1
