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
    "SELECT count(*) FROM (SELECT 1 FROM friends WHERE from_user_id = ? AND accepted = 0"
    " LIMIT ?) AS q"
)
_REQUESTS_IN = (
    "SELECT count(*) FROM (SELECT 1 FROM friends WHERE to_user_id = ? AND accepted = 0"
    " LIMIT ?) AS q"
)
_ROOMS_CREATED = "SELECT count(*) FROM (SELECT 1 FROM rooms WHERE created_by = ? LIMIT ?) AS q"
_UPLOADS_KEPT = (
    "SELECT count(*) FROM (SELECT 1 FROM attachments WHERE uploader_id = ? LIMIT ?) AS q"
)
_UNDELIVERED = (
    "SELECT count(*) FROM (SELECT 1 FROM delivery_cursors c"
    " JOIN envelopes e ON e.conversation = c.conversation AND e.id > c.delivered"
    " WHERE c.user_id = ?1 AND e.sender_id <> ?1 AND e.recipient_id IN (0, ?1) LIMIT ?2) AS q"
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


class InboxBounds:
    """Upper bounds on each recipient's undelivered messages, kept between requests.

    The exact count reads up to `limit` index entries, so counting it for every message
    made filling a recipient's backlog quadratic. A bound only grows by the messages
    this server admits; deliveries, the retention sweep, refused or duplicate sends only
    make the true count smaller than the bound. So a bound below the limit proves there
    is room, and the exact count runs only when the bound reaches the limit (and then
    replaces it). Reactor thread only, one server process.
    """

    def __init__(self) -> None:
        self._bounds: dict[int, int] = {}

    def has_room(self, ctx: Context, user_id: int, limit: int) -> bool:
        """Whether one more message fits; if so it is counted in the bound."""
        bound = self._bounds.get(user_id)
        if bound is None or bound >= limit:
            bound = _count(ctx, _UNDELIVERED, user_id, limit)
        if bound >= limit:
            self._bounds[user_id] = bound
            return False
        self._bounds[user_id] = bound + 1
        return True


def check_inboxes(ctx: Context, recipients: Mapping[str, int]) -> None:
    """Refuse a message for a recipient who already has the limit waiting undelivered."""
    limit = ctx.config.max_undelivered_per_recipient
    for name, user_id in recipients.items():
        if not ctx.services.inbox_bounds.has_room(ctx, user_id, limit):
            raise RequestError(
                "recipient_inbox_full",
                f"{name} has {limit} messages waiting; try again after they log in",
                "target",
            )
