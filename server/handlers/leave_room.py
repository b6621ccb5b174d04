"""LEAVE_ROOM {room_id} -> {}: leave a group chat; the rest of it is told.

A room that does not exist and a room the caller is not in get the same answer,
`not_member`, so leaving cannot be used to probe which room numbers exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, member_room_id
from server.storage import rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LEAVE_ROOM
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    room_id = member_room_id(ctx, params)
    if not rooms.remove_member(ctx.db, room_id, user_id):  # checked just above
        raise RequestError("not_member", "you are not in this room", "room_id")
    ctx.push_many(
        rooms.member_ids(ctx.db, room_id),
        MessageType.ROOM_MEMBER_EVENT,
        {"room_id": room_id, "username": username, "event": "left"},
    )
    ctx.push(user_id, MessageType.CONTACT_REMOVED, {"room_id": room_id})
    return {}
