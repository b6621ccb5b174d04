"""Work gathered during one reactor turn and done once at its end, before the commit.

Why: on a busy server one turn handles many messages, and storing them and touching
their conversations is the same statement over and over. The messages a turn's
SEND_MESSAGE requests accepted are stored together: one multi-row INSERT for their
envelopes (and one for their distributions), after which each is pushed and answered
(`NewMessage.stored`); with PostgreSQL every statement is a round trip, so this turns
three round trips a message into three a turn. Gathered here, it becomes one
`conversations` upsert (executemany) for the whole turn. Likewise the delivery
acknowledgements of a turn (a room message to 500 online members brings up to 499 of
them, naming the same few messages): one lookup and one cursor executemany
(`messages.mark_delivered_many`) instead of three statements each; in a cluster,
where a cursor only moves over envelopes all acknowledged, one more for the turn.
(The server no longer tells senders of acknowledgements: "delivered" is the
recipient's sealed receipt.) `finish`
runs inside the turn's transaction (from the reactor's `before_flush`), so it is
committed with the rest of the turn or not at all.
Only the reactor thread uses this object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from common.protocol.message import Message
from server.storage import conversations, messages
from server.storage.database import Database
from server.storage.messages import NewEnvelope


class LiveSession(Protocol):
    @property
    def is_open(self) -> bool: ...

    def send(self, message: Message) -> None: ...


class SessionLookup(Protocol):
    """`server.sessions.Sessions` as far as the end of a turn needs it."""

    @property
    def spans_nodes(self) -> bool:
        """True in a cluster: rows may reach a recipient out of order."""

    def connection_for(self, user_id: int) -> LiveSession | None: ...


#: Called at the end of the turn with the message's new row id, or None if its id was
#: taken (by an earlier message, or by another one of the same turn).
Stored = Callable[[int | None], None]


class TurnBatch:
    """New messages, conversation touches and delivery acknowledgements of the turn."""

    __slots__ = ("_acknowledged", "_new", "_touched")

    def __init__(self) -> None:
        self._touched: dict[str, int] = {}
        self._acknowledged: list[tuple[int, list[str]]] = []
        self._new: list[tuple[NewEnvelope, Stored]] = []

    def store(self, envelope: NewEnvelope, stored: Stored) -> None:
        """Store `envelope` with the turn's others, then call `stored` with its row id
        (still inside the turn's transaction: what it pushes or answers leaves after
        the commit)."""
        self._new.append((envelope, stored))

    def acknowledge(self, user_id: int, message_ids: list[str]) -> None:
        """`user_id` stored these messages: its cursors move at the end of the turn,
        before the commit and so before the reply that says so is written."""
        if message_ids:
            self._acknowledged.append((user_id, message_ids))

    def touch(self, key: str, time: int) -> None:
        """A message in conversation `key` at `time` (the newest time of the turn wins)."""
        if time > self._touched.get(key, -1):
            self._touched[key] = time

    @property
    def pending(self) -> bool:
        return bool(self._touched or self._acknowledged or self._new)

    def finish(self, db: Database, sessions: SessionLookup) -> list[str]:
        """The turn's new messages (each then told its row id), its acknowledgements,
        then one upsert for every touched conversation; then empty (also when a
        statement fails: the turn is rolled back whole). Returns the conversations
        touched (cluster mode tells other nodes)."""
        new, self._new = self._new, []
        try:
            if new:
                rows = messages.store_many(db, [envelope for envelope, _ in new])
                for envelope, stored in new:  # the first of a repeated id gets the row
                    stored(rows.pop(envelope.message_id, None))
        finally:
            touched, self._touched = self._touched, {}
            acknowledged, self._acknowledged = self._acknowledged, []
        if acknowledged:
            messages.mark_delivered_many(db, acknowledged, contiguous=sessions.spans_nodes)
        if touched:
            conversations.touch_many(db, touched.items())
        return list(touched)
