"""Tables (Markdown) and plots (PNG) from bench/results/*.json, for docs/BENCHMARKS.md.

    /tmp/plot/bin/python bench/report.py --plots docs/img > bench/results/tables.md

Plots need matplotlib (keep it out of the project: a separate venv); without --plots only the
tables are printed, with any Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {
    "pump-httpx": "pump, httpx",
    "pump-aiohttp": "pump, aiohttp (httpx-aiohttp)",
    "bare-httpx": "bare httpx loop",
    "bare-httpx-aiohttp": "bare httpx + httpx-aiohttp loop",
    "bare-aiohttp": "bare aiohttp loop",
    "bare-raw": "bare raw-socket loop",
    "node": "Node fetch loop",
    "before-pump-httpx": "pump before, httpx",
    "before-pump-aiohttp": "pump before, aiohttp",
}
ORDER = ["before-pump-httpx", "before-pump-aiohttp", "pump-httpx", "bare-httpx", "pump-aiohttp",
         "bare-httpx-aiohttp", "bare-aiohttp", "node", "bare-raw"]


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    return (f"{m['nproc']} cores, {m['cpu']}, Python {m['python']}, Node {m['node']}; "
            f"load average at the end {m['loadavg']}; finished {data['finished']}")


def throughput_table(data: dict[str, Any]) -> str:
    rows = {(r["variant"], r["concurrency"], r["job_ms"]): r for r in data["summary"]}
    variants = [v for v in ORDER if any(k[0] == v for k in rows)]
    scenarios = sorted({(k[2], k[1]) for k in rows})
    head = ["C", "job", "limit"] + [LABELS[v] for v in variants] + [
        "pump httpx / floor", "pump aiohttp / floor", "pump aiohttp / limit", "load (1 min)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for job, c in scenarios:
        limit = c * 1000 / job if job else None
        cells = [str(c), f"{job:g} ms", fmt(limit)]
        for v in variants:
            row = rows.get((v, c, job))
            cells.append(fmt(row["median"]) if row else "—")
        for v in ("pump-httpx", "pump-aiohttp"):
            row = rows.get((v, c, job))
            cells.append(f"{row['vs_floor']:.2f}x" if row and "vs_floor" in row else "—")
        row = rows.get(("pump-aiohttp", c, job))
        cells.append(f"{100 * row['vs_limit']:.0f} %" if row and "vs_limit" in row else "—")
        loads = [r["load1_median"] for k, r in rows.items() if k[1:] == (c, job)]
        cells.append(fmt(statistics.median(loads), 2) if loads else "—")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def spread_table(data: dict[str, Any]) -> str:
    """min-median-max per cell, for the honest picture of the noise."""
    out = ["| C | job | variant | runs | min | median | max |", "|---|---|---|---|---|---|---|"]
    for r in sorted(data["summary"], key=lambda r: (r["job_ms"], r["concurrency"],
                                                    ORDER.index(r["variant"]))):
        out.append(f"| {r['concurrency']} | {r['job_ms']:g} ms | {LABELS[r['variant']]} | "
                   f"{r['n']} (failed {r['failed']}) | {fmt(r['min'])} | {fmt(r['median'])} | "
                   f"{fmt(r['max'])} |")
    return "\n".join(out)


def overhead_table(data: dict[str, Any]) -> str:
    rows = {r["variant"]: r for r in data["summary"]
            if r["concurrency"] == 1 and r["job_ms"] == 0}
    out = ["| variant | calls/s | µs per call | vs its floor |", "|---|---|---|---|"]
    floors = {"pump-httpx": "bare-httpx", "pump-aiohttp": "bare-httpx-aiohttp"}
    for v in ORDER:
        if v not in rows or not rows[v]["median"]:
            continue
        us = 1e6 / rows[v]["median"]
        note = ""
        floor = rows.get(floors.get(v, ""))
        if floor and floor["median"]:
            ratio = rows[v]["median"] / floor["median"]
            note = f"{us - 1e6 / floor['median']:+.0f} µs ({ratio:.2f}x)"
        out.append(f"| {LABELS[v]} | {fmt(rows[v]['median'])} | {us:.0f} | {note} |")
    return "\n".join(out)


def idle_table(data: dict[str, Any]) -> str:
    out = ["| transport | health endpoint | window | CPU s in window | CPU s / hour "
           "(extrapolated) | % of a core | RSS | idle calls / hour (measured) |",
           "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for run in data["runs"]:
        groups.setdefault((run["transport"], run["health"]), []).append(run)
    for (transport, health), runs in sorted(groups.items()):
        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r[key] for r in runs)
        out.append(f"| {transport} | {'on' if health else 'off'} | {med('window_s'):.0f} s | "
                   f"{med('cpu_s'):.2f} | {med('cpu_s_per_hour'):.1f} | "
                   f"{med('cpu_percent'):.3f} % | {med('rss_kb') / 1024:.1f} MiB | "
                   f"{med('calls_per_hour'):.0f} |")
    return "\n".join(out)


def startup_table(data: dict[str, Any]) -> str:
    out = ["| transport | runs | start → first call: min | median | max | RSS after |",
           "|---|---|---|---|---|---|"]
    for transport in ("httpx", "aiohttp"):
        runs = [r for r in data["runs"] if r["transport"] == transport and r["to_first_call_s"]]
        if not runs:
            continue
        t = [r["to_first_call_s"] for r in runs]
        rss = statistics.median(r["rss_kb_after_first_call"] for r in runs) / 1024
        out.append(f"| {transport} | {len(t)} | {min(t):.3f} s | {statistics.median(t):.3f} s | "
                   f"{max(t):.3f} s | {rss:.1f} MiB |")
    return "\n".join(out)


def pickup_table(data: dict[str, Any]) -> str:
    out = ["| idle sleep | enqueues | latency mean | median | max | expected mean (idle/2) | "
           "idle calls / hour (3600/idle) | all calls / hour in the test (enqueues included) |",
           "|---|---|---|---|---|---|---|---|"]
    for run in sorted(data["runs"], key=lambda r: r["idle_ms"]):
        idle_s = run["idle_ms"] / 1000
        out.append(f"| {idle_s:g} s | {len(run['latencies_s'])} | {fmt(run['mean_s'], 2)} s | "
                   f"{fmt(run['median_s'], 2)} s | {fmt(run['max_s'], 2)} s | "
                   f"{idle_s / 2:.2f} s | {run['computed_idle_calls_per_hour']:.0f} | "
                   f"{run['measured_calls_per_hour']:.0f} |")
    return "\n".join(out)


MODE_LABELS = {
    "fixed-10s": "fixed 10 s (the Node pump's default)",
    "adaptive-1-60s": "adaptive 1-60 s (`IDLE_SLEEP_MS=1000`, `IDLE_MAX_SLEEP_MS=60000`)",
    "adaptive-1-60s+wake": "adaptive 1-60 s + wake-ups (`WAKE_TOKEN`, POST /wake per insert)",
}


def _by_mode(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in data["runs"]:
        if "mode" in run:
            groups.setdefault(run["mode"], []).append(run)
    return groups


def modes_table(data: dict[str, Any]) -> str:
    out = ["| idle setting | pumps | idle calls / hour, queue empty | calls / hour, one job every "
           f"{data['gap_s'][0]:g}-{data['gap_s'][1]:g} s | pickups | pickup median | mean | max |",
           "|---|---|---|---|---|---|---|---|"]
    for mode, runs in _by_mode(data).items():
        lat = [x for r in runs for x in r["latencies_s"]]
        quiet = statistics.median(r["quiet_calls_per_hour"] for r in runs)
        known = [r["busy_calls_per_hour"] for r in runs if r["busy_calls_per_hour"] is not None]
        busy = statistics.median(known) if known else None
        asked = sum(r["samples"] for r in runs)
        busy_text = "—" if busy is None else f"{busy:.0f}"
        out.append(f"| {MODE_LABELS.get(mode, mode)} | {len(runs)} | {quiet:.0f} | {busy_text} | "
                   f"{len(lat)} of {asked} | {_secs(statistics.median(lat) if lat else None)} | "
                   f"{_secs(statistics.fmean(lat) if lat else None)} | "
                   f"{_secs(max(lat, default=None))} |")
    return "\n".join(out)


def steady_table(data: dict[str, Any]) -> str:
    out = [f"| idle setting | pumps | window (after {data['warmup_s']:g} s idle) | idle calls | "
           "idle calls / hour |", "|---|---|---|---|---|"]
    for mode, runs in _by_mode(data).items():
        window = statistics.median(r["quiet_window_s"] for r in runs)
        calls = "; ".join(str(int(r["quiet_calls"])) for r in runs)
        per_hour = statistics.median(r["quiet_calls_per_hour"] for r in runs)
        out.append(f"| {MODE_LABELS.get(mode, mode)} | {len(runs)} | {window:.0f} s | {calls} | "
                   f"{per_hour:.0f} |")
    return "\n".join(out)


def profile_table(data: dict[str, Any]) -> str:
    share = data["queue_pump_own_s"] / data["total_own_s"]
    head = (f"{data['jobs']} jobs, {data['transport']} transport: queue_pump's own code "
            f"{100 * share:.1f} % of {data['total_own_s']:.2f} s profiled\n\n")
    out = ["| own time | calls | function |", "|---|---|---|"]
    for row in data["top"]:
        out.append(f"| {100 * row['share']:.1f} % | {row['calls']} | `{row['function']}` |")
    return head + "\n".join(out)


def _secs(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.1f} s"


def size_table(data: dict[str, Any]) -> str:
    out = ["| choice | packages installed | site-packages | of which the dependencies |",
           "|---|---|---|---|"]
    for label in ("httpx", "aiohttp"):
        d = data[label]
        out.append(f"| {label} | {len(d['packages'])} | {d['site_packages_kb'] / 1024:.1f} MiB | "
                   f"{d['deps_kb'] / 1024:.1f} MiB |")
    extra = sorted(set(data["aiohttp"]["packages"]) - set(data["httpx"]["packages"]))
    return "\n".join(out) + "\n\naiohttp adds: " + ", ".join(f"`{p}`" for p in extra)


def plots(out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load("throughput")
    if data:
        rows = data["summary"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
        for ax, job in zip(axes, (0.0, 20.0), strict=True):
            cs = sorted({r["concurrency"] for r in rows if r["job_ms"] == job})
            for v in ORDER:
                pts = sorted((r["concurrency"], r["median"]) for r in rows
                             if r["variant"] == v and r["job_ms"] == job and r["median"])
                if pts:
                    style = "-o" if v.startswith("pump") else "--."
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=LABELS[v])
            if job:
                ax.plot(cs, [c * 1000 / job for c in cs], "k:", lw=2,
                        label=f"limit (C / {job:g} ms)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(cs, [str(c) for c in cs])
            ax.set_xlabel("concurrency (loops / calls in flight)")
            ax.set_ylabel("jobs drained per second (median)")
            ax.set_title(f"runner job time {job:g} ms" + (" (instant)" if not job else ""))
            ax.grid(True, which="both", alpha=0.3)
        axes[1].legend(fontsize=7, loc="upper left")
        fig.suptitle("Drain throughput vs concurrency (2 cores, loopback)")
        fig.tight_layout()
        path = out_dir / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    data = load("pickup")
    if data:
        fig, ax = plt.subplots(figsize=(7, 4.4))
        runs = sorted(data["runs"], key=lambda r: r["idle_ms"])
        for run in runs:
            per_hour = run["computed_idle_calls_per_hour"]
            ax.scatter([per_hour] * len(run["latencies_s"]), run["latencies_s"], s=14,
                       alpha=0.5, color="tab:blue")
        ax.plot([r["computed_idle_calls_per_hour"] for r in runs],
                [r["mean_s"] for r in runs], "-o", color="tab:red", label="measured mean")
        ax.plot([r["computed_idle_calls_per_hour"] for r in runs],
                [r["idle_ms"] / 2000 for r in runs], "k:", label="idle / 2 (expected mean)")
        for run in runs:
            ax.annotate(f"idle {run['idle_ms'] / 1000:g} s",
                        (run["computed_idle_calls_per_hour"], run["mean_s"] or 0),
                        textcoords="offset points", xytext=(6, 6), fontsize=8)
        modes = load("modes")
        if modes:
            for (mode, runs), marker in zip(_by_mode(modes).items(), "s^D", strict=False):
                lat = [x for r in runs for x in r["latencies_s"]]
                if not lat:
                    continue
                quiet = statistics.median(r["quiet_calls_per_hour"] for r in runs)
                ax.scatter([quiet], [statistics.median(lat)], marker=marker, s=70, zorder=3,
                           label=MODE_LABELS.get(mode, mode).split(" (")[0] + " (median)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("idle calls per hour (3600 / idle sleep)")
        ax.set_ylabel("pickup latency, enqueue → claim (s)")
        ax.set_title("Pickup latency vs idle calls per hour (dots: single enqueues)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / "pickup.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def main(argv: list[str] | None = None) -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plots", metavar="DIR", help="also write the PNGs here")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where bench/run.py wrote its JSON (default: bench/results)")
    args = parser.parse_args(argv)
    RESULTS = args.results
    sections = [("capacity", "Stand-in runner capacity", throughput_table),
                ("throughput", "Drain throughput (jobs/s, median)", throughput_table),
                ("throughput_c64", "Concurrency 64, 20 ms jobs, more rounds", throughput_table),
                ("before_after", "Before and after (jobs/s, median)", throughput_table),
                ("throughput", "Per-call cost at concurrency 1, instant runner", overhead_table),
                ("throughput", "Spread of every cell", spread_table),
                ("idle", "Idle", idle_table), ("startup", "Start-up", startup_table),
                ("pickup", "Pickup latency", pickup_table),
                ("modes", "Fixed vs adaptive idle vs wake-ups", modes_table),
                ("modes_steady", "Idle calls once ramped", steady_table),
                ("profile", "Where a call's time goes (cProfile)", profile_table),
                ("size", "Installed size", size_table)]
    for name, title, render in sections:
        data = load(name)
        if data is None:
            continue
        print(f"### {title}\n\n{machine_line(data)}\n\n{render(data)}\n")
    if args.plots:
        for path in plots(Path(args.plots)):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
