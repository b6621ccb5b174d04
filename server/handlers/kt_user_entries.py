"""KT_USER_ENTRIES {after?} -> {head, entries: [{position, kind, payload, proof}]}.

The caller's own entries, each with its inclusion proof, so a client can check that
every key published under its name is one it made (monitoring). Only one's own name:
the log is for checking keys, not a directory to crawl. At most `MAX_USER_ENTRIES` per
reply, oldest first from position `after + 1`; a full page means ask again (a KEM key
every 30 days fills a page in about twenty years, but a server could add more).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.crypto import merkle
from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._params import get_int
from server.storage import keylog
from server.transparency import MAX_USER_ENTRIES

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.KT_USER_ENTRIES
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _, username = caller(ctx)
    after = get_int(params, "after", minimum=-1) if "after" in params else -1
    log = ctx.transparency
    head = log.head()
    entries = [
        {
            "position": stored.position,
            "kind": stored.entry.kind,
            "payload": stored.entry.payload,
            "proof": merkle.pack_proof(log.inclusion(stored.position, head)),
        }
        for stored in keylog.entries_for(ctx.db, username, MAX_USER_ENTRIES, after)
        if stored.position < head.size
    ]
    return {"head": head.to_wire(), "entries": entries}
