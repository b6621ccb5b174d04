"""Storage records -> the dicts `docs/protocol.md` defines (Contact, Room, Delivery)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from common.protocol.message import encode_message, push
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
    """`target` is the recipient's own name for direct messages, the room id otherwise."""
    target: str | int = recipient_name if item.target_type == messages.USER else item.target_id
    return {
        "message_id": item.message_id,
        "sender": item.sender,
        "target_type": item.target_type,
        "target": target,
        "time": item.time,
        "envelope": item.envelope,
        "attachments": list(item.attachments),
    }


class DeliveryPushes:
    """The NEW_MESSAGE push of one message for each recipient, its common part encoded once.

    A room message goes to every member with the same fields but the envelope. The
    first push of a given envelope length is encoded with a random placeholder of that
    length where the envelope goes; the bytes before and after it are kept, and every
    further push of that length is `before + envelope + after`: byte for byte what
    `encode_message` gives (the codec's lengths depend only on the envelope's length).
    Direct messages (one recipient, whose name is the target) are encoded as usual.
    """

    #: Below this an envelope-sized placeholder could occur elsewhere by chance.
    MIN_TEMPLATE_LENGTH = 16

    def __init__(self, item: messages.Delivery) -> None:
        self._item = item
        self._templates: dict[int, tuple[bytes, bytes]] = {}

    def body(self, recipient: str, envelope: bytes) -> bytes:
        size = len(envelope)
        if self._item.target_type == messages.USER or size < self.MIN_TEMPLATE_LENGTH:
            return self._encode(recipient, envelope)
        template = self._templates.get(size)
        if template is None:
            placeholder = os.urandom(size)
            encoded = self._encode(recipient, placeholder)
            at = encoded.find(placeholder)
            if at < 0 or encoded.find(placeholder, at + 1) >= 0:
                return self._encode(recipient, envelope)
            template = (encoded[:at], encoded[at + size :])
            self._templates[size] = template
        return b"".join((template[0], envelope, template[1]))

    def _encode(self, recipient: str, envelope: bytes) -> bytes:
        item = dataclasses.replace(self._item, envelope=envelope)
        return encode_message(
            push(MessageType.NEW_MESSAGE, {"messages": [delivery(item, recipient)]})
        )


def contact_lists(ctx: Context, user_id: int) -> dict[str, Any]:
    """The `friends`, `rooms` and `friend_requests` parts of LOGIN and CONTACT_LIST."""
    return {
        "friends": [contact(ctx, friend) for friend in friends.friends_of(ctx.db, user_id)],
        "rooms": [room(view) for view in rooms.rooms_of(ctx.db, user_id)],
        "friend_requests": friends.incoming_requests(ctx.db, user_id),
    }
