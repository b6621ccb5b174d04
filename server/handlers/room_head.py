"""ROOM_HEAD {room_id} -> {room_id, name, policy, length, head}: what a join is signed on.

Anyone may ask (joining needs only the number), so for a non-member it counts as a
join attempt (`joins_per_minute`), like JOIN_ROOM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import caller, existing_room
from server.handlers._params import get_int
from server.handlers.join_room import charge_join_attempt
from server.membership import room_state
from server.storage import rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_HEAD
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    if not rooms.is_member(ctx.db, get_int(params, "room_id"), user_id):
        charge_join_attempt(ctx, user_id)
    room_id = existing_room(ctx, params).id
    state = room_state(ctx, room_id)
    return {
        "room_id": room_id,
        "name": state.name,
        "policy": state.policy.value,
        "length": state.length,
        "head": state.head,
    }
