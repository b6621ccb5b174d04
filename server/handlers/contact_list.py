"""CONTACT_LIST {} -> {friends, rooms, friend_requests}: the caller's contact list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType
from server.handlers._common import caller
from server.handlers._wire import contact_lists

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.CONTACT_LIST
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    user_id, _ = caller(ctx)
    return contact_lists(ctx, user_id)
