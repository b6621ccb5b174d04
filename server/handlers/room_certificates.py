"""ROOM_CERTIFICATES {room_id} -> {room_id, members, transparency_head}.

Each member is {username, certificate, transparency: {position, proof}, kem_key,
kem_transparency: {position, proof} | None}, both proved against the one
`transparency_head`; `kem_key` is the member's current signed KEM key, or None before
they published one.

What a member needs to seal a group message to everyone else; members only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import member_room_id
from server.storage import kem_keys, rooms

if TYPE_CHECKING:
    from common.crypto.merkle import TreeHead
    from server.dispatch import Context
    from server.transparency import TransparencyLog

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
            "kem_transparency": _kem_proof(log, name, kem.get(name), head),
        }
        for name, certificate in certificates
    ]
    return {"room_id": room_id, "members": members, "transparency_head": head.to_wire()}


def _kem_proof(
    log: TransparencyLog, name: str, kem_key: bytes | None, head: TreeHead
) -> dict[str, Any] | None:
    return None if kem_key is None else log.proof_for("kem_key", name, kem_key, head)
