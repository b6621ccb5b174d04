"""Private PostgreSQL and redis-server for the suite (session-scoped, cleaned up).

The conftest imports these fixtures. One PostgreSQL cluster serves the whole run; each
test that wants a database gets a fresh one copied from a migrated template (CREATE
DATABASE ... TEMPLATE is a file copy: milliseconds), dropped afterwards.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.cluster.local_services import LocalPostgres, LocalRedis, private_root
from server.storage.database import Database, SqliteDatabase

TEMPLATE = "uchat_template"
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    root = private_root("uchat-test-pg-")
    server = LocalPostgres(root)
    try:
        server.start()
        from server.storage.postgres import PostgresDatabase

        PostgresDatabase.connect(server.create_database(TEMPLATE)).close()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_pg_dsn(local_postgres: LocalPostgres) -> Iterator[Callable[[], str]]:
    """Makes fresh migrated databases (copies of the template); all dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"uchat_test_{next(_numbers)}"
        made.append(name)
        return local_postgres.create_database(name, template=TEMPLATE)

    yield make
    for name in made:
        local_postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_pg_dsn: Callable[[], str]
) -> Iterator[Database]:
    """A freshly migrated database on each backend in turn."""
    database: Database
    if request.param == "sqlite":
        database = SqliteDatabase.open(tmp_path / "server.db")
    else:
        from server.storage.postgres import PostgresDatabase

        database = PostgresDatabase.connect(fresh_pg_dsn())
    yield database
    database.close()


@pytest.fixture(scope="session")
def local_redis() -> Iterator[LocalRedis]:
    root = private_root("uchat-test-redis-")
    server = LocalRedis(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
