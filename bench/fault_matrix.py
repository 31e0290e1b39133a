"""Print the fault matrix of docs/RELIABILITY.md as a markdown table.

    .venv/bin/python -m bench.fault_matrix             # one scenario at a time (~90 s)
    .venv/bin/python -m bench.fault_matrix --jobs 4    # four at a time, as the tests run them

It runs the scenarios of tests/support/fault_scenarios.py (the same ones
tests/process/test_faults.py asserts on) against the real pump process over loopback and prints,
for each fault: the calls made in the fault window against the bound the backoff promises, the
time from the fault clearing to the next successful call against one max-backoff, and the pump's
peak RSS. Exit 1 if any row fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Sequence

from tests.support.fault_scenarios import (
    BASE_MS,
    DEFAULT_TRANSPORT,
    FAULTS,
    MAX_MS,
    PEAK_LIMIT_KB,
    RECOVERY_SLACK_S,
    TIMEOUT_MS,
    TRANSPORTS,
    WINDOW_S,
    check,
    run_matrix,
    table,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_matrix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1, help="scenarios run at once (1-17)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this fault (repeatable)")
    parser.add_argument("--transport", choices=TRANSPORTS, default=DEFAULT_TRANSPORT,
                        help="QUEUE_PUMP_HTTP_TRANSPORT of the pump (default: the pump's own, "
                             f"{DEFAULT_TRANSPORT})")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    faults = [f for f in FAULTS if not args.only or f.name in args.only]
    if not faults or not 1 <= args.jobs <= len(FAULTS):
        parser.error("no such fault, or --jobs out of range")
    futures = run_matrix(faults, jobs=args.jobs, QUEUE_PUMP_HTTP_TRANSPORT=args.transport)
    results = [futures[f.name].result(timeout=300) for f in faults]
    print(f"Settings: QUEUE_PUMP_BACKOFF_BASE_MS={BASE_MS}, QUEUE_PUMP_BACKOFF_MAX_MS={MAX_MS}, "
          f"QUEUE_PUMP_HTTP_TIMEOUT_MS={TIMEOUT_MS}, transport {args.transport}, concurrency 1; "
          f"fault window {WINDOW_S} s from the first failed call; recovery slack "
          f"{RECOVERY_SLACK_S} s; peak limit {PEAK_LIMIT_KB // 1024} MiB; {args.jobs} "
          "scenario(s) at a time.\n")
    print(table(results))
    if args.json:
        print(json.dumps([{"fault": r.fault.name, "calls_in_window": r.calls_in_window,
                           "bound": r.bound, "recovery_s": r.recovery_s,
                           "recovery_bound_s": r.recovery_bound_s, "peak_kb": r.peak_kb,
                           "call_gaps_s": [round(b - a, 3)
                                           for a, b in itertools.pairwise(r.call_times)],
                           "problems": check(r)} for r in results], indent=1))
    return 0 if all(not check(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
