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

import struct
from typing import Any

from client.core.models import ChatKind
from common.protocol import codec


def sealed_chat(chat_kind: ChatKind, chat_id: str) -> list[str | int]:
    """The `chat` a sender seals: `["user", recipient]` or `["room", room_id]`."""
    if chat_kind == "user":
        return ["user", chat_id]
    return ["room", int(chat_id)]


_DICT_HEADER = struct.Struct(">BI")
_CHAT_KEY = codec.encode("chat")


def bind_chat(body: bytes, chat_kind: ChatKind, chat_id: str) -> bytes:
    """`body` (a codec dict from `text_body` / `attachment_body`) with its `chat` added.

    The `chat` entry is appended to the encoded dict and the dict's length rewritten:
    the result is byte for byte `encode({**decode(body), "chat": ...})` without decoding
    and re-encoding the text or attachment fields. A body that may already name a
    `chat` takes the long way, which replaces it.
    """
    if len(body) < _DICT_HEADER.size:
        raise TypeError("a sealed body is a codec dict")
    tag, length = _DICT_HEADER.unpack_from(body)
    if tag != codec.DICT or length != len(body) - _DICT_HEADER.size:
        raise TypeError("a sealed body is a codec dict")
    chat = sealed_chat(chat_kind, chat_id)
    if _CHAT_KEY in body:
        value = codec.decode(body)
        return codec.encode({**value, "chat": chat})
    entries = body[_DICT_HEADER.size :] + _CHAT_KEY + codec.encode(chat)
    return _DICT_HEADER.pack(codec.DICT, len(entries)) + entries


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
