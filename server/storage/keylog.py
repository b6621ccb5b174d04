"""The key transparency tables: entries, node hashes and signed tree heads.

Rows are only ever inserted: the log is append only, and nothing here updates or
deletes. Positions count from 0, as RFC 9162 numbers leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.crypto.merkle import LogEntry, TreeHead
from server.storage.database import Database, Row


@dataclass(frozen=True)
class StoredEntry:
    position: int
    entry: LogEntry
    created_at: int


#: pg_advisory_xact_lock key ("uchat_kt"): one cluster node appends or signs at a time.
_APPEND_LOCK = 0x75636861745F6B74


def lock_for_append(db: Database) -> None:
    """Cluster mode: hold the log until this turn commits, so positions and heads written
    by several nodes never collide. SQLite has a single writer already: nothing to do."""
    if db.backend == "postgresql":
        db.execute("SELECT pg_advisory_xact_lock(?)", (_APPEND_LOCK,))


def size(db: Database) -> int:
    """Number of entries (the next position)."""
    return int(db.scalar("SELECT COALESCE(MAX(position) + 1, 0) FROM kt_entries"))


def hashed_size(db: Database) -> int:
    """Number of entries whose leaf hash (and completed nodes) are stored."""
    return int(db.scalar("SELECT COALESCE(MAX(position) + 1, 0) FROM kt_nodes WHERE level = 0"))


def insert_entry(db: Database, position: int, entry: LogEntry, now: int) -> None:
    db.execute(
        "INSERT INTO kt_entries (position, kind, username, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (position, entry.kind, entry.username, entry.payload, now),
    )


def insert_nodes(db: Database, nodes: list[tuple[int, int, bytes]]) -> None:
    db.executemany("INSERT INTO kt_nodes (level, position, hash) VALUES (?, ?, ?)", nodes)


def node(db: Database, level: int, position: int) -> bytes:
    value = db.scalar(
        "SELECT hash FROM kt_nodes WHERE level = ? AND position = ?", (level, position)
    )
    if value is None:
        raise LookupError(f"no stored node at level {level}, position {position}")
    return bytes(value)


def _stored(row: Row) -> StoredEntry:
    entry = LogEntry(str(row["kind"]), str(row["username"]), bytes(row["payload"]))
    return StoredEntry(int(row["position"]), entry, int(row["created_at"]))


_SELECT = "SELECT position, kind, username, payload, created_at FROM kt_entries"


def entries(db: Database, start: int, end: int) -> list[StoredEntry]:
    rows = db.all(_SELECT + " WHERE position >= ? AND position < ? ORDER BY position", (start, end))
    return [_stored(row) for row in rows]


def entries_for(db: Database, username: str, limit: int, after: int = -1) -> list[StoredEntry]:
    """Entries under `username` (any ASCII case, as usernames are unique that way) at
    positions after `after`, oldest first."""
    rows = db.all(
        _SELECT + " WHERE username = ? COLLATE NOCASE AND position > ? ORDER BY position LIMIT ?",
        (username, after, limit),
    )
    return [_stored(row) for row in rows]


def latest_for(db: Database, kind: str, username: str, payload: bytes) -> int | None:
    """Position of the newest entry holding exactly this key for this user."""
    value = db.scalar(
        "SELECT position FROM kt_entries WHERE username = ? COLLATE NOCASE AND kind = ?"
        " AND payload = ? ORDER BY position DESC LIMIT 1",
        (username, kind, payload),
    )
    return None if value is None else int(value)


def latest_head(db: Database) -> TreeHead | None:
    row = db.one("SELECT size, root, timestamp, signature FROM kt_heads ORDER BY size DESC LIMIT 1")
    if row is None:
        return None
    return TreeHead(int(row[0]), bytes(row[1]), int(row[2]), bytes(row[3]))


def insert_head(db: Database, head: TreeHead) -> None:
    db.execute(
        "INSERT INTO kt_heads (size, root, timestamp, signature) VALUES (?, ?, ?, ?)",
        (head.size, head.root, head.timestamp, head.signature),
    )


def heads(db: Database) -> list[TreeHead]:
    rows = db.all("SELECT size, root, timestamp, signature FROM kt_heads ORDER BY size")
    return [TreeHead(int(r[0]), bytes(r[1]), int(r[2]), bytes(r[3])) for r in rows]
