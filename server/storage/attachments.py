"""The `attachments` table: encrypted uploads, their declared size and digest.

`received` is how many bytes of the upload the server holds; the bytes themselves
live in files (see `attachment_files`).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.storage.database import Database, Row


@dataclass(frozen=True)
class Attachment:
    id: str
    uploader_id: int
    size: int
    digest: bytes
    received: int
    complete: bool
    created_at: int


def _attachment(row: Row) -> Attachment:
    return Attachment(
        id=row["id"],
        uploader_id=row["uploader_id"],
        size=row["size"],
        digest=bytes(row["digest"]),
        received=row["received"],
        complete=bool(row["complete"]),
        created_at=row["created_at"],
    )


def create(
    db: Database, attachment_id: str, *, uploader_id: int, size: int, digest: bytes, now: int
) -> Attachment:
    """Register a new upload with nothing received yet."""
    db.execute(
        "INSERT INTO attachments (id, uploader_id, size, digest, received, complete, created_at)"
        " VALUES (?, ?, ?, ?, 0, 0, ?)",
        (attachment_id, uploader_id, size, digest, now),
    )
    return Attachment(attachment_id, uploader_id, size, digest, 0, False, now)


def get(db: Database, attachment_id: str) -> Attachment | None:
    row = db.one(
        "SELECT id, uploader_id, size, digest, received, complete, created_at"
        " FROM attachments WHERE id = ?",
        (attachment_id,),
    )
    return None if row is None else _attachment(row)


def set_received(db: Database, attachment_id: str, received: int) -> None:
    db.execute("UPDATE attachments SET received = ? WHERE id = ?", (received, attachment_id))


def mark_complete(db: Database, attachment_id: str) -> None:
    db.execute(
        "UPDATE attachments SET complete = 1, received = size WHERE id = ?", (attachment_id,)
    )


def delete(db: Database, attachment_id: str) -> None:
    """Forget an upload (only ever one no message references, e.g. a bad digest)."""
    db.execute("DELETE FROM attachments WHERE id = ?", (attachment_id,))


def open_uploads(db: Database, uploader_id: int) -> int:
    """How many unfinished uploads this user has (each holds disk space)."""
    return int(
        db.scalar(
            "SELECT count(*) FROM attachments WHERE uploader_id = ? AND complete = 0",
            (uploader_id,),
        )
    )


def abandoned(db: Database, older_than: int) -> list[str]:
    """Unfinished uploads created before `older_than` (ms): nobody is coming back."""
    rows = db.all("SELECT id FROM attachments WHERE complete = 0 AND created_at < ?", (older_than,))
    return [row["id"] for row in rows]
