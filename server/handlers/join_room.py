"""JOIN_ROOM {room_id} -> Room: enter a group chat; its members are told.

Anyone with a room's number may join (the original's policy), so each account may
try `joins_per_minute` joins a minute, counted before the room is looked up: walking
the number space to find rooms costs the prober its allowance, not the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, existing_room, take_allowance
from server.handlers._wire import room
from server.storage import rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.JOIN_ROOM
REQUIRES_AUTH = True
# Every member's certificate must fit one ROOM_CERTIFICATES reply (~560 bytes each,
# well under the client's frame cap at this size), and every message is sealed per
# member by its sender.
MAX_ROOM_MEMBERS = 1_000


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    take_allowance(
        ctx,
        f"join:{user_id}",
        ctx.config.joins_per_minute,
        "too_many_joins",
        "too many attempts to join groups",
        "room_id",
    )
    room_id = existing_room(ctx, params).id
    others = rooms.member_ids(ctx.db, room_id)
    if user_id not in others and len(others) >= MAX_ROOM_MEMBERS:
        raise RequestError(
            "room_full", f"a group holds at most {MAX_ROOM_MEMBERS} members", "room_id"
        )
    if not rooms.add_member(ctx.db, room_id, user_id, ctx.now()):
        raise RequestError("already_member", "you are already in this room", "room_id")
    ctx.push_many(
        others,
        MessageType.ROOM_MEMBER_EVENT,
        {"room_id": room_id, "username": username, "event": "joined"},
    )
    view = rooms.room_view(ctx.db, room_id)
    if view is None:  # checked above in this same turn: cannot happen
        raise RuntimeError("room vanished while joining")
    return room(view)
