"""Per-account quotas (server config, docs/protocol.md): each check raises a clear error.

One account must not be able to grow the server's data, or another account's, without
bound: pending friend requests each way, rooms created, uploads kept and their bytes,
and messages waiting for one recipient. Counting queries stop at the limit, so a
check costs at most `limit` index entries even for an account far over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from common.errors import RequestError

if TYPE_CHECKING:
    from server.dispatch import Context


# Each counts the rows of one account, reading no more than the limit (last parameter).
_REQUESTS_OUT = (
    "SELECT count(*) FROM (SELECT 1 FROM friends WHERE from_user_id = ? AND accepted = 0 LIMIT ?)"
)
_REQUESTS_IN = (
    "SELECT count(*) FROM (SELECT 1 FROM friends WHERE to_user_id = ? AND accepted = 0 LIMIT ?)"
)
_ROOMS_CREATED = "SELECT count(*) FROM (SELECT 1 FROM rooms WHERE created_by = ? LIMIT ?)"
_UPLOADS_KEPT = "SELECT count(*) FROM (SELECT 1 FROM attachments WHERE uploader_id = ? LIMIT ?)"
_UNDELIVERED = (
    "SELECT count(*) FROM (SELECT 1 FROM chat_history WHERE recipient_id = ? AND sent = 0 LIMIT ?)"
)


def _count(ctx: Context, query: str, owner: int, limit: int) -> int:
    return int(ctx.db.scalar(query, (owner, limit)))


def check_friend_request(ctx: Context, from_id: int, to_id: int, to_name: str) -> None:
    out_limit = ctx.config.max_friend_requests_out
    if _count(ctx, _REQUESTS_OUT, from_id, out_limit) >= out_limit:
        raise RequestError(
            "too_many_friend_requests",
            f"you have {out_limit} friend requests waiting; wait for answers first",
        )
    in_limit = ctx.config.max_friend_requests_in
    if _count(ctx, _REQUESTS_IN, to_id, in_limit) >= in_limit:
        raise RequestError(
            "friend_requests_full", f"{to_name} has too many friend requests waiting", "username"
        )


def check_room_creation(ctx: Context, user_id: int) -> None:
    limit = ctx.config.max_rooms_per_account
    if _count(ctx, _ROOMS_CREATED, user_id, limit) >= limit:
        raise RequestError("too_many_rooms", f"an account may create at most {limit} groups")


def check_upload(ctx: Context, user_id: int, size: int) -> None:
    """Uploads the account keeps on the server (finished or not) and their bytes."""
    limit = ctx.config.max_uploads_per_account
    if _count(ctx, _UPLOADS_KEPT, user_id, limit) >= limit:
        raise RequestError(
            "upload_quota_exceeded", f"you keep {limit} files on the server; that is the limit"
        )
    total = int(
        ctx.db.scalar(
            "SELECT coalesce(sum(size), 0) FROM attachments WHERE uploader_id = ?", (user_id,)
        )
    )
    budget = ctx.config.max_upload_bytes_per_account
    if total + size > budget:
        raise RequestError(
            "upload_quota_exceeded",
            f"your files on the server would exceed {budget} bytes",
            "size",
        )


def check_inboxes(ctx: Context, recipients: Mapping[str, int]) -> None:
    """Refuse a message for a recipient who already has the limit waiting undelivered."""
    limit = ctx.config.max_undelivered_per_recipient
    for name, user_id in recipients.items():
        if _count(ctx, _UNDELIVERED, user_id, limit) >= limit:
            raise RequestError(
                "recipient_inbox_full",
                f"{name} has {limit} messages waiting; try again after they log in",
                "target",
            )
