"""scripts/kit-stack.py: the kit's throwaway local stack in one command, and the migrations'
all-or-nothing application (with Supabase's roles missing, too)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from . import kit

sys.path.insert(0, str(kit.ROOT / "scripts"))
from kit_stack import stack
from kit_stack.cli_errors import Failed

FIRST = kit.MIGRATIONS[0]


def kit_stack(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_PUMP_")}
    full.update(env)
    return subprocess.run([sys.executable, str(kit.KIT_STACK), *args], env=full,
                          capture_output=True, text=True, timeout=300, cwd=kit.ROOT)


def one_line(out: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a refusal prints: nothing on stdout, no traceback."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kit-stack"), out.stderr
    return lines[0]


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder of the test's own that the postgres user may enter (as root, pytest's
    tmp_path sits under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="qp-stack-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie that init has yet to reap has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if line and not line.startswith("#"))


# -- bad input: one line, exit 2, nothing touched (no PostgreSQL or Deno needed) -----------------

def test_down_refuses_a_folder_it_did_not_make(base: Path) -> None:
    (base / "precious.txt").write_text("keep me")
    line = one_line(kit_stack("down", "--dir", str(base)), 2)
    assert str(base) in line and "not a stack's folder" in line
    assert (base / "precious.txt").read_text() == "keep me"
    line = one_line(kit_stack("down", "--dir", str(base / "nothing-here")), 2)
    assert "no such folder" in line


def test_up_refuses_a_folder_holding_something_else(base: Path) -> None:
    (base / "precious.txt").write_text("keep me")
    line = one_line(kit_stack("up", "--dir", str(base), "--deno", sys.executable), 2)
    assert "not empty and not a stack's folder" in line
    assert sorted(p.name for p in base.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize(("args", "expected"), [
    (["up", "--dir", "x", "--port", "http"],
     "argument --port: must be a port number from 0 to 65535, got 'http'"),
    (["up", "--dir", "x", "--port", "70000"], "argument --port: must be a port number"),
    (["up"], "the following arguments are required: --dir"),
    (["sideways"], "invalid choice: 'sideways'"),
    (["up", "--dir", "x", "--deno", "/no/such/deno"], "--deno /no/such/deno: not an executable"),
    (["serve", "--state", "x", "no-such-function"], "no function named no-such-function"),
])
def test_bad_arguments_are_one_line_and_exit_2(base: Path, args: list[str],
                                               expected: str) -> None:
    args = [str(base / a) if a == "x" else a for a in args]
    assert expected in one_line(kit_stack(*args), 2)
    assert list(base.iterdir()) == []


# -- the whole stack ------------------------------------------------------------------------------

def enqueue(env: dict[str, str], body: dict[str, object]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        f"{env['SUPABASE_URL']}/functions/v1/enqueue", data=json.dumps(body).encode(),
        method="POST", headers={"X-Agent-Token": env["AGENT_TOKEN"], "Content-Type":
                                "application/json", "X-Organization-Id": env["ORGANIZATION_ID"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def secrets_shown(folder: Path, env: dict[str, str], *outputs: str) -> list[str]:
    """Where a token appears other than the .env lines: the command's other output, any log."""
    texts = list(outputs) + [p.read_text(errors="replace") for p in folder.rglob("*.log")]
    return [k for k in ("AGENT_TOKEN", "ADMIN_TOKEN") if any(env[k] in t for t in texts)]


@pytest.mark.kit
@pytest.mark.e2e
def test_up_a_job_drained_by_a_real_pump_up_again_then_down(
        deno_bin: Path, pg_bin: Path, base: Path) -> None:
    folder = base / "stack"
    tools = {"QUEUE_PUMP_PG_BIN": str(pg_bin)}
    up = kit_stack("up", "--dir", str(folder), "--port", "0", "--deno", str(deno_bin), **tools)
    try:
        assert up.returncode == 0, up.stderr
        env = parse_env(up.stdout)
        assert sorted(env) == ["ADMIN_TOKEN", "AGENT_TOKEN", "ORGANIZATION_ID", "SUPABASE_URL"]
        assert len(env["AGENT_TOKEN"]) >= 16 and len(env["ADMIN_TOKEN"]) >= 16
        assert env["AGENT_TOKEN"] != env["ADMIN_TOKEN"]
        assert "Traceback" not in up.stderr
        assert "20261206000000_hardening.sql" in up.stderr
        assert enqueue(env, {"type": "echo", "payload": {"n": 1}})[0] == 201
        # The pump reads the printed lines as its .env, nothing else.
        (base / ".env").write_text(up.stdout)
        pump_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("QUEUE_PUMP_") and k not in env}
        pump_env.update({"QUEUE_PUMP_HEALTH_PORT": "0", "QUEUE_PUMP_LOG_FORMAT": "json"})
        pump = subprocess.run([sys.executable, "-m", "queue_pump", "--drain"], env=pump_env,
                              cwd=base, capture_output=True, text=True, timeout=60)
        assert pump.returncode == 0, pump.stderr[-2000:]
        stopped = [json.loads(line) for line in pump.stdout.splitlines()
                   if '"pump_stopped"' in line]
        assert stopped and stopped[0]["processed"] == 1
        again = kit_stack("up", "--dir", str(folder), "--deno", str(deno_bin), **tools)
        assert again.returncode == 0, again.stderr
        assert "migrations applied: none new" in again.stderr
        assert parse_env(again.stdout) == env  # the same tokens; the same port
        assert enqueue(env, {"type": "echo"})[0] == 201  # served again after the restart
        assert secrets_shown(folder, env, up.stderr, again.stderr, pump.stdout,
                             pump.stderr) == []
        state = json.loads((folder / stack.MARKER).read_text())
    finally:
        down = kit_stack("down", "--dir", str(folder), **tools)
    assert down.returncode == 0, down.stderr
    assert not folder.exists()
    assert not running(state["router_pid"])
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{state['pg_port']}/postgres",
                        connect_timeout=5)


# -- the migrations, all or nothing ---------------------------------------------------------------

@pytest.fixture
def bare(pg_bin: Path) -> Iterator[stack.Cluster]:
    """A cluster of the test's own WITHOUT Supabase's roles."""
    with kit.cluster(pg_bin) as pg:
        yield stack.Cluster(pg_bin, pg.dir, pg.port)


def schemas(pg: stack.Cluster) -> list[str]:
    with psycopg.connect(pg.url) as conn:
        rows = conn.execute("select nspname from pg_namespace where nspname in"
                            " ('queue_pump', 'supabase_migrations') order by 1").fetchall()
    return [r[0] for r in rows]


def recorded(pg: stack.Cluster) -> list[str]:
    with psycopg.connect(pg.url) as conn:
        return [r[0] for r in conn.execute(
            "select name from supabase_migrations.schema_migrations order by version")]


def migrations(folder: Path, *paths: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for p in paths:
        shutil.copy(p, folder / p.name)
    return folder


ROLES_LINE = ("queue_pump needs Supabase's roles anon, authenticated and service_role; missing: "
              "anon, authenticated, service_role. Create them first: create role anon nologin;")


@pytest.mark.kit
def test_without_supabases_roles_the_first_migration_names_them_and_leaves_nothing(
        bare: stack.Cluster) -> None:
    with pytest.raises(Failed) as failed:
        stack.apply_migrations(bare)
    assert str(failed.value).startswith(f"migration {FIRST.name} failed, none of it applied: "
                                        + ROLES_LINE)
    assert schemas(bare) == ["supabase_migrations"] and recorded(bare) == []
    # Applied by hand without a transaction (psql -f): the same line, and still nothing made.
    out = subprocess.run([str(bare.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                          bare.url, "-f", str(FIRST)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and ROLES_LINE in out.stderr
    assert schemas(bare) == ["supabase_migrations"]
    # One role made, two missing: the line names the two.
    assert bare.psql("create role anon nologin;").returncode == 0
    with pytest.raises(Failed, match=r"missing: authenticated, service_role\. Create them"):
        stack.apply_migrations(bare)


@pytest.mark.kit
def test_each_migration_once_in_order_and_a_failing_one_leaves_nothing(
        bare: stack.Cluster, base: Path) -> None:
    assert bare.psql(stack.CREATE_ROLES).returncode == 0
    first, second = kit.MIGRATIONS[:2]
    assert stack.apply_migrations(bare, migrations(base / "m", first)) == [first.name]
    assert stack.apply_migrations(bare, migrations(base / "m", second)) == [second.name]
    assert stack.apply_migrations(bare, base / "m") == []
    broken = base / "m" / "29991231000000_broken.sql"
    broken.write_text("create table queue_pump.half_made (id int);\nselect 1 / 0;\n")
    with pytest.raises(Failed, match=r"29991231000000_broken.sql failed, none of it applied: "
                                     r"division by zero"):
        stack.apply_migrations(bare, base / "m")
    assert recorded(bare) == [stack.MIGRATION_NAME.match(p.name).group(2)  # type: ignore[union-attr]
                              for p in (first, second)]
    with psycopg.connect(bare.url) as conn:
        assert conn.execute("select to_regclass('queue_pump.half_made')").fetchone() == (None,)
    with contextlib.suppress(FileNotFoundError):
        broken.unlink()


def test_a_bad_limit_for_the_router_is_one_line(base: Path) -> None:
    out = kit_stack("serve", "--state", str(base / "s"), "--deno", sys.executable,
                    HTTP_MAX_CONNECTIONS="lots")
    assert one_line(out, 2) == ("kit-stack: HTTP_MAX_CONNECTIONS must be a whole number from 1 "
                                'to 100000, got "lots"')
    assert list(base.iterdir()) == []


@pytest.mark.kit
def test_a_function_that_will_not_start_is_one_line_and_down_still_cleans_up(
        deno_bin: Path, pg_bin: Path, base: Path) -> None:
    folder = base / "stack"
    tools = {"QUEUE_PUMP_PG_BIN": str(pg_bin)}
    up = kit_stack("up", "--dir", str(folder), "--port", "0", "--deno", str(deno_bin),
                   JOB_LEASE_SECONDS="soon", **tools)
    try:
        assert up.returncode == 1 and up.stdout == "", up.stderr
        last = up.stderr.strip().splitlines()[-1]
        assert last.startswith("kit-stack: function ai-job-runner did not start: ai-job-runner: "
                               'JOB_LEASE_SECONDS must be a whole number from 2 to 86400, got '
                               '"soon"'), last
        assert last.endswith(f"(the stack in {folder} is left as it is: fix that and run up "
                             "again, or down)")
        assert "Traceback" not in up.stderr
    finally:
        down = kit_stack("down", "--dir", str(folder), **tools)
    assert down.returncode == 0, down.stderr
    assert not folder.exists()
