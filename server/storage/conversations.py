"""The `conversations` table: when each chat last saw a message.

Contact lists sort by `last_message_time`; keeping it here, updated on every send,
spares a scan of `chat_history` at each login.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.storage.database import Database


def user_pair_key(user_a: int, user_b: int) -> str:
    """The same key whichever of the two users sent the message."""
    low, high = sorted((user_a, user_b))
    return f"u:{low}:{high}"


def room_key(room_id: int) -> str:
    return f"r:{room_id}"


def touch(db: Database, key: str, time: int) -> None:
    """Record a message at `time` (never moves the time backwards)."""
    db.execute(
        "INSERT INTO conversations (key, last_message_time) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET last_message_time ="
        " max(conversations.last_message_time, excluded.last_message_time)",
        (key, time),
    )


def touch_many(db: Database, items: Iterable[tuple[str, int]]) -> None:
    """`touch` for many conversations in one statement (keys unique in `items`)."""
    db.executemany(
        "INSERT INTO conversations (key, last_message_time) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET last_message_time ="
        " max(conversations.last_message_time, excluded.last_message_time)",
        list(items),
    )


def last_message_times(db: Database, keys: Iterable[str]) -> dict[str, int]:
    """Time of the newest message for each key that has one."""
    rows = db.all_in(
        "SELECT key, last_message_time FROM conversations WHERE key IN ({marks})",
        list(dict.fromkeys(keys)),
    )
    return {row["key"]: row["last_message_time"] for row in rows}
