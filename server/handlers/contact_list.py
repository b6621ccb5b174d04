"""CONTACT_LIST: the caller's contact list, or the next page of its friend requests.

`{}` -> {friends, rooms, friend_requests, friend_requests_next};
`{requests_after: cursor}` -> {friend_requests, friend_requests_next} only, so a
client can fetch any number of waiting requests a page at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._params import get_str
from server.handlers._wire import contact_lists, friend_requests_page

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.CONTACT_LIST
REQUIRES_AUTH = True
CURSOR_MAX = 64


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    if "requests_after" in params:
        after = get_str(params, "requests_after", max_len=CURSOR_MAX)
        return friend_requests_page(ctx, user_id, after)
    return contact_lists(ctx, user_id)
