"""SEARCH_USERS {query} -> {users}: find people to add, by part of their name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._params import get_str
from server.storage import friends, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.SEARCH_USERS
REQUIRES_AUTH = True
MAX_RESULTS = 50
QUERY_MAX = 64


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    query = get_str(params, "query", max_len=QUERY_MAX).strip()
    if not query:  # an empty query would list everyone: not a directory
        return {"users": []}
    found = users.search(ctx.db, query, exclude_user_id=user_id, limit=MAX_RESULTS)
    links = friends.relations(ctx.db, user_id, [user.id for user in found])
    return {
        "users": [
            {
                "username": user.username,
                "sex": user.sex,
                "age": user.age,
                "is_friend": links.get(user.id) == "friend",
                "pending": links.get(user.id) == "pending",
            }
            for user in found
        ]
    }
