"""SEARCH_USERS {query, after?, limit?} -> {users, next}: find people to add by name.

A prefix match on the canonical name (the same folding as uniqueness), answered from
the `users_canonical` index one page at a time, so a search costs its page and never
a table scan on the reactor thread. Each account may search `searches_per_minute`
times a minute: a pipelined flood gets clear refusals, not the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import caller, take_allowance
from server.handlers._params import get_int, get_str
from server.storage import friends, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.SEARCH_USERS
REQUIRES_AUTH = True
#: A search reads an index page and a friendship lookup: several times an ordinary
#: request, and people search now and then, not in bursts (`server.dispatch`).
TURN_SHARE = 4
QUERY_MAX = 64
#: A cursor is a canonical name: NFKC may lengthen a name a few times over.
CURSOR_MAX = 4 * QUERY_MAX


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    query = get_str(params, "query", max_len=QUERY_MAX).strip()
    after = get_str(params, "after", max_len=CURSOR_MAX) if "after" in params else ""
    page_max = ctx.config.search_page
    limit = get_int(params, "limit", minimum=1, maximum=page_max) if "limit" in params else page_max
    if not query:  # an empty query would list everyone: not a directory
        return {"users": [], "next": None}
    take_allowance(
        ctx,
        f"search:{user_id}",
        ctx.config.searches_per_minute,
        "too_many_searches",
        "too many searches",
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
