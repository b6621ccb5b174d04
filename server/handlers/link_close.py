"""LINK_CLOSE {reason} -> {}: end this connection's link; the other computer is told.

`reason` is one of `LINK_CLOSE_REASONS`; closing when no link is open is not an error
(the other side or the clock may have ended it first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._params import get_choice

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LINK_CLOSE
REQUIRES_AUTH = False
LINK_CLOSE_REASONS = ("cancelled", "refused", "failed", "done")


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    reason = get_choice(params, "reason", LINK_CLOSE_REASONS)
    ctx.services.links.close(ctx.connection, reason, ctx.now())
    if ctx.services.link_routes is not None:  # or a link held by another node
        ctx.services.link_routes.close(ctx.connection, reason)
    return {}
