"""Telling friends that a user came online or went offline (PRESENCE pushes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.protocol.message import push
from common.protocol.opcodes import MessageType
from server.broadcast import send_to_users
from server.storage import friends, users

if TYPE_CHECKING:
    from server.dispatch import Context, Services


def announce_online(ctx: Context) -> int:
    """Push {username, online: True, ip, port} to the caller's online friends."""
    if ctx.user_id is None or ctx.username is None:
        return 0
    ip, port = ctx.peer
    params = {"username": ctx.username, "online": True, "ip": ip, "port": port}
    return ctx.push_many(friends.friend_ids(ctx.db, ctx.user_id), MessageType.PRESENCE, params)


def announce_offline(services: Services, user_id: int, username: str) -> int:
    """Record when the user was last seen and tell their online friends."""
    users.set_last_seen(services.db, user_id, services.clock())
    user = users.by_id(services.db, user_id)
    ip, port = (user.ip, user.port) if user is not None else ("", 0)
    message = push(
        MessageType.PRESENCE, {"username": username, "online": False, "ip": ip, "port": port}
    )
    return send_to_users(services.sessions, friends.friend_ids(services.db, user_id), message)
