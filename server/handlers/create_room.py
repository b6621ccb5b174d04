"""CREATE_ROOM {event} -> Room: a new group chat, founded by the caller's signed create event.

The create event (common/crypto/membership.py) names the room number (drawn by the
creator's client: the number is inside what the owner signs), the name and the join
policy, and starts the room's membership log; the caller becomes its first member and
admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.membership import EventKind, genesis
from common.errors import MembershipError, RequestError, ValidationError
from common.protocol.opcodes import MessageType
from common.room_numbers import valid_room_number
from common.validation import validate_room_name
from server import quotas
from server.handlers._common import caller
from server.handlers._wire import room
from server.membership import check_signature, check_time, identity_lookup, parse_event
from server.storage import room_log, rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.CREATE_ROOM
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    event = parse_event(params)
    if event.kind is not EventKind.CREATE or event.actor != username:
        raise RequestError("bad_event", "expected a create event signed by you", "event")
    try:
        name = validate_room_name(event.name)
    except ValidationError as exc:
        raise RequestError(exc.code, exc.message, "name") from None
    if name != event.name:
        raise RequestError("invalid_room_name", "sign the room name without outer spaces", "name")
    number = int(event.room) if event.room.isdecimal() and event.room.isascii() else 0
    if not valid_room_number(number) or event.room != str(number):
        raise RequestError("bad_event", "a room number has eight digits", "event")
    quotas.check_room_creation(ctx, user_id)
    if rooms.name_taken(ctx.db, name):
        raise RequestError("room_name_taken", f"a room called {name!r} exists", "name")
    if rooms.number_taken(ctx.db, number):
        raise RequestError("room_number_taken", "that room number is taken; draw another", "event")
    check_time(ctx, event)
    check_signature(ctx, event)
    try:
        state = genesis(event, identity_lookup(ctx))
    except MembershipError as exc:
        raise RequestError("event_refused", str(exc), "event") from None
    now = ctx.now()
    rooms.create_room(ctx.db, name, user_id, now, number=number, policy=state.policy.value)
    rooms.add_member(ctx.db, number, user_id, now)
    rooms.set_admin(ctx.db, number, user_id)
    room_log.append(
        ctx.db,
        number,
        1,
        kind=EventKind.CREATE.value,
        actor=username,
        subject=username,
        entry=event.to_wire(),
        entry_hash=event.hash(),
        now=now,
    )
    view = rooms.room_view(ctx.db, number)
    if view is None:  # just inserted in this transaction: cannot happen
        raise RuntimeError("room vanished right after creation")
    ctx.push(user_id, MessageType.CONTACT_ADDED, {"room": room(view)})
    return room(view)
