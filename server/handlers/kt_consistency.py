"""KT_CONSISTENCY {old_size, new_size?} -> {head, proof}: the newest head, and the
RFC 9162 proof that the tree of `new_size` entries (default: the newest head's)
extends the tree of `old_size` entries a client holds a head for.

A size beyond the log is answered `unknown_tree_size`: the client holds a head the
server no longer admits to, which it treats as a rollback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto import merkle
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._params import get_int

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.KT_CONSISTENCY
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    old_size = get_int(params, "old_size")
    head = ctx.transparency.head()
    new_size = get_int(params, "new_size") if "new_size" in params else head.size
    for name, size in (("old_size", old_size), ("new_size", new_size)):
        if size > head.size:
            raise RequestError(
                "unknown_tree_size", "the log has fewer entries than that tree head", name
            )
    if old_size > new_size:
        raise RequestError("bad_request", "old_size must not exceed new_size", "old_size")
    return {
        "head": head.to_wire(),
        "proof": merkle.pack_proof(ctx.transparency.consistency(old_size, new_size)),
    }
