"""ROOM_JOIN_REQUESTS {room_id} -> {room_id, requests: [{username, entry, requested}]}.

The joins waiting for an admin (approval rooms), oldest first; admins only. What an
admin who was offline when ROOM_JOIN_REQUEST was pushed reads to catch up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, member_room_id
from server.handlers.join_room import MAX_PENDING_PER_ROOM
from server.storage import room_log, rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_JOIN_REQUESTS
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    room_id = member_room_id(ctx, params)
    if not rooms.is_admin(ctx.db, room_id, user_id):
        raise RequestError("forbidden", "only the group's admins see join requests")
    pending = room_log.requests(ctx.db, room_id, MAX_PENDING_PER_ROOM)
    return {
        "room_id": room_id,
        "requests": [
            {"username": r.username, "entry": r.entry, "requested": r.requested} for r in pending
        ],
    }
