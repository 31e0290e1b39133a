"""The Supabase kit's driver: the migrations on a real PostgreSQL, the kit's functions
(``jobs``, ``ai-job-runner``, ``enqueue``) under a real Deno, every one at
``{supabase_url}/functions/v1/<name>`` as Supabase routes them. One database and one set of
functions per test process; each test gets two organizations of its own (new names), which is
what the Target promises: two organizations holding no job. The owner's writes (backdate,
make_succeed) go straight to the tables as the postgres superuser."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator_api.target import Target
from tests.supabase import kit
from tests.supabase.conftest import pg, pg_bin  # noqa: F401  (fixtures: the shared cluster)

AGENT_TOKEN = "kit-agent-token-0123456789abcdef"
ADMIN_TOKEN = "kit-admin-token-fedcba9876543210"
FUNCTIONS = ("jobs", "ai-job-runner", "enqueue")
TEMPLATE = "kit_template"
# Every time a job and its events carry, but the lease's end.
_JOB_TIMES = ("created_at", "run_at", "started_at", "heartbeat_at", "finished_at", "updated_at")


def _missing(hint: str) -> None:
    if os.environ.get("QUEUE_PUMP_REQUIRE_KIT") == "1":
        pytest.fail(f"{hint} (QUEUE_PUMP_REQUIRE_KIT=1 makes this a failure)")
    pytest.skip(hint)


@pytest.fixture(scope="session")
def kit_stack(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(supabase_url, db_url): the kit's functions on one URL over a database of their own."""
    found_pg, deno = kit.find_pg_bin(), kit.find_deno()
    if found_pg is None:
        _missing(kit.PG_HINT)
    if deno is None:
        _missing(kit.DENO_HINT)
    cluster: kit.PgCluster = request.getfixturevalue("pg")
    db_url = cluster.create_database(f"kit_ops_{os.getpid()}_{uuid.uuid4().hex[:8]}",
                                     template=TEMPLATE)
    assert deno is not None
    env = {"AGENT_TOKEN": AGENT_TOKEN, "ADMIN_TOKEN": ADMIN_TOKEN, "SUPABASE_DB_URL": db_url,
           # a cancel is seen within a tenth of a second while a handler runs
           "JOB_CANCEL_POLL_MS": "100", "DB_POOL_MAX": "10"}
    server = kit.FunctionsServer(deno, env, FUNCTIONS)
    try:
        yield server.base_url, db_url
    finally:
        server.stop()


def _owner(db_url: str, sql: str, *args: Any) -> None:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql, args)  # type: ignore[arg-type]


def _backdate(db_url: str, job_id: int, seconds: float) -> None:
    moved = ", ".join(f"{c} = {c} - make_interval(secs => %s)" for c in _JOB_TIMES)
    _owner(db_url, f"update queue_pump.jobs set {moved} where id = %s",
           *[seconds] * len(_JOB_TIMES), job_id)
    _owner(db_url, "update queue_pump.job_events set at = at - make_interval(secs => %s)"
                   " where job_id = %s", seconds, job_id)


@pytest.fixture
def kit_target(kit_stack: tuple[str, str], tmp_path: Path) -> Target:
    url, db_url = kit_stack
    tag = uuid.uuid4().hex[:12]
    return Target(
        name="kit", supabase_url=url, admin_token=ADMIN_TOKEN, agent_token=AGENT_TOKEN,
        organization=f"org-a-{tag}", other_organization=f"org-b-{tag}",
        backdate=lambda job_id, s: _backdate(db_url, job_id, s),
        make_succeed=lambda job_id: _owner(
            db_url, "update queue_pump.jobs set job_type = 'echo' where id = %s", job_id))

