"""Both attachment stores behind one interface: a folder, and PostgreSQL chunk rows.

The database store runs on the suite's private PostgreSQL (tests/backends.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.storage import attachments, users
from server.storage.attachment_store import AttachmentStore, DatabaseStore, FolderStore
from server.storage.database import Database, SqliteDatabase, StorageUnavailable
from server.storage.postgres import PostgresDatabase

ID = "0123456789abcdef0123456789abcdef"
CHUNK = 1000


@dataclass
class Setup:
    name: str
    db: Database
    store: AttachmentStore


@pytest.fixture(params=["files", "database"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_pg_dsn: Callable[[], str]
) -> Iterator[Setup]:
    db: Database
    store: AttachmentStore
    if request.param == "files":
        db = SqliteDatabase.open(tmp_path / "server.db")
        store = FolderStore(tmp_path / "attachments")
    else:
        dsn = fresh_pg_dsn()
        db = PostgresDatabase.connect(dsn)
        DatabaseStore.create_table(db)
        DatabaseStore.create_table(db)  # a second node starting: nothing to do
        store = DatabaseStore(dsn)
    users.create_user(
        db,
        username="alice",
        password_hash="x",
        email="alice@example.org",
        sex="other",
        age=30,
        certificate=b"cert",
        now=1,
    )
    yield Setup(request.param, db, store)
    db.close()


def upload(setup: Setup, payload: bytes) -> None:
    """Chunk by chunk, each committed as the reactor's turn would."""
    digest = hashlib.sha256(payload).digest()
    uploader = users.by_username(setup.db, "alice")
    assert uploader is not None
    attachments.create(
        setup.db, ID, uploader_id=uploader.id, size=len(payload), digest=digest, now=1
    )
    for offset in range(0, len(payload), CHUNK):
        setup.store.write_at(setup.db, ID, offset, payload[offset : offset + CHUNK])
        setup.db.commit()


def test_chunks_read_back_across_their_boundaries(setup: Setup) -> None:
    payload = os.urandom(3 * CHUNK + 17)
    upload(setup, payload)
    assert setup.store.partial_size(setup.db, ID) == len(payload)
    setup.store.finish(setup.db, ID)
    attachments.mark_complete(setup.db, ID)
    setup.db.commit()
    for offset, length in [(0, 10), (CHUNK - 5, 10), (990, 2 * CHUNK + 20), (3 * CHUNK, 100)]:
        got = setup.store.read(setup.db, ID, offset, length)
        assert got == payload[offset : offset + length], (offset, length)
    assert setup.store.read(setup.db, ID, len(payload), 10) == b""


def test_a_rewrite_cuts_what_came_after_it(setup: Setup) -> None:
    payload = os.urandom(3 * CHUNK)
    upload(setup, payload)
    setup.store.write_at(setup.db, ID, CHUNK, b"resent")  # a resumed upload overwrites
    setup.db.commit()
    assert setup.store.partial_size(setup.db, ID) == CHUNK + len(b"resent")


def test_the_digest_covers_the_stored_chunks_and_the_last_one(setup: Setup) -> None:
    payload = os.urandom(2 * CHUNK + 300)
    last = 2 * CHUNK
    upload(setup, payload[:last])
    setup.store.write_at(setup.db, ID, last, payload[last:])  # not committed yet
    job = setup.store.digest_job(ID, last, payload[last:])
    setup.db.commit()
    assert job() == hashlib.sha256(payload).digest()


def test_discarding_forgets_the_bytes(setup: Setup) -> None:
    upload(setup, os.urandom(2 * CHUNK))
    setup.store.discard(setup.db, ID)
    setup.db.commit()
    assert setup.store.partial_size(setup.db, ID) == 0


@pytest.fixture
def on_postgres(fresh_pg_dsn: Callable[[], str]) -> Iterator[Setup]:
    dsn = fresh_pg_dsn()
    db = PostgresDatabase.connect(dsn)
    DatabaseStore.create_table(db)
    users.create_user(
        db,
        username="alice",
        password_hash="x",
        email="alice@example.org",
        sex="other",
        age=30,
        certificate=b"cert",
        now=1,
    )
    yield Setup("database", db, DatabaseStore(dsn))
    db.close()


def test_a_gap_in_the_database_chunks_gives_no_digest(
    on_postgres: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.storage.attachment_store.COMMIT_WAIT", 0.1)
    upload(on_postgres, os.urandom(3 * CHUNK))
    on_postgres.db.execute(
        "DELETE FROM uchat_attachment_chunks WHERE attachment_id = ? AND chunk_start = ?",
        (ID, CHUNK),
    )
    on_postgres.db.commit()
    assert on_postgres.store.digest_job(ID, 3 * CHUNK, b"")() is None


def test_deleting_the_attachment_row_takes_the_chunks(on_postgres: Setup) -> None:
    upload(on_postgres, os.urandom(2 * CHUNK))
    attachments.delete(on_postgres.db, ID)  # as retention does
    on_postgres.db.commit()
    assert on_postgres.db.scalar("SELECT count(*) FROM uchat_attachment_chunks") == 0


def test_a_digest_without_the_database_is_storage_unavailable() -> None:
    """Answered `server_busy` by the dispatcher, like the reactor's own statements."""
    from server.cluster.local_services import free_port

    store = DatabaseStore(f"host=127.0.0.1 port={free_port()} user=x dbname=x connect_timeout=2")
    with pytest.raises(StorageUnavailable):
        store.digest_job(ID, 10, b"")()
