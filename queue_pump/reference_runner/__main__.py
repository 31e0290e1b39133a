"""``python -m queue_pump.reference_runner``: the same as ``queue-pump runner``."""

from __future__ import annotations

import argparse
import os
import sys

from .cli import add_arguments, main


def _entry() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m queue_pump.reference_runner",
        description="Serve the reference job runner (AGENT_TOKEN and ORGANIZATION_ID required).",
    )
    add_arguments(parser)
    return main(parser.parse_args(), os.environ)


if __name__ == "__main__":
    sys.exit(_entry())
