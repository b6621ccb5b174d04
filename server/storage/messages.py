"""Stored envelopes, delivery cursors and chain distributions: messages in transit.

One envelope per message (end-to-end v2, DESIGN.md section 3b), whatever the number of
recipients: a room message is one row, not one per member. Each member has one
delivery cursor per conversation, the id of the newest envelope it acknowledged there;
what lies after a member's cursors is its offline backlog. A sender chain's state
travels as a distribution sealed to one recipient and stored for that recipient beside
the message that first needs it. A message id belongs to exactly one sender, which
makes a repeated send recognisable and therefore idempotent.

Envelopes from before (version 1) were sealed per recipient; they keep one row each,
`recipient_id` naming who may read it (0 means every member, as for version 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from server.storage import conversations
from server.storage.database import Database, Row

USER = "user"
ROOM = "room"
EVERY_MEMBER = 0


@dataclass(frozen=True)
class StoredMessage:
    """What is already known about a message id (for idempotent re-sends)."""

    message_id: str
    sender_id: int
    time: int


@dataclass(frozen=True)
class Delivery:
    """One envelope after a recipient's cursor, ready to be pushed to that recipient."""

    row_id: int
    message_id: str
    sender_id: int
    sender: str
    target_type: str
    target_id: int
    time: int
    envelope: bytes
    attachments: list[str]
    distribution: bytes | None = None


def find_message(db: Database, message_id: str) -> StoredMessage | None:
    row = db.one(
        "SELECT sender_id, time FROM envelopes WHERE message_id = ? LIMIT 1", (message_id,)
    )
    if row is None:
        return None
    return StoredMessage(message_id, row["sender_id"], row["time"])


def conversation_key(sender_id: int, target_type: str, target_id: int) -> str:
    """The conversation of a message: the user pair, or the room."""
    if target_type == USER:
        return conversations.user_pair_key(sender_id, target_id)
    return conversations.room_key(target_id)


@dataclass(frozen=True)
class NewEnvelope:
    """A message to store: its one envelope, and a chain distribution per recipient."""

    message_id: str
    sender_id: int
    target_type: str
    target_id: int
    time: int
    envelope: bytes
    distributions: Mapping[int, bytes]
    attachment_ids: Sequence[str] = ()

    @property
    def conversation(self) -> str:
        return conversation_key(self.sender_id, self.target_type, self.target_id)


#: Envelopes per INSERT: 7 parameters each, well below SQLite's bound-parameter limit.
STORE_CHUNK = 200
_ENVELOPE_ROW = "(?, ?, ?, ?, ?, 0, ?, ?)"


_INSERT_ENVELOPES = (
    "INSERT INTO envelopes"
    " (message_id, conversation, sender_id, target_type, target_id, recipient_id, data, time)"
    " VALUES {rows} ON CONFLICT (message_id, recipient_id) DO NOTHING RETURNING id, message_id"
)


def _insert_envelopes(count: int) -> str:
    """The INSERT of `count` envelopes: only placeholders are repeated into the text."""
    return _INSERT_ENVELOPES.format(rows=", ".join([_ENVELOPE_ROW] * count))


def store_many(db: Database, items: Sequence[NewEnvelope]) -> dict[str, int]:
    """Store envelopes and their distributions; {message id: new row id} of those stored.

    The duplicate check is the INSERT itself (`message_id` is unique among version-2
    rows; ids are random, so an old version-1 row never shares one): an id already
    used, or repeated within `items`, is stored once and the others are left out of
    the result; the caller tells a retry from a reused id with `find_message`. A few
    statements for any number of messages: one reactor turn's (`server.turn`). The
    caller notes each conversation (`conversation_key`) once per turn.
    """
    stored: dict[str, int] = {}
    for start in range(0, len(items), STORE_CHUNK):
        chunk = items[start : start + STORE_CHUNK]
        values = [
            value
            for item in chunk
            for value in (
                item.message_id,
                item.conversation,
                item.sender_id,
                item.target_type,
                item.target_id,
                item.envelope,
                item.time,
            )
        ]
        for row in db.all(_insert_envelopes(len(chunk)), values):
            stored[row["message_id"]] = int(row["id"])
    fresh: dict[str, NewEnvelope] = {}  # those stored: of a repeated id, the first
    for item in items:
        if item.message_id in stored:
            fresh.setdefault(item.message_id, item)
    distributions = [
        (item.message_id, recipient, data)
        for item in fresh.values()
        for recipient, data in item.distributions.items()
    ]
    if distributions:
        db.executemany(
            "INSERT INTO chain_distributions (message_id, recipient_id, data) VALUES (?, ?, ?)"
            " ON CONFLICT (message_id, recipient_id) DO NOTHING",
            distributions,
        )
    links = [
        (item.message_id, attachment_id)
        for item in fresh.values()
        for attachment_id in dict.fromkeys(item.attachment_ids)
    ]
    if links:
        db.executemany(
            "INSERT INTO message_attachments (message_id, attachment_id) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING",
            links,
        )
    return stored


def store_message(
    db: Database,
    *,
    message_id: str,
    sender_id: int,
    target_type: str,
    target_id: int,
    time: int,
    envelope: bytes,
    distributions: Mapping[int, bytes] | None = None,
    attachment_ids: Sequence[str] = (),
) -> int | None:
    """Store one message (`store_many`); its new row id, None if the id is taken."""
    item = NewEnvelope(
        message_id,
        sender_id,
        target_type,
        target_id,
        time,
        envelope,
        distributions or {},
        attachment_ids,
    )
    return store_many(db, [item]).get(message_id)


# ---------------------------------------------------------------- cursors


def newest_id(db: Database) -> int:
    """The newest envelope id: a cursor set here sees every message stored after it."""
    return int(db.scalar("SELECT COALESCE(MAX(id), 0) FROM envelopes"))


def sync_room_cursors(db: Database, room_id: int) -> None:
    """One cursor per current member of the room, none for anyone else.

    A member without a cursor (a newcomer) starts at the newest envelope: it receives
    what is sent from now on, never what was sealed before it joined. Called when the
    room's membership may have changed since the last send, not per message.
    """
    conversation = conversations.room_key(room_id)
    db.execute(
        "INSERT INTO delivery_cursors (conversation, user_id, delivered)"
        " SELECT ?, user_id, ? FROM room_user WHERE room_id = ?"
        " ON CONFLICT (conversation, user_id) DO NOTHING",
        (conversation, newest_id(db), room_id),
    )
    db.execute(
        "DELETE FROM delivery_cursors WHERE conversation = ?"
        " AND user_id NOT IN (SELECT user_id FROM room_user WHERE room_id = ?)",
        (conversation, room_id),
    )


def ensure_pair_cursors(db: Database, user_a: int, user_b: int) -> None:
    """Both friends' cursors of their direct conversation (a new one starts at the newest)."""
    conversation = conversations.user_pair_key(user_a, user_b)
    start = newest_id(db)
    db.executemany(
        "INSERT INTO delivery_cursors (conversation, user_id, delivered) VALUES (?, ?, ?)"
        " ON CONFLICT (conversation, user_id) DO NOTHING",
        [(conversation, user_a, start), (conversation, user_b, start)],
    )


_UNDELIVERED = (
    "SELECT e.id, e.message_id, e.sender_id, s.username, e.target_type, e.target_id,"
    " e.time, e.data, d.data AS distribution"
    " FROM delivery_cursors c"
    " JOIN envelopes e ON e.conversation = c.conversation AND e.id > c.delivered"
    " JOIN users s ON s.id = e.sender_id"
    " LEFT JOIN chain_distributions d"
    " ON d.message_id = e.message_id AND d.recipient_id = c.user_id"
    " WHERE c.user_id = ? AND e.id > ? AND e.sender_id <> c.user_id"
    " AND e.recipient_id IN (0, c.user_id)"
    " ORDER BY e.id LIMIT ?"
)


def undelivered(
    db: Database, recipient_id: int, after_row: int = 0, limit: int = 256
) -> list[Delivery]:
    """Envelopes after the recipient's cursors (and after row `after_row`), in order."""
    rows = db.all(_UNDELIVERED, (recipient_id, after_row, limit))
    attachments = attachments_of(db, [row["message_id"] for row in rows])
    return [_delivery_of(row, attachments) for row in rows]


def _delivery_of(row: Row, attachments: Mapping[str, list[str]]) -> Delivery:
    """A row of the undelivered queries as the delivery pushed to its recipient."""
    return Delivery(
        row_id=row["id"],
        message_id=row["message_id"],
        sender_id=row["sender_id"],
        sender=row["username"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        time=row["time"],
        envelope=bytes(row["data"]),
        attachments=attachments.get(row["message_id"], []),
        distribution=None if row["distribution"] is None else bytes(row["distribution"]),
    )


def _contiguous_top(
    db: Database, recipient_id: int, conversation: str, cursor: int, acked: set[int]
) -> int:
    """The newest acknowledged envelope with every envelope owed before it acknowledged.

    Why not simply the newest acknowledged: envelopes can reach a recipient out of row
    order (in a cluster, a node may commit a row and die before announcing it, while
    another node pushes a later row of the same conversation). If that later row's
    acknowledgement moved the cursor past the earlier one, the earlier one would never
    be pushed again: lost. Held below it instead, the cursor lets the next catch-up or
    login push it; the client recognises the rows it already has.
    """
    owed = db.all(
        "SELECT id FROM envelopes WHERE conversation = ? AND id > ? AND id <= ?"
        " AND sender_id <> ? AND recipient_id IN (0, ?) ORDER BY id",
        (conversation, cursor, max(acked), recipient_id, recipient_id),
    )
    top = cursor
    for row in owed:
        if row[0] not in acked:
            break
        top = row[0]
    return top


#: Recipients per `undelivered_many` statement (2 parameters each).
CATCH_UP_CHUNK = 200
_UNDELIVERED_MANY = (
    "SELECT * FROM ("
    "SELECT e.id, e.message_id, e.sender_id, s.username, e.target_type, e.target_id,"
    " e.time, e.data, d.data AS distribution, c.user_id AS recipient,"
    " ROW_NUMBER() OVER (PARTITION BY c.user_id ORDER BY e.id) AS n"
    " FROM (VALUES {wanted}) AS w"
    " JOIN delivery_cursors c ON c.user_id = w.column1"
    " JOIN envelopes e ON e.conversation = c.conversation AND e.id > c.delivered"
    " JOIN users s ON s.id = e.sender_id"
    " LEFT JOIN chain_distributions d"
    " ON d.message_id = e.message_id AND d.recipient_id = c.user_id"
    " WHERE e.id > w.column2 AND e.sender_id <> c.user_id"
    " AND e.recipient_id IN (0, c.user_id)"
    ") AS t WHERE n <= ? ORDER BY recipient, id"
)


def undelivered_many(
    db: Database, wanted: Sequence[tuple[int, int]], limit: int = 256
) -> dict[int, list[Delivery]]:
    """`undelivered` for many (recipient, after_row) at once: {recipient: its first
    `limit` envelopes}, recipients with none left out. One statement for up to
    `CATCH_UP_CHUNK` recipients (a cluster node catching up everyone a batch of hints
    named, or a room's members after another node stored a message to it)."""
    found: dict[int, list[Delivery]] = {}
    for start in range(0, len(wanted), CATCH_UP_CHUNK):
        chunk = wanted[start : start + CATCH_UP_CHUNK]
        sql = _UNDELIVERED_MANY.format(wanted=", ".join(["(?, ?)"] * len(chunk)))
        rows = db.all(sql, [*(value for pair in chunk for value in pair), limit])
        attachments = attachments_of(db, [row["message_id"] for row in rows]) if rows else {}
        for row in rows:
            found.setdefault(int(row["recipient"]), []).append(_delivery_of(row, attachments))
    return found


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


@dataclass(frozen=True)
class Acknowledged:
    """A message whose recipient's cursor moved past it now."""

    message_id: str
    sender_id: int
    target_type: str


def mark_delivered(
    db: Database, recipient_id: int, message_ids: Iterable[str], *, contiguous: bool = False
) -> list[Acknowledged]:
    """Move the recipient's cursors to the newest acknowledged envelope of each conversation.

    The client acknowledges what it stored (or holds, for a sender whose key it has not
    trusted yet), so a cursor only moves forward. Returns the messages that were after
    the cursor before, in the order given; ids of other conversations, of messages
    sealed for someone else, or acknowledged before are ignored. Distributions the
    recipient has now taken are deleted.

    With `contiguous` (several nodes: rows can reach a recipient out of row order), a
    cursor moves only as far as every envelope owed before it was acknowledged
    (`_contiguous_top`). One node pushes each connection its rows in row order, so
    there the newest acknowledged row is enough, and the relay saves the query.
    """
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return []
    rows = db.all_in(
        "SELECT e.id, e.message_id, e.sender_id, e.target_type, e.conversation, c.delivered,"
        " d.recipient_id AS distributed"
        " FROM envelopes e JOIN delivery_cursors c"
        " ON c.conversation = e.conversation AND c.user_id = ?"
        " LEFT JOIN chain_distributions d"
        " ON d.message_id = e.message_id AND d.recipient_id = c.user_id"
        " WHERE e.recipient_id IN (0, ?) AND e.sender_id <> ? AND e.message_id IN ({marks})",
        ids,
        leading=(recipient_id, recipient_id, recipient_id),
    )
    cursors: dict[str, int] = {}
    acked: dict[str, set[int]] = {}
    changed: list[Acknowledged] = []
    taken: list[tuple[int, str]] = []  # distributions to delete: most messages carry none
    for row in rows:
        if row["distributed"] is not None:
            taken.append((recipient_id, row["message_id"]))
        if row["id"] <= row["delivered"]:
            continue
        cursors[row["conversation"]] = row["delivered"]
        acked.setdefault(row["conversation"], set()).add(row["id"])
        changed.append(Acknowledged(row["message_id"], row["sender_id"], row["target_type"]))
    moves = []
    for conversation, ids_acked in acked.items():
        cursor = cursors[conversation]
        if contiguous:
            top = _contiguous_top(db, recipient_id, conversation, cursor, ids_acked)
        else:
            top = max(ids_acked)
        if top > cursor:
            moves.append((top, conversation, recipient_id, top))
    if moves:
        db.executemany(
            "UPDATE delivery_cursors SET delivered = ?"
            " WHERE conversation = ? AND user_id = ? AND delivered < ?",
            moves,
        )
    if taken:
        db.executemany(
            "DELETE FROM chain_distributions WHERE recipient_id = ? AND message_id = ?", taken
        )
    order = {message_id: index for index, message_id in enumerate(ids)}
    changed.sort(key=lambda item: order[item.message_id])
    return changed


def mark_delivered_many(
    db: Database,
    acknowledgements: Sequence[tuple[int, Sequence[str]]],
    *,
    contiguous: bool = False,
) -> None:
    """`mark_delivered` for many (recipient, ids) at once: what one reactor turn gathered.

    Why: a room message to 500 online members brings up to 499 acknowledgements, most in
    the same turn and naming the same few messages. Their envelopes and distributions
    are looked up once for the whole turn, and every cursor moves in one executemany.
    The rules are `mark_delivered`'s: a cursor only moves forward, to the newest
    envelope of its conversation acknowledged by its owner (with `contiguous`, several
    nodes, only as far as every envelope owed before it was acknowledged: one more
    statement for the whole turn, `_contiguous_tops`); ids of messages the recipient
    sent, of messages sealed for someone else, and of conversations the recipient has
    no cursor in change nothing.
    """
    wanted = list(dict.fromkeys(mid for _, ids in acknowledgements for mid in ids))
    if not wanted:
        return
    found: dict[str, list[tuple[int, int, str, int]]] = {}
    for row in db.all_in(
        "SELECT id, message_id, sender_id, conversation, recipient_id FROM envelopes"
        " WHERE message_id IN ({marks})",
        wanted,
    ):
        found.setdefault(row["message_id"], []).append(
            (row["id"], row["sender_id"], row["conversation"], row["recipient_id"])
        )
    distributed = {
        (row["message_id"], row["recipient_id"])
        for row in db.all_in(
            "SELECT message_id, recipient_id FROM chain_distributions"
            " WHERE message_id IN ({marks})",
            wanted,
        )
    }
    acked: dict[tuple[str, int], set[int]] = {}
    taken: list[tuple[int, str]] = []
    for recipient, ids in acknowledgements:
        for message_id in ids:
            for row_id, sender_id, conversation, sealed_for in found.get(message_id, ()):
                if sender_id == recipient or sealed_for not in (EVERY_MEMBER, recipient):
                    continue
                acked.setdefault((conversation, recipient), set()).add(row_id)
            if (message_id, recipient) in distributed:
                taken.append((recipient, message_id))
    if contiguous:
        tops = _contiguous_tops(db, acked)
    else:
        tops = {key: max(rows) for key, rows in acked.items()}
    if tops:
        db.executemany(
            "UPDATE delivery_cursors SET delivered = ?"
            " WHERE conversation = ? AND user_id = ? AND delivered < ?",
            [(row_id, key, user, row_id) for (key, user), row_id in tops.items()],
        )
    if taken:
        db.executemany(
            "DELETE FROM chain_distributions WHERE recipient_id = ? AND message_id = ?",
            list(dict.fromkeys(taken)),
        )


#: Conversations per `_contiguous_tops` statement (3 parameters each; SQLite allows 500
#: terms in a compound SELECT).
CONTIGUOUS_CHUNK = 100
_OWED_RANGE = (
    "SELECT conversation, id, sender_id, recipient_id FROM envelopes"
    " WHERE conversation = ? AND id > ? AND id <= ?"
)


def _contiguous_tops(
    db: Database, acked: dict[tuple[str, int], set[int]]
) -> dict[tuple[str, int], int]:
    """`_contiguous_top` for many cursors: two statements for the whole turn.

    The cursors of the acknowledged conversations are read, then each conversation's
    envelopes between its lowest such cursor and its newest acknowledged row (one
    index range each, `UNION ALL`); the walk is done here. A join of the cursors with
    the envelopes let PostgreSQL merge every envelope of a room with every member's
    cursor: ten times the database CPU for a 500-member room. The cursor of each
    (conversation, recipient) may move up to the last owed envelope before the first
    one not acknowledged; cursors that may not move are left out.
    """
    conversations = list(dict.fromkeys(conversation for conversation, _ in acked))
    cursors: dict[tuple[str, int], int] = {}
    spans: dict[str, tuple[int, int]] = {}  # conversation: (lowest cursor, newest acked)
    for row in db.all_in(
        "SELECT conversation, user_id, delivered FROM delivery_cursors"
        " WHERE conversation IN ({marks})",
        conversations,
    ):
        key, cursor = (row[0], int(row[1])), int(row[2])
        top = max(acked.get(key, (0,)))
        if top > cursor:
            cursors[key] = cursor
            low, high = spans.get(key[0], (cursor, top))
            spans[key[0]] = (min(low, cursor), max(high, top))
    owed: dict[str, list[tuple[int, int, int]]] = {}
    wanted = list(spans.items())
    for start in range(0, len(wanted), CONTIGUOUS_CHUNK):
        chunk = wanted[start : start + CONTIGUOUS_CHUNK]
        sql = " UNION ALL ".join([_OWED_RANGE] * len(chunk))
        values = [v for conversation, (low, high) in chunk for v in (conversation, low, high)]
        for row in db.all(sql, values):
            owed.setdefault(row[0], []).append((int(row[1]), int(row[2]), int(row[3])))
    for rows in owed.values():
        rows.sort()
    tops: dict[tuple[str, int], int] = {}
    for key, cursor in cursors.items():
        conversation, recipient = key
        rows_acked, top = acked[key], cursor
        for row_id, sender_id, sealed_for in owed.get(conversation, ()):
            mine = sender_id != recipient and sealed_for in (EVERY_MEMBER, recipient)
            if row_id <= cursor or not mine:
                continue  # before this cursor, or not owed to this recipient
            if row_id not in rows_acked:
                break
            top = row_id
        if top > cursor:
            tops[key] = top
    return tops


def is_attachment_recipient(db: Database, attachment_id: str, user_id: int) -> bool:
    """True if `user_id` is a recipient of a kept message that lists `attachment_id`."""
    row = db.one(
        "SELECT 1 FROM message_attachments a"
        " JOIN envelopes e ON e.message_id = a.message_id"
        " JOIN delivery_cursors c ON c.conversation = e.conversation AND c.user_id = ?"
        " WHERE a.attachment_id = ? AND e.sender_id <> ? AND e.recipient_id IN (0, ?)"
        " LIMIT 1",
        (user_id, attachment_id, user_id, user_id),
    )
    return row is not None
