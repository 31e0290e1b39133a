"""Fixtures for the Supabase kit: a real PostgreSQL with the migration applied, real Deno."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import KIT_LEFT_OUT as _LEFT_OUT
from . import kit

REQUIRED = os.environ.get("QUEUE_PUMP_REQUIRE_KIT") == "1"
TEMPLATE = "kit_template"
_counter = itertools.count()


def _hint_for(item: pytest.Item) -> str | None:
    if kit.find_pg_bin() is None:
        return kit.PG_HINT
    if "deno_bin" in getattr(item, "fixturenames", ()) and kit.find_deno() is None:
        return kit.DENO_HINT
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without PostgreSQL or Deno the kit's tests are left out with one summary line, not one
    skip line per test; QUEUE_PUMP_REQUIRE_KIT=1 keeps them, so the fixtures fail instead."""
    if REQUIRED:
        return
    left_out: dict[str, int] = {}
    kept = []
    for item in items:
        hint = _hint_for(item) if item.get_closest_marker("kit") else None
        if hint is None:
            kept.append(item)
        else:
            left_out[hint] = left_out.get(hint, 0) + 1
    if left_out:
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
        config.stash[_LEFT_OUT] = left_out
        worker_output = getattr(config, "workeroutput", None)
        if worker_output is not None:  # an xdist worker: the controller prints the summary
            worker_output["kit_left_out"] = left_out


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
    """One cluster for the whole run, shared by xdist's workers (tests/conftest.py makes its
    directory and stops it), with Supabase's roles and a template database holding the
    migration as written; each test gets a fresh copy of the template. Tests that stop a
    server start their own (kit.cluster)."""

    def prepare(cluster: kit.PgCluster) -> None:
        cluster.create_roles()
        kit.apply_migrations(cluster.create_database(TEMPLATE))

    shared = os.environ.get(kit.SHARED_DIR_ENV)
    if shared:
        yield kit.shared_cluster(pg_bin, Path(shared), prepare)
        return
    with kit.cluster(pg_bin) as cluster:
        prepare(cluster)
        yield cluster


@pytest.fixture
def db_url(pg: kit.PgCluster) -> str:
    return pg.create_database(f"kit_{os.getpid()}_{next(_counter)}", template=TEMPLATE)


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4()}"
