"""`queue-pump jobs ...`: see and steer the jobs of a queue through the operator API
(docs/OPERATOR_API.md, recipes in docs/OPERATIONS.md): ls, show, logs, add, cancel, retry, hung,
purge, stats. Tables sized to the terminal, or ``--json``; exit 0 done, 1 not found or refused,
2 usage or configuration; every error one line with a hint."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..config import ConfigError, env_of
from .parsing import OneLineParser, refusing_terminal_libraries
from .render import (
    ago,
    one_line,
    parse_duration,
    parse_time,
    short_duration,
    table,
    terminal_width,
)

if TYPE_CHECKING:
    from .operator_client import OperatorClient

PROG = "queue-pump jobs"
EXIT_USAGE = 2  # bad arguments or configuration, as the operator client says too
STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
FOLLOW_EVERY_S = 1.0


class Out:
    """Where and how a command prints: JSON for scripts, tables for people."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.json = as_json
        self.stream = stream or sys.stdout
        self.width = terminal_width(self.stream.isatty())

    def data(self, value: Any) -> None:
        print(json.dumps(value, indent=None if not self.stream.isatty() else 2),
              file=self.stream)

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        print(table(headers, rows, width=self.width), file=self.stream)


Command = Callable[["OperatorClient", argparse.Namespace, Out], int]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.add_argument("--env-file", metavar="PATH", help="read this file instead of ./.env")


def _job_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**53:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a whole number)")
    return int(text)


# -- ls, show, logs ---------------------------------------------------------------------------

def cmd_ls(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    answer = client.call("GET", "", params={
        "status": args.status, "type": args.type, "queue": args.queue,
        "since": args.since and parse_time(args.since, "--since"),
        "until": args.until and parse_time(args.until, "--until"),
        "limit": args.limit, "cursor": args.cursor})
    jobs = answer.get("jobs", [])
    if out.json:
        out.data(jobs)
    elif not jobs:
        out.line("no jobs match")
    else:
        out.table(("ID", "STATUS", "TYPE", "QUEUE", "ATTEMPTS", "CREATED", "LAST ERROR"),
                  [(j["id"], _status(j), j["type"], j["queue"],
                    f"{j['attempts']}/{j['maxAttempts']}", ago(j.get("createdAt")),
                    j.get("lastError") or "") for j in jobs])
    if answer.get("next"):
        print(f"{PROG} ls: more jobs: add --cursor {answer['next']}", file=sys.stderr)
    return 0


def _status(job: Mapping[str, Any]) -> str:
    if job.get("status") == "running" and job.get("cancelRequested"):
        return "running (cancelling)"
    return str(job.get("status"))


def cmd_show(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    job = client.call("GET", f"/{args.id}")["job"]
    if out.json:
        out.data(job)
        return 0
    out.line(f"job {job['id']}: {_status(job)}, {job['type']} in queue {job['queue']}, "
             f"attempt {job['attempts']} of {job['maxAttempts']}")
    for label, key in (("created", "createdAt"), ("due", "runAt"), ("started", "startedAt"),
                       ("heartbeat", "heartbeatAt"), ("finished", "finishedAt")):
        if job.get(key):
            out.line(f"  {label:<10} {job[key]} ({ago(job[key])})")
    for label, key in (("worker", "lockedBy"), ("dedupe key", "dedupeKey"),
                       ("last error", "lastError")):
        if job.get(key):
            out.line(f"  {label:<10} {one_line(job[key])}")
    for key in ("payload", "progress", "result"):
        if job.get(key) is not None:
            out.line(f"  {key:<10} {_clip(json.dumps(job[key]), out)}")
    out.line("history:")
    _events(job.get("history", []), out)
    return 0


def _clip(text: str, out: Out, used: int = 13) -> str:
    if out.width is None or len(text) <= out.width - used:
        return text
    return text[:max(out.width - used - 1, 10)] + "\u2026"


def _event_row(event: Mapping[str, Any]) -> tuple[object, ...]:
    data = event.get("data") or {}
    said = " ".join(filter(None, (one_line(event.get("message") or ""),
                                  json.dumps(data) if data else "")))
    return (event["seq"], event["at"], event["kind"], event.get("attempt") or "",
            event.get("worker") or "", said)


def _events(events: Sequence[Mapping[str, Any]], out: Out) -> None:
    if out.json:
        for event in events:
            out.line(json.dumps(event))
        return
    if events:
        out.table(("SEQ", "AT", "KIND", "ATTEMPT", "WORKER", "MESSAGE"),
                  [_event_row(e) for e in events])


def cmd_logs(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    after, header = 0, not out.json
    while True:
        answer = client.call("GET", f"/{args.id}/history", params={"after": after})
        events = answer.get("events", [])
        if events:
            if out.json:
                _events(events, out)
            else:
                for event in events:
                    _, at, kind, attempt, worker, said = _event_row(event)
                    out.line(f"{at}  {kind:<16}  " + (f"attempt {attempt}  " if attempt else "")
                             + (f"{worker}  " if worker else "") + str(said))
            after = events[-1]["seq"]
            header = False
        finished = answer.get("job", {}).get("status") in FINISHED
        if len(events) >= 500:
            continue  # a full page: there may be more now
        if not args.follow or finished:
            if header:
                out.line(f"job {args.id} has no events")
            return 0
        time.sleep(args.every_s)


# -- add, cancel, retry -----------------------------------------------------------------------

def _payload(text: str | None) -> Any:
    if text is None:
        return {}
    source = "--payload"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--payload {str(path)!r} cannot be read: "
                             f"{exc.__class__.__name__}") from None
        source = f"--payload {str(path)!r}"
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source} is not JSON: {exc}; expected e.g. "
                         "'{\"ms\": 100}' or @file.json") from None


def _after(text: str | None) -> list[int] | None:
    """--after 12,34: the ids of the jobs the new one waits for."""
    if text is None:
        return None
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        ids = []
    if not ids or any(i < 1 for i in ids):
        raise ValueError(f"--after must be job ids separated by commas, e.g. 12,34; got {text!r}")
    return ids


def cmd_add(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    body = {"type": args.type, "payload": _payload(args.payload), "queue": args.queue,
            "dedupeKey": args.dedupe_key, "maxAttempts": args.max_attempts,
            "delaySeconds": None if args.delay is None else parse_duration(args.delay,
                                                                            "--delay"),
            "runAt": args.run_at and parse_time(args.run_at, "--run-at"),
            # Only what was given: a server without these fields still takes the rest.
            **{k: v for k, v in (("priority", args.priority),
                                 ("concurrencyKey", args.concurrency_key),
                                 ("after", _after(args.after)),
                                 ("afterFailure", args.after_failure)) if v is not None}}
    answer = client.call("POST", "", body=body)
    job = answer["job"]
    if out.json:
        out.data(job)
    elif answer.get("created"):
        out.line(f"added job {job['id']}: {job['type']} in queue {job['queue']}, due "
                 f"{job['runAt']} ({ago(job['runAt'])})")
    else:
        out.line(f"job {job['id']} already holds dedupe key {job.get('dedupeKey')!r} "
                 f"({job['status']}): nothing added")
    return 0


def cmd_cancel(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    answer = client.call("POST", f"/{args.id}/cancel", body={})
    job = answer["job"]
    if out.json:
        out.data(answer)
    elif job["status"] == "running":
        out.line(f"job {job['id']}: cancel requested; it is running and stops at its next "
                 "heartbeat (queue-pump jobs logs --follow shows when)")
    elif answer.get("changed"):
        out.line(f"job {job['id']}: cancelled")
    else:
        out.line(f"job {job['id']}: already {job['status']}, nothing changed")
    return 0


def cmd_retry(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    if (args.id is None) == (not args.failed):
        raise ValueError("give a job id, or --failed for every failed job (with --type, "
                         "--queue, --since, --until, --dry-run)")
    if args.id is not None:
        if args.dry_run or args.type or args.queue or args.since or args.until:
            raise ValueError("--type, --queue, --since, --until and --dry-run go with --failed")
        job = client.call("POST", f"/{args.id}/retry", body={})["job"]
        if out.json:
            out.data(job)
        else:
            out.line(f"job {job['id']}: queued again, attempts reset")
        return 0
    answer = client.call("POST", "/retry", body={
        "type": args.type, "queue": args.queue, "dryRun": args.dry_run,
        "since": args.since and parse_time(args.since, "--since"),
        "until": args.until and parse_time(args.until, "--until")})
    if out.json:
        out.data(answer)
    else:
        verb = "would retry" if answer["dryRun"] else "retried"
        out.line(f"{verb} {answer['matched']} failed job(s)"
                 + ("; more match: run it again" if answer.get("more") else ""))
    return 0


# -- hung, purge, stats -----------------------------------------------------------------------

def cmd_hung(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    older = parse_duration(args.older_than, "--older-than")
    if args.dry_run and not args.cancel:
        raise ValueError("--dry-run goes with --cancel")
    if args.cancel:
        answer = client.call("POST", "/hung/cancel", body={
            "olderThan": older, "queue": args.queue, "dryRun": args.dry_run})
        if out.json:
            out.data(answer)
        else:
            verb = "would cancel" if answer["dryRun"] else "asked to cancel"
            out.line(f"{verb} {answer['matched']} hung job(s) (no heartbeat for "
                     f"{short_duration(older)})")
        return 0
    jobs = client.call("GET", "/hung", params={"olderThan": round(older),
                                               "queue": args.queue})["jobs"]
    if out.json:
        out.data(jobs)
    elif not jobs:
        out.line(f"no running job has gone {short_duration(older)} without a heartbeat")
    else:
        out.table(("ID", "TYPE", "QUEUE", "ATTEMPTS", "LAST HEARTBEAT", "WORKER"),
                  [(j["id"], j["type"], j["queue"], f"{j['attempts']}/{j['maxAttempts']}",
                    ago(j.get("heartbeatAt")), j.get("lockedBy") or "") for j in jobs])
    return 0


def cmd_purge(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    older = parse_duration(args.older_than, "--older-than")
    answer = client.call("POST", "/purge", body={"olderThan": older, "dryRun": args.dry_run})
    if out.json:
        out.data(answer)
    else:
        verb = "would delete" if answer["dryRun"] else "deleted"
        out.line(f"{verb} {answer['matched']} finished job(s) older than "
                 f"{short_duration(older)}" + ("; more match: run it again"
                                               if answer.get("more") else ""))
    return 0


def cmd_stats(client: OperatorClient, args: argparse.Namespace, out: Out) -> int:
    stats = client.call("GET", "/stats", params={"queue": args.queue})
    if out.json:
        out.data(stats)
        return 0
    for line in stats_lines(stats, out.width):
        out.line(line)
    return 0


def stats_lines(stats: Mapping[str, Any], width: int | None) -> list[str]:
    """The summary as text, for `jobs stats` and `top`'s plain mode."""
    rows = [(q["queue"], *(q[s] for s in STATUSES), q["due"], _age(q["oldestDueAgeSeconds"]))
            for q in stats["queues"]]
    total = stats["total"]
    rows.append(("(all)", *(total[s] for s in STATUSES), total["due"],
                 _age(total["oldestDueAgeSeconds"])))
    lines = table(("QUEUE", *(s.upper() for s in STATUSES), "DUE", "OLDEST DUE"), rows,
                  width=width).splitlines()
    minutes = stats.get("perMinute", [])[-5:]
    if minutes:
        lines.append("per minute (oldest first): " + ", ".join(
            f"{m['minute'][11:16]} {m['done']} done {m['failed']} failed" for m in minutes))
    failures = stats.get("recentFailures", [])
    if failures:
        lines.append("newest failures:")
        lines += table(("ID", "TYPE", "QUEUE", "FAILED", "ERROR"),
                       [(f["id"], f["type"], f["queue"], ago(f["finishedAt"]), f["error"])
                        for f in failures], width=width).splitlines()
    return lines


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else short_duration(seconds)


# -- the command line -------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "ls": cmd_ls, "show": cmd_show, "logs": cmd_logs, "add": cmd_add, "cancel": cmd_cancel,
    "retry": cmd_retry, "hung": cmd_hung, "purge": cmd_purge, "stats": cmd_stats,
}


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="See and steer jobs through the operator API: the kit's jobs function, or "
                    "the reference runner's.\nReads the pump's .env "
                    f"({env_of('supabase_url')}, {env_of('organization_id')}, "
                    f"{env_of('anon_key')}) plus {env_of('admin_token')}\n"
                    f"({env_of('jobs_url')} overrides the URL). Recipes: docs/OPERATIONS.md.",
        epilog="exit codes: 0 done, 1 not found or refused, 2 usage or configuration")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=OneLineParser)
    ls = sub.add_parser("ls", help="list jobs, newest first")
    ls.add_argument("--status", help="queued, running, done, failed, cancelled (or several: "
                                     "failed,cancelled)")
    ls.add_argument("--type")
    ls.add_argument("--queue")
    ls.add_argument("--since", help="created since: a duration ago (1h, 7d) or an ISO time")
    ls.add_argument("--until", help="created before: a duration ago or an ISO time")
    ls.add_argument("--limit", type=int, default=50, help="1-500 (default %(default)s)")
    ls.add_argument("--cursor", help="the next page, as the previous one said")
    for name, what in (("show", "one job in full, with its history"),
                       ("logs", "a job's history, as lines")):
        one = sub.add_parser(name, help=what)
        one.add_argument("id", type=_job_id)
        if name == "logs":
            one.add_argument("--follow", "-f", action="store_true",
                             help="keep printing new events until the job ends")
            one.add_argument("--every-s", type=float, default=FOLLOW_EVERY_S,
                             help=argparse.SUPPRESS)
    add = sub.add_parser("add", help="add a job")
    add.add_argument("type")
    add.add_argument("--payload", help="JSON, or @file.json")
    add.add_argument("--queue")
    add.add_argument("--dedupe-key")
    when = add.add_mutually_exclusive_group()
    when.add_argument("--delay", help="due after this long: 90s, 5m, 2h, 1d")
    when.add_argument("--run-at", help="due at this ISO time")
    add.add_argument("--max-attempts", type=int)
    add.add_argument("--priority", type=int,
                     help="-1000..1000, default 0: a HIGHER number runs first (as in pg-boss;"
                          " BullMQ and Oban count the other way)")
    add.add_argument("--concurrency-key", metavar="KEY",
                     help="the key whose concurrency and rate limits this job counts against")
    add.add_argument("--after", metavar="ID,ID",
                     help="due only once these jobs are done (the Supabase kit)")
    add.add_argument("--after-failure", choices=("end", "run"),
                     help="when one of --after ends failed or cancelled: end this job the same"
                          " way (end, the default) or run it anyway (run)")
    cancel = sub.add_parser("cancel", help="cancel a job (a running one stops at its next "
                                           "heartbeat)")
    cancel.add_argument("id", type=_job_id)
    retry = sub.add_parser("retry", help="run a failed or cancelled job again; --failed: "
                                         "every failed job matching")
    retry.add_argument("id", type=_job_id, nargs="?")
    retry.add_argument("--failed", action="store_true")
    retry.add_argument("--type")
    retry.add_argument("--queue")
    retry.add_argument("--since", help="failed since: a duration ago (1h) or an ISO time")
    retry.add_argument("--until", help="failed before: a duration ago or an ISO time")
    retry.add_argument("--dry-run", action="store_true", help="say how many, change nothing")
    hung = sub.add_parser("hung", help="running jobs without a heartbeat for a while")
    hung.add_argument("--older-than", default="5m", help="default %(default)s")
    hung.add_argument("--queue")
    hung.add_argument("--cancel", action="store_true", help="cancel them")
    hung.add_argument("--dry-run", action="store_true", help="with --cancel: say how many")
    purge = sub.add_parser("purge", help="delete this organization's finished jobs past an age")
    purge.add_argument("--older-than", required=True, help="e.g. 7d (at least 60s)")
    purge.add_argument("--dry-run", action="store_true", help="say how many, delete nothing")
    stats = sub.add_parser("stats", help="counts per status and queue, rates, newest failures")
    stats.add_argument("--queue")
    for each in sub.choices.values():
        _common(each)
    return parser


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = build_parser().parse_args(argv)
    prog = f"{PROG} {args.command}"
    # After the arguments: --help and a usage error never load the HTTP client.
    with refusing_terminal_libraries():
        from .operator_client import (
            OperatorClient,
            OperatorError,
            load_config,
            missing_config_hint,
        )
    try:
        config = load_config(args.env_file, environ)
    except ConfigError as err:
        hint = missing_config_hint(err.problems)
        for problem in err.problems:
            print(f"{prog}: config: {problem}" + (f"; {hint}" if hint else ""),
                  file=sys.stderr)
        return EXIT_USAGE
    try:
        with OperatorClient(config) as client:
            return COMMANDS[args.command](client, args, Out(args.json))
    except ValueError as exc:  # an argument only the command can check
        print(f"{prog}: {exc} (see {prog} --help)", file=sys.stderr)
        return EXIT_USAGE
    except OperatorError as exc:
        print(f"{prog}: {exc.line()}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        return quiet_broken_pipe()


def quiet_broken_pipe() -> int:
    """The reader went away (`| head`): no traceback, and none at exit either, when Python
    flushes stdout into the closed pipe."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1
