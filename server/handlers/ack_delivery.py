"""ACK_DELIVERY {message_ids} -> {}: the caller stored these messages.

Only the caller's own delivery cursors move; other ids are ignored. Each sender still
online hears of it once per recipient, in one MESSAGE_DELIVERED {deliveries} per
sender per reactor turn (`server.turn`). (Receipts sealed by the recipient's client,
DESIGN.md section 3b, are not built yet; until then this is what "delivered" means.)
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
    changed = messages.mark_delivered(ctx.db, user_id, ids)
    backlog.acknowledged(ctx, user_id, username, ctx.connection)
    for item in changed:  # last: nothing after this can fail
        ctx.turn.delivered(item.sender_id, item.message_id, username)
    return {}
