"""Work gathered during one reactor turn and done once at its end, before the commit.

Why: on a busy server one turn handles many messages, and storing them and touching
their conversations is the same statement over and over. The messages a turn's
SEND_MESSAGE requests accepted are stored together: one multi-row INSERT for their
envelopes (and one for their distributions), after which each is pushed and answered
(`send_message`'s `stored`); with PostgreSQL every statement is a round trip, so this turns
three round trips a message into three a turn. Gathered here, it becomes one
`conversations` upsert (executemany) for the whole turn. Likewise the delivery
acknowledgements of a turn (a room message to 500 online members brings up to 499 of
them, naming the same few messages): one lookup and one cursor executemany
(`messages.mark_delivered_many`) instead of three statements each; in a cluster,
where a cursor only moves over envelopes all acknowledged, one more for the turn.
(The server no longer tells senders of acknowledgements: "delivered" is the
recipient's sealed receipt.)

At the end of the turn the batch is taken whole (`TurnBatch.take`) as a `TurnWork`:
`write` is database work only, so it runs wherever the turn commits (the reactor
thread with SQLite, the database thread of a cluster node: `server.database_thread`),
inside the turn's transaction; `announce` then tells each message's request how it
went, on the reactor thread, once the commit is in. `TurnBatch` itself is used by the
reactor thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from server.storage import conversations, messages
from server.storage.database import Database
from server.storage.messages import NewEnvelope, StoredMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """How one new message went: its new row, or the message already holding its id
    (an earlier send, or one of the same turn; None if that one cannot be found), or
    `lost` with the rest of its turn."""

    row_id: int | None
    taken_by: StoredMessage | None = None
    #: The turn was not stored (its commit failed): nothing of it is kept.
    lost: bool = False


_LOST = StoreOutcome(None, lost=True)

#: Called on the reactor thread after the commit with how the message went.
Stored = Callable[[StoreOutcome], None]


class TurnWork:
    """One turn's gathered work, taken from its `TurnBatch`."""

    __slots__ = ("acknowledged", "new", "touched")

    def __init__(
        self,
        new: list[tuple[NewEnvelope, Stored]],
        acknowledged: list[tuple[int, list[str]]],
    ) -> None:
        self.new = new
        self.acknowledged = acknowledged
        #: Conversation key -> newest time of the messages `write` stored there.
        self.touched: dict[str, int] = {}

    @property
    def pending(self) -> bool:
        return bool(self.acknowledged or self.new)

    def write(self, db: Database, *, contiguous: bool) -> list[StoreOutcome]:
        """Store the new messages, move the acknowledged cursors, touch every conversation
        (database only: any thread that holds `db` for the turn). Returns each new
        message's outcome, in order, for `announce`."""
        outcomes: list[StoreOutcome] = []
        if self.new:
            rows = messages.store_many(db, [envelope for envelope, _ in self.new])
            for envelope, _ in self.new:  # the first of a repeated id gets the row
                row_id = rows.pop(envelope.message_id, None)
                if row_id is None:
                    taken_by = messages.find_message(db, envelope.message_id)
                    outcomes.append(StoreOutcome(None, taken_by))
                    continue
                outcomes.append(StoreOutcome(row_id))
                key = envelope.conversation
                if envelope.time > self.touched.get(key, -1):
                    self.touched[key] = envelope.time
        if self.acknowledged:
            messages.mark_delivered_many(db, self.acknowledged, contiguous=contiguous)
        if self.touched:
            conversations.touch_many(db, self.touched.items())
        return outcomes

    def abandon(self) -> None:
        """Reactor thread, after a failed write or commit: each new message's request
        hears that it was lost (its connection is closed with the turn's output
        withheld, so its client sends it again)."""
        self.announce([_LOST] * len(self.new))

    def announce(self, outcomes: list[StoreOutcome]) -> None:
        """Reactor thread, after the commit: each new message's request hears how it went
        (its answer and pushes are queued, and leave with the turn's output)."""
        for (envelope, stored), outcome in zip(self.new, outcomes, strict=True):
            try:
                stored(outcome)
            except Exception:
                log.exception("answering the send of %s failed", envelope.message_id)


class SessionLookup(Protocol):
    """`server.sessions.Sessions` as far as the end of a turn needs it."""

    @property
    def spans_nodes(self) -> bool:
        """True in a cluster: rows may reach a recipient out of order."""


class TurnBatch:
    """New messages and delivery acknowledgements of the turn."""

    __slots__ = ("_acknowledged", "_new")

    def __init__(self) -> None:
        self._acknowledged: list[tuple[int, list[str]]] = []
        self._new: list[tuple[NewEnvelope, Stored]] = []

    def store(self, envelope: NewEnvelope, stored: Stored) -> None:
        """Store `envelope` with the turn's others; once they are committed, `stored`
        hears how it went (what it pushes or answers leaves with the turn's output)."""
        self._new.append((envelope, stored))

    def acknowledge(self, user_id: int, message_ids: list[str]) -> None:
        """`user_id` stored these messages: its cursors move at the end of the turn,
        before the commit and so before the reply that says so is written."""
        if message_ids:
            self._acknowledged.append((user_id, message_ids))

    @property
    def pending(self) -> bool:
        return bool(self._acknowledged or self._new)

    def take(self) -> TurnWork:
        """The turn's work, leaving the batch empty for the next turn."""
        work = TurnWork(self._new, self._acknowledged)
        self._new, self._acknowledged = [], []
        return work

    def finish(self, db: Database, sessions: SessionLookup) -> list[str]:
        """`take`, `write` and `announce` at once, inside the caller's transaction (tests
        and tools; the server commits between `write` and `announce`). Returns the
        conversations touched."""
        work = self.take()
        work.announce(work.write(db, contiguous=sessions.spans_nodes))
        return list(work.touched)
