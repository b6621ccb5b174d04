"""PUBLISH_KEM_KEY {kem_key} -> {key_id, transparency}: publish your signed KEM key.

The key must be signed by the identity key of your own certificate and be newer than
the one you published before; see `server.kem_publication.accept_kem_key`, which also
appends it to the key transparency log. `transparency` proves the new entry under a
head signed now, so the publisher can check its key is logged, and the friends who
fetch it next find that head already signed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto.kem import SIGNED_KEM_KEY_SIZE
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._params import get_bytes
from server.kem_publication import accept_kem_key
from server.storage import users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.PUBLISH_KEM_KEY
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    encoded = get_bytes(params, "kem_key", max_len=SIGNED_KEM_KEY_SIZE)
    user = users.by_id(ctx.db, user_id)
    if user is None:  # the account was deleted under a live session
        raise RequestError("not_authenticated", "log in first")
    signed = accept_kem_key(ctx.db, ctx.identity, ctx.transparency, user, encoded, ctx.now())
    proof = ctx.transparency.entry_proof("kem_key", user.username, encoded)
    return {"key_id": signed.key_id, "transparency": proof}
