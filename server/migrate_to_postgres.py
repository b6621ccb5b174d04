"""Move a single-node (SQLite) Uchat server to PostgreSQL, for cluster mode.

    python -m server.migrate_to_postgres --sqlite data/server/uchat.db \\
        --dsn "host=10.0.0.5 dbname=uchat user=uchat" [--ca-passphrase-file F]

With the server stopped: the SQLite file is copied (the SQLite backup API) into a
temporary file and migrated there to this code's schema, so the original is left as
it was. The target is migrated to the same schema and must hold no row yet. Every table
(accounts, friends, rooms and their signed logs, envelopes and cursors, the key
transparency log, attachments and their links, login counters) is copied with COPY in
one transaction, parents before children; the identity sequences are set past the
copied ids; then each table's row count is compared with the source before the commit.
Any difference rolls everything back.

With `--ca-passphrase-file` the single node's CA (`server_ca_key.pem`,
`server_ca_cert.pem` beside the database file) is stored in the cluster's
`uchat_identity`, its key encrypted with that passphrase: every node then serves the
fingerprint the clients already pin. With `--attachments database` the attachment
files (`attachments/` beside the database file, or `--attachments-dir`) are copied into
PostgreSQL chunk rows too, for `server.attachment_store = "database"`; by default they
stay files, to be copied into the folder the nodes share (`server.attachments_dir`).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from common.crypto.certs import ServerIdentity
from common.errors import UchatError
from server.cluster.identity import MIN_PASSPHRASE
from server.cluster.node import read_passphrase
from server.storage.attachment_files import AttachmentFiles
from server.storage.attachment_store import CREATE_CHUNKS
from server.storage.database import SchemaTooNewError, SqliteDatabase
from server.storage.postgres import PostgresDatabase

ROWS_PER_READ = 5_000
CHUNK_BYTES = 256 * 1024
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class MigrationError(UchatError):
    """The migration cannot run or did not check out; nothing was committed."""


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int


def source_tables(source: sqlite3.Connection) -> list[str]:
    rows = source.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    ).fetchall()
    names = [str(row[0]) for row in rows]
    for name in names:
        plain(name)
    return names


def plain(name: str) -> str:
    """A table or column name safe to quote into SQLite statements (ours all are)."""
    if not _PLAIN_NAME.fullmatch(name):
        raise MigrationError(f"unexpected table or column name {name!r} in the SQLite file")
    return name


def parents_first(target: psycopg.Connection[tuple[object, ...]], tables: list[str]) -> list[str]:
    """`tables` ordered so each comes after the tables its foreign keys point at."""
    edges = target.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c"
        " WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"
    ).fetchall()
    needs: dict[str, set[str]] = {table: set() for table in tables}
    for child, parent in edges:
        if child in needs and parent in needs and child != parent:
            needs[str(child)].add(str(parent))
    ordered: list[str] = []
    while needs:
        ready = sorted(table for table, parents in needs.items() if not parents - set(ordered))
        if not ready:
            raise MigrationError(f"circular foreign keys among {sorted(needs)}")
        for table in ready:
            ordered.append(table)
            del needs[table]
    return ordered


def target_columns(target: psycopg.Connection[tuple[object, ...]], table: str) -> dict[str, str]:
    rows = target.execute(
        "SELECT column_name, udt_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def _count(target: psycopg.Connection[tuple[object, ...]], table: str) -> int:
    found = target.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    row = found.fetchone()
    return int(str(row[0])) if row else 0


def refuse_non_empty(target: psycopg.Connection[tuple[object, ...]], tables: list[str]) -> None:
    filled = {table: n for table in tables if (n := _count(target, table))}
    if _count(target, "uchat_identity"):
        filled["uchat_identity"] = 1
    if filled:
        listed = ", ".join(f"{table} ({rows} rows)" for table, rows in sorted(filled.items()))
        raise MigrationError(
            f"the target database is not empty: {listed}. Migrate into a new, empty database."
        )


def copy_table(
    source: sqlite3.Connection, target: psycopg.Connection[tuple[object, ...]], table: str
) -> int:
    """COPY every row of `table` across, with PostgreSQL's column types; the row count."""
    columns = target_columns(target, table)
    source_columns = [
        plain(str(row[1])) for row in source.execute(f'PRAGMA table_info("{plain(table)}")')
    ]
    if sorted(source_columns) != sorted(columns):
        raise MigrationError(
            f"table {table}: the columns differ ({source_columns} here, {list(columns)} there)"
        )
    names = list(columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    # Names checked by `plain` and equal to the target's: nothing to inject.
    select = "SELECT " + ", ".join(f'"{name}"' for name in names) + f' FROM "{table}"'  # noqa: S608
    copied = 0
    with target.cursor().copy(statement) as copy:
        copy.set_types([columns[name] for name in names])
        rows = source.execute(select)
        while batch := rows.fetchmany(ROWS_PER_READ):
            for row in batch:
                copy.write_row(row)
            copied += len(batch)
    return copied


def advance_identities(target: psycopg.Connection[tuple[object, ...]]) -> None:
    """Point each identity column's sequence past the ids copied in."""
    columns = target.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall()
    for table, column in columns:
        statement = sql.SQL(
            "SELECT setval(pg_get_serial_sequence({t}, {c}), coalesce(max({col}), 0) + 1, false)"
            " FROM {table}"
        ).format(
            t=sql.Literal(str(table)),
            c=sql.Literal(str(column)),
            col=sql.Identifier(str(column)),
            table=sql.Identifier(str(table)),
        )
        target.execute(statement)


def store_identity(
    target: psycopg.Connection[tuple[object, ...]], data_dir: Path, passphrase: bytes
) -> str:
    """The single node's CA into `uchat_identity` (key encrypted); its fingerprint."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise MigrationError(f"the CA passphrase must be at least {MIN_PASSPHRASE} bytes long")
    key_path = data_dir / "server_ca_key.pem"
    if not key_path.exists():
        raise MigrationError(f"no CA key at {key_path}: give the server's data folder")
    identity = ServerIdentity.load_or_create(data_dir)
    target.execute(
        "INSERT INTO uchat_identity (one, key_pem, certificate_pem, created_at)"
        " VALUES (1, %s, %s, %s)",
        (identity.encrypted_key_pem(passphrase), identity.certificate_pem, int(time.time() * 1000)),
    )
    return identity.fingerprint


@contextmanager
def migrated_copy(path: Path) -> Iterator[sqlite3.Connection]:
    """A private copy of the SQLite database, migrated to this code's schema."""
    if not path.is_file():
        raise MigrationError(f"no SQLite database at {path}")
    with tempfile.TemporaryDirectory(prefix="uchat-migrate-") as folder:
        copy_path = Path(folder) / "source.db"
        original = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            copied = sqlite3.connect(copy_path)
            original.backup(copied)
            copied.close()
        finally:
            original.close()
        SqliteDatabase.open(copy_path).close()  # the migrations a server start would run
        source = sqlite3.connect(copy_path)
        try:
            yield source
        finally:
            source.close()


def migrate(
    sqlite_path: Path,
    dsn: str,
    passphrase: bytes | None = None,
    attachments_dir: Path | None = None,
) -> list[TableCopy]:
    """Copy everything; raise MigrationError (nothing committed) when it cannot or fails."""
    PostgresDatabase.connect(dsn).close()  # the schema, migrated as a node would
    with migrated_copy(sqlite_path) as source, psycopg.connect(dsn) as target:
        tables = source_tables(source)
        refuse_non_empty(target, tables)
        copies = [
            TableCopy(t, copy_table(source, target, t)) for t in parents_first(target, tables)
        ]
        advance_identities(target)
        for copied in copies:
            counted = source.execute(f'SELECT count(*) FROM "{plain(copied.table)}"')  # noqa: S608
            expected = int(counted.fetchone()[0])
            found = _count(target, copied.table)
            if not expected == copied.rows == found:
                raise MigrationError(
                    f"table {copied.table}: {expected} rows in SQLite, {found} in PostgreSQL"
                )
        if attachments_dir is not None:
            copies.append(copy_attachment_files(source, target, attachments_dir))
        if passphrase is not None:
            store_identity(target, sqlite_path.parent, passphrase)
        target.commit()
    return copies


def copy_attachment_files(
    source: sqlite3.Connection, target: psycopg.Connection[tuple[object, ...]], root: Path
) -> TableCopy:
    """Each attachment's bytes into `uchat_attachment_chunks`, in CHUNK_BYTES rows.

    A finished attachment must have its file (else the message would point at
    nothing); an unfinished upload copies what its partial file holds, and the
    client resumes from there as after any crash.
    """
    files = AttachmentFiles(root)
    target.execute(CREATE_CHUNKS)
    rows = 0
    stored = 0
    expected = 0
    for attachment_id, size, complete in source.execute(
        "SELECT id, size, complete FROM attachments ORDER BY id"
    ).fetchall():
        path = files.final_path(attachment_id) if complete else files.partial_path(attachment_id)
        if complete:
            expected += int(size)
            if not path.is_file():
                raise MigrationError(
                    f"attachment {attachment_id} is complete but {path} is missing"
                )
        elif not path.is_file():
            continue
        with path.open("rb") as file:
            start = 0
            while block := file.read(CHUNK_BYTES):
                target.execute(
                    "INSERT INTO uchat_attachment_chunks (attachment_id, chunk_start, data)"
                    " VALUES (%s, %s, %s)",
                    (attachment_id, start, block),
                )
                start += len(block)
                rows += 1
        if complete:
            stored += start
    if stored != expected:
        raise MigrationError(f"attachments: {expected} bytes expected, {stored} copied")
    return TableCopy("uchat_attachment_chunks", rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server.migrate_to_postgres",
        description="Copy a stopped single-node Uchat server's SQLite database into an empty"
        " PostgreSQL database for cluster mode",
    )
    parser.add_argument("--sqlite", required=True, help="the server's uchat.db (in its data dir)")
    parser.add_argument("--dsn", required=True, help="libpq string or postgresql:// URL")
    parser.add_argument(
        "--ca-passphrase-file",
        help="also store the server's CA in PostgreSQL, encrypted with this passphrase",
    )
    parser.add_argument(
        "--attachments",
        choices=("folder", "database"),
        default="folder",
        help="database: copy the attachment files into PostgreSQL (attachment_store)",
    )
    parser.add_argument(
        "--attachments-dir", help="where the files are (default: attachments/ beside --sqlite)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        passphrase = (
            read_passphrase(Path(args.ca_passphrase_file)) if args.ca_passphrase_file else None
        )
        folder = None
        if args.attachments == "database":
            folder = Path(args.attachments_dir or Path(args.sqlite).parent / "attachments")
        copies = migrate(Path(args.sqlite), args.dsn, passphrase, folder)
    except (UchatError, psycopg.Error, sqlite3.Error, SchemaTooNewError, OSError) as exc:
        print(f"migrate_to_postgres: {exc}", file=sys.stderr)
        print("migrate_to_postgres: nothing was committed", file=sys.stderr)
        return 1
    width = max(len(copied.table) for copied in copies)
    for copied in copies:
        print(f"{copied.table:<{width}}  {copied.rows:>9} rows")
    print(f"migrated {sum(c.rows for c in copies)} rows in {len(copies)} tables: counts match")
    if passphrase is not None:
        print("the server's CA is stored in PostgreSQL: the nodes keep its fingerprint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
