"""The PostgreSQL backend: dialect adapter, migrations, schema parity with SQLite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from server.cluster.local_services import LocalPostgres
from server.storage import friends, users
from server.storage.database import (
    SCHEMA_VERSION,
    SchemaTooNewError,
    SqliteDatabase,
    StorageUnavailable,
)
from server.storage.postgres import PG_MIGRATIONS, PostgresDatabase, translate


def add_user(db: SqliteDatabase | PostgresDatabase, name: str) -> int:
    return users.create_user(
        db,
        username=name,
        password_hash="x",
        email=f"{name}@example.org",
        sex="other",
        age=30,
        certificate=f"cert-{name}".encode(),
        now=1,
    )


# -- the dialect adapter ---------------------------------------------------------------


def test_plain_marks_become_numbered_postgresql_marks_and_percent_is_literal() -> None:
    statement = translate("SELECT 1 FROM t WHERE a = ? AND b LIKE '50%' AND c IN (?,?)")
    assert statement.text == "SELECT 1 FROM t WHERE a = $1 AND b LIKE '50%' AND c IN ($2,$3)"
    assert statement.bind((1, 2, 3)) == (1, 2, 3)


def test_numbered_marks_keep_their_numbers() -> None:
    assert translate("SELECT ?2, ?1 WHERE x = ?1").text == "SELECT $2, $1 WHERE x = $1"


def test_translated_statements_run_as_they_are(fresh_pg_dsn: Callable[[], str]) -> None:
    """`$n` statements go through a raw cursor: numbered marks reorder and repeat, a
    percent sign is plain text, and a statement run often is prepared."""
    db = PostgresDatabase.connect(fresh_pg_dsn())
    try:
        assert tuple(db.one("SELECT ?2, ?1, ?1 = ?1", ("a", "b")) or ()) == ("b", "a", True)
        assert db.scalar("SELECT '50%' LIKE ? || '%'", ("50",)) is True
        for n in range(8):  # past psycopg's prepare threshold
            assert db.scalar("SELECT ? + 1", (n,)) == n + 1
    finally:
        db.close()


def test_mixed_marks_and_named_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="numbered"):
        translate("SELECT ?1, ? -- mixed")
    with pytest.raises(TypeError):
        translate("SELECT ?").bind({"a": 1})


def test_sqlite_only_phrases_are_rewritten() -> None:
    assert translate("INSERT OR IGNORE INTO k (a) VALUES (?)").text == (
        "INSERT INTO k (a) VALUES ($1) ON CONFLICT DO NOTHING"
    )
    assert 'COLLATE "C"' in translate("SELECT 1 WHERE a = ? COLLATE BINARY").text
    assert "COLLATE NOCASE" in translate("SELECT 1 WHERE a = ? COLLATE NOCASE").text


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("INSERT INTO friends (a) VALUES (?)", True),
        ("  update room_user SET x = 1", True),
        ("DELETE FROM friends WHERE 1", True),
        ("INSERT INTO friendship_log (a) VALUES (?)", False),
        ("SELECT * FROM friends", False),
        ("UPDATE users SET x = 1", False),
    ],
)
def test_membership_writes_are_recognised(sql: str, writes: bool) -> None:
    assert translate(sql).writes_membership is writes


# -- migrations and schema --------------------------------------------------------------


def test_every_sqlite_migration_has_a_postgresql_twin() -> None:
    assert len(PG_MIGRATIONS) == SCHEMA_VERSION
    for number, name in enumerate(PG_MIGRATIONS, start=1):
        assert name.startswith(f"{number:03d}_")


def _sqlite_shape(db: SqliteDatabase) -> tuple[dict[str, list[str]], set[str]]:
    tables = [
        str(row[0])
        for row in db.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    columns = {
        table: [str(row["name"]) for row in db.all(f"PRAGMA table_info({table})")]
        for table in tables
    }
    indexes = {
        str(row[0])
        for row in db.all(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            " AND name NOT LIKE 'sqlite_autoindex_%'"
        )
    }
    return columns, indexes


def _postgres_shape(db: PostgresDatabase) -> tuple[dict[str, list[str]], set[str]]:
    rows = db.all(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name NOT LIKE 'uchat%'"
        " ORDER BY table_name, ordinal_position"
    )
    columns: dict[str, list[str]] = {}
    for row in rows:
        columns.setdefault(str(row[0]), []).append(str(row[1]))
    # Indexes PostgreSQL makes for PRIMARY KEY and UNIQUE are SQLite's autoindexes.
    indexes = {
        str(row[0])
        for row in db.all(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'"
        )
    }
    return columns, indexes


def test_postgresql_schema_matches_sqlite_table_for_table(
    tmp_path: Path, local_postgres: LocalPostgres
) -> None:
    """All migrations applied on an empty PostgreSQL give SQLite's tables and columns."""
    local_postgres.create_database("uchat_parity")
    try:
        pg = PostgresDatabase.connect(local_postgres.dsn("uchat_parity"))
        sqlite = SqliteDatabase.open(tmp_path / "parity.db")
        try:
            assert pg.schema_version == sqlite.schema_version == SCHEMA_VERSION
            assert _postgres_shape(pg) == _sqlite_shape(sqlite)
        finally:
            pg.close()
            sqlite.close()
    finally:
        local_postgres.drop_database("uchat_parity")


def test_reconnecting_keeps_data_and_migrates_nothing(fresh_pg_dsn: Callable[[], str]) -> None:
    dsn = fresh_pg_dsn()
    db = PostgresDatabase.connect(dsn)
    add_user(db, "alice")
    db.commit()
    add_user(db, "bob")
    db.rollback()
    db.close()
    db = PostgresDatabase.connect(dsn)
    try:
        assert db.schema_version == SCHEMA_VERSION
        alice = users.by_username(db, "ALICE")
        assert alice is not None and alice.certificate == b"cert-alice"
        assert users.by_username(db, "bob") is None
    finally:
        db.close()


def test_refuses_a_newer_schema(fresh_pg_dsn: Callable[[], str]) -> None:
    dsn = fresh_pg_dsn()
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("UPDATE uchat_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNewError):
        PostgresDatabase.connect(dsn)


def test_nodes_starting_together_migrate_once(local_postgres: LocalPostgres) -> None:
    dsn = local_postgres.create_database("uchat_race")
    try:
        opened: list[PostgresDatabase] = []
        failures: list[BaseException] = []

        def start_node() -> None:
            try:
                opened.append(PostgresDatabase.connect(dsn))
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=start_node) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == [] and len(opened) == 4
        assert {db.schema_version for db in opened} == {SCHEMA_VERSION}
        for db in opened:
            db.close()
    finally:
        local_postgres.drop_database("uchat_race")


# -- backend behaviour the slices rely on ----------------------------------------------


def test_executemany_counts_every_changed_row(fresh_pg_dsn: Callable[[], str]) -> None:
    db = PostgresDatabase.connect(fresh_pg_dsn())
    try:
        ids = [add_user(db, name) for name in ("a1", "a2", "a3")]
        cursor = db.executemany("UPDATE users SET age = ? WHERE id = ?", [(1, i) for i in ids])
        assert cursor.rowcount == 3
    finally:
        db.close()


def test_membership_writes_bump_the_generation(fresh_pg_dsn: Callable[[], str]) -> None:
    db = PostgresDatabase.connect(fresh_pg_dsn())
    try:
        alice, bob = add_user(db, "alice"), add_user(db, "bob")
        before = db.membership_generation
        friends.add_request(db, alice, bob, 1)
        assert db.membership_generation > before
        settled = db.membership_generation
        friends.are_friends(db, alice, bob)
        assert db.membership_generation == settled
    finally:
        db.close()


def test_a_failed_step_leaves_the_turn_usable(fresh_pg_dsn: Callable[[], str]) -> None:
    """As the reactor runs handlers: a refused write undoes its step, not the turn."""
    db = PostgresDatabase.connect(fresh_pg_dsn())
    try:
        add_user(db, "alice")
        db.begin_step()
        with pytest.raises(db.IntegrityError):
            add_user(db, "Alice")
        db.end_step(keep=False)
        db.begin_step()
        add_user(db, "bob")
        db.end_step(keep=True)
        db.commit()
        assert users.username_taken(db, "alice") and users.username_taken(db, "bob")
    finally:
        db.close()


@pytest.mark.parametrize("keep", [True, False])
def test_a_connection_lost_at_a_steps_end_withholds_the_turn(
    fresh_pg_dsn: Callable[[], str], keep: bool
) -> None:
    """The database goes away between a step's work and its end: ending the step says
    nothing (a hint's or a handler's `finally` must not raise), and the turn's commit
    refuses, so nothing the step wrote is answered as done."""
    dsn = fresh_pg_dsn()
    db, other = PostgresDatabase.connect(dsn), PostgresDatabase.connect(dsn)
    rolled_back: list[bool] = []
    db.on_rollback(lambda: rolled_back.append(True))
    try:
        db.begin_step()
        add_user(db, "alice")
        backend = db.scalar("SELECT pg_backend_pid()")
        other.execute("SELECT pg_terminate_backend(?)", (backend,))
        other.commit()
        db.end_step(keep=keep)
        assert rolled_back == ([] if keep else [True])  # a kept step's end sends nothing
        with pytest.raises(StorageUnavailable):
            db.commit()
        db.rollback()  # what the server does when its commit refuses
        assert rolled_back[-1]
    finally:
        db.close()
        other.close()
    fresh = PostgresDatabase.connect(dsn)
    try:
        assert not users.username_taken(fresh, "alice")
    finally:
        fresh.close()


def test_blobs_and_text_round_trip_exactly(fresh_pg_dsn: Callable[[], str]) -> None:
    db = PostgresDatabase.connect(fresh_pg_dsn())
    try:
        blob = bytes(range(256))
        name = "\u00e9lise\U0001f600"
        users.create_user(
            db,
            username=name,
            password_hash="x",
            email="e@example.org",
            sex="other",
            age=1,
            certificate=blob,
            now=2**40,
        )
        found = users.by_username(db, name.upper())
        assert found is not None
        assert (found.username, found.certificate, found.created_at) == (name, blob, 2**40)
    finally:
        db.close()
