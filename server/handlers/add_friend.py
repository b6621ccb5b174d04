"""ADD_FRIEND {username} -> {}: ask someone to be your friend.

If they already asked you, asking back is taken as accepting their request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server import quotas
from server.handlers._common import caller, existing_user
from server.handlers.resolve_friend_request import accept
from server.storage import friends

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ADD_FRIEND
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    target = existing_user(ctx, params)
    if target.id == user_id:
        raise RequestError("cannot_add_self", "you cannot add yourself", "username")
    if friends.are_friends(ctx.db, user_id, target.id):
        raise RequestError("already_friends", f"{target.username} is already your friend")
    if friends.has_pending_request(ctx.db, user_id, target.id):
        raise RequestError("request_pending", f"you already asked {target.username}")
    if friends.has_pending_request(ctx.db, target.id, user_id):
        accept(ctx, requester_id=target.id, accepter_id=user_id)
        return {}
    quotas.check_friend_request(ctx, user_id, target.id, target.username)
    friends.add_request(ctx.db, user_id, target.id, ctx.now())
    ctx.push(target.id, MessageType.FRIEND_REQUEST, {"from": username})
    return {}
