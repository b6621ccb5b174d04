"""The `rooms` and `room_user` tables: group chats and who is in them.

A room outlives its members leaving: its number stays valid so anyone can join
again, and its history keeps pointing at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.room_numbers import random_room_number
from server.storage import conversations
from server.storage.database import Database


@dataclass(frozen=True)
class Room:
    id: int
    name: str
    created_by: int
    created_at: int


@dataclass(frozen=True)
class Member:
    id: int
    username: str


@dataclass(frozen=True)
class RoomView:
    """A room as a contact list shows it."""

    id: int
    name: str
    members: list[str]
    last_message_time: int


def number_taken(db: Database, number: int) -> bool:
    return db.one("SELECT 1 FROM rooms WHERE id = ?", (number,)) is not None


def create_room(
    db: Database,
    name: str,
    created_by: int,
    now: int,
    *,
    number: int | None = None,
    policy: str = "open",
) -> int:
    """Insert a room (no members yet); sqlite3.IntegrityError if the name or number is taken.

    The number people share to join is random, not sequential, so nobody can walk
    through every group by counting (joining needs only the number). A signed create
    event names its room, so the creator's client draws the number (`number`).
    """
    if number is None:
        for _ in range(64):
            number = random_room_number()
            if not number_taken(db, number):
                break
        else:  # pragma: no cover - needs tens of millions of rooms
            raise RuntimeError("no free room number")
    db.execute(
        "INSERT INTO rooms (id, room_name, created_by, created_at, join_policy)"
        " VALUES (?, ?, ?, ?, ?)",
        (number, name, created_by, now, policy),
    )
    return number


def join_policy(db: Database, room_id: int) -> str:
    return str(db.scalar("SELECT join_policy FROM rooms WHERE id = ?", (room_id,)) or "open")


def set_admin(db: Database, room_id: int, user_id: int) -> None:
    db.execute(
        "UPDATE room_user SET admin = 1 WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    )


def is_admin(db: Database, room_id: int, user_id: int) -> bool:
    row = db.one(
        "SELECT 1 FROM room_user WHERE room_id = ? AND user_id = ? AND admin = 1",
        (room_id, user_id),
    )
    return row is not None


def admin_ids(db: Database, room_id: int) -> list[int]:
    rows = db.all(
        "SELECT user_id FROM room_user WHERE room_id = ? AND admin = 1 ORDER BY id", (room_id,)
    )
    return [row[0] for row in rows]


def member_names(db: Database, room_id: int) -> tuple[list[str], list[str]]:
    """(every member's name, the admins' names), in join order."""
    rows = db.all(
        "SELECT u.username, r.admin FROM room_user r JOIN users u ON u.id = r.user_id"
        " WHERE r.room_id = ? ORDER BY r.id",
        (room_id,),
    )
    return [row["username"] for row in rows], [row["username"] for row in rows if row["admin"]]


def get_room(db: Database, room_id: int) -> Room | None:
    row = db.one("SELECT id, room_name, created_by, created_at FROM rooms WHERE id = ?", (room_id,))
    if row is None:
        return None
    return Room(row["id"], row["room_name"], row["created_by"], row["created_at"])


def name_taken(db: Database, name: str) -> bool:
    return db.one("SELECT 1 FROM rooms WHERE room_name = ?", (name,)) is not None


def add_member(db: Database, room_id: int, user_id: int, now: int) -> bool:
    """Add `user_id` to the room; False if already a member."""
    cursor = db.execute(
        "INSERT INTO room_user (room_id, user_id, joined_at) VALUES (?, ?, ?)"
        " ON CONFLICT (room_id, user_id) DO NOTHING",
        (room_id, user_id, now),
    )
    return cursor.rowcount > 0


def remove_member(db: Database, room_id: int, user_id: int) -> bool:
    """Take `user_id` out of the room; False if not a member."""
    cursor = db.execute(
        "DELETE FROM room_user WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    )
    return cursor.rowcount > 0


def is_member(db: Database, room_id: int, user_id: int) -> bool:
    row = db.one("SELECT 1 FROM room_user WHERE room_id = ? AND user_id = ?", (room_id, user_id))
    return row is not None


def members(db: Database, room_id: int) -> list[Member]:
    """Members in the order they joined."""
    rows = db.all(
        "SELECT u.id, u.username FROM room_user r JOIN users u ON u.id = r.user_id"
        " WHERE r.room_id = ? ORDER BY r.id",
        (room_id,),
    )
    return [Member(row["id"], row["username"]) for row in rows]


def member_ids(db: Database, room_id: int) -> list[int]:
    rows = db.all("SELECT user_id FROM room_user WHERE room_id = ? ORDER BY id", (room_id,))
    return [row[0] for row in rows]


def share_a_room(db: Database, user_a: int, user_b: int) -> bool:
    row = db.one(
        "SELECT 1 FROM room_user a JOIN room_user b ON a.room_id = b.room_id"
        " WHERE a.user_id = ? AND b.user_id = ? LIMIT 1",
        (user_a, user_b),
    )
    return row is not None


def room_view(db: Database, room_id: int) -> RoomView | None:
    room = get_room(db, room_id)
    if room is None:
        return None
    times = conversations.last_message_times(db, [conversations.room_key(room_id)])
    return RoomView(
        id=room.id,
        name=room.name,
        members=[member.username for member in members(db, room_id)],
        last_message_time=times.get(conversations.room_key(room_id), 0),
    )


def rooms_of(db: Database, user_id: int) -> list[RoomView]:
    """Every room `user_id` is in, with members and newest message time (two queries)."""
    rooms = db.all(
        "SELECT r.id, r.room_name FROM room_user m JOIN rooms r ON r.id = m.room_id"
        " WHERE m.user_id = ? ORDER BY m.id",
        (user_id,),
    )
    room_ids = [row["id"] for row in rooms]
    member_rows = db.all_in(
        "SELECT r.room_id, u.username FROM room_user r JOIN users u ON u.id = r.user_id"
        " WHERE r.room_id IN ({marks}) ORDER BY r.id",
        room_ids,
    )
    names: dict[int, list[str]] = {room_id: [] for room_id in room_ids}
    for row in member_rows:
        names[row["room_id"]].append(row["username"])
    times = conversations.last_message_times(db, map(conversations.room_key, room_ids))
    return [
        RoomView(
            id=row["id"],
            name=row["room_name"],
            members=names[row["id"]],
            last_message_time=times.get(conversations.room_key(row["id"]), 0),
        )
        for row in rooms
    ]


def member_certificates(
    db: Database, room_id: int, *, after: int = 0, limit: int = 1_000_000
) -> list[tuple[int, str, bytes]]:
    """(position, username, certificate DER) of members in join order, past `after`.

    `position` is the membership row's own key: a cursor for the next page.
    """
    rows = db.all(
        "SELECT r.id, u.username, u.certificate FROM room_user r JOIN users u ON u.id = r.user_id"
        " WHERE r.room_id = ? AND r.id > ? ORDER BY r.id LIMIT ?",
        (room_id, after, limit),
    )
    return [(int(row["id"]), row["username"], bytes(row["certificate"])) for row in rows]
