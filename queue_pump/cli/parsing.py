"""What every subcommand's front shares: an argument parser whose errors are one line, and the
printer of configuration problems. A leaf for the command line: argparse and sys only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
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
