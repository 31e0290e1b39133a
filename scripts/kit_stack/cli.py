"""kit-stack's command line: one line and exit 2 for bad input, never a traceback."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "supabase" / "functions"
DENO_HINT = "Deno not found: run scripts/get-deno.sh (needs npm), put deno on PATH, or pass --deno"


class Usage(Exception):
    """Bad input: its message is the one line the user sees (exit 2)."""


def find_deno(given: str | None) -> Path:
    local = ROOT / ".tools" / "deno" / "node_modules" / "@deno" / "linux-x64-glibc" / "deno"
    if given:
        if Path(given).is_file() and os.access(given, os.X_OK):
            return Path(given)
        raise Usage(f"--deno {given}: not an executable file")
    for c in (os.environ.get("QUEUE_PUMP_DENO"), shutil.which("deno"), str(local)):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise Usage(DENO_HINT)


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
    return top


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
    return functions.main(deno, folder.resolve(), names, args.state.resolve(), args.host,
                          args.port)


def main(argv: Sequence[str]) -> int:
    try:
        args = parser().parse_args(argv)
        return {"serve": serve}[args.command](args)
    except Usage as err:
        print(f"kit-stack: {err}" if not str(err).startswith("kit-stack") else str(err),
              file=sys.stderr)
        return 2
