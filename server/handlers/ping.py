"""PING {} -> {time}: liveness, allowed before login."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.PING
REQUIRES_AUTH = False


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"time": ctx.now()}
