"""Work gathered during one reactor turn and done once at its end, before the commit.

Why: on a busy server one turn handles many messages, and some of their side effects
are the same statement or the same push over and over. Gathered here, they become
one `conversations` upsert (executemany) for the whole turn and one
`MESSAGE_DELIVERED {deliveries: [...]}` push per sender per turn instead of one push
per acknowledged message. `finish` runs inside the turn's transaction (from the
reactor's `before_flush`), so it is committed with the rest of the turn or not at all.
Only the reactor thread uses this object.
"""

from __future__ import annotations

from typing import Any, Protocol

from common.protocol.message import Message, push
from common.protocol.opcodes import MessageType
from server.storage import conversations
from server.storage.database import Database


class LiveSession(Protocol):
    @property
    def is_open(self) -> bool: ...

    def send(self, message: Message) -> None: ...


class SessionLookup(Protocol):
    """`server.sessions.Sessions` as far as the end of a turn needs it."""

    def connection_for(self, user_id: int) -> LiveSession | None: ...


class TurnBatch:
    """Conversation touches and delivery notices of the current turn."""

    __slots__ = ("_delivered", "_touched")

    def __init__(self) -> None:
        self._touched: dict[str, int] = {}
        self._delivered: dict[int, list[dict[str, Any]]] = {}

    def touch(self, key: str, time: int) -> None:
        """A message in conversation `key` at `time` (the newest time of the turn wins)."""
        if time > self._touched.get(key, -1):
            self._touched[key] = time

    def delivered(self, sender_id: int, message_id: str, recipient: str) -> None:
        """`recipient` acknowledged `message_id`; its sender hears it at the end of the turn."""
        self._delivered.setdefault(sender_id, []).append(
            {"message_id": message_id, "recipient": recipient}
        )

    @property
    def touched_keys(self) -> list[str]:
        """The conversations that got a message this turn (cluster mode tells other nodes)."""
        return list(self._touched)

    @property
    def pending(self) -> bool:
        return bool(self._touched or self._delivered)

    def finish(self, db: Database, sessions: SessionLookup) -> None:
        """One upsert for every touched conversation, one push per sender; then empty."""
        touched, self._touched = self._touched, {}
        delivered, self._delivered = self._delivered, {}
        if touched:
            conversations.touch_many(db, touched.items())
        for sender_id, items in delivered.items():
            connection = sessions.connection_for(sender_id)
            if connection is not None and connection.is_open:
                connection.send(push(MessageType.MESSAGE_DELIVERED, {"deliveries": items}))
