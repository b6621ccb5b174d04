"""SEARCH_USERS {query, after?, limit?} -> {users, next}: find people to add by name.

A prefix match on the canonical name (the same folding as uniqueness), answered from
the `users_canonical` index one page at a time, so a search costs its page and never
a table scan on the reactor thread. Each account may search `searches_per_minute`
times a minute: a pipelined flood gets clear refusals, not the loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._params import get_int, get_str
from server.storage import friends, rate_windows, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.SEARCH_USERS
REQUIRES_AUTH = True
QUERY_MAX = 64
#: A cursor is a canonical name: NFKC may lengthen a name a few times over.
CURSOR_MAX = 4 * QUERY_MAX
WINDOW_MS = 60_000


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    query = get_str(params, "query", max_len=QUERY_MAX).strip()
    after = get_str(params, "after", max_len=CURSOR_MAX) if "after" in params else ""
    page_max = ctx.config.search_page
    limit = get_int(params, "limit", minimum=1, maximum=page_max) if "limit" in params else page_max
    if not query:  # an empty query would list everyone: not a directory
        return {"users": [], "next": None}
    wait_ms = rate_windows.take(
        ctx.db, f"search:{user_id}", ctx.now(), ctx.config.searches_per_minute, WINDOW_MS
    )
    if wait_ms:
        raise RequestError(
            "too_many_searches",
            f"too many searches; try again in {math.ceil(wait_ms / 1000)} seconds",
            "query",
        )
    page = users.search(ctx.db, query, exclude_user_id=user_id, limit=limit, after=after)
    links = friends.relations(ctx.db, user_id, [user.id for user in page.users])
    return {
        "users": [
            {
                "username": user.username,
                "sex": user.sex,
                "age": user.age,
                "is_friend": links.get(user.id) == "friend",
                "pending": links.get(user.id) == "pending",
            }
            for user in page.users
        ],
        "next": page.next_after,
    }
