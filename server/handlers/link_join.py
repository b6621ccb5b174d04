"""LINK_JOIN {code} -> {address}: the logged-in computer enters the new one's code.

The code must have been asked for this account, not be used or expired; every other
case is one answer, `link_code_invalid`. Each account may try `JOINS_PER_MINUTE`
codes a minute, counted before the code is looked at. The new computer is told
(LINK_JOINED); the reply names its address so the user can recognise it. In a
cluster, a code held by another node is judged there, and the request is answered
when that node answers (`server/cluster/link_routes.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import caller, take_allowance
from server.handlers._params import get_str

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LINK_JOIN
REQUIRES_AUTH = True
JOINS_PER_MINUTE = 5


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any] | None:
    user_id, username = caller(ctx)
    code = get_str(params, "code", max_len=32)
    take_allowance(
        ctx,
        f"link_join:{user_id}",
        JOINS_PER_MINUTE,
        "too_many_attempts",
        "too many link codes tried",
        "code",
    )
    relay, routes = ctx.services.links, ctx.services.link_routes
    if routes is not None and not relay.holds(code):
        routes.join(ctx, username, code)  # answered when the node holding it answers
        return None
    link = relay.join(ctx.connection, username, code, ctx.now())
    if routes is not None:  # the connection's earlier link, held by another node, ends
        routes.close(ctx.connection, "cancelled")
    return {"address": link.opener.address}
