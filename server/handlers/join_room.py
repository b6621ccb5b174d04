"""JOIN_ROOM {room_id, event} -> Room, or {room_id, name, pending: true} under approval.

`event` is a join signed by the caller against the log's current head (ROOM_HEAD).
In an "open" room (anyone with the number, the original's policy) it enters the log
at once and the members are told; in an "approval" room it waits, and the room's
admins are pushed ROOM_JOIN_REQUEST to countersign it (RESOLVE_JOIN).

Each account may try `joins_per_minute` joins a minute, counted before the room is
looked up: walking the number space to find rooms costs the prober its allowance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.membership import EventKind, MembershipEvent
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, existing_room, take_allowance
from server.handlers._wire import room
from server.membership import accept, check_signature, check_time, parse_event, room_state
from server.storage import room_log, rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.JOIN_ROOM
REQUIRES_AUTH = True
MAX_PENDING_PER_ROOM = 1_000


def charge_join_attempt(ctx: Context, user_id: int) -> None:
    take_allowance(
        ctx,
        f"join:{user_id}",
        ctx.config.joins_per_minute,
        "too_many_joins",
        "too many attempts to join groups",
        "room_id",
    )


def check_room_space(ctx: Context, room_id: int) -> None:
    cap = ctx.config.max_room_members
    if len(rooms.member_ids(ctx.db, room_id)) >= cap:
        raise RequestError("room_full", f"a group holds at most {cap} members", "room_id")


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, username = caller(ctx)
    charge_join_attempt(ctx, user_id)
    room_id = existing_room(ctx, params).id
    event = parse_event(params)
    if event.actor != username or event.subject != username:
        raise RequestError("bad_event", "a join is signed by the joiner", "event")
    if rooms.is_member(ctx.db, room_id, user_id):
        raise RequestError("already_member", "you are already in this room", "room_id")
    check_room_space(ctx, room_id)
    if rooms.join_policy(ctx.db, room_id) == "approval" and not event.approver:
        return _ask_admins(ctx, room_id, user_id, username, event)
    accepted = accept(ctx, room_id, event, EventKind.JOIN)
    view = rooms.room_view(ctx.db, room_id)
    if view is None:  # checked above in this same turn: cannot happen
        raise RuntimeError("room vanished while joining")
    return room(view) | {"seq": accepted.seq}


def _ask_admins(
    ctx: Context, room_id: int, user_id: int, username: str, event: MembershipEvent
) -> dict[str, Any]:
    """Keep the signed join until an admin countersigns or refuses it."""
    if event.kind is not EventKind.JOIN or event.room != str(room_id):
        raise RequestError("bad_event", f"expected a join event for room {room_id}", "event")
    check_time(ctx, event)
    check_signature(ctx, event)
    state = room_state(ctx, room_id)
    if event.prev != state.head:
        raise RequestError(
            "log_moved", "the room's log has moved on; fetch its head and sign again", "event"
        )
    if room_log.get_request(ctx.db, room_id, user_id) is None and (
        room_log.count_requests(ctx.db, room_id, MAX_PENDING_PER_ROOM) >= MAX_PENDING_PER_ROOM
    ):
        raise RequestError("too_many_requests", "this group has too many pending requests")
    entry = event.to_wire()
    room_log.put_request(ctx.db, room_id, user_id, entry, ctx.now())
    ctx.push_many(
        rooms.admin_ids(ctx.db, room_id),
        MessageType.ROOM_JOIN_REQUEST,
        {"room_id": room_id, "username": username, "entry": entry},
    )
    return {"room_id": room_id, "name": state.name, "pending": True}
