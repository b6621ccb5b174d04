"""The PostgreSQL backend of `server.storage.database.Database` (cluster mode, psycopg 3).

The slices are written once, in SQLite's dialect; `translate` adapts each statement text
once (cached) and the connection runs it:
- `?` and numbered `?N` marks become psycopg's `%s` (numbered ones reorder/repeat the
  parameters), and a literal `%` is doubled;
- `COLLATE BINARY` becomes `COLLATE "C"`; `COLLATE NOCASE` is left alone, since the
  schema creates an ICU collation called `nocase`;
- `INSERT OR IGNORE` becomes `INSERT ... ON CONFLICT DO NOTHING`;
- two-argument scalar max()/min() exist as SQL functions in the schema (pg/001).
Flags stay 0/1 integers, blobs are bytea (bytes both ways), times are integer ms.

Migrations are the numbered scripts in `server/storage/pg/`, one per SQLite migration
(same numbers), applied under an advisory lock so nodes starting together migrate once.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import psycopg
from psycopg import pq
from psycopg.rows import RowMaker

from server.storage.database import (
    IN_CHUNK,
    MEMBERSHIP_TABLES,
    Parameters,
    Row,
    SchemaTooNewError,
    StorageUnavailable,
    after_migrations,
)

log = logging.getLogger(__name__)

#: Numbered scripts in server/storage/pg/, in order; migration n brings version n-1 to n.
PG_MIGRATIONS: tuple[str, ...] = (
    "001_schema.sql",
    "002_names_and_addresses.sql",
    "003_transparency.sql",
    "004_kem_keys.sql",
    "005_room_log.sql",
    "006_kem_keys_transparency.sql",
    "007_chains.sql",
)
PG_SCHEMA_VERSION = len(PG_MIGRATIONS)
#: pg_advisory_xact_lock key: "uchat migrate" (any constant shared by every node).
_MIGRATION_LOCK = 0x75636861745F6D67
#: pg_advisory_xact_lock key: "uchat write": held from a turn's first write to its commit.
_WRITE_ORDER_LOCK = 0x7563686174577274
CONNECT_TIMEOUT = 10
#: While the database is unreachable: one reconnect attempt per interval, each short,
#: so the reactor answers `server_busy` at once instead of waiting on connect().
RECONNECT_INTERVAL = 1.0
RECONNECT_TIMEOUT = 2


def migration_script(name: str) -> str:
    return resources.files("server.storage.pg").joinpath(name).read_text("utf-8")


# -- the dialect adapter ---------------------------------------------------------------

_MARK = re.compile(r"\?(\d*)")
_WRITE = re.compile(r"^\s*(?:INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)\b", re.IGNORECASE)
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_COLLATE_BINARY = re.compile(r"\bCOLLATE\s+BINARY\b", re.IGNORECASE)
_MEMBERSHIP_WRITE = re.compile(
    r"^\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:main\.)?("
    + "|".join(MEMBERSHIP_TABLES)
    + r")\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Statement:
    """One slice statement as PostgreSQL runs it: `$n` marks, run by a `RawCursor`.

    Why native marks: psycopg rewrites a `%s` statement with a Python regex whenever
    the text is not in its small cache, and the statements whose text depends on a
    row count (a turn's multi-row INSERT, the VALUES lists of a catch-up) never are:
    that was a tenth of a cluster node's reactor time. A `$n` statement is sent as it
    is.
    """

    text: str
    #: True if it writes a table the session caches copy (bumps the generation).
    writes_membership: bool
    #: True if it changes anything (a lost connection then loses the turn's writes).
    writes: bool = False

    def bind(self, parameters: Parameters) -> Sequence[Any]:
        if isinstance(parameters, dict):
            raise TypeError("named parameters are not part of the portable dialect")
        return parameters


_LIST_MARK = "\x00"
_SEPARATOR = "\x1f"  # ASCII unit separator: in no id, name or key
#: `all_in`'s list, by what it holds: joined integers, joined strings, or an array.
_ANY_OF = {
    "ints": "= ANY(string_to_array(?, ?)::bigint[])",
    "texts": "= ANY(string_to_array(?, ?))",
    "array": "= ANY(?)",
}


def _list_parameters(chunk: list[Any]) -> tuple[str, list[Any]]:
    if all(type(value) is int for value in chunk):
        return "ints", [",".join(map(str, chunk)), ","]
    if all(type(value) is str and _SEPARATOR not in value for value in chunk):
        return "texts", [_SEPARATOR.join(chunk), _SEPARATOR]
    return "array", [chunk]


@lru_cache(maxsize=256)
def _any_of(sql: str, kind: str) -> str:
    """`all_in`'s statement: its one `IN ({marks})` as `= ANY(...)` of `kind`."""
    text = sql.format(marks=_LIST_MARK)
    if text.count(f"IN ({_LIST_MARK})") != 1:
        raise ValueError("all_in needs exactly one 'IN ({marks})'")
    return text.replace(f"IN ({_LIST_MARK})", _ANY_OF[kind])


@lru_cache(maxsize=2048)
def translate(sql: str) -> Statement:
    """The PostgreSQL form of one portable (SQLite-dialect) statement."""
    text = _COLLATE_BINARY.sub('COLLATE "C"', sql)
    if _INSERT_OR_IGNORE.match(text):
        text = _INSERT_OR_IGNORE.sub("INSERT INTO", text, count=1) + " ON CONFLICT DO NOTHING"
    marks = [match.group(1) for match in _MARK.finditer(text)]
    numbered = [mark for mark in marks if mark]
    if numbered and len(numbered) != len(marks):
        raise ValueError("a statement uses either numbered or plain marks, not both")
    if numbered:  # SQLite's ?N is PostgreSQL's $N: same parameter, same number
        text = _MARK.sub(lambda match: f"${match.group(1)}", text)
    else:
        count = itertools.count(1)
        text = _MARK.sub(lambda match: f"${next(count)}", text)
    return Statement(text, _MEMBERSHIP_WRITE.match(sql) is not None, _WRITE.match(sql) is not None)


class PgRow(tuple[Any, ...]):
    """A result row readable by position and by column name, as sqlite3.Row is.

    A tuple, made in C from psycopg's values; each result shape gets its own subclass
    (`_row_class`, cached) that holds the column positions, so a row costs no more
    than its tuple.
    """

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any, /) -> Any:
        if type(key) is str:
            key = self._index[key]
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> type[PgRow]:
    index = {name: position for position, name in reversed(list(enumerate(names)))}
    return type("PgRow", (PgRow,), {"__slots__": (), "_index": index})


def _pg_row(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    names = tuple(column.name for column in cursor.description or ())
    return _row_class(names)


# -- the backend -------------------------------------------------------------------------


class PostgresDatabase:
    """One psycopg connection implementing the `Database` protocol."""

    IntegrityError: ClassVar[type[Exception]] = psycopg.IntegrityError
    backend: ClassVar[str] = "postgresql"

    def __init__(self, connection: psycopg.Connection[PgRow], dsn: str = "") -> None:
        self._connection = connection
        self._dsn = dsn
        self._rollback_listeners: list[Callable[[], None]] = []
        #: As `SqliteDatabase.membership_generation`, bumped by statement text here (the
        #: bus carries other nodes' membership changes: server/cluster/bus.py).
        self.membership_generation = 0
        #: Something was written since the last commit: if the connection is lost now,
        #: the turn's output must be withheld (its replies may acknowledge those writes).
        self._wrote = False
        self._next_attempt = 0.0
        #: This transaction holds `_WRITE_ORDER_LOCK` (see `_run_prelude`).
        self._ordered = False
        #: A handler step began and its savepoint is not taken yet: it goes just before
        #: the step's first statement (`begin_step`).
        self._step_pending = False
        self._step_saved = False

    @classmethod
    def connect(cls, dsn: str) -> PostgresDatabase:
        """Connect to `dsn` and bring its schema up to date."""
        connection = _open(dsn, CONNECT_TIMEOUT)
        try:
            # The data steps after the migrations (name backfill, its indexes) are not
            # safe to run twice at once either: one lock covers both.
            connection.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            connection.commit()
            migrate(connection)
            database = cls(connection, dsn)
            after_migrations(database)
            connection.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
            connection.commit()
        except BaseException:
            connection.close()  # also releases the lock
            raise
        return database

    def on_rollback(self, listener: Callable[[], None]) -> None:
        self._rollback_listeners.append(listener)

    def _rolled_back(self) -> None:
        for listener in self._rollback_listeners:
            listener()

    # -- the connection, and getting it back ---------------------------------------------

    @property
    def _lost(self) -> bool:
        return self._connection.closed or self._connection.broken

    def _live(self) -> psycopg.Connection[PgRow]:
        """The connection, reconnecting (at most once per interval) if it was lost."""
        if not self._lost:
            return self._connection
        now = time.monotonic()
        if now < self._next_attempt or not self._dsn:
            raise StorageUnavailable("the database is unreachable")
        self._next_attempt = now + RECONNECT_INTERVAL
        try:
            fresh = _open(self._dsn, RECONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"the database is unreachable: {exc}") from exc
        self._connection.close()
        self._connection = fresh
        self._wrote = False
        self._ordered = False
        self.membership_generation += 1  # what caches hold may have changed meanwhile
        self._rolled_back()
        log.info("reconnected to PostgreSQL")
        return fresh

    def _run_prelude(self, connection: psycopg.Connection[PgRow], writes: bool) -> None:
        """What runs just before the next statement: the write-order lock before a
        transaction's first write, then the savepoint of a step that has not touched the
        database yet (each flag set once its statement went through).

        The write-order lock: ids from a sequence are handed out in one order and may
        commit in another, yet delivery cursors move to the highest id a recipient
        acknowledged and a node catches its users up past the last row it pushed them:
        a lower id committed after a higher one (two nodes writing for the same user)
        would be skipped for good. With the lock taken before any write, transactions
        that write commit one at a time in the order they got their ids; reads never
        wait. Taken before the first row lock (and before the step's savepoint, so a
        step rolled back keeps it), it can never be part of a deadlock.
        """
        if writes and not self._ordered:
            connection.execute(_ORDER_TEXT, (_WRITE_ORDER_LOCK,))
            self._ordered = True
        if self._step_pending:
            connection.execute(_SAVEPOINT_TEXT)
            self._step_pending = False
            self._step_saved = True

    def _send(
        self, connection: psycopg.Connection[PgRow], statement: Statement, parameters: Parameters
    ) -> psycopg.Cursor[PgRow]:
        """One statement, after its prelude (if any). Not pipelined: psycopg spends more
        CPU on a pipeline of two statements than on two round trips."""
        self._run_prelude(connection, statement.writes)
        cursor = psycopg.RawCursor(connection)
        return cursor.execute(statement.text, statement.bind(parameters))

    def _run(self, statement: Statement, parameters: Parameters = ()) -> psycopg.Cursor[PgRow]:
        connection = self._live()
        fresh_turn = connection.info.transaction_status == pq.TransactionStatus.IDLE
        if fresh_turn:
            self._ordered = False
        step_pending = self._step_pending
        try:
            cursor = self._send(connection, statement, parameters)
        except psycopg.OperationalError as exc:
            if not self._lost:
                raise
            if not fresh_turn:  # the turn's earlier statements went with the connection
                raise StorageUnavailable(f"the database connection was lost: {exc}") from exc
            # Nothing of this turn was lost: one more try on a new connection (the
            # database restarted since the last turn).
            self._next_attempt = 0.0
            self._ordered = False
            self._step_pending, self._step_saved = step_pending, False
            try:
                cursor = self._send(self._live(), statement, parameters)
            except psycopg.OperationalError as again:
                raise StorageUnavailable(f"the database is unreachable: {again}") from again
        if statement.writes:
            self._wrote = True
        return cursor

    # -- queries -----------------------------------------------------------------------

    def execute(self, sql: str, parameters: Parameters = ()) -> psycopg.Cursor[PgRow]:
        statement = translate(sql)
        if statement.writes_membership:
            self.membership_generation += 1
        return self._run(statement, parameters)

    def executemany(self, sql: str, rows: Iterable[Parameters]) -> psycopg.Cursor[PgRow]:
        """All rows in one pipeline; `rowcount` is the total of rows changed."""
        statement = translate(sql)
        if statement.writes_membership:
            self.membership_generation += 1
        connection = self._live()
        if connection.info.transaction_status == pq.TransactionStatus.IDLE:
            self._ordered = False
        cursor = psycopg.RawCursor(connection)
        try:
            self._run_prelude(connection, statement.writes)
            cursor.executemany(statement.text, [statement.bind(row) for row in rows])
        except psycopg.OperationalError as exc:
            if self._lost:
                raise StorageUnavailable(f"the database connection was lost: {exc}") from exc
            raise
        if statement.writes:
            self._wrote = True
        return cursor

    def one(self, sql: str, parameters: Parameters = ()) -> PgRow | None:
        return self.execute(sql, parameters).fetchone()

    def all(self, sql: str, parameters: Parameters = ()) -> list[Row]:
        rows: list[Row] = []
        rows.extend(self.execute(sql, parameters).fetchall())
        return rows

    def all_in(self, sql: str, values: Sequence[Any], leading: Sequence[Any] = ()) -> list[Row]:
        """`IN ({marks})` becomes `= ANY(...)` over the whole chunk as ONE parameter.

        Why: a list written out mark by mark makes a new statement text for every
        length, which psycopg parses again each time (no cache hit, never prepared):
        that parsing was a fifth of a cluster node's reactor time. And psycopg dumps a
        Python list as a text array element by element in Python (~1.7 us an id), so
        ids and names go as one joined string that the server splits
        (`string_to_array`); anything else goes as an array.
        """
        rows: list[Row] = []
        for start in range(0, len(values), IN_CHUNK):
            chunk = list(values[start : start + IN_CHUNK])
            kind, parameters = _list_parameters(chunk)
            statement = _any_of(sql, kind)
            rows.extend(self.execute(statement, [*leading, *parameters]).fetchall())
        return rows

    def scalar(self, sql: str, parameters: Parameters = ()) -> Any:
        row = self.execute(sql, parameters).fetchone()
        return None if row is None else row[0]

    # -- transactions ------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        if self._lost:  # nothing to commit, unless writes were lost (commit says so)
            return self._wrote
        return self._connection.info.transaction_status != pq.TransactionStatus.IDLE

    def commit(self) -> None:
        wrote, self._wrote = self._wrote, False
        self._ordered = False
        self._step_pending = self._step_saved = False
        if self._lost:
            if wrote:
                raise StorageUnavailable("the database connection was lost with this turn")
            return
        try:
            self._connection.commit()
        except psycopg.OperationalError as exc:
            if self._lost:
                raise StorageUnavailable(f"the commit did not reach the database: {exc}") from exc
            raise

    def rollback(self) -> None:
        self._wrote = False
        self._ordered = False
        self._step_pending = self._step_saved = False
        if not self._lost:
            self._connection.rollback()
        self._rolled_back()

    def begin_step(self) -> None:
        """A savepoint inside the turn's transaction (psycopg opens that one itself).

        It is taken lazily, just before the step's first statement: a step that never
        touches the database (a PING, or a SEND_MESSAGE answered from the session's
        caches, its row stored with the turn's others) costs nothing.
        """
        self._step_pending = True
        self._step_saved = False

    def end_step(self, keep: bool) -> None:
        """Keep the step (nothing to send: its savepoint is merged into the turn at the
        commit, and a later step's savepoint of the same name hides it), or undo it."""
        saved = self._step_saved
        self._step_pending = self._step_saved = False
        if keep:
            return
        if self._lost or not saved:  # nothing sent, or the transaction went with the link
            self._rolled_back()
            return
        try:
            self._connection.execute("ROLLBACK TO SAVEPOINT handler_step")
        except psycopg.OperationalError:
            if not (self._connection.closed or self._connection.broken):  # not `_lost`:
                raise  # mypy keeps that narrowed to False from the test above
            # The connection went during the step's end: the turn's commit sees the
            # loss and withholds the turn, as when it went during the step itself.
        self._rolled_back()

    @contextmanager
    def transaction(self) -> Iterator[PostgresDatabase]:
        """Commit on success, roll back on error. For tests and tools, not the reactor."""
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def close(self) -> None:
        """Commit what is pending (unless the transaction failed) and close."""
        try:
            if not self._lost and (
                self._connection.info.transaction_status == pq.TransactionStatus.INTRANS
            ):
                self._connection.commit()
        finally:
            self._connection.close()

    @property
    def schema_version(self) -> int:
        return int(self.scalar("SELECT version FROM uchat_schema"))


_SAVEPOINT_TEXT = "SAVEPOINT handler_step"
_ORDER_TEXT = "SELECT pg_advisory_xact_lock(%s)"


def _open(dsn: str, timeout: int) -> psycopg.Connection[PgRow]:
    return psycopg.connect(dsn, autocommit=False, row_factory=_pg_row, connect_timeout=timeout)


def stored_version(connection: psycopg.Connection[Any]) -> int:
    row = connection.execute("SELECT to_regclass('uchat_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    version = connection.execute("SELECT version FROM uchat_schema").fetchone()
    return 0 if version is None else int(version[0])


def migrate(connection: psycopg.Connection[Any]) -> None:
    """Apply every migration above the stored version, all in one transaction.

    The advisory lock makes a second node starting at the same moment wait, then find
    nothing left to do.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        current = stored_version(connection)
        if current > PG_SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"database schema version {current} is newer than this server ({PG_SCHEMA_VERSION})"
            )
        if current == 0:
            connection.execute(
                "CREATE TABLE uchat_schema (one SMALLINT PRIMARY KEY DEFAULT 1 CHECK (one = 1),"
                " version INTEGER NOT NULL)"
            )
            connection.execute("INSERT INTO uchat_schema (version) VALUES (0)")
        for version in range(current + 1, PG_SCHEMA_VERSION + 1):
            connection.execute(migration_script(PG_MIGRATIONS[version - 1]).encode("utf-8"))
            connection.execute("UPDATE uchat_schema SET version = %s", (version,))
