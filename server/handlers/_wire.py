"""Storage records -> the dicts `docs/protocol.md` defines (Contact, Room, Delivery)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from common.protocol import codec
from common.protocol.opcodes import MessageType
from server.storage import friends, messages, rooms

if TYPE_CHECKING:
    from server.dispatch import Context


def contact(ctx: Context, friend: friends.Friend) -> dict[str, Any]:
    return {
        "username": friend.username,
        "online": ctx.sessions.is_online(friend.id),
        "ip": friend.ip,
        "port": friend.port,
        "last_message_time": friend.last_message_time,
    }


def room(view: rooms.RoomView) -> dict[str, Any]:
    return {
        "room_id": view.id,
        "name": view.name,
        "members": list(view.members),
        "last_message_time": view.last_message_time,
    }


def delivery(item: messages.Delivery, recipient_name: str) -> dict[str, Any]:
    """`target` is the recipient's own name for direct messages, the room id otherwise;
    `distribution` (a chain's state sealed to this recipient) only when there is one."""
    target: str | int = recipient_name if item.target_type == messages.USER else item.target_id
    value: dict[str, Any] = {
        "message_id": item.message_id,
        "sender": item.sender,
        "target_type": item.target_type,
        "target": target,
        "time": item.time,
        "envelope": item.envelope,
        "attachments": list(item.attachments),
    }
    if item.distribution is not None:
        value["distribution"] = item.distribution
    return value


class DeliveryPushes:
    """The NEW_MESSAGE push of one message for each recipient, encoded once where it can be.

    A room message is one envelope for every member: the push is the same bytes for
    every member without a distribution, so it is encoded once. A member who gets a
    chain distribution with it, and the one recipient of a direct message (whose name is
    the target), get their own encoding.
    """

    def __init__(self, item: messages.Delivery) -> None:
        self._item = item
        self._shared: bytes | None = None

    def body(self, recipient: str, distribution: bytes | None = None) -> bytes:
        if self._item.target_type == messages.USER or distribution is not None:
            return encode_new_message(self._item, recipient, distribution)
        if self._shared is None:
            self._shared = encode_new_message(self._item, recipient, None)
        return self._shared


# `encode_new_message` writes the codec bytes of one NEW_MESSAGE push directly: the
# general encoder walks the dict, re-encodes its constant keys and dispatches on every
# value's type, which was the largest single cost of relaying a message. Its output is
# byte for byte `encode_message(push(NEW_MESSAGE, {"messages": [delivery(...)]}))`
# (tests/unit/test_send_path.py checks it on random deliveries).
_HEADER = struct.Struct(">BI")
_INT_TLV = struct.Struct(">BIq")


def _key(name: str) -> bytes:
    return codec.encode(name)


_KEYS = {
    name: _key(name)
    for name in ("message_id", "sender", "target_type", "target", "time", "envelope")
}
_ATTACHMENTS_KEY = _key("attachments")
_DISTRIBUTION_KEY = _key("distribution")
_PUSH_PREFIX = _INT_TLV.pack(codec.INT, 8, int(MessageType.NEW_MESSAGE)) + _INT_TLV.pack(
    codec.INT, 8, 0
)
_MESSAGES_KEY = _key("messages")


def _text(value: str) -> bytes:
    raw = value.encode()
    return _HEADER.pack(codec.STR, len(raw)) + raw


def encode_new_message(
    item: messages.Delivery, recipient: str, distribution: bytes | None = None
) -> bytes:
    """The encoded NEW_MESSAGE push of `item` for `recipient` (with its distribution)."""
    return _push_of(_delivery_bytes(item, recipient, distribution))


def encode_new_messages(items: Sequence[messages.Delivery], recipient: str) -> bytes:
    """One NEW_MESSAGE push of several deliveries (each with its own distribution):
    byte for byte `encode_message(push(NEW_MESSAGE, {"messages": [delivery(...), ...]}))`."""
    return _push_of(
        b"".join([_delivery_bytes(item, recipient, item.distribution) for item in items])
    )


def _delivery_bytes(item: messages.Delivery, recipient: str, distribution: bytes | None) -> bytes:
    keys = _KEYS
    envelope = item.envelope
    if item.target_type == messages.USER:
        target = _text(recipient)
    else:
        target = _INT_TLV.pack(codec.INT, 8, item.target_id)
    names = b"".join([_text(name) for name in item.attachments])
    parts = [
        keys["message_id"],
        _text(item.message_id),
        keys["sender"],
        _text(item.sender),
        keys["target_type"],
        _text(item.target_type),
        keys["target"],
        target,
        keys["time"],
        _INT_TLV.pack(codec.INT, 8, item.time),
        keys["envelope"],
        _HEADER.pack(codec.BYTES, len(envelope)),
        envelope,
        _ATTACHMENTS_KEY,
        _HEADER.pack(codec.LIST, len(names)),
        names,
    ]
    if distribution is not None:
        parts += [_DISTRIBUTION_KEY, _HEADER.pack(codec.BYTES, len(distribution)), distribution]
    fields = b"".join(parts)
    return _HEADER.pack(codec.DICT, len(fields)) + fields


def _push_of(deliveries: bytes) -> bytes:
    """The push around the encoded deliveries of its `messages` list."""
    listed = _HEADER.pack(codec.LIST, len(deliveries)) + deliveries
    params = _MESSAGES_KEY + listed
    params = _HEADER.pack(codec.DICT, len(params)) + params
    body = _PUSH_PREFIX + params
    return _HEADER.pack(codec.LIST, len(body)) + body


def contact_lists(ctx: Context, user_id: int) -> dict[str, Any]:
    """The `friends`, `rooms` and first page of `friend_requests` (LOGIN, CONTACT_LIST)."""
    return {
        "friends": [contact(ctx, friend) for friend in friends.friends_of(ctx.db, user_id)],
        "rooms": [room(view) for view in rooms.rooms_of(ctx.db, user_id)],
        **friend_requests_page(ctx, user_id, ""),
    }


def friend_requests_page(ctx: Context, user_id: int, after: str) -> dict[str, Any]:
    """`friend_requests` (one page) and `friend_requests_next` ("" when that was all)."""
    names, cursor = friends.incoming_requests_page(
        ctx.db, user_id, after, ctx.config.friend_requests_page
    )
    return {"friend_requests": names, "friend_requests_next": cursor}
