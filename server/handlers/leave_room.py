"""LEAVE_ROOM {room_id, event} -> {seq}: leave a group chat with a signed leave event.

A room that does not exist and a room the caller is not in get the same answer,
`not_member`, so leaving cannot be used to probe which room numbers exist. The
owner cannot leave while others remain (`event_refused`): the log's rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.membership import EventKind
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, member_room_id
from server.membership import accept, parse_event

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LEAVE_ROOM
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    room_id = member_room_id(ctx, params)
    event = parse_event(params)
    if event.actor != username:
        raise RequestError("bad_event", "a leave is signed by the one leaving", "event")
    accepted = accept(ctx, room_id, event, EventKind.LEAVE)
    ctx.push(user_id, MessageType.CONTACT_REMOVED, {"room_id": room_id})
    return {"seq": accepted.seq}
