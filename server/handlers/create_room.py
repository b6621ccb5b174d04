"""CREATE_ROOM {name} -> Room: a new group chat with the caller as first member."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError, ValidationError
from common.protocol.opcodes import MessageType
from common.validation import validate_room_name
from server import quotas
from server.handlers._common import caller
from server.handlers._wire import room
from server.storage import rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.CREATE_ROOM
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    try:
        name = validate_room_name(params.get("name"))
    except ValidationError as exc:
        raise RequestError(exc.code, exc.message, exc.field) from None
    quotas.check_room_creation(ctx, user_id)
    if rooms.name_taken(ctx.db, name):
        raise RequestError("room_name_taken", f"a room called {name!r} exists", "name")
    now = ctx.now()
    room_id = rooms.create_room(ctx.db, name, user_id, now)
    rooms.add_member(ctx.db, room_id, user_id, now)
    view = rooms.room_view(ctx.db, room_id)
    if view is None:  # just inserted in this transaction: cannot happen
        raise RuntimeError("room vanished right after creation")
    ctx.push(user_id, MessageType.CONTACT_ADDED, {"room": room(view)})
    return room(view)
