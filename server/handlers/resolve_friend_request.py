"""RESOLVE_FRIEND_REQUEST {username, decision} -> {}: accept, reject or decide later.

"later" changes nothing: the request stays pending and is listed again in the next
login reply. "reject" deletes the request and, if the requester is online, pushes
FRIEND_REQUEST_REFUSED {username} so their client can say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import USERNAME_MAX, caller
from server.handlers._params import get_choice, get_str
from server.handlers._wire import contact
from server.storage import friends, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.RESOLVE_FRIEND_REQUEST
REQUIRES_AUTH = True
DECISIONS = ("accept", "reject", "later")


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    name = get_str(params, "username", max_len=USERNAME_MAX)
    decision = get_choice(params, "decision", DECISIONS)
    requester = users.by_username(ctx.db, name)
    if requester is None or not friends.has_pending_request(ctx.db, requester.id, user_id):
        raise RequestError("no_pending_request", f"{name} has not asked to be your friend")
    if decision == "accept":
        accept(ctx, requester_id=requester.id, accepter_id=user_id)
    elif decision == "reject":
        friends.delete_request(ctx.db, requester.id, user_id)
        # Told only while online: nothing is stored, and asking again stays possible.
        ctx.push(requester.id, MessageType.FRIEND_REQUEST_REFUSED, {"username": username})
    return {}


def accept(ctx: Context, *, requester_id: int, accepter_id: int) -> None:
    """Make the two friends and send each of them CONTACT_ADDED with the other."""
    friends.accept_request(ctx.db, requester_id, accepter_id, ctx.now())
    for user_id, other_id in ((requester_id, accepter_id), (accepter_id, requester_id)):
        other = friends.friend(ctx.db, user_id, other_id)
        if other is not None:
            ctx.push(user_id, MessageType.CONTACT_ADDED, {"contact": contact(ctx, other)})
