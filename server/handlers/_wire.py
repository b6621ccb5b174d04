"""Storage records -> the dicts `docs/protocol.md` defines (Contact, Room, Delivery)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
