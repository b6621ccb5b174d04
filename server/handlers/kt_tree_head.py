"""KT_TREE_HEAD {} -> {head}: the newest signed tree head of the key transparency log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.protocol.opcodes import MessageType

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.KT_TREE_HEAD
REQUIRES_AUTH = True


def handle(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"head": ctx.transparency.head().to_wire()}
