"""README.md and docs/*.md stay true: their command blocks run, their links resolve, and the
configuration table is the knob table.

Every fenced bash/sh/shell/console block is either run here (offline, in a temporary directory
holding a link to this venv as ``.venv``) or listed in ``NOT_RUN`` with the reason it cannot
run here. A new block that is in neither list fails, and so does a listed block that is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from queue_pump.config.knobs import Knob
from queue_pump.config.settings import KNOBS
from tests.support.env import ROOT
from tests.support.net import free_port

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}

DOCKER = "needs a Docker engine (none here); scripts/ci/deploy-checks.sh runs the Compose file"
PYPI = "installs from a package registry (none in the test suite); CI's .ci/run runs it on a " \
       "fresh machine"
NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "# 1. The demo: a reference runner on loopback with 300 seeded jobs, drained "
                  "by the real pump"):
        PYPI + "; tests/process/test_demo.py runs the demo itself",
    ("README.md", "cp .env.example .env        # then fill in SUPABASE_URL, AGENT_TOKEN, "
                  "ORGANIZATION_ID"): DOCKER,
    ("README.md", "export SUPABASE_URL=https://<project>.supabase.co AGENT_TOKEN=... "
                  "ORGANIZATION_ID=..."):
        "needs flyctl and Fly.io; tests/deploy runs deploy-fly.sh against a stand-in flyctl",
    ("README.md", "sudo scripts/install-systemd.sh            # creates "
                  "/etc/queue-pump/queue-pump.env (mode 600)"):
        "needs systemd as PID 1; scripts/ci/deploy-checks.sh installs the unit under a real "
        "systemd",
    ("README.md", "python3 -m venv .venv && .venv/bin/pip install -q -e ."): PYPI,
    ("docs/BENCHMARKS.md", "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'"): PYPI,
    ("docs/BENCHMARKS.md", "python3 -m venv /tmp/rt && /tmp/rt/bin/pip install -q "
                           "--require-hashes --no-deps \\"):
        PYPI + "; tests/repo/test_bench.py runs the harness",
    ("docs/BENCHMARKS.md", "/tmp/rt/bin/python bench/run.py idle --rounds 2 --seconds 30 "
                           "--warmup-s 10"):
        "needs the runtime-only venv the block above builds from a package registry; "
        "tests/repo/test_bench.py runs the harness",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.operator_list --jobs 1000000 --calls 300 "
                           "--claims 300"):
        "a benchmark of minutes over a 1,000,000-job file; benchmarks are not tests",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.dashboard --jobs 1000000 --calls 100"):
        "a benchmark of minutes over a 1,000,000-job file; benchmarks are not tests",
    ("docs/DASHBOARD.md", "QUEUE_PUMP_SCREENSHOTS=docs/img .venv/bin/python -m pytest -q -n 1 "
                          "tests/operator_api/dashboard -k screenshots"):
        "rewrites docs/img/; the same test runs in the suite, writing to a temporary directory",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.supabase_kit throughput --rounds 3"):
        "a benchmark of minutes needing PostgreSQL and Deno; benchmarks are not tests",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.baseline          # all 10 rows, ~10 min"):
        "a benchmark of minutes needing PostgreSQL and Deno; benchmarks are not tests",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.supabase_kit claim-batch --rounds 3 "
                           "--jobs 3000"):
        "a benchmark needing PostgreSQL; benchmarks are not tests",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.supabase_kit throughput --batch 1,10 "
                           "--rounds 3 --jobs 10000"):
        "a benchmark of minutes needing PostgreSQL and Deno; benchmarks are not tests",
    ("docs/BENCHMARKS.md", "flock /work/notes/bench.lock .venv/bin/python -m bench.queue_features "
                           "all"):
        "benchmarks of minutes needing PostgreSQL and Deno, some against an older checkout; "
        "benchmarks are not tests",
    ("docs/BENCHMARKS.md", "# main, as released: its own lock (httpx-aiohttp in it) and its "
                           "code"):
        PYPI + "; tests/repo/test_bench.py runs the harness",
    ("docs/BENCHMARKS.md", "mkdir -p /tmp/before && git archive af9ba79 queue_pump | tar -x -C "
                           "/tmp/before"):
        "benchmarks of minutes against an older commit; benchmarks are not tests",
    ("docs/DEPLOY.md", "cp .env.example .env            # fill in SUPABASE_URL, AGENT_TOKEN, "
                       "ORGANIZATION_ID; never commit .env"): DOCKER,
    ("docs/DEPLOY.md", "# the published image instead of a local build (multi-arch: amd64 and "
                       "arm64)"): "pulls from GHCR (no image registry here)",
    ("docs/DEPLOY.md", "kubectl create secret generic queue-pump-env \\"):
        "needs a Kubernetes cluster; deploy-checks.sh renders and validates the manifests",
    ("docs/DEPLOY.md", "kubectl create secret generic queue-pump-keda-postgres \\"):
        "needs a Kubernetes cluster with KEDA",
    ("docs/DEPLOY.md", "export SUPABASE_URL=https://<project>.supabase.co AGENT_TOKEN=... "
                       "ORGANIZATION_ID=..."):
        "needs flyctl and Fly.io; tests/deploy runs deploy-fly.sh against a stand-in flyctl",
    ("docs/DEPLOY.md", "fly apps create my-queue-pump"): "needs flyctl and Fly.io",
    ("docs/DEPLOY.md", "sudo apt-get install python3 python3-venv          # Python 3.11 or "
                       "newer"):
        "installs system packages as root; deploy-checks.sh runs the installer under systemd",
    ("docs/DEPLOY.md", "git pull && sudo scripts/install-systemd.sh          # upgrade: new venv "
                       "beside the old, switch, restart"):
        "needs systemd as PID 1; deploy-checks.sh upgrades and rolls back under a real systemd",
    ("docs/DEPLOY.md", "scripts/install-launchd.sh        # first run: venv + ~/Library/"
                       "Application Support/queue-pump/queue-pump.env (mode 600)"):
        "needs macOS (launchd); deploy-checks.sh parses the plist and shellchecks the script",
    ("docs/DEPLOY.md", "python3 -m venv venv"): PYPI,
    ("docs/DEVELOPMENT.md", "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'"):
        PYPI + " (the whole block: install, the suite, lint, types)",
    ("docs/RELIABILITY.md", ".venv/bin/python -m pytest tests/process/test_faults.py "
                            "tests/process/test_signals.py tests/unit/test_bad_input.py \\"):
        "runs tests of this suite; from inside the suite they would run twice",
    ("docs/OPERATIONS.md", "supabase db push                                    # the "
                           "migrations, 20261207000000_steer.sql too"):
        "needs the Supabase CLI and a Supabase project; the kit driver of tests/operator_api "
        "runs every command against the kit's functions under plain Deno",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.operator_list --kit --jobs 1000 1000000 "
                           "--calls 300 --claims 300"):
        "a benchmark of minutes over 1,000,000 jobs in PostgreSQL; benchmarks are not tests",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.supabase_kit cost --against /work/main "
                           "--rounds 3 --jobs 3000"):
        "a benchmark of minutes against another checkout; benchmarks are not tests",
    ("docs/BENCHMARKS.md", ".venv/bin/python -m bench.supabase_kit cost --against /work/main "
                           "--rounds 5 --jobs 3000"):
        "a benchmark of minutes against another checkout; benchmarks are not tests",
    ("docs/SUPABASE.md", "scripts/get-deno.sh        # the pinned Deno from the npm registry, "
                         "into .tools/deno"): "downloads Deno from the npm registry",
}


def command_blocks() -> list[tuple[str, str, str]]:
    """(file relative to the root, first line, whole text) of every shell block."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
            if match.group(1) in SHELLS:
                body = match.group(2)
                found.append((str(path.relative_to(ROOT)), body.splitlines()[0], body))
    return found


def sandbox(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A directory like a fresh clone after the Quickstart's install, and a clean environment."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QUEUE_PUMP_")
           and k not in ("AGENT_TOKEN", "ORGANIZATION_ID", "SUPABASE_URL", "NOTIFY_SOCKET")}
    env["PATH"] = str(tmp_path / ".venv" / "bin") + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def run_local_tryout(body: str, tmp_path: Path) -> None:
    # The runner's default port may be taken on this machine: the runner takes a free one from
    # its own environment variable, and the .env line points the pump there.
    port = free_port()
    script = body.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    env = sandbox(tmp_path, QUEUE_PUMP_RUNNER_PORT=str(port))
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"event": "queue_drained"' in done.stdout, done.stdout
    assert re.search(r'"processed": 10, "event": "queue_drained"', done.stdout), done.stdout
    assert "enqueued 10 demo job(s)" in done.stdout
    assert "give the pump SUPABASE_URL=" in done.stderr
    # the operator's side: the newest three, and job 1 in full
    listed = [line.split() for line in done.stdout.splitlines() if re.match(r"^\d+ +done ", line)]
    assert [row[0] for row in listed] == ["10", "9", "8"], done.stdout
    assert "job 1: done, demo in queue agent, attempt 1 of 3" in done.stdout
    assert re.search(r"\bclaimed\b.*\n.*\bcompleted\b", done.stdout), done.stdout
    for secret in ("local-dev-token-0123", "local-admin-token-0123"):
        assert secret not in done.stdout + done.stderr


def run_reference_runner_start(body: str, tmp_path: Path) -> None:
    port = free_port()
    command = body.splitlines()[0].replace("--port 8000", f"--port {port}")
    proc = subprocess.Popen(["bash", "-c", command], cwd=tmp_path,
                            env=sandbox(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        said = [proc.stderr.readline() for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    # The block's comment lines are what it prints (with the port it was given).
    expected = [line.removeprefix("# → ").removeprefix("#     ").replace("8000", str(port))
                for line in body.splitlines()[2:5]]
    assert [line.rstrip("\n").strip() for line in said] == [e.strip() for e in expected]
    assert proc.returncode == 0 and "runner stopped: 0 calls" in rest


def run_kit_stack_recipe(body: str, tmp_path: Path) -> None:
    """docs/SUPABASE.md's local stack, as written: up, a job through the enqueue function, the
    pump drains it, down. Needs PostgreSQL and Deno (a skip with one line where they are
    missing; a failure under QUEUE_PUMP_REQUIRE_KIT=1)."""
    from tests.supabase import kit

    hint = (kit.PG_HINT if kit.find_pg_bin() is None
            else kit.DENO_HINT if kit.find_deno() is None
            else "curl not found: apt-get install curl" if shutil.which("curl") is None
            else None)
    if hint is not None:
        if os.environ.get("QUEUE_PUMP_REQUIRE_KIT") == "1":
            pytest.fail(f"{hint} (QUEUE_PUMP_REQUIRE_KIT=1 makes this a failure)")
        pytest.skip(hint)
    # A folder of the test's own, that the postgres user may enter (as root), and any free port.
    folder = Path(tempfile.mkdtemp(prefix="qp-doc-kit-"))
    os.chmod(folder, 0o755)
    stack = folder / "stack"
    script = body.replace("/tmp/qp-kit", str(stack))
    script = script.replace(f"up --dir {stack}", f"up --dir {stack} --port 0")
    assert script.count("--port 0") == 1, "the recipe's `up --dir /tmp/qp-kit` moved"
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    env = sandbox(tmp_path, QUEUE_PUMP_DENO=str(kit.find_deno()),
                  QUEUE_PUMP_PG_BIN=str(kit.find_pg_bin()))
    try:
        done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=110)
    finally:
        if stack.exists():  # the block failed half way: take the stack down all the same
            subprocess.run([sys.executable, str(ROOT / "scripts" / "kit-stack.py"), "down",
                            "--dir", str(stack)], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r'^\{"id":\d+,"created":true\}$', done.stdout, re.M), done.stdout
    assert re.search(r'"processed": 1, "event": "queue_drained"', done.stdout), done.stdout
    assert f"stopped, and {stack} removed" in done.stderr
    assert not stack.exists()
    written = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert len(written["AGENT_TOKEN"]) >= 16 and len(written["ADMIN_TOKEN"]) >= 16
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0
    for secret in (written["AGENT_TOKEN"], written["ADMIN_TOKEN"]):
        assert secret not in done.stdout + done.stderr


RUN: dict[tuple[str, str], Callable[[str, Path], None]] = {
    ("README.md", "printf 'SUPABASE_URL=http://127.0.0.1:8000\\nAGENT_TOKEN=local-dev-token-0123\\n"
                  "ADMIN_TOKEN=local-admin-token-0123\\nORGANIZATION_ID=local-org\\n' > .env "
                  "&& chmod 600 .env"): run_local_tryout,
    ("docs/RUNNER_CONTRACT.md", "AGENT_TOKEN=dev-agent-token-0123 "
                                "ADMIN_TOKEN=dev-admin-token-0123 ORGANIZATION_ID=dev-org "
                                "queue-pump runner --port 8000 --seed-jobs 20"):
        run_reference_runner_start,
    ("docs/SUPABASE.md", "(umask 077 && .venv/bin/python scripts/kit-stack.py up --dir "
                         "/tmp/qp-kit > .env)  # 1. the stack; its .env"): run_kit_stack_recipe,
}


def test_every_command_block_is_run_or_says_why_not() -> None:
    blocks = {(path, first) for path, first, _ in command_blocks()}
    unclassified = sorted(blocks - set(RUN) - set(NOT_RUN))
    assert not unclassified, f"run these in tests/repo/test_docs.py or list why not: {unclassified}"
    stale = sorted((set(RUN) | set(NOT_RUN)) - blocks)
    assert not stale, f"these blocks are gone from the docs: {stale}"
    assert not set(RUN) & set(NOT_RUN)


@pytest.mark.e2e
@pytest.mark.parametrize("key", sorted(RUN), ids=lambda key: f"{key[0]}:{key[1][:30]}")
def test_command_block_runs_as_written(key: tuple[str, str], tmp_path: Path) -> None:
    bodies = [body for path, first, body in command_blocks() if (path, first) == key]
    assert len(bodies) == 1, f"{key} is not one block"
    started = time.monotonic()
    RUN[key](bodies[0], tmp_path)
    assert time.monotonic() - started < 120


def _row(knob: Knob) -> str:
    default = ("**required**" if knob.required
               else f"`{knob.default}`" if knob.default else "(empty)")
    name = knob.env.removeprefix("QUEUE_PUMP_").lower().replace("_", "-")
    flag = "\N{EM DASH}" if knob.secret else f"`--{name}`"
    text = knob.help
    if knob.low is not None:
        text += f" Range {knob.low}\N{EN DASH}{knob.high}."
    if knob.choices:
        text += f" One of {', '.join(knob.choices)}."
    return f"| `{knob.env}` | {default} | {flag} | {text} |"


def test_the_configuration_table_is_the_knob_table() -> None:
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")
            and line.split("`")[1] in {k.env for k in KNOBS}]
    expected = [_row(knob) for knob in KNOBS]
    assert rows == expected, ("docs/CONFIGURATION.md's table differs from "
                              "queue_pump/config/settings.py")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_relative_links_resolve_to_files_and_headings() -> None:
    broken = []
    for path in DOCS:
        text = path.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address: not checked offline
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{path.name}: {target}")
                continue
            if anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, broken
