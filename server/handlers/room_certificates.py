"""ROOM_CERTIFICATES {room_id} -> {room_id, members, transparency_head}.

Each member is {username, certificate, transparency: {position, proof}}, proved
against the one `transparency_head`.

What a member needs to seal a group message to everyone else; members only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import member_room_id
from server.storage import rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_CERTIFICATES
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    room_id = member_room_id(ctx, params)
    log = ctx.transparency
    head = log.head()
    members = [
        {
            "username": name,
            "certificate": certificate,
            "transparency": log.proof_for("certificate", name, certificate, head),
        }
        for name, certificate in rooms.member_certificates(ctx.db, room_id)
    ]
    return {"room_id": room_id, "members": members, "transparency_head": head.to_wire()}
