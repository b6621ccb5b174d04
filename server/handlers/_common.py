"""Lookups most handlers share: who is asking, and the users and rooms they name."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from common.errors import RequestError
from server.handlers._params import get_int, get_str
from server.storage import rate_windows, rooms, users
from server.storage.attachment_store import AttachmentStore, store_for

if TYPE_CHECKING:
    from server.dispatch import Context

USERNAME_MAX = 256  # longer than any valid name: longer input cannot match anyone
MINUTE_MS = 60_000


def take_allowance(
    ctx: Context, key: str, per_minute: int, code: str, what: str, field: str
) -> None:
    """Count one `key` event in its minute; past `per_minute`, refuse with `code`."""
    wait_ms = rate_windows.take(ctx.db, key, ctx.now(), per_minute, MINUTE_MS)
    if wait_ms:
        seconds = math.ceil(wait_ms / 1000)
        raise RequestError(code, f"{what}; try again in {seconds} seconds", field)


def caller(ctx: Context) -> tuple[int, str]:
    """The logged-in user's (id, username); the dispatcher already refused anonymous calls."""
    if ctx.user_id is None or ctx.username is None:
        raise RequestError("not_authenticated", "log in first")
    return ctx.user_id, ctx.username


def existing_user(ctx: Context, params: Mapping[str, Any]) -> users.User:
    """The user `params["username"]` names; `user_not_found` if there is none."""
    username = get_str(params, "username", max_len=USERNAME_MAX)
    user = users.by_username(ctx.db, username)
    if user is None:
        raise RequestError("user_not_found", f"there is no user called {username!r}", "username")
    return user


def existing_room(ctx: Context, params: Mapping[str, Any]) -> rooms.Room:
    """The room `params["room_id"]` names; `room_not_found` if there is none."""
    room_id = get_int(params, "room_id")
    room = rooms.get_room(ctx.db, room_id)
    if room is None:
        raise RequestError("room_not_found", f"there is no room {room_id}", "room_id")
    return room


def member_room_id(ctx: Context, params: Mapping[str, Any]) -> int:
    """`params["room_id"]`, once the caller is known to be in that room.

    A missing room and a room the caller is not in both answer `not_member`, so
    members-only requests tell outsiders nothing about which rooms exist.
    """
    user_id, _ = caller(ctx)
    room_id = get_int(params, "room_id")
    if not rooms.is_member(ctx.db, room_id, user_id):
        raise RequestError("not_member", "you are not in this room", "room_id")
    return room_id


def attachment_store(ctx: Context) -> AttachmentStore:
    """The folder or the PostgreSQL table holding attachment bytes (config's choice)."""
    return store_for(ctx.config, ctx.services.data_dir)
