"""ROOM_MEMBERS {room_id} -> {room_id, members: [{username, online}]} (members only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._params import get_int
from server.storage import rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_MEMBERS
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    room_id = get_int(params, "room_id")
    if not rooms.is_member(ctx.db, room_id, user_id):
        raise RequestError("not_member", "you are not in this room", "room_id")
    members = [
        {"username": member.username, "online": ctx.sessions.is_online(member.id)}
        for member in rooms.members(ctx.db, room_id)
    ]
    return {"room_id": room_id, "members": members}
