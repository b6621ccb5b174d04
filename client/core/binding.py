"""Which conversation a sealed message belongs to, sealed inside it.

Why it exists: an envelope's key derivation binds the sender, the recipient and the
message id, but not whether the message went to a friend or to which room; those are
labels the server adds to each delivery. So the sender seals the conversation into the
body (`chat`: `["user", recipient]` or `["room", room_id]`) and the recipient refuses a
body whose `chat` differs from the delivery's label, which stops a server from
relabelling a direct message as a room message or moving one between rooms
(docs/protocol.md, "Sealed envelope plaintext").
"""

from __future__ import annotations

from typing import Any

from client.core.models import ChatKind
from common.protocol import codec


def sealed_chat(chat_kind: ChatKind, chat_id: str) -> list[str | int]:
    """The `chat` a sender seals: `["user", recipient]` or `["room", room_id]`."""
    if chat_kind == "user":
        return ["user", chat_id]
    return ["room", int(chat_id)]


def bind_chat(body: bytes, chat_kind: ChatKind, chat_id: str) -> bytes:
    """`body` (a codec dict from `text_body` / `attachment_body`) with its `chat` added."""
    value = codec.decode(body)
    if not isinstance(value, dict):
        raise TypeError("a sealed body is a codec dict")
    return codec.encode({**value, "chat": sealed_chat(chat_kind, chat_id)})


def chat_matches(sealed: Any, target_type: ChatKind, target: str | int, recipient: str) -> bool:
    """True if a body's sealed `chat` is the conversation its delivery is labelled with.

    A direct message must be sealed for `["user", recipient]` and delivered to the
    recipient (`target`); a room message for `["room", target]`. Types are compared too,
    so a room id never matches a string (nor `True` the room 1).
    """
    if target_type == "user":
        if target != recipient:
            return False
        expected: list[str | int] = ["user", recipient]
    else:
        expected = ["room", target]
    return (
        isinstance(sealed, list)
        and len(sealed) == len(expected)
        and all(type(a) is type(b) and a == b for a, b in zip(sealed, expected, strict=True))
    )
