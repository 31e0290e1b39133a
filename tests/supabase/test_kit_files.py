"""The kit's other files: config.toml read by a TOML parser, the pg_cron snippet run on a real
PostgreSQL against stand-ins for pg_cron, pg_net and Vault (none of which a plain PostgreSQL
has): they record what the snippet schedules and sends, and the scheduled SQL is then run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import psycopg
import pytest

from . import kit

SNIPPET = kit.ROOT / "supabase" / "snippets" / "pg_cron_safety_net.sql"

STAND_INS = """
create schema cron;
create table cron.job (jobname text primary key, schedule text, command text);
-- pg_cron replaces a job scheduled again under the same name.
create function cron.schedule(name text, schedule text, command text) returns bigint
  language sql as $$ insert into cron.job values (name, schedule, command)
    on conflict (jobname) do update set schedule = excluded.schedule, command = excluded.command
    returning 1::bigint $$;
create schema vault;
create table vault.secrets (name text primary key, secret text);
create function vault.create_secret(secret text, name text) returns uuid
  language sql as $$ insert into vault.secrets values (name, secret);
                     select gen_random_uuid() $$;
create view vault.decrypted_secrets as select name, secret as decrypted_secret from vault.secrets;
create schema net;
create table net.sent (url text, headers jsonb, body jsonb, timeout_milliseconds int);
create function net.http_post(url text, body jsonb, headers jsonb, timeout_milliseconds int)
  returns bigint language sql as $$
    insert into net.sent values (url, headers, body, timeout_milliseconds) returning 1::bigint $$;
"""


def test_config_toml_declares_each_function_the_kit_ships() -> None:
    config = tomllib.loads((kit.ROOT / "supabase" / "config.toml").read_text())
    shipped = {p.name for p in kit.FUNCTIONS.iterdir()
               if p.is_dir() and not p.name.startswith("_")}
    assert shipped == {"ai-job-runner", "enqueue", "jobs"}
    assert set(config["functions"]) == shipped
    for name in shipped:
        # The pump authenticates with its own token; see the comment in config.toml.
        assert config["functions"][name]["verify_jwt"] is False
        assert (kit.FUNCTIONS / name / "index.ts").is_file()
        assert json.loads((kit.FUNCTIONS / name / "deno.json").read_text()) is not None


def test_migration_file_names_follow_the_cli_timestamp_form() -> None:
    assert kit.MIGRATIONS
    for path in kit.MIGRATIONS:
        assert re.fullmatch(r"\d{14}_[a-z0-9_]+\.sql", path.name), path.name


@pytest.mark.kit
def test_the_pg_cron_snippet_schedules_the_pumps_exact_call(db_url: str, org: str) -> None:
    text = SNIPPET.read_text()
    values = {"<project-ref>": "proj", "<AGENT_TOKEN>": "tok-123", "<ORGANIZATION_ID>": org}
    for placeholder, value in values.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    # The stand-ins replace the extensions; everything else runs as written.
    text = re.sub(r"(?m)^create extension .*$", "", text)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(STAND_INS)
        conn.execute(text)  # type: ignore[arg-type]
        conn.execute(text)  # type: ignore[arg-type]  # a second run changes nothing
        assert conn.execute("select count(*) from vault.secrets").fetchone() == (3,)
        jobs = conn.execute("select jobname, schedule, command from cron.job"
                            " order by jobname").fetchall()
        assert [(name, when) for name, when, _ in jobs] == [
            ("queue-pump-purge", "*/5 * * * *"), ("queue-pump-safety-net", "* * * * *")]
        conn.execute("select queue_pump.enqueue(%s, 'agent', 'echo')", (org,))
        conn.execute("insert into queue_pump.jobs (organization_id, job_type, status, attempts,"
                     " finished_at) select %s, 'echo', 'done', 1, now() - interval '8 days'"
                     " from generate_series(1, 25000)", (org,))
        for _, _, command in jobs:
            conn.execute(command)
        [(url, headers, body, timeout)] = conn.execute("select * from net.sent").fetchall()
    assert url == "https://proj.supabase.co/functions/v1/ai-job-runner?worker=1&queue=agent"
    assert body == {"worker": True, "queue": "agent"}
    assert headers["X-Agent-Token"] == "tok-123" and headers["X-Organization-Id"] == org
    assert headers["Content-Type"] == "application/json"
    assert timeout == 150000
    with psycopg.connect(db_url, autocommit=True) as conn:
        left = conn.execute("select status, count(*) from queue_pump.jobs group by 1").fetchall()
    assert left == [("queued", 1)], "the purge ran its batches to the end"
    assert "tok-123" not in SNIPPET.read_text()


@pytest.mark.kit
def test_the_handler_example_in_the_docs_type_checks(deno_bin: Path, tmp_path: Path) -> None:
    doc = (kit.ROOT / "docs" / "SUPABASE.md").read_text()
    example = re.search(r"(?ms)^const summarise: Handler = .*?^};$", doc)
    assert example is not None
    handlers = kit.FUNCTIONS / "ai-job-runner" / "handlers.ts"
    check = tmp_path / "example.ts"
    check.write_text(f'import type {{ Handler }} from "{handlers.as_uri()}";\n'
                     f"{example.group(0)}\nexport {{ summarise }};\n")
    out = subprocess.run([str(deno_bin), "check", "--quiet", str(check)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 0, out.stderr[-2000:]


def _sources() -> list[Path]:
    return sorted(p for p in kit.FUNCTIONS.rglob("*.ts") if "node_modules" not in p.parts)


def test_each_function_is_in_supabases_idiom() -> None:
    """Deno.serve in each index.ts and Response.json for answers (issue 20: Deno.serve stood
    two layers below, and a hand-written json() stood in for Response.json)."""
    for name in ("ai-job-runner", "enqueue"):
        index = (kit.FUNCTIONS / name / "index.ts").read_text()
        assert "Deno.serve(" in index, name
    text = "\n".join(p.read_text() for p in _sources())
    assert "Response.json(" in text
    assert "new Response(JSON.stringify" not in text
    assert not re.search(r"export function json\(", text)


def test_dependencies_come_from_an_import_map_pinned_by_a_committed_lock() -> None:
    """Issue 20: deno.json said "lock": false, so dependencies were pinned by version with no
    integrity check. CI also runs `deno check --frozen` on each function (.ci/run)."""
    for name in ("ai-job-runner", "enqueue"):
        config = json.loads((kit.FUNCTIONS / name / "deno.json").read_text())
        assert config.get("lock", True) is not False, name
        imports = config["imports"]
        assert imports == {"postgres": "npm:postgres@3.4.9"}, imports
        lock = json.loads((kit.FUNCTIONS / name / "deno.lock").read_text())
        for specifier in imports.values():
            package = specifier.removeprefix("npm:")
            assert lock["specifiers"][specifier] == package.rsplit("@", 1)[1]
            assert lock["npm"][package]["integrity"].startswith("sha512-")
    for path in _sources():
        # Only the import map names versions: no npm:, jsr: or URL import in the code.
        assert not re.search(r"""from\s+["'](npm:|jsr:|https?:)""", path.read_text()), path


def test_each_type_has_one_name() -> None:
    """Issue 20: `Handler` named both a job handler and a request handler."""
    seen: dict[str, Path] = {}
    for path in _sources():
        for match in re.finditer(r"^export (?:type|interface|class) (\w+)", path.read_text(), re.M):
            name = match.group(1)
            assert name not in seen, f"{name} in {seen.get(name)} and {path}"
            seen[name] = path


def test_the_json_limit_is_one_number_in_sql_and_in_the_functions() -> None:
    sql = "".join(p.read_text() for p in kit.MIGRATIONS)
    ts = (kit.FUNCTIONS / "_shared" / "json.ts").read_text()
    in_sql = re.search(r"create function queue_pump\.max_json_bytes\(\).*?select (\d+)", sql, re.S)
    in_ts = re.search(r"export const MAX_JSON_BYTES = (\d+) \* (\d+);", ts)
    assert in_sql and in_ts
    assert int(in_sql.group(1)) == int(in_ts.group(1)) * int(in_ts.group(2)) == 1048576
