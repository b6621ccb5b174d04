"""Work gathered during one reactor turn and done once at its end, before the commit.

Why: on a busy server one turn handles many messages, and touching their
conversations is the same statement over and over. Gathered here, it becomes one
`conversations` upsert (executemany) for the whole turn. Likewise the delivery
acknowledgements of a turn (a room message to 500 online members brings up to 499 of
them, naming the same few messages): one lookup and one cursor executemany
(`messages.mark_delivered_many`) instead of three statements each. (The server no longer tells
senders of acknowledgements: "delivered" is the recipient's sealed receipt.) `finish`
runs inside the turn's transaction (from the reactor's `before_flush`), so it is
committed with the rest of the turn or not at all.
Only the reactor thread uses this object.
"""

from __future__ import annotations

from typing import Protocol

from common.protocol.message import Message
from server.storage import conversations, messages
from server.storage.database import Database


class LiveSession(Protocol):
    @property
    def is_open(self) -> bool: ...

    def send(self, message: Message) -> None: ...


class SessionLookup(Protocol):
    """`server.sessions.Sessions` as far as the end of a turn needs it."""

    def connection_for(self, user_id: int) -> LiveSession | None: ...


class TurnBatch:
    """Conversation touches and delivery acknowledgements of the current turn."""

    __slots__ = ("_acknowledged", "_touched")

    def __init__(self) -> None:
        self._touched: dict[str, int] = {}
        self._acknowledged: list[tuple[int, list[str]]] = []

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
    def touched_keys(self) -> list[str]:
        """The conversations that got a message this turn (cluster mode tells other nodes)."""
        return list(self._touched)

    @property
    def pending(self) -> bool:
        return bool(self._touched or self._acknowledged)

    def finish(self, db: Database, sessions: SessionLookup) -> None:
        """The turn's acknowledgements, then one upsert for every touched conversation;
        then empty (also when a statement fails: the turn is rolled back whole)."""
        touched, self._touched = self._touched, {}
        acknowledged, self._acknowledged = self._acknowledged, []
        if acknowledged:
            messages.mark_delivered_many(db, acknowledged)
        if touched:
            conversations.touch_many(db, touched.items())
