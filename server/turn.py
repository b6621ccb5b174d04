"""Work gathered during one reactor turn and done once at its end, before the commit.

Why: on a busy server one turn handles many messages, and touching their
conversations is the same statement over and over. Gathered here, it becomes one
`conversations` upsert (executemany) for the whole turn. (The server no longer tells
senders of acknowledgements: "delivered" is the recipient's sealed receipt.) `finish`
runs inside the turn's transaction (from the reactor's `before_flush`), so it is
committed with the rest of the turn or not at all.
Only the reactor thread uses this object.
"""

from __future__ import annotations

from typing import Protocol

from common.protocol.message import Message
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
    """Conversation touches of the current turn."""

    __slots__ = ("_touched",)

    def __init__(self) -> None:
        self._touched: dict[str, int] = {}

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
        return bool(self._touched)

    def finish(self, db: Database, sessions: SessionLookup) -> None:
        """One upsert for every touched conversation; then empty."""
        touched, self._touched = self._touched, {}
        if touched:
            conversations.touch_many(db, touched.items())
