"""LINK_SEND {data} -> {}: pass an opaque link message to the other computer (LINK_DATA).

Either end of a joined link may send; the relay caps the size and count
(`server/links.py`). The bytes are the clients' key exchange and sealed identity:
the server cannot read the identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._params import get_bytes
from server.links import MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LINK_SEND
REQUIRES_AUTH = False  # the new computer is not logged in; the relay checks the link


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    data = get_bytes(params, "data", max_len=MAX_MESSAGE_SIZE)
    routes = ctx.services.link_routes
    if routes is not None and routes.holds(ctx.connection):  # a link held by another node
        routes.relay(ctx.connection, data)
    else:
        ctx.services.links.relay(ctx.connection, data)
    return {}
