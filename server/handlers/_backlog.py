"""Offline backlog flow control: what a user missed goes out in windows they pull.

Why: at login everything a user missed is pushed in server order, but a huge backlog
pushed at once would overflow the connection's write buffer (the client dropped as a
slow reader, and the same backlog again at the next login, forever). So at most about
`WINDOW_BYTES` of envelopes go out at once; the client's ACK_DELIVERY for them pulls
the next window. While a user's backlog is draining, a new message for them is not
pushed live (it sorts after the cursor, so a later window carries it, in order).

The cursors live here, one per online user, not on the connection: the login and
acknowledgement handlers and the send path ask this object. Only the reactor thread
uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from server.handlers._wire import encode_new_messages
from server.storage import messages

if TYPE_CHECKING:
    from server.dispatch import Context

WINDOW_BYTES = 1024 * 1024
PUSH_BYTES = 512 * 1024  # one NEW_MESSAGE stays far below any peer's frame cap
DELIVERY_OVERHEAD = 256  # ids, names and times around each envelope, generously


class Output(Protocol):
    """How much the user's connection still has to write."""

    @property
    def pending_output(self) -> int: ...


class BacklogCursors:
    """user id -> row id of the last delivery pushed while more may remain."""

    def __init__(self) -> None:
        self._cursors: dict[int, int] = {}

    def cursor(self, user_id: int) -> int | None:
        return self._cursors.get(user_id)

    def draining(self, user_id: int) -> bool:
        """True while the user's backlog is still going out in windows."""
        return user_id in self._cursors

    def set(self, user_id: int, after_row: int | None) -> None:
        if after_row is None:
            self._cursors.pop(user_id, None)
        else:
            self._cursors[user_id] = after_row

    def forget(self, user_id: int) -> None:
        """The user went offline: the next login starts from the oldest unacknowledged."""
        self._cursors.pop(user_id, None)


def _wire_size(item: messages.Delivery) -> int:
    return len(item.envelope) + len(item.distribution or b"") + DELIVERY_OVERHEAD


def frames_of(batch: list[messages.Delivery]) -> list[list[messages.Delivery]]:
    """Split a batch so no single push exceeds PUSH_BYTES (envelopes reach 64 KiB)."""
    parts: list[list[messages.Delivery]] = [[]]
    size = 0
    for item in batch:
        if parts[-1] and size + _wire_size(item) > PUSH_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += _wire_size(item)
    return parts


def push_backlog(ctx: Context, user_id: int, username: str, after_row: int = 0) -> int:
    """Push the next window of unacknowledged deliveries, in server order; returns how many."""
    cursors = ctx.services.backlog
    batch_size = max(1, ctx.config.offline_batch)
    pushed = window = 0
    cursors.set(user_id, None)
    while batch := messages.undelivered(ctx.db, user_id, after_row, batch_size):
        for part in frames_of(batch):
            ctx.push_encoded(user_id, encode_new_messages(part, username))
        after_row, pushed = batch[-1].row_id, pushed + len(batch)
        window += sum(_wire_size(d) for d in batch)
        if len(batch) < batch_size:
            break
        if window >= WINDOW_BYTES:
            cursors.set(user_id, after_row)
            break
    return pushed


def acknowledged(ctx: Context, user_id: int, username: str, output: Output) -> None:
    """After an ACK_DELIVERY: push the next window once the client took this one."""
    cursor = ctx.services.backlog.cursor(user_id)
    if cursor is not None and _window_taken(ctx, user_id, cursor, output):
        push_backlog(ctx, user_id, username, after_row=cursor)


def _window_taken(ctx: Context, user_id: int, cursor: int, output: Output) -> bool:
    """Has the client taken the window pushed so far? Then the next one may go.

    Either everything up to the cursor is acknowledged, or the connection's output
    has drained below a window: a client that holds some messages back on purpose
    (a friend's changed key awaiting trust) must not stall the rest of its backlog.
    """
    if output.pending_output < WINDOW_BYTES // 4:
        return True
    oldest = messages.undelivered(ctx.db, user_id, 0, 1)
    return not oldest or oldest[0].row_id > cursor
