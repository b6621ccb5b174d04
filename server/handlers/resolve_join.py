"""RESOLVE_JOIN {room_id, username, decision, event?} -> {seq?}: an admin answers a join.

`decision` "approve" carries `event`: the pending join, countersigned by the caller
(`membership.approve`); it enters the log as any join. "refuse" drops the request.
Either way the joiner hears: CONTACT_ADDED, or ROOM_JOIN_REFUSED {reason}. A join
signed against a head the log has since left cannot be countersigned any more: it is
dropped and the joiner is told `log_moved`, so its client signs a fresh request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.membership import EventKind, MembershipEvent
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, existing_user, member_room_id
from server.handlers._params import get_choice
from server.handlers._wire import room
from server.handlers.join_room import check_room_space
from server.membership import accept, parse_event
from server.storage import room_log, rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.RESOLVE_JOIN
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    admin_id, admin = caller(ctx)
    room_id = member_room_id(ctx, params)
    if not rooms.is_admin(ctx.db, room_id, admin_id):
        raise RequestError("forbidden", "only the group's admins answer join requests")
    decision = get_choice(params, "decision", ("approve", "refuse"))
    joiner = existing_user(ctx, params)
    pending = room_log.get_request(ctx.db, room_id, joiner.id)
    if pending is None:
        raise RequestError("no_request", f"{joiner.username} is not waiting to join", "username")
    if decision == "refuse":
        _drop(ctx, room_id, joiner.id, "refused")
        return {}
    event = parse_event(params)
    check_room_space(ctx, room_id)  # the room may have filled while the request waited
    if not _same_join(MembershipEvent.from_wire(pending), event) or event.approver != admin:
        raise RequestError("bad_event", "countersign the pending join as it is", "event")
    try:
        accepted = accept(ctx, room_id, event, EventKind.JOIN)
    except RequestError as exc:
        if exc.code == "log_moved":
            _drop(ctx, room_id, joiner.id, "log_moved")
        raise
    view = rooms.room_view(ctx.db, room_id)
    if view is not None:
        ctx.push(joiner.id, MessageType.CONTACT_ADDED, {"room": room(view)})
    return {"seq": accepted.seq}


def _same_join(pending: MembershipEvent, event: MembershipEvent) -> bool:
    return (pending.signed_part(), pending.signature) == (event.signed_part(), event.signature)


def _drop(ctx: Context, room_id: int, user_id: int, reason: str) -> None:
    room_log.drop_request(ctx.db, room_id, user_id)
    ctx.push(user_id, MessageType.ROOM_JOIN_REFUSED, {"room_id": room_id, "reason": reason})
