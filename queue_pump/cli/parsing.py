"""What every subcommand's front shares: an argument parser whose errors are one line, the
printer of configuration problems, and the refusal of the terminal libraries while the pump's
(or the operator client's) modules load. A leaf for the command line: argparse and sys only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from ..exits import ExitCode


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one clear line and exit code 2, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def print_problems(problems: Iterable[str]) -> int:
    """One ``queue-pump: config:`` line per problem on stderr; the exit code for them."""
    for problem in problems:
        print(f"queue-pump: config: {problem}", file=sys.stderr)
    return int(ExitCode.CONFIG)


# What the pump's libraries load for a person at a terminal, never for a pump (below).
_TERMINAL_ONLY = ("rich", "pygments", "click")


@contextmanager
def refusing_terminal_libraries() -> Iterator[None]:
    """While the pump's modules are imported, `import rich` (and pygments, click) fail as if
    they were not installed.

    structlog.dev imports rich (with pygments) whenever it is installed, to draw tracebacks the
    pump never prints, and httpx imports click, pygments and rich for its `httpx` command line:
    ~16.5 MB and ~33 ms of CPU in every pump (docs/BENCHMARKS.md). rich is there wherever an
    operator runs `queue-pump top` (the `ops` extra) and in the dev extra. A None in sys.modules
    refuses the import; both libraries then do without, as where these are not installed, and
    the names are free again once the pump's modules are in (`top` imports rich as usual).
    tests/process/test_footprint.py checks that a pump never loads them. `jobs` and `top` import
    the operator client (httpx) under it too: rich is `top`'s to import, when it draws."""
    refused = [name for name in _TERMINAL_ONLY if name not in sys.modules]
    for name in refused:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in refused:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
