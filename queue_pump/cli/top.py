"""`queue-pump top`: the queue, live. Counts per status and queue, done and failed per minute,
the oldest due job's age, the newest failures with their errors, and with ``--pump URL`` a
local pump's loops. About once a second; fits 80x24; Ctrl-C leaves it cleanly. On a terminal
it draws with rich (the ``ops`` extra, imported here only); when stdout is not a terminal it
prints one plain line per refresh, without rich."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from .parsing import OneLineParser, refusing_terminal_libraries
from .render import ago, one_line, short_duration

# The operator client (httpx) is imported with rich refused: httpx would load rich for its own
# command line; top imports rich itself, only when it draws.
with refusing_terminal_libraries():
    from .operator_client import (
        EXIT_USAGE,
        OperatorClient,
        OperatorError,
        load_config,
        missing_config_hint,
    )

if TYPE_CHECKING:
    from rich.console import RenderableType

PROG = "queue-pump top"
STATUSES = ("queued", "running", "done", "failed", "cancelled")
INSTALL = ("queue-pump top draws with rich, which is not installed: pip install "
           "'queue-pump[ops]' (or pipe it: queue-pump top | cat, plain lines without rich)")
SPARK = " \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
MAX_QUEUES = 6
SPARK_MINUTES = 60  # one character a minute: 9 + 60 columns
MAX_FAILURES = 5


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG, description="The queue, live: counts, rates, the oldest due job, the newest "
                               "failures (and a local pump's loops with --pump). Ctrl-C leaves.")
    parser.add_argument("--queue", help="one queue only")
    parser.add_argument("--pump", metavar="URL",
                        help="a local pump's health endpoint, e.g. http://127.0.0.1:8080")
    parser.add_argument("--every-s", type=float, default=1.0, help="refresh (default 1 s)")
    parser.add_argument("--count", type=int, default=0,
                        help="stop after this many refreshes (default: until Ctrl-C)")
    parser.add_argument("--env-file", metavar="PATH", help="read this file instead of ./.env")
    return parser


class Snapshot:
    """One refresh: the stats, the pump's health (or why not), when."""

    def __init__(self, stats: dict[str, Any], pump: dict[str, Any] | str | None,
                 error: str | None = None) -> None:
        self.stats = stats
        self.pump = pump
        self.error = error
        self.at = datetime.now(UTC)


def _pump_health(url: str | None) -> dict[str, Any] | str | None:
    if url is None:
        return None
    from .health_client import fetch_health

    try:
        status, body = fetch_health(url, 1.0)
    except (OSError, ValueError) as exc:
        return f"no pump answers at {url} ({type(exc).__name__})"
    return body if body is not None else f"{url} answered {status}, not as a pump"


def _rates(stats: Mapping[str, Any]) -> tuple[int, int]:
    """Done and failed in the last whole minute (the one before the current)."""
    minutes = stats.get("perMinute") or []
    last = minutes[-2] if len(minutes) >= 2 else {"done": 0, "failed": 0}
    return int(last["done"]), int(last["failed"])


def plain_line(snap: Snapshot) -> str:
    """One refresh as a line, for a pipe or a log."""
    at = snap.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if snap.error:
        return f"{at} error: {snap.error}"
    total = snap.stats["total"]
    done, failed = _rates(snap.stats)
    age = total.get("oldestDueAgeSeconds")
    counts = " ".join(f"{s}={total[s]}" for s in STATUSES)
    pump = snap.pump if isinstance(snap.pump, dict) else {}
    backlog = "".join(f" pump_backlog_{q}={n}" for q, n in sorted(
        (pump.get("backlog") or {}).items()))
    return (f"{at} {counts} due={total['due']} oldest_due={'-' if age is None else f'{age:g}s'}"
            f" done_per_min={done} failed_per_min={failed}{backlog}")


def _spark(values: Sequence[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(8, -(-v * 8 // top))] for v in values)


def view(snap: Snapshot, where: str) -> RenderableType:
    """The screen: at most ~22 lines, so it fits 80x24."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = Text.assemble(("queue-pump top", "bold"), "  ", (snap.at.strftime("%H:%M:%S"), "dim"),
                          f"  {where}", ("  (Ctrl-C leaves)", "dim"))
    title.no_wrap, title.overflow = True, "ellipsis"
    parts: list[RenderableType] = [title]
    if snap.error:
        parts.append(Text(f"last refresh failed: {snap.error}", style="red"))
    stats = snap.stats
    if stats:
        parts += [_counts(stats), _minutes(stats)]
        failures = stats.get("recentFailures") or []
        if failures:
            table = Table("failed", "id", "type", "error", box=None, pad_edge=False,
                          title="newest failures", title_justify="left", title_style="bold")
            for f in failures[:MAX_FAILURES]:
                table.add_row(ago(f.get("finishedAt")), str(f["id"]), f["type"],
                              Text(one_line(f.get("error")), overflow="ellipsis", no_wrap=True))
            parts.append(table)
    if snap.pump is not None:
        parts.append(_pump(snap.pump))
    return Group(*parts)


def _counts(stats: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table("queue", *STATUSES, "due", "oldest due", box=None, pad_edge=False,
                  header_style="bold")
    queues = list(stats["queues"])
    for q in queues[:MAX_QUEUES]:
        table.add_row(q["queue"], *(str(q[s]) for s in STATUSES), str(q["due"]),
                      _age(q["oldestDueAgeSeconds"]))
    if len(queues) > MAX_QUEUES:
        table.add_row(f"+{len(queues) - MAX_QUEUES} more", *([""] * 7))
    total = stats["total"]
    table.add_row("all", *(str(total[s]) for s in STATUSES), str(total["due"]),
                  _age(total["oldestDueAgeSeconds"]), style="bold")
    return table


def _minutes(stats: Mapping[str, Any]) -> Any:
    from rich.text import Text

    minutes = (stats.get("perMinute") or [])[-SPARK_MINUTES:]
    done, failed = _rates(stats)
    lines = Text.assemble(
        ("per minute", "bold"), f"  last minute: {done} done, {failed} failed; the last "
                                f"{len(minutes)} minutes:\n",
        ("  done   ", "green"), _spark([int(m["done"]) for m in minutes]), "\n",
        ("  failed ", "red"), _spark([int(m["failed"]) for m in minutes]))
    lines.no_wrap = True
    return lines


def _pump(pump: dict[str, Any] | str) -> Any:
    from rich.text import Text

    if isinstance(pump, str):
        return Text(pump, style="yellow")
    loops = pump.get("loops", [])
    # Counted by state, the stuck ones named first: a line cut at 80 columns still shows them.
    by_state = Counter(str(loop.get("state")) for loop in loops)
    stuck = [str(loop.get("name")) for loop in loops if loop.get("stuck")]
    counters = pump.get("counters", {})
    health = "healthy" if pump.get("healthy") else "UNHEALTHY"
    line = Text.assemble(("pump ", "bold"), f"{health}, ",
                         (f"STUCK: {', '.join(stuck)}; " if stuck else "", "bold red"),
                         # Before the loops: a line cut at 80 columns still shows it.
                         "".join(f"{text}; " for text in _pump_backlog(pump)),
                         f"{len(loops)} loops (" + ", ".join(
                             f"{n} {state}" for state, n in by_state.most_common()) + "), "
                         f"{counters.get('processed', 0)} processed, "
                         f"{counters.get('errors', 0)} errors")
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


def _pump_backlog(pump: dict[str, Any] | str | None) -> list[str]:
    """The pump's view of the backlog (the runner's latest answers), when its runner sends one."""
    if not isinstance(pump, dict) or not pump.get("backlog"):
        return []
    from .health_client import backlog_text

    return [backlog_text(pump["backlog"])]


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else short_duration(seconds)


def _refreshes(client: OperatorClient, queue: str | None, pump_url: str | None,
               every_s: float, count: int) -> Any:
    """Snapshots until ``count`` (0: forever); a refused first call ends it (OperatorError),
    later failures are shown and retried."""
    shown = 0
    last: dict[str, Any] = {}
    while count == 0 or shown < count:
        try:
            last = client.call("GET", "/stats", params={"queue": queue})
            snap = Snapshot(last, _pump_health(pump_url))
        except OperatorError as exc:
            if shown == 0:
                raise
            snap = Snapshot(last, _pump_health(pump_url), error=exc.line())
        yield snap
        shown += 1
        if count == 0 or shown < count:
            time.sleep(every_s)


def _live(snaps: Any, where: str) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(console=console, auto_refresh=False, transient=False,
              redirect_stdout=False) as live:
        for snap in snaps:
            live.update(view(snap, where), refresh=True)


def _plain(snaps: Any, write: Callable[[str], None]) -> None:
    for snap in snaps:
        write(plain_line(snap))


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = _parser().parse_args(argv)
    tty = sys.stdout.isatty()
    if tty:
        try:
            import rich  # noqa: F401 - only to say how to get it, before anything else
        except ImportError:
            print(f"{PROG}: {INSTALL}", file=sys.stderr)
            return EXIT_USAGE
    try:
        config = load_config(args.env_file, environ)
    except ConfigError as err:
        hint = missing_config_hint(err.problems)
        for problem in err.problems:
            print(f"{PROG}: config: {problem}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return EXIT_USAGE
    where = f"{config.organization_id} at {config.url}"
    try:
        with OperatorClient(config) as client:
            snaps = _refreshes(client, args.queue, args.pump, max(args.every_s, 0.1), args.count)
            if tty:
                _live(snaps, where)
            else:
                _plain(snaps, lambda line: print(line, flush=True))
    except OperatorError as exc:
        print(f"{PROG}: {exc.line()}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one leaves top: a clean exit
    except BrokenPipeError:
        from .jobs import quiet_broken_pipe

        return quiet_broken_pipe()
    return 0
