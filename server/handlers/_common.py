"""Lookups most handlers share: who is asking, and the users they name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.errors import RequestError
from server.storage import users
from server.storage.attachment_files import AttachmentFiles

if TYPE_CHECKING:
    from server.dispatch import Context

USERNAME_MAX = 256  # longer than any valid name: longer input cannot match anyone


def caller(ctx: Context) -> tuple[int, str]:
    """The logged-in user's (id, username); the dispatcher already refused anonymous calls."""
    if ctx.user_id is None or ctx.username is None:
        raise RequestError("not_authenticated", "log in first")
    return ctx.user_id, ctx.username


def existing_user(ctx: Context, username: str) -> users.User:
    user = users.by_username(ctx.db, username)
    if user is None:
        raise RequestError("user_not_found", f"there is no user called {username!r}", "username")
    return user


def attachment_files(ctx: Context) -> AttachmentFiles:
    return AttachmentFiles(ctx.services.data_dir / "attachments")
