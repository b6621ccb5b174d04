"""LOGOUT {} -> {}: the user goes offline (friends are told) and the connection closes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LOGOUT
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    ctx.unbind_user()  # announces the user offline to online friends
    ctx.close_after_reply()
    return {}
