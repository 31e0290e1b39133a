"""Real parts for the Supabase kit's tests: a throwaway PostgreSQL cluster and Deno functions.

Found, not faked: PostgreSQL's server binaries (Debian's `postgresql` package, or
QUEUE_PUMP_PG_BIN) and a `deno` binary (QUEUE_PUMP_DENO, PATH, or `scripts/get-deno.sh`'s
`.tools/deno`). When either is missing the kit's tests skip with one line saying how to get it;
with QUEUE_PUMP_REQUIRE_KIT=1 (CI) a missing part is a failure instead.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted((ROOT / "supabase" / "migrations").glob("*.sql"))
FUNCTIONS = ROOT / "supabase" / "functions"
KIT_STACK = ROOT / "scripts" / "kit-stack.py"
SUPABASE_ROLES = ("anon", "authenticated", "service_role")

PG_HINT = ("PostgreSQL server not found: apt-get install postgresql "
           "(or set QUEUE_PUMP_PG_BIN to the directory holding initdb and pg_ctl)")
DENO_HINT = "Deno not found: run scripts/get-deno.sh (needs npm), or put deno on PATH"


@functools.cache  # asked once per kit test at collection; pg_config is a script
def find_pg_bin() -> Path | None:
    candidates = [os.environ.get("QUEUE_PUMP_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


@functools.cache
def find_deno() -> Path | None:
    env = os.environ.get("QUEUE_PUMP_DENO")
    local = ROOT / ".tools" / "deno" / "node_modules" / "@deno" / "linux-x64-glibc" / "deno"
    for c in (env, shutil.which("deno"), str(local)):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """initdb + pg_ctl in a temporary directory, listening on 127.0.0.1 only.

    As root the server runs as the `postgres` user (initdb refuses root)."""

    def __init__(self, bin_dir: Path, base: Path, *, port: int | None = None) -> None:
        """A new cluster in ``base``; or, given the ``port`` it listens on, the running one
        already there."""
        self.bin = bin_dir
        self.dir = base
        self.data = base / "data"
        self.port = port or free_port()
        self._as_postgres = os.geteuid() == 0
        if port is not None:
            return
        if self._as_postgres:
            uid = pwd.getpwnam("postgres").pw_uid
            os.chown(base, uid, -1)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self._as_postgres:
            cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stderr.strip()[-2000:]}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l",
                  str(self.dir / "log"), "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart``: stop in ``mode``, start again with the same options, wait."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "-l",
                  str(self.dir / "log"), "restart")

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str, template: str = "template1") -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'create database "{name}" template "{template}"')
        return self.url(name)

    def create_roles(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for role in SUPABASE_ROLES:
                extra = " bypassrls" if role == "service_role" else ""
                conn.execute(f"create role {role} nologin{extra}")


def apply_migrations(url: str) -> None:
    """The migrations as written, in order, each in one transaction (as `supabase db push`)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for path in MIGRATIONS:
            with conn.transaction():
                conn.execute(path.read_text())  # type: ignore[arg-type]


@contextlib.contextmanager
def cluster(bin_dir: Path) -> Iterator[PgCluster]:
    with tempfile.TemporaryDirectory(prefix="qp-pg-") as tmp:
        os.chmod(tmp, 0o755)
        pg = PgCluster(bin_dir, Path(tmp))
        pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(Exception):
                pg.stop("immediate")


def shared_cluster(bin_dir: Path, shared: Path,
                   prepare: Callable[[PgCluster], None]) -> PgCluster:
    """One running cluster for every test process of a run (xdist's workers): the first to
    come makes it in ``shared`` and runs ``prepare(cluster)``, the others attach to it. Each
    test works in a database of its own, so they share a server, not data; ``stop_shared``
    stops it once the run is over. (A cluster per worker cost 8 initdb and 8 servers.)"""
    import fcntl

    info = shared / "cluster.json"
    with open(shared / "cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if info.is_file():
            return PgCluster(bin_dir, shared, port=json.loads(info.read_text())["port"])
        pg = PgCluster(bin_dir, shared)
        pg.start()
        # Recorded before prepare() runs, so that the server is stopped even if that fails.
        info.write_text(json.dumps({"port": pg.port, "bin": str(bin_dir)}))
        prepare(pg)
        return pg


# Set by the run's first process (tests/conftest.py) to the directory shared_cluster() uses.
SHARED_DIR_ENV = "QP_TESTS_KIT_PG_DIR"


def stop_shared(shared: Path) -> None:
    """Stop the cluster shared_cluster() started in ``shared``, if it did."""
    info = shared / "cluster.json"
    if info.is_file():
        data = json.loads(info.read_text())
        with contextlib.suppress(Exception):
            PgCluster(Path(data["bin"]), shared, port=data["port"]).stop("immediate")
        info.unlink()


class DenoFunction:
    """One Deno process serving one of the kit's functions under plain Deno, as a user would run
    it: `deno run -A supabase/functions/<name>/index.ts` with PORT."""

    def __init__(self, deno: Path, name: str, env: Mapping[str, str], *,
                 functions: Path = FUNCTIONS) -> None:
        """``functions``: the kit's functions folder, or a copy of it with a handler added."""
        self.name = name
        self.port = free_port()
        # Its own TMPDIR (the function's private socket lives there), removed even when the
        # process is killed and cannot clean up after itself.
        self.tmp = tempfile.mkdtemp(prefix="qp-deno-")
        full = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
        full.update({"PORT": str(self.port), "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1",
                     "TMPDIR": self.tmp})
        full.update(env)
        self.proc = subprocess.Popen(
            [str(deno), "run", "-A", "--no-prompt", str(functions / name / "index.ts")],
            env=full, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(60):
            self.kill()
            raise RuntimeError(f"deno {name} did not start: {''.join(self.lines)[-2000:]}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith('{"event":"listening"'):
                self._listening.set()

    @property
    def base_url(self) -> str:
        """What a pump's SUPABASE_URL is set to."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/functions/v1/{self.name}"

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def peak_rss_kib(self) -> int:
        """The process's peak resident memory so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc status")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        shutil.rmtree(self.tmp, ignore_errors=True)
        return code


class FunctionsServer:
    """Every function (or those named) on one port under /functions/v1/<name>, as
    `supabase functions serve` routes them: `scripts/kit-stack.py serve`, one Deno process per
    function behind one router (scripts/kit_stack/functions.py). A context manager."""

    def __init__(self, deno: Path, env: Mapping[str, str], names: Sequence[str] | None = None,
                 *, functions: Path = FUNCTIONS) -> None:
        """``functions``: the kit's functions folder, or a copy of it with a handler added."""
        self.state = Path(tempfile.mkdtemp(prefix="qp-fns-"))
        full = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
        full.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, str(KIT_STACK), "serve", "--port", "0", "--state", str(self.state),
             "--deno", str(deno), "--functions", str(functions), *(names or ())],
            env=full, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # its own process group: stop() can reach every function
        self.lines: list[str] = []
        self.pids: dict[str, int] = {}
        self.port = 0
        self._serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(120) or not self.port:
            self.stop()
            raise RuntimeError(f"kit-stack serve did not start: {''.join(self.lines)[-2000:]}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("{"):
                event = json.loads(line)
                if event["event"] == "function_started":
                    self.pids[event["function"]] = event["pid"]
                elif event["event"] == "serving":
                    self.port = event["port"]
                    self._serving.set()
        self._serving.set()  # it exited: nothing more to wait for

    def __enter__(self) -> FunctionsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What a pump's SUPABASE_URL is set to."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/functions/v1/{name}"

    def router_events(self, name: str) -> list[dict[str, Any]]:
        """The router's own JSON lines named ``name`` (function_started, function_exited, ...)."""
        return [e for e in (json.loads(line) for line in list(self.lines) if line.startswith("{"))
                if e.get("event") == name]

    def events(self, name: str) -> list[dict[str, Any]]:
        """The parsed JSON log lines of function ``name`` so far (its other lines left out)."""
        path = self.state / f"{name}.log"
        text = path.read_text(errors="replace") if path.is_file() else ""
        found = []
        for line in text.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def output(self, name: str) -> str:
        """Everything function ``name`` wrote so far."""
        path = self.state / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def kill(self, name: str) -> None:
        """SIGKILL function ``name``'s process (a crash); the router and the others go on."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pids[name], signal.SIGKILL)

    def stop(self) -> int:
        """SIGTERM: the functions finish their calls in flight, then everything exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = -9
        if code != 0:  # it did not stop its functions itself: whatever is left of its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.state, ignore_errors=True)
        return code


def wait_until(predicate: Any, timeout_s: float, what: str, step_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise TimeoutError(f"{what} not seen within {timeout_s} s")
