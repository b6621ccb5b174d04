"""ROOM_CERTIFICATES {room_id, after?} -> {room_id, members, transparency_head, next}.

Each member is {username, certificate, transparency: {position, proof}, kem_key,
kem_transparency: {position, proof} | None}, both proved against the one
`transparency_head`; `kem_key` is the member's current signed KEM key, or None before
they published one. Members come in pages of `PAGE` in join order; `next` is the
`after` of the following page, None after the last (a room holds up to
`max_room_members`, 10,000 by default, far more than one reply).

What a member needs to seal to everyone else; members only. Which names to seal to is
the client's verified member list, not this reply (docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import member_room_id
from server.handlers._params import get_int
from server.storage import kem_keys, rooms

if TYPE_CHECKING:
    from common.crypto.merkle import TreeHead
    from server.dispatch import Context
    from server.transparency import TransparencyLog

OPCODE = MessageType.ROOM_CERTIFICATES
REQUIRES_AUTH = True
PAGE = 200  # ~3.7 KiB per member with both proofs and the KEM key: well under a frame


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    room_id = member_room_id(ctx, params)
    after = get_int(params, "after") if "after" in params else 0
    log = ctx.transparency
    head = log.head()
    page = rooms.member_certificates(ctx.db, room_id, after=after, limit=PAGE + 1)
    more = len(page) > PAGE
    page = page[:PAGE]
    kem = kem_keys.current_for_names(ctx.db, [name for _, name, _ in page])
    members = [
        {
            "username": name,
            "certificate": certificate,
            "transparency": log.proof_for("certificate", name, certificate, head),
            "kem_key": kem.get(name),
            "kem_transparency": _kem_proof(log, name, kem.get(name), head),
        }
        for _, name, certificate in page
    ]
    return {
        "room_id": room_id,
        "members": members,
        "transparency_head": head.to_wire(),
        "next": page[-1][0] if more else None,
    }


def _kem_proof(
    log: TransparencyLog, name: str, kem_key: bytes | None, head: TreeHead
) -> dict[str, Any] | None:
    return None if kem_key is None else log.proof_for("kem_key", name, kem_key, head)
