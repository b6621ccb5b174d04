"""ROOM_LOG {room_id, after?} -> {room_id, entries, after, length, certificates}.

One page of a room's membership log (members only): the entries with sequence numbers
after `after` (default 0), in order, as stored, and the certificates of everyone who
signed one of them (actors and approvers), each with its key-transparency proof
(`{username: {certificate, transparency}}`), so a member can check signatures by users
it never talked to; its client checks each against the CA, the log and its pins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.membership import MembershipEvent
from common.crypto.room_log import is_legacy
from common.protocol.opcodes import MessageType
from server.handlers._common import member_room_id
from server.handlers._params import get_int
from server.storage import room_log, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_LOG
REQUIRES_AUTH = True
PAGE = 256


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    room_id = member_room_id(ctx, params)
    after = get_int(params, "after") if "after" in params else 0
    length, _ = room_log.head(ctx.db, room_id)
    page = room_log.entries(ctx.db, room_id, after, PAGE)
    signers: set[str] = set()
    for item in page:
        if not is_legacy(item.entry):
            event = MembershipEvent.from_wire(item.entry)
            signers.update(name for name in (event.actor, event.approver) if name)
    certificates: dict[str, dict[str, Any]] = {}
    for name in sorted(signers):
        user = users.by_username(ctx.db, name)
        if user is not None and user.certificate and user.username == name:
            certificates[name] = {
                "certificate": user.certificate,
                "transparency": ctx.transparency.certificate_proof(name, user.certificate),
            }
    return {
        "room_id": room_id,
        "after": after,
        "entries": [item.entry for item in page],
        "length": length,
        "certificates": certificates,
    }
