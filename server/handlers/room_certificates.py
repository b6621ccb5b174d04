"""ROOM_CERTIFICATES {room_id} -> {room_id, members, transparency_head}.

Each member is {username, certificate, transparency: {position, proof}, kem_key},
proved against the one `transparency_head`; `kem_key` is the member's current signed
KEM key, or None before they published one.

What a member needs to seal a group message to everyone else; members only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import member_room_id
from server.storage import kem_keys, rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.ROOM_CERTIFICATES
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    room_id = member_room_id(ctx, params)
    log = ctx.transparency
    head = log.head()
    certificates = rooms.member_certificates(ctx.db, room_id)
    kem = kem_keys.current_for_names(ctx.db, [name for name, _ in certificates])
    members = [
        {
            "username": name,
            "certificate": certificate,
            "transparency": log.proof_for("certificate", name, certificate, head),
            "kem_key": kem.get(name),
        }
        for name, certificate in certificates
    ]
    return {"room_id": room_id, "members": members, "transparency_head": head.to_wire()}
