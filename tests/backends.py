"""Private PostgreSQL and redis-server for the suite (session-scoped, cleaned up).

The conftest imports these fixtures. One PostgreSQL cluster serves the whole run; each
test that wants a database gets a fresh one copied from a migrated template (CREATE
DATABASE ... TEMPLATE is a file copy: milliseconds), dropped afterwards.
"""

from __future__ import annotations

import contextlib
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


class Backend:
    """One test's store on one backend; `open()` (re)connects to that same store."""

    def __init__(self, name: str, path: Path, dsn: Callable[[], str]) -> None:
        self.name = name
        self._path = path
        self._dsn = dsn() if name == "postgresql" else ""
        self._opened: list[Database] = []

    def open(self) -> Database:
        database: Database
        if self.name == "sqlite":
            database = SqliteDatabase.open(self._path)
        else:
            from server.storage.postgres import PostgresDatabase

            database = PostgresDatabase.connect(self._dsn)
        self._opened.append(database)
        return database

    def close_all(self) -> None:
        for database in self._opened:
            with contextlib.suppress(Exception):  # a test may have closed it already
                database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_backend(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_pg_dsn: Callable[[], str]
) -> Iterator[Backend]:
    """Each backend in turn: a SQLite file, or a fresh database on the private cluster."""
    backend = Backend(request.param, tmp_path / "server.db", fresh_pg_dsn)
    yield backend
    backend.close_all()


@pytest.fixture
def any_db(any_backend: Backend) -> Database:
    """A freshly migrated database on each backend in turn."""
    return any_backend.open()


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
