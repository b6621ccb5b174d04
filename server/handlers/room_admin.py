"""ROOM_ADMIN {room_id, event} -> {seq}: an admin's signed remove, admin grant or handover.

The rules (only admins, never the owner removed, no grant twice, only the owner hands
the room over, to a current member) are the log's own,
checked in `server.membership.accept`; a removed member is pushed CONTACT_REMOVED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.membership import EventKind
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, member_room_id
from server.membership import accept, parse_event
from server.storage import users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_ADMIN
REQUIRES_AUTH = True
KINDS = (EventKind.REMOVE, EventKind.GRANT_ADMIN, EventKind.TRANSFER_OWNER)


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _, username = caller(ctx)
    room_id = member_room_id(ctx, params)
    event = parse_event(params)
    if event.kind not in KINDS or event.actor != username:
        raise RequestError(
            "bad_event", "expected a remove, grant or handover signed by you", "event"
        )
    accepted = accept(ctx, room_id, event, event.kind)
    if event.kind is EventKind.REMOVE:
        removed = users.by_username(ctx.db, event.subject)
        if removed is not None:
            ctx.push(removed.id, MessageType.CONTACT_REMOVED, {"room_id": room_id})
    return {"seq": accepted.seq}
