"""Telling friends that a user came online or went offline (PRESENCE pushes).

This module knows nothing of the dispatcher: `announce_online` takes anything shaped
like a request context, and the dispatcher reaches `announce_offline` only through the
`on_offline` hook `server.app` injects into `Services` (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from common.protocol.message import push
from common.protocol.opcodes import MessageType
from server.broadcast import send_to_users
from server.sessions import Sessions
from server.storage import friends, users
from server.storage.database import Database


class RequestContext(Protocol):
    """What `announce_online` needs of `server.dispatch.Context`."""

    @property
    def db(self) -> Database: ...

    @property
    def user_id(self) -> int | None: ...

    @property
    def username(self) -> str | None: ...

    @property
    def peer(self) -> tuple[str, int]: ...

    def push_many(
        self, user_ids: Iterable[int], type: MessageType, params: dict[str, Any]
    ) -> int: ...


class ServerParts(Protocol):
    """What `announce_offline` needs of `server.dispatch.Services`."""

    @property
    def db(self) -> Database: ...

    @property
    def sessions(self) -> Sessions: ...

    @property
    def clock(self) -> Callable[[], int]: ...


def announce_online(ctx: RequestContext) -> int:
    """Push {username, online: True, ip, port} to the caller's online friends."""
    if ctx.user_id is None or ctx.username is None:
        return 0
    ip, port = ctx.peer
    params = {"username": ctx.username, "online": True, "ip": ip, "port": port}
    return ctx.push_many(friends.friend_ids(ctx.db, ctx.user_id), MessageType.PRESENCE, params)


def announce_offline(services: ServerParts, user_id: int, username: str) -> int:
    """Record when the user was last seen and tell their online friends."""
    users.set_last_seen(services.db, user_id, services.clock())
    user = users.by_id(services.db, user_id)
    ip, port = (user.ip, user.port) if user is not None else ("", 0)
    message = push(
        MessageType.PRESENCE, {"username": username, "online": False, "ip": ip, "port": port}
    )
    return send_to_users(services.sessions, friends.friend_ids(services.db, user_id), message)
