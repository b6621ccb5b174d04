"""DELETE_FRIEND {username} -> {}: end a friendship on both sides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, existing_user
from server.storage import friends

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.DELETE_FRIEND
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    target = existing_user(ctx, params)
    if not friends.remove_friendship(ctx.db, user_id, target.id):
        raise RequestError("not_friends", f"{target.username} is not your friend", "username")
    ctx.push(user_id, MessageType.CONTACT_REMOVED, {"username": target.username})
    ctx.push(target.id, MessageType.CONTACT_REMOVED, {"username": username})
    return {}
