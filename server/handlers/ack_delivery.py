"""ACK_DELIVERY {message_ids} -> {}: the caller stored these messages.

Only the caller's own delivery cursors move; other ids are ignored. The cursors move
at the end of the reactor turn, with every other acknowledgement of that turn
(`server.turn`), inside the turn's transaction and so before this reply is written;
while the caller's offline backlog is still going out in windows they move at once,
since the next window is read from them. With several nodes a cursor may only move
over envelopes all acknowledged (`contiguous`), in both paths. The sender is not
told: the server's word that something was delivered proves nothing (it could drop a
message and claim it), so "delivered" and "read" are receipts the recipient's client
seals (client/core/receipts.py). MESSAGE_DELIVERED is no longer sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers import _backlog as backlog
from server.handlers._common import caller
from server.handlers._params import get_hex_ids
from server.storage import messages

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ACK_DELIVERY
REQUIRES_AUTH = True
MAX_IDS = 10_000


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    ids = get_hex_ids(params, "message_ids", max_items=MAX_IDS)
    if ctx.services.backlog.draining(user_id):
        # several nodes push a conversation's rows out of order: never skip an owed one
        spans_nodes = ctx.services.sessions.spans_nodes
        messages.mark_delivered(ctx.db, user_id, ids, contiguous=spans_nodes)
        backlog.acknowledged(ctx, user_id, username, ctx.connection)
    else:
        ctx.turn.acknowledge(user_id, ids)
    return {}
