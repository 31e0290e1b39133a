"""Fixtures for the Supabase kit: a real PostgreSQL with the migration applied, real Deno."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import kit

REQUIRED = os.environ.get("QUEUE_PUMP_REQUIRE_KIT") == "1"
TEMPLATE = "kit_template"
_counter = itertools.count()


def _missing(hint: str) -> None:
    if REQUIRED:
        pytest.fail(f"{hint} (QUEUE_PUMP_REQUIRE_KIT=1 makes this a failure)")
    pytest.skip(hint)


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    found = kit.find_pg_bin()
    if found is None:
        _missing(kit.PG_HINT)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg not installed: pip install -e '.[dev]'")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def deno_bin() -> Path:
    found = kit.find_deno()
    if found is None:
        _missing(kit.DENO_HINT)
    assert found is not None
    return found


@pytest.fixture(scope="session")
def pg(pg_bin: Path) -> Iterator[kit.PgCluster]:
    """One cluster per test process, with Supabase's roles and a template database holding the
    migration as written; each test gets a fresh copy of the template."""
    with kit.cluster(pg_bin) as cluster:
        cluster.create_roles()
        kit.apply_migrations(cluster.create_database(TEMPLATE))
        yield cluster


@pytest.fixture
def db_url(pg: kit.PgCluster) -> str:
    return pg.create_database(f"kit_{os.getpid()}_{next(_counter)}", template=TEMPLATE)


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4()}"
