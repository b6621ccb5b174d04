"""The `friends` table: requests and friendships.

A pending request is one row requester -> target with accepted = 0. A friendship is
two rows, one each way, with accepted = 1, so "my friends" is one indexed lookup.
A request answered "later" is simply left pending: it comes back at the next login.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.storage import conversations
from server.storage.database import Database, Row


@dataclass(frozen=True)
class Friend:
    """What a contact list shows about a friend (online state comes from sessions)."""

    id: int
    username: str
    ip: str
    port: int
    last_message_time: int


def are_friends(db: Database, user_a: int, user_b: int) -> bool:
    row = db.one(
        "SELECT 1 FROM friends WHERE from_user_id = ? AND to_user_id = ? AND accepted = 1",
        (user_a, user_b),
    )
    return row is not None


def has_pending_request(db: Database, from_id: int, to_id: int) -> bool:
    row = db.one(
        "SELECT 1 FROM friends WHERE from_user_id = ? AND to_user_id = ? AND accepted = 0",
        (from_id, to_id),
    )
    return row is not None


def add_request(db: Database, from_id: int, to_id: int, now: int) -> None:
    """Record that `from_id` asks `to_id`; IntegrityError if that row already exists."""
    db.execute(
        "INSERT INTO friends (from_user_id, to_user_id, accepted, created_at) VALUES (?, ?, 0, ?)",
        (from_id, to_id, now),
    )


def accept_request(db: Database, from_id: int, to_id: int, now: int) -> bool:
    """Turn the pending request from -> to into a friendship; False if there was none."""
    cursor = db.execute(
        "UPDATE friends SET accepted = 1 WHERE from_user_id = ? AND to_user_id = ?"
        " AND accepted = 0",
        (from_id, to_id),
    )
    if cursor.rowcount == 0:
        return False
    db.execute(
        "INSERT INTO friends (from_user_id, to_user_id, accepted, created_at)"
        " VALUES (?, ?, 1, ?)"
        " ON CONFLICT (from_user_id, to_user_id) DO UPDATE SET accepted = 1",
        (to_id, from_id, now),
    )
    return True


def delete_request(db: Database, from_id: int, to_id: int) -> bool:
    """Drop the pending request from -> to; False if there was none."""
    cursor = db.execute(
        "DELETE FROM friends WHERE from_user_id = ? AND to_user_id = ? AND accepted = 0",
        (from_id, to_id),
    )
    return cursor.rowcount > 0


def remove_friendship(db: Database, user_a: int, user_b: int) -> bool:
    """Delete both rows of a friendship; False if they were not friends."""
    cursor = db.execute(
        "DELETE FROM friends WHERE accepted = 1 AND"
        " ((from_user_id = ? AND to_user_id = ?) OR (from_user_id = ? AND to_user_id = ?))",
        (user_a, user_b, user_b, user_a),
    )
    return cursor.rowcount > 0


def friend_ids(db: Database, user_id: int) -> list[int]:
    rows = db.all(
        "SELECT to_user_id FROM friends WHERE from_user_id = ? AND accepted = 1",
        (user_id,),
    )
    return [row[0] for row in rows]


def friends_of(db: Database, user_id: int) -> list[Friend]:
    """Every friend with address and newest message time, by username."""
    rows = db.all(
        "SELECT u.id, u.username, u.ip, u.port FROM friends f"
        " JOIN users u ON u.id = f.to_user_id"
        " WHERE f.from_user_id = ? AND f.accepted = 1 ORDER BY u.username",
        (user_id,),
    )
    return _with_times(db, user_id, rows)


def friend(db: Database, user_id: int, friend_id: int) -> Friend | None:
    """One friend of `user_id` as a contact, or None if they are not friends."""
    rows = db.all(
        "SELECT u.id, u.username, u.ip, u.port FROM friends f"
        " JOIN users u ON u.id = f.to_user_id"
        " WHERE f.from_user_id = ? AND f.to_user_id = ? AND f.accepted = 1",
        (user_id, friend_id),
    )
    found = _with_times(db, user_id, rows)
    return found[0] if found else None


def _with_times(db: Database, user_id: int, rows: list[Row]) -> list[Friend]:
    keys = {row["id"]: conversations.user_pair_key(user_id, row["id"]) for row in rows}
    times = conversations.last_message_times(db, keys.values())
    return [
        Friend(
            id=row["id"],
            username=row["username"],
            ip=row["ip"],
            port=row["port"],
            last_message_time=times.get(keys[row["id"]], 0),
        )
        for row in rows
    ]


def incoming_requests_page(
    db: Database, user_id: int, after: str, limit: int
) -> tuple[list[str], str]:
    """One page of waiting requests, oldest first, and the cursor of the next ("" if none).

    The cursor is "<created_at>:<requester id>", the sort key of the page's last row;
    anything else is treated as the start.
    """
    created, _, requester = after.partition(":")
    start = (int(created), int(requester)) if created.isdigit() and requester.isdigit() else None
    rows = db.all(
        "SELECT u.username, f.created_at, f.from_user_id FROM friends f"
        " JOIN users u ON u.id = f.from_user_id WHERE f.to_user_id = ? AND f.accepted = 0"
        " AND (f.created_at, f.from_user_id) > (?, ?)"
        " ORDER BY f.created_at, f.from_user_id LIMIT ?",
        (user_id, *(start or (-1, -1)), limit + 1),
    )
    page = rows[:limit]
    more = len(rows) > limit
    cursor = f"{page[-1]['created_at']}:{page[-1]['from_user_id']}" if more and page else ""
    return [row["username"] for row in page], cursor


def relations(db: Database, user_id: int, other_ids: list[int]) -> dict[int, str]:
    """For each of `other_ids` linked to `user_id`: "friend" or "pending" (either way)."""
    if not other_ids:
        return {}
    rows = db.all_in(
        "SELECT from_user_id, to_user_id, accepted FROM friends"
        " WHERE (from_user_id = ? AND to_user_id IN ({marks}))",
        other_ids,
        leading=(user_id,),
    )
    rows += db.all_in(
        "SELECT from_user_id, to_user_id, accepted FROM friends"
        " WHERE (to_user_id = ? AND from_user_id IN ({marks}))",
        other_ids,
        leading=(user_id,),
    )
    found: dict[int, str] = {}
    for row in rows:
        other = row["to_user_id"] if row["from_user_id"] == user_id else row["from_user_id"]
        if row["accepted"]:
            found[other] = "friend"
        else:
            found.setdefault(other, "pending")
    return found
