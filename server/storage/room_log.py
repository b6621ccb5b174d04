"""The `room_log` and `room_join_requests` tables: each room's signed membership log.

Why it exists: the server stores, orders and serves the log members verify; it never
writes an event of its own except a pre-upgrade room's legacy genesis, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.crypto.room_log import LegacyGenesis
from server.storage.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    seq: int
    entry: bytes


@dataclass(frozen=True)
class JoinRequest:
    user_id: int
    username: str
    entry: bytes
    requested: int


def head(db: Database, room_id: int) -> tuple[int, bytes]:
    """(length, hash of the last entry); (0, b"") for a room with no log."""
    row = db.one(
        "SELECT seq, hash FROM room_log WHERE room_id = ? ORDER BY seq DESC LIMIT 1", (room_id,)
    )
    if row is None:
        return 0, b""
    return int(row["seq"]), bytes(row["hash"])


def append(
    db: Database,
    room_id: int,
    seq: int,
    *,
    kind: str,
    actor: str,
    subject: str,
    entry: bytes,
    entry_hash: bytes,
    now: int,
) -> None:
    """Store entry `seq`; the primary key refuses a second entry at the same place."""
    db.execute(
        "INSERT INTO room_log (room_id, seq, kind, actor, subject, entry, hash, stored)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (room_id, seq, kind, actor, subject, entry, entry_hash, now),
    )


def owner(db: Database, room_id: int) -> str | None:
    """Whom the room's last ownership transfer names; None if it was never handed over."""
    row = db.one(
        "SELECT subject FROM room_log WHERE room_id = ? AND kind = 'transfer_owner'"
        " ORDER BY seq DESC LIMIT 1",
        (room_id,),
    )
    return None if row is None else str(row["subject"])


def entries(db: Database, room_id: int, after: int, limit: int) -> list[Entry]:
    """Entries with seq > `after`, in order, at most `limit`."""
    rows = db.all(
        "SELECT seq, entry FROM room_log WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (room_id, after, limit),
    )
    return [Entry(int(row["seq"]), bytes(row["entry"])) for row in rows]


# -- join requests (approval rooms) -------------------------------------------------


def put_request(db: Database, room_id: int, user_id: int, entry: bytes, now: int) -> None:
    """Store (or replace, if re-signed) the user's pending join."""
    db.execute(
        "INSERT INTO room_join_requests (room_id, user_id, entry, requested) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (room_id, user_id) DO UPDATE SET entry = excluded.entry,"
        " requested = excluded.requested",
        (room_id, user_id, entry, now),
    )


def get_request(db: Database, room_id: int, user_id: int) -> bytes | None:
    row = db.one(
        "SELECT entry FROM room_join_requests WHERE room_id = ? AND user_id = ?",
        (room_id, user_id),
    )
    return None if row is None else bytes(row["entry"])


def drop_request(db: Database, room_id: int, user_id: int) -> bool:
    cursor = db.execute(
        "DELETE FROM room_join_requests WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    )
    return cursor.rowcount > 0


def requests(db: Database, room_id: int, limit: int) -> list[JoinRequest]:
    """Pending joins of a room, oldest first."""
    rows = db.all(
        "SELECT q.user_id, u.username, q.entry, q.requested FROM room_join_requests q"
        " JOIN users u ON u.id = q.user_id WHERE q.room_id = ?"
        " ORDER BY q.requested, q.user_id LIMIT ?",
        (room_id, limit),
    )
    return [
        JoinRequest(int(r["user_id"]), r["username"], bytes(r["entry"]), int(r["requested"]))
        for r in rows
    ]


def count_requests(db: Database, room_id: int, limit: int) -> int:
    return int(
        db.scalar(
            "SELECT count(*) FROM (SELECT 1 FROM room_join_requests WHERE room_id = ?"
            " LIMIT ?) AS q",
            (room_id, limit),
        )
    )


# -- upgrade --------------------------------------------------------------------------


def backfill_legacy(db: Database) -> int:
    """Give every room without a log its legacy genesis (idempotent); returns how many.

    The members, owner and name are what the server held at the upgrade; the owner
    becomes the one admin if still a member. Clients show these first members as
    stated by the server only (docs/architecture.md, decisions).
    """
    rooms = db.all(
        "SELECT r.id, r.room_name, r.created_at, u.username AS owner FROM rooms r"
        " JOIN users u ON u.id = r.created_by"
        " WHERE NOT EXISTS (SELECT 1 FROM room_log l WHERE l.room_id = r.id) ORDER BY r.id"
    )
    for room in rooms:
        members = db.all(
            "SELECT u.username, r.user_id FROM room_user r JOIN users u ON u.id = r.user_id"
            " WHERE r.room_id = ? ORDER BY r.id",
            (room["id"],),
        )
        legacy = LegacyGenesis(
            room=str(room["id"]),
            name=room["room_name"],
            owner=room["owner"],
            members=tuple(row["username"] for row in members),
            time_ms=int(room["created_at"]),
        )
        append(
            db,
            int(room["id"]),
            1,
            kind="legacy",
            actor="",
            subject=room["owner"],
            entry=legacy.to_wire(),
            entry_hash=legacy.hash(),
            now=int(room["created_at"]),
        )
        db.execute(
            "UPDATE room_user SET admin = 1 WHERE room_id = ? AND user_id ="
            " (SELECT created_by FROM rooms WHERE id = ?)",
            (room["id"], room["id"]),
        )
    if rooms:
        log.info("membership log: legacy genesis written for %d rooms", len(rooms))
    return len(rooms)
