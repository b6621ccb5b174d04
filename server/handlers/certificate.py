"""CERTIFICATE {username} -> {username, certificate, transparency, kem_key,
kem_transparency}.

`kem_key` is the user's current signed KEM key (bytes), or None before they published
one; the client verifies it against its pin of the identity key in the certificate.
`kem_transparency` is its {position, proof} in the key log under the head in
`transparency` (None with no key), so the client checks both keys against one head.

Only for yourself, your friends and people you share a room with: those are the only
people you can seal messages to, and the list of certificates should not be a
directory anyone can crawl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller, existing_user
from server.storage import friends, kem_keys, rooms

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.CERTIFICATE
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    target = existing_user(ctx, params)
    allowed = (
        target.id == user_id
        or friends.are_friends(ctx.db, user_id, target.id)
        or rooms.share_a_room(ctx.db, user_id, target.id)
    )
    if not allowed:
        raise RequestError(
            "forbidden", "only friends and room members can fetch a certificate", "username"
        )
    kem_key = kem_keys.current(ctx.db, target.id)
    return {
        "username": target.username,
        "certificate": target.certificate,
        "transparency": ctx.transparency.certificate_proof(target.username, target.certificate),
        "kem_key": kem_key,
        "kem_transparency": ctx.transparency.kem_key_proof(target.username, kem_key),
    }
