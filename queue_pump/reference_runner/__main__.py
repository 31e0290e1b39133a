"""``python -m queue_pump.reference_runner``: the same as ``queue-pump runner``;
``python -m queue_pump.reference_runner enqueue ...`` puts jobs into a running one."""

from __future__ import annotations

import argparse
import os
import sys

from .cli import add_arguments, main


def _entry() -> int:
    if sys.argv[1:2] == ["enqueue"]:
        from .enqueue import main as enqueue_main

        return enqueue_main(sys.argv[2:], os.environ)
    parser = argparse.ArgumentParser(
        prog="python -m queue_pump.reference_runner",
        description="Serve the reference job runner (AGENT_TOKEN and ORGANIZATION_ID required, "
                    "from the environment or .env). 'enqueue --help': put jobs into it.",
    )
    add_arguments(parser)
    return main(parser.parse_args(), os.environ)


if __name__ == "__main__":
    sys.exit(_entry())
