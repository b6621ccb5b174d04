"""KT_RANGE {start, count} -> {head, entries: [{position, kind, username, payload}]}.

Entries in order, at most `MAX_RANGE` per request, for the auditor that rebuilds the
whole tree and checks it against the signed head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._params import get_int
from server.storage import keylog
from server.transparency import MAX_RANGE

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.KT_RANGE
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    start = get_int(params, "start")
    count = get_int(params, "count", minimum=1, maximum=MAX_RANGE)
    head = ctx.transparency.head()
    end = min(start + count, head.size)
    entries = [
        {
            "position": stored.position,
            "kind": stored.entry.kind,
            "username": stored.entry.username,
            "payload": stored.entry.payload,
        }
        for stored in keylog.entries(ctx.db, start, end)
    ]
    return {"head": head.to_wire(), "entries": entries}
