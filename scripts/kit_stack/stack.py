"""The throwaway local stack in a folder: PostgreSQL, Supabase's roles, the migrations, and every
function on one port (functions.py), started in the background by ``up``, gone after ``down``.

The folder's layout: ``kit-stack.json`` (what ``down`` needs: ports, the router's pid; its
presence marks the folder as the stack's own), ``secrets.env`` (the generated tokens, mode
0600, so that ``up`` again prints the same ones), ``pg/`` (the cluster, its socket and log),
``functions/`` (each function's log), ``router.log`` (the router's own lines).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cli_errors import Failed, Usage

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "supabase" / "migrations"
KIT_STACK = ROOT / "scripts" / "kit-stack.py"
MARKER = "kit-stack.json"
SECRETS = "secrets.env"
ROLES = ("anon", "authenticated", "service_role")
# The three roles as a Supabase database has them (NOLOGIN: nobody logs in as them here).
CREATE_ROLES = """do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end $$;
"""
# Where `supabase db push` records what it applied; the same table, so `up` again applies only
# the new files, as a deployed kit upgrades in place.
MIGRATIONS_TABLE = """create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key, statements text[], name text);
"""
MIGRATION_NAME = re.compile(r"^(\d+)_([A-Za-z0-9_.-]+)\.sql$")
TOKEN_BYTES = 32  # token_hex: 64 characters, far above every part's minimum (16)
ORGANIZATION_ID = "local"
PG_HINT = ("PostgreSQL server not found: apt-get install postgresql "
           "(or set QUEUE_PUMP_PG_BIN to the directory holding initdb and pg_ctl)")


def say(line: str) -> None:
    """Progress, on stderr: stdout carries only the .env lines."""
    print(f"kit-stack: {line}", file=sys.stderr, flush=True)


def find_pg_bin() -> Path:
    candidates = [os.environ.get("QUEUE_PUMP_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    for c in candidates:
        if c and all((Path(c) / tool).exists() for tool in ("initdb", "pg_ctl", "psql")):
            return Path(c)
    raise Failed(PG_HINT)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As a server binds it: connections of a router just stopped (TIME_WAIT) do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """The stack's PostgreSQL: trust on 127.0.0.1 only (a throwaway: no password, fsync off).
    As root it runs as the `postgres` user, since initdb refuses root."""

    bin: Path
    dir: Path
    port: int

    @property
    def as_postgres(self) -> bool:
        return os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin / tool) if (self.bin / tool).exists() else tool, *args]
        if self.as_postgres:
            cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._cmd(tool, *args), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)

    def init(self) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        if self.as_postgres:
            os.chown(self.dir, pwd.getpwnam("postgres").pw_uid, -1)
            if self._run("test", "-w", str(self.dir)).returncode != 0:
                raise Usage(f"the postgres user cannot write to {self.dir}: as root, choose "
                            "a --dir whose parent folders others may enter (e.g. under /tmp)")
        out = self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U",
                        "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
        if out.returncode != 0:
            raise Failed(f"initdb failed: {last_line(out.stderr)}")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.dir / "data"), "status").returncode == 0

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        out = self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-t", "60", "-l",
                        str(self.dir / "log"), "-o", opts, "start")
        if out.returncode != 0:
            log = (self.dir / "log").read_text(errors="replace") if (self.dir / "log").exists() \
                else out.stderr
            raise Failed(f"PostgreSQL did not start: {last_line(log)}")

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-m", "fast", "stop")

    def psql(self, script: str) -> subprocess.CompletedProcess[str]:
        """``script`` through psql as postgres, stopping at the first error."""
        return subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url],
            input=script, capture_output=True, text=True, timeout=600)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no output)"


def first_error(text: str) -> str:
    for line in text.splitlines():
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()[:500]
    return last_line(text)


def migration_files(folder: Path = MIGRATIONS) -> list[tuple[str, str, Path]]:
    """(version, name, path) of every migration, in the order Supabase applies them."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        m = MIGRATION_NAME.match(path.name)
        if m is None:
            raise Failed(f"{path.name}: a migration's name must be <digits>_<name>.sql")
        found.append((m.group(1), m.group(2), path))
    return found


def applied_versions(pg: Cluster) -> set[str]:
    out = pg.psql(MIGRATIONS_TABLE + "\\pset format unaligned\n\\pset tuples_only on\n"
                  "select version from supabase_migrations.schema_migrations;\n")
    if out.returncode != 0:
        raise Failed(f"cannot read the applied migrations: {first_error(out.stderr)}")
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def apply_migrations(pg: Cluster, folder: Path = MIGRATIONS) -> list[str]:
    """Every migration not yet applied, in order, each with its record in one transaction:
    all of it or nothing. Returns the file names applied."""
    done = applied_versions(pg)
    applied = []
    for version, name, path in migration_files(folder):
        if version in done:
            continue
        quoted = str(path).replace("'", "''")
        script = (f"begin;\n\\i '{quoted}'\n"
                  "insert into supabase_migrations.schema_migrations (version, name)"
                  f" values ('{version}', '{name}');\ncommit;\n")
        out = pg.psql(script)
        if out.returncode != 0:
            raise Failed(f"migration {path.name} failed, none of it applied: "
                         f"{first_error(out.stderr)}")
        applied.append(path.name)
    return applied


# -- the folder ----------------------------------------------------------------------------

def read_state(folder: Path) -> dict[str, object] | None:
    """The stack's record in ``folder``, or None when the folder is not a stack's."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        state = json.loads(marker.read_text())
    except ValueError:
        return None
    return state if isinstance(state, dict) and state.get("made_by") == "kit-stack" else None


def write_state(folder: Path, state: dict[str, object]) -> None:
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"made_by": "kit-stack", **state}, indent=2) + "\n")
    tmp.replace(folder / MARKER)


def tokens(folder: Path) -> dict[str, str]:
    """The stack's tokens: made once with the secrets module, kept in a 0600 file."""
    path = folder / SECRETS
    if path.is_file():
        pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return {k: v for k, v in pairs}
    made = {"AGENT_TOKEN": secrets.token_hex(TOKEN_BYTES),
            "ADMIN_TOKEN": secrets.token_hex(TOKEN_BYTES)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{k}={v}\n" for k, v in made.items())
    return made


def is_new(folder: Path) -> bool:
    """True for a new stack; False for an existing one (``up`` again). A folder that holds
    anything else is refused."""
    if folder.exists() and not folder.is_dir():
        raise Usage(f"--dir {folder}: exists and is not a folder")
    if read_state(folder) is not None:
        return False
    if folder.is_dir() and any(folder.iterdir()):
        raise Usage(f"--dir {folder}: not empty and not a stack's folder (no {MARKER}); "
                    "choose a new or empty folder")
    return True


def claim_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # the postgres user (as root) must pass through it to pg/
    write_state(folder, {"folder": str(folder)})  # from now on `down` may remove it


# -- the functions' router, in the background ------------------------------------------------

def router_alive(state: dict[str, object]) -> int | None:
    """The pid of the stack's router if that process is still this stack's router."""
    pid = state.get("router_pid")
    if not isinstance(pid, int):
        return None
    words = command_line(pid)
    folder = str(state.get("folder", ""))
    ours = any(w.endswith("kit-stack.py") for w in words) and f"{folder}/functions" in words
    return pid if ours else None


def command_line(pid: int) -> list[str]:
    """The arguments process ``pid`` runs with; [] when it does not run (a zombie neither)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return proc.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return []
    # No /proc (macOS): ps says it, split on spaces (the folder's path has none, or no match).
    out = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True,
                         text=True)
    return out.stdout.split() if out.returncode == 0 else []


def stop_router(state: dict[str, object], timeout_s: float = 30.0) -> None:
    pid = router_alive(state)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and router_alive(state) is not None:
        time.sleep(0.05)
    if router_alive(state) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # its own group: the router and its functions


def start_router(folder: Path, port: int, env: dict[str, str], deno: Path) -> tuple[int, int]:
    """Starts `kit-stack.py serve` in the background (a session of its own); waits until it
    serves. Returns (pid, port)."""
    log_path = folder / "router.log"
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(
            [sys.executable, str(KIT_STACK), "serve", "--port", str(port), "--state",
             str(folder / "functions"), "--deno", str(deno)],
            env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for event in router_events(log_path, offset):
            if event.get("event") == "serving":
                return proc.pid, int(str(event["port"]))
            if event.get("event") == "function_failed_to_start":
                proc.wait(timeout=30)
                raise Failed(f"function {event['function']} did not start: "
                             f"{event.get('last_line') or 'no output'} (its log: {event['log']})")
        if proc.poll() is not None:
            raise Failed(f"the functions' router exited: {last_line(tail(log_path, offset))}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise Failed(f"the functions did not start within 180 s (see {log_path})")


def tail(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(1 << 20).decode("utf-8", "replace")


def router_events(path: Path, offset: int) -> list[dict[str, object]]:
    found = []
    for line in tail(path, offset).splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


# -- up and down ---------------------------------------------------------------------------------

def env_lines(url: str, secret: dict[str, str], db_url: str) -> str:
    return "\n".join([
        "# The kit's local stack (scripts/kit-stack.py up): the pump's and queue-pump jobs' .env",
        f"SUPABASE_URL={url}",
        f"AGENT_TOKEN={secret['AGENT_TOKEN']}",
        f"ORGANIZATION_ID={ORGANIZATION_ID}",
        f"ADMIN_TOKEN={secret['ADMIN_TOKEN']}",
        f"# the database, for psql: {db_url}",
    ]) + "\n"


def up(folder: Path, port: int | None, pg_port: int | None, deno: Path) -> str:
    """Makes or restarts the stack in ``folder``; returns the .env lines."""
    new = is_new(folder)
    bin_dir = find_pg_bin()
    state: dict[str, object] = read_state(folder) or {}
    state.pop("made_by", None)
    port = port if port is not None else int(str(state.get("port", 54321)))
    if not new:
        stop_router(state)  # `up` again serves the functions as they are now
    if port and not port_free(port):
        raise Usage(f"port {port} is in use: pass --port with another (0: any free one)")
    if new:
        claim_folder(folder)
    pg = Cluster(bin_dir, folder / "pg",
                 int(str(state.get("pg_port", 0))) or pg_port or free_port())
    if not (pg.dir / "data").is_dir():
        say(f"a new PostgreSQL cluster in {pg.dir}")
        pg.init()
    write_state(folder, {"folder": str(folder), "port": port, "pg_port": pg.port})
    if not pg.running():
        pg.start()
    roles = pg.psql(CREATE_ROLES)
    if roles.returncode != 0:
        raise Failed(f"cannot create Supabase's roles: {first_error(roles.stderr)}")
    applied = apply_migrations(pg)
    say(f"migrations applied: {', '.join(applied) or 'none new'}")
    secret = tokens(folder)
    url_base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    env.update(secret)
    env.update({"SUPABASE_DB_URL": pg.url, "SUPABASE_URL": url_base})
    pid, port = start_router(folder, port, env, deno)
    url_base = f"http://127.0.0.1:{port}"
    write_state(folder, {"folder": str(folder), "port": port, "pg_port": pg.port,
                         "router_pid": pid})
    say(f"functions served at {url_base}/functions/v1/<name> (logs in {folder}/functions)")
    return env_lines(url_base, secret, pg.url)


def down(folder: Path) -> None:
    if not folder.is_dir():
        raise Usage(f"--dir {folder}: no such folder")
    state = read_state(folder)
    if state is None:
        raise Usage(f"--dir {folder}: not a stack's folder (no {MARKER}); not removing it")
    stop_router(state)
    bin_dir = find_pg_bin()
    Cluster(bin_dir, folder / "pg", int(str(state.get("pg_port", 0)))).stop()
    shutil.rmtree(folder)
    say(f"stopped, and {folder} removed")
