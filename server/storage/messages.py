"""The `chat_history` and `message_attachments` tables: sealed messages in transit.

Each message is stored as one delivery row per recipient holding the envelope sealed
for that recipient; the row id is the server order and `sent` flips to 1 when that
recipient acknowledges. A message id belongs to exactly one sender, which makes a
repeated send recognisable and therefore idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from server.storage import conversations
from server.storage.database import Database

USER = "user"
ROOM = "room"


@dataclass(frozen=True)
class StoredMessage:
    """What is already known about a message id (for idempotent re-sends)."""

    message_id: str
    sender_id: int
    time: int


@dataclass(frozen=True)
class Delivery:
    """One undelivered row, ready to be pushed to its recipient."""

    row_id: int
    message_id: str
    sender_id: int
    sender: str
    target_type: str
    target_id: int
    time: int
    envelope: bytes
    attachments: list[str]


def find_message(db: Database, message_id: str) -> StoredMessage | None:
    row = db.one(
        "SELECT user_id, time FROM chat_history WHERE message_id = ? LIMIT 1", (message_id,)
    )
    if row is None:
        return None
    return StoredMessage(message_id, row["user_id"], row["time"])


_INSERT_DELIVERY = (
    "INSERT INTO chat_history"
    " (message_id, user_id, target_id, target_type, recipient_id, data, time, sent)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, 0"
    " WHERE NOT EXISTS (SELECT 1 FROM chat_history WHERE message_id = ?1)"
    " ON CONFLICT (message_id, recipient_id) DO NOTHING"
)
_ID_TAKEN = "SELECT 1 FROM chat_history WHERE message_id = ? LIMIT 1"
_INSERT_ROOM_DELIVERY = (
    "INSERT INTO chat_history"
    " (message_id, user_id, target_id, target_type, recipient_id, data, time, sent)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 0)"
    " ON CONFLICT (message_id, recipient_id) DO NOTHING"
)


def store_message(
    db: Database,
    *,
    message_id: str,
    sender_id: int,
    target_type: str,
    target_id: int,
    time: int,
    envelopes: Sequence[tuple[int, bytes]],
    attachment_ids: Sequence[str] = (),
) -> bool:
    """Insert one delivery row per (recipient id, envelope); True if any row was new.

    The duplicate check is part of the INSERT: nothing is inserted under an id that
    is already stored (a retry after a crash between insert and reply cannot duplicate
    anything, even with another recipient set, and a message id belongs to its first
    sender); the caller tells a retry from a reused id with `find_message`. The
    caller notes the conversation (`conversation_key`), once per turn. A message with
    no recipient (a room of one) stores no row, so there is nothing to be a duplicate
    of: True.
    """
    if not envelopes:
        return True
    rows = [
        (message_id, sender_id, target_id, target_type, recipient, envelope, time)
        for recipient, envelope in envelopes
    ]
    if len(rows) == 1:  # a direct message: one statement does the id check too
        inserted = db.execute(_INSERT_DELIVERY, rows[0]).rowcount
    else:
        # A room message: the id is checked once, not per row (per row it would scan
        # the rows already inserted under this id: quadratic in the room's size).
        if db.one(_ID_TAKEN, (message_id,)) is not None:
            return False
        inserted = db.executemany(_INSERT_ROOM_DELIVERY, rows).rowcount
    if inserted <= 0:
        return False
    if attachment_ids:
        db.executemany(
            "INSERT INTO message_attachments (message_id, attachment_id) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING",
            [(message_id, attachment_id) for attachment_id in dict.fromkeys(attachment_ids)],
        )
    return True


def conversation_key(sender_id: int, target_type: str, target_id: int) -> str:
    """The `conversations` key of a message: the user pair, or the room."""
    if target_type == USER:
        return conversations.user_pair_key(sender_id, target_id)
    return conversations.room_key(target_id)


def undelivered(
    db: Database, recipient_id: int, after_row: int = 0, limit: int = 256
) -> list[Delivery]:
    """Unacknowledged deliveries for `recipient_id` after row `after_row`, in order."""
    rows = db.all(
        "SELECT h.id, h.message_id, h.user_id, s.username, h.target_type, h.target_id,"
        " h.time, h.data FROM chat_history h JOIN users s ON s.id = h.user_id"
        " WHERE h.recipient_id = ? AND h.sent = 0 AND h.id > ? ORDER BY h.id LIMIT ?",
        (recipient_id, after_row, limit),
    )
    attachments = attachments_of(db, [row["message_id"] for row in rows])
    return [
        Delivery(
            row_id=row["id"],
            message_id=row["message_id"],
            sender_id=row["user_id"],
            sender=row["username"],
            target_type=row["target_type"],
            target_id=row["target_id"],
            time=row["time"],
            envelope=bytes(row["data"]),
            attachments=attachments.get(row["message_id"], []),
        )
        for row in rows
    ]


def attachments_of(db: Database, message_ids: Iterable[str]) -> dict[str, list[str]]:
    rows = db.all_in(
        "SELECT message_id, attachment_id FROM message_attachments"
        " WHERE message_id IN ({marks}) ORDER BY message_id, attachment_id",
        list(dict.fromkeys(message_ids)),
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["message_id"], []).append(row["attachment_id"])
    return found


def mark_delivered(
    db: Database, recipient_id: int, message_ids: Iterable[str]
) -> list[tuple[str, int]]:
    """Flag this recipient's rows as acknowledged.

    Returns (message id, sender id) for each row that changed now; ids that are not
    this recipient's, or were already acknowledged, are ignored.
    """
    ids = list(dict.fromkeys(message_ids))
    rows = db.all_in(
        "UPDATE chat_history SET sent = 1"
        " WHERE recipient_id = ? AND sent = 0 AND message_id IN ({marks})"
        " RETURNING message_id, user_id",
        ids,
        leading=(recipient_id,),
    )
    order = {message_id: index for index, message_id in enumerate(ids)}
    changed = [(row[0], row[1]) for row in rows]
    changed.sort(key=lambda item: order[item[0]])  # in the order they were acknowledged
    return changed


def is_attachment_recipient(db: Database, attachment_id: str, user_id: int) -> bool:
    """True if `user_id` received a message that lists `attachment_id`."""
    row = db.one(
        "SELECT 1 FROM message_attachments a JOIN chat_history h"
        " ON h.message_id = a.message_id"
        " WHERE a.attachment_id = ? AND h.recipient_id = ? LIMIT 1",
        (attachment_id, user_id),
    )
    return row is not None
