"""LINK_OPEN {username} -> {code, expires_in}: a new computer asks for a one-time code.

Allowed before login (the new computer has no keys yet). The code is bound to the
account named here; the connection is held past the login deadline while the code
lives (`server/links.py`). Each address may ask `OPENS_PER_MINUTE` times a minute.
In a cluster the answer comes once the code is recorded where the other nodes find it
(`server/cluster/link_routes.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import USERNAME_MAX, take_allowance
from server.handlers._params import get_str
from server.links import CODE_TTL_MS

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LINK_OPEN
REQUIRES_AUTH = False
OPENS_PER_MINUTE = 6


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any] | None:
    username = get_str(params, "username", max_len=USERNAME_MAX)
    take_allowance(
        ctx,
        f"link_open:{ctx.peer[0]}",
        OPENS_PER_MINUTE,
        "too_many_links",
        "too many link codes asked from this address",
        "username",
    )
    routes = ctx.services.link_routes
    if routes is not None:  # a cluster: answered once other nodes can find the code
        routes.open(ctx, username)
        ctx.connection.hold_for_link()
        return None
    link = ctx.services.links.open(ctx.connection, username, ctx.now())
    ctx.connection.hold_for_link()
    return {"code": link.code, "expires_in": CODE_TTL_MS // 1000}
