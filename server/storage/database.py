"""The storage interface (`Database`) and its embedded SQLite backend.

Every table module ("slice": users, friends, messages, ...) is written once against the
narrow `Database` protocol below, in one portable SQL dialect (SQLite's `?` marks). Two
backends implement it: `SqliteDatabase` here (the default; statements go to sqlite3
untouched) and `server.storage.postgres.PostgresDatabase` (cluster mode), whose small
dialect adapter rewrites marks, collations and upserts once per statement text.

Only the reactor thread uses a `Database` (the object may be built on another thread
before the reactor starts). Store functions in the sibling modules never commit:
sqlite3 opens a transaction at the first write and the reactor calls `commit()` once
per loop turn, before that turn's replies reach the wire ("store before acknowledge").
WAL with synchronous=NORMAL keeps a committed turn across a crash of the process.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol

BUSY_TIMEOUT_MS = 5_000
IN_CHUNK = 500  # below SQLite's bound-parameter limit

Parameters = Sequence[Any] | dict[str, Any]


class Row(Protocol):
    """One result row: by column position or by column name."""

    def __getitem__(self, key: int | str, /) -> Any: ...


class Cursor(Protocol):
    """What a slice reads from a statement it ran: how many rows it changed."""

    @property
    def rowcount(self) -> int: ...


class Database(Protocol):
    """The connection interface every storage slice is written against.

    Writes are never committed by a slice: the reactor commits once per loop turn
    (group commit, "store before acknowledge"); a handler step runs in a savepoint.
    """

    #: The driver's exception for a violated UNIQUE / CHECK / foreign key constraint.
    IntegrityError: ClassVar[type[Exception]]
    #: "sqlite" or "postgresql": for the rare statement that must differ per backend.
    backend: ClassVar[str]
    #: Goes up on every write to `MEMBERSHIP_TABLES` (see `SqliteDatabase`).
    membership_generation: int

    def execute(self, sql: str, parameters: Parameters = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Parameters]) -> Cursor: ...
    def one(self, sql: str, parameters: Parameters = ()) -> Row | None: ...
    def all(self, sql: str, parameters: Parameters = ()) -> list[Row]: ...
    def all_in(self, sql: str, values: Sequence[Any], leading: Sequence[Any] = ()) -> list[Row]: ...
    def scalar(self, sql: str, parameters: Parameters = ()) -> Any: ...
    @property
    def in_transaction(self) -> bool: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def begin_step(self) -> None: ...
    def end_step(self, keep: bool) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[Database]: ...
    def on_rollback(self, listener: Callable[[], None]) -> None: ...
    def close(self) -> None: ...
    @property
    def schema_version(self) -> int: ...


def _schema_v1() -> str:
    return resources.files("server.storage").joinpath("schema.sql").read_text("utf-8")


def _migration_002() -> str:
    return resources.files("server.storage").joinpath("migration_002.sql").read_text("utf-8")


def _transparency_log_003() -> str:
    return resources.files("server.storage").joinpath("transparency.sql").read_text("utf-8")


def _migration_004() -> str:
    return resources.files("server.storage").joinpath("migration_004.sql").read_text("utf-8")


def _room_log() -> str:
    return resources.files("server.storage").joinpath("migration_room_log.sql").read_text("utf-8")


def _kem_keys_transparency() -> str:
    name = "kem_keys_transparency.sql"
    return resources.files("server.storage").joinpath(name).read_text("utf-8")


def _migration_chains() -> str:
    return resources.files("server.storage").joinpath("migration_chains.sql").read_text("utf-8")


#: Migration n (1-based) brings the schema from user_version n-1 to n. Append only.
MIGRATIONS: tuple[Callable[[], str], ...] = (
    _schema_v1,
    _migration_002,
    _transparency_log_003,
    _migration_004,
    _room_log,
    _kem_keys_transparency,
    _migration_chains,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StorageUnavailable(RuntimeError):
    """The database cannot be reached now (cluster mode: PostgreSQL is down or restarting).

    Handlers let it through; the dispatcher answers `server_busy`, and the backend
    reconnects by itself once the database is back.
    """


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer server; refuse rather than corrupt it."""


#: Tables whose every write bumps `Database.membership_generation` (friendships, room
#: membership): what the per-session caches of the hot path hold copies of.
MEMBERSHIP_TABLES = ("friends", "room_user")
_GENERATION_FUNCTION = "uchat_membership_changed"


class SqliteDatabase:
    """One SQLite connection plus the few helpers every table module uses."""

    IntegrityError: ClassVar[type[Exception]] = sqlite3.IntegrityError
    backend: ClassVar[str] = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._rollback_listeners: list[Callable[[], None]] = []
        #: Goes up on every INSERT, UPDATE or DELETE of `MEMBERSHIP_TABLES`, whoever
        #: writes (temporary triggers call back into Python), so a cache stamped with an
        #: older value is stale. A rolled-back write bumps it too, which only costs a refill.
        self.membership_generation = 0
        self._watch_membership()

    def on_rollback(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever writes are undone, so in-memory caches of rows drop."""
        self._rollback_listeners.append(listener)

    def _rolled_back(self) -> None:
        for listener in self._rollback_listeners:
            listener()

    def _watch_membership(self) -> None:
        """Temporary triggers (this connection only, no schema change) count the writes."""
        self._connection.create_function(_GENERATION_FUNCTION, 0, self._membership_changed)
        for table in MEMBERSHIP_TABLES:
            for action in ("INSERT", "UPDATE", "DELETE"):
                self._connection.execute(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS watch_{table}_{action.lower()}"
                    f" AFTER {action} ON main.{table}"
                    f" BEGIN SELECT {_GENERATION_FUNCTION}(); END"
                )

    def _membership_changed(self) -> None:
        self.membership_generation += 1

    @classmethod
    def open(cls, path: Path) -> SqliteDatabase:
        """Open (creating if needed) and migrate the database at `path`."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_file(path)
        connection = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        )
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _migrate(connection)
            database = cls(connection)
            after_migrations(database)
        except BaseException:
            connection.close()
            raise
        return database

    # -- queries -----------------------------------------------------------------------

    def execute(self, sql: str, parameters: Parameters = ()) -> sqlite3.Cursor:
        """Run one statement with bound parameters (never format values into `sql`)."""
        return self._connection.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Parameters]) -> sqlite3.Cursor:
        return self._connection.executemany(sql, rows)

    def one(self, sql: str, parameters: Parameters = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._connection.execute(sql, parameters).fetchone()
        return row

    def all(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        rows: list[Row] = self._connection.execute(sql, parameters).fetchall()
        return rows

    def all_in(self, sql: str, values: Sequence[Any], leading: Sequence[Any] = ()) -> list[Row]:
        """Rows for `sql` whose list is written `IN ({marks})`, run in bounded chunks.

        `leading` binds the `?` that come before the list. Only "?" marks are formatted
        into the statement, never values.
        """
        rows: list[Row] = []
        for start in range(0, len(values), IN_CHUNK):
            chunk = list(values[start : start + IN_CHUNK])
            statement = sql.format(marks=",".join("?" * len(chunk)))
            rows.extend(self._connection.execute(statement, [*leading, *chunk]).fetchall())
        return rows

    def scalar(self, sql: str, parameters: Parameters = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self._connection.execute(sql, parameters).fetchone()
        return None if row is None else row[0]

    # -- transactions ------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def commit(self) -> None:
        """Make everything written since the last commit durable (once per loop turn)."""
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()
        self._rolled_back()

    def begin_step(self) -> None:
        """Open a savepoint for one handler step inside the turn's transaction.

        The turn's transaction is opened first if needed, so releasing the savepoint
        merges the step into it instead of committing on its own (group commit).
        """
        if not self._connection.in_transaction:
            self._connection.execute("BEGIN")
        self._connection.execute("SAVEPOINT handler_step")

    def end_step(self, keep: bool) -> None:
        """Keep the step's writes, or undo them (a handler that failed unexpectedly)."""
        if not keep:
            self._connection.execute("ROLLBACK TO handler_step")
            self._rolled_back()
        self._connection.execute("RELEASE handler_step")

    @contextmanager
    def transaction(self) -> Iterator[SqliteDatabase]:
        """Commit on success, roll back on error. For tests and tools, not the reactor."""
        try:
            yield self
        except BaseException:
            self._connection.rollback()
            self._rolled_back()
            raise
        self._connection.commit()

    def close(self) -> None:
        """Commit what is pending and close; the object is unusable afterwards."""
        try:
            if self._connection.in_transaction:
                self._connection.commit()
        finally:
            self._connection.close()

    @property
    def schema_version(self) -> int:
        return int(self.scalar("PRAGMA user_version"))


def _private_file(path: Path) -> None:
    """The database file is the owner's only (0600); SQLite gives -wal and -shm its mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.chmod(companion, 0o600)


def after_migrations(database: Database) -> None:
    """Data steps SQL cannot do (Unicode folding); each is idempotent and commits."""
    from server.storage.room_log import backfill_legacy  # these import this module
    from server.storage.users import backfill_names

    backfill_names(database)
    backfill_legacy(database)
    if database.in_transaction:
        database.commit()


def _migrate(connection: sqlite3.Connection) -> None:
    """Apply every migration above the stored user_version, each in its own transaction."""
    current = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if current > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"database schema version {current} is newer than this server ({SCHEMA_VERSION})"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[version - 1]()
        # executescript commits first; BEGIN IMMEDIATE makes the migration and its
        # version bump one atomic step, and stops two processes migrating at once.
        connection.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;"
        )
