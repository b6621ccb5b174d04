"""Where attachment bytes live: a folder, or PostgreSQL rows; `server.attachment_store`.

- `files` (the default): files in `server.attachments_dir` (empty: `<data_dir>/attachments`).
  One node, or a cluster whose nodes all mount one shared folder there.
- `database` (cluster mode only): chunks as bytea rows of `uchat_attachment_chunks` in
  PostgreSQL, written in the same transaction as the upload's `received` count, so any
  node can resume an upload another node began, and serve any download.

The handlers see one narrow interface (`AttachmentStore`); the database operations go
through the turn's own `Database` (reactor thread), except the digest check, which runs
on a worker thread and so opens its own short connection.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from common.config import ServerConfig
from server.storage.attachment_files import AttachmentFiles
from server.storage.database import Database, StorageUnavailable

FILES = "files"
DATABASE = "database"
CHUNKS_TABLE = "uchat_attachment_chunks"
#: pg_advisory_xact_lock key shared by the nodes creating the chunk table at once.
_CREATE_LOCK = 0x75636861745F6174
#: The digest reads chunks committed by the reactor; the last turn's commit may lag
#: the worker by a moment, so it looks again for up to this long.
COMMIT_WAIT = 10.0
_RETRY = 0.02
_READ_ROWS = 16

CREATE_CHUNKS = f"""
CREATE TABLE IF NOT EXISTS {CHUNKS_TABLE} (
    attachment_id TEXT   NOT NULL REFERENCES attachments(id) ON DELETE CASCADE,
    chunk_start   BIGINT NOT NULL,
    data          BYTEA  NOT NULL,
    PRIMARY KEY (attachment_id, chunk_start)
)
"""


class AttachmentStore(Protocol):
    """What the upload, download and retention code needs from the bytes' home."""

    def partial_size(self, db: Database, attachment_id: str) -> int: ...
    def write_at(self, db: Database, attachment_id: str, offset: int, data: bytes) -> None: ...
    def digest_job(
        self, attachment_id: str, last_offset: int, last_data: bytes
    ) -> Callable[[], bytes | None]: ...
    def finish(self, db: Database, attachment_id: str) -> None: ...
    def discard(self, db: Database, attachment_id: str) -> None: ...
    def read(self, db: Database, attachment_id: str, offset: int, length: int) -> bytes: ...


class FolderStore:
    """Attachment files in one folder (see `attachment_files`)."""

    def __init__(self, root: Path) -> None:
        self.files = AttachmentFiles(root)

    def partial_size(self, db: Database, attachment_id: str) -> int:
        return self.files.partial_size(attachment_id)

    def write_at(self, db: Database, attachment_id: str, offset: int, data: bytes) -> None:
        self.files.write_at(attachment_id, offset, data)

    def digest_job(
        self, attachment_id: str, last_offset: int, last_data: bytes
    ) -> Callable[[], bytes | None]:
        """SHA-256 of the partial file; None if a concurrent check already moved it."""

        def job() -> bytes | None:
            try:
                return self.files.partial_digest(attachment_id)
            except FileNotFoundError:
                return None

        return job

    def finish(self, db: Database, attachment_id: str) -> None:
        self.files.finish(attachment_id)

    def discard(self, db: Database, attachment_id: str) -> None:
        self.files.discard(attachment_id)

    def read(self, db: Database, attachment_id: str, offset: int, length: int) -> bytes:
        return self.files.read(attachment_id, offset, length)


class DatabaseStore:
    """Chunks as PostgreSQL rows keyed by (attachment, first byte's offset)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    @staticmethod
    def create_table(db: Database) -> None:
        """Make the chunk table once (nodes starting together take turns); committed."""
        db.one(f"SELECT pg_advisory_xact_lock({_CREATE_LOCK})")
        db.execute(CREATE_CHUNKS)
        db.commit()

    def partial_size(self, db: Database, attachment_id: str) -> int:
        return int(
            db.scalar(
                "SELECT coalesce(max(chunk_start + length(data)), 0) FROM uchat_attachment_chunks"
                " WHERE attachment_id = ?",
                (attachment_id,),
            )
        )

    def write_at(self, db: Database, attachment_id: str, offset: int, data: bytes) -> None:
        """Store `data` at `offset` and cut anything after it (a resend overwrites)."""
        db.execute(
            "DELETE FROM uchat_attachment_chunks WHERE attachment_id = ? AND chunk_start >= ?",
            (attachment_id, offset),
        )
        if data:
            db.execute(
                "INSERT INTO uchat_attachment_chunks (attachment_id, chunk_start, data)"
                " VALUES (?, ?, ?)",
                (attachment_id, offset, data),
            )

    def digest_job(
        self, attachment_id: str, last_offset: int, last_data: bytes
    ) -> Callable[[], bytes | None]:
        """SHA-256 of the committed chunks before `last_offset`, then `last_data`.

        The last chunk is the one in hand (its turn has not committed yet); the earlier
        ones may come from a turn committing just now, so a gap is looked at again
        until `COMMIT_WAIT` passes. None if they never line up (the upload is then
        refused as a digest mismatch and the client starts over).
        """

        def job() -> bytes | None:
            import psycopg  # cluster mode only: SQLite servers never load it

            deadline = time.monotonic() + COMMIT_WAIT
            while True:
                try:
                    digest = self._digest_before(attachment_id, last_offset)
                except psycopg.OperationalError as exc:
                    raise StorageUnavailable(f"cannot read the upload's chunks: {exc}") from exc
                if digest is not None:
                    digest.update(last_data)
                    return digest.digest()
                if time.monotonic() > deadline:
                    return None
                time.sleep(_RETRY)

        return job

    def _digest_before(self, attachment_id: str, end: int) -> hashlib._Hash | None:
        import psycopg

        digest = hashlib.sha256()
        position = 0
        with (
            psycopg.connect(self._dsn) as connection,
            connection.cursor(name="uchat_digest") as rows,
        ):
            rows.itersize = _READ_ROWS
            rows.execute(
                "SELECT chunk_start, data FROM uchat_attachment_chunks"
                " WHERE attachment_id = %s AND chunk_start < %s ORDER BY chunk_start",
                (attachment_id, end),
            )
            for start, data in rows:
                if start != position:
                    return None
                digest.update(data)
                position += len(data)
        return digest if position == end else None

    def finish(self, db: Database, attachment_id: str) -> None:
        """Nothing moves: `attachments.complete` is what makes the rows readable."""

    def discard(self, db: Database, attachment_id: str) -> None:
        db.execute("DELETE FROM uchat_attachment_chunks WHERE attachment_id = ?", (attachment_id,))

    def read(self, db: Database, attachment_id: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`, from the one or two chunks they span."""
        end = offset + length
        rows = db.all(
            "SELECT chunk_start, data FROM uchat_attachment_chunks WHERE attachment_id = ?"
            " AND chunk_start < ? AND chunk_start + length(data) > ? ORDER BY chunk_start",
            (attachment_id, end, offset),
        )
        out = bytearray()
        for row in rows:
            start, data = int(row[0]), bytes(row[1])
            out += data[max(0, offset - start) : end - start]
        return bytes(out)


def attachments_root(config: ServerConfig, data_dir: Path | None = None) -> Path:
    """The folder of the `files` store (`data_dir` stands for `config.data_dir`)."""
    if config.attachments_dir:
        return Path(config.attachments_dir)
    return (data_dir if data_dir is not None else Path(config.data_dir)) / "attachments"


def store_for(config: ServerConfig, data_dir: Path | None = None) -> AttachmentStore:
    if config.attachment_store == DATABASE:
        return DatabaseStore(config.database_url)
    return FolderStore(attachments_root(config, data_dir))
