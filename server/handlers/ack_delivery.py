"""ACK_DELIVERY {message_ids} -> {}: the caller stored these messages.

Only the caller's own delivery rows change; other ids are ignored. Each sender still
online hears of it once per recipient, in one MESSAGE_DELIVERED {deliveries} per
sender per reactor turn (`server.turn`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._params import get_hex_ids
from server.handlers.login import BACKLOG_WINDOW_BYTES, push_backlog
from server.storage import messages

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ACK_DELIVERY
REQUIRES_AUTH = True
MAX_IDS = 10_000


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    ids = get_hex_ids(params, "message_ids", max_items=MAX_IDS)
    changed = messages.mark_delivered(ctx.db, user_id, ids)
    cursor = ctx.connection.backlog_cursor
    if cursor is not None and _window_taken(ctx, user_id, cursor):
        push_backlog(ctx, user_id, username, after_row=cursor)
    for message_id, sender_id in changed:  # last: nothing after this can fail
        ctx.turn.delivered(sender_id, message_id, username)
    return {}


def _window_taken(ctx: Context, user_id: int, cursor: int) -> bool:
    """Has the client taken the window pushed so far? Then the next one may go.

    Either everything up to the cursor is acknowledged, or the connection's output
    has drained below a window: a client that holds some messages back on purpose
    (a friend's changed key awaiting trust) must not stall the rest of its backlog.
    """
    if ctx.connection.pending_output < BACKLOG_WINDOW_BYTES // 4:
        return True
    oldest = messages.undelivered(ctx.db, user_id, 0, 1)
    return not oldest or oldest[0].row_id > cursor
