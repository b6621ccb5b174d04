"""ROOM_MEMBERS {room_id} -> {room_id, members: [{username, online}], length} (members only).

`length` is the membership log's length this list follows from, so a client compares
it with its verified log at the same point (a list read mid-change is no alarm).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import member_room_id
from server.storage import room_log, rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_MEMBERS
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    room_id = member_room_id(ctx, params)
    members = [
        {"username": member.username, "online": ctx.sessions.is_online(member.id)}
        for member in rooms.members(ctx.db, room_id)
    ]
    return {"room_id": room_id, "members": members, "length": room_log.head(ctx.db, room_id)[0]}
