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
from server.storage import messages

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


#: A recipient's undelivered messages (read up to the limit: last parameter) and the
#: newest envelope id, in one statement: one snapshot for both.
_UNDELIVERED_AND_NEWEST = (
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM delivery_cursors c"
    " JOIN envelopes e ON e.conversation = c.conversation AND e.id > c.delivered"
    " WHERE c.user_id = ?1 AND e.sender_id <> ?1 AND e.recipient_id IN (0, ?1) LIMIT ?2) AS q),"
    " (SELECT coalesce(max(id), 0) FROM envelopes)"
)
#: A cluster node reads the newest envelope id again when its copy is older than this.
NEWEST_REFRESH_MS = 100


class _Bound:
    """One recipient's bound: the exact count, the newest envelope id it saw, this
    node's stored envelopes then, and the messages this node admitted since."""

    __slots__ = ("admitted", "counted", "newest", "own_stored")

    def __init__(self, counted: int, newest: int, own_stored: int) -> None:
        self.counted = counted
        self.newest = newest
        self.own_stored = own_stored
        self.admitted = 0


class InboxBounds:
    """Upper bounds on each recipient's undelivered messages, kept between requests.

    The exact count reads up to `limit` index entries, so counting it for every message
    made filling a recipient's backlog quadratic. A bound only grows by the messages
    admitted since the count; deliveries, the retention sweep, refused or duplicate
    sends only make the true count smaller than the bound. So a bound below the limit
    proves there is room, and the exact count runs only when the bound reaches the
    limit (and then replaces it).

    In a cluster other nodes admit messages too, and this node does not see them. Each
    envelope adds at most one to any recipient's count, and envelope ids grow (writers
    commit in id order: `server.storage.postgres`'s write-order lock). So the count also
    notes the newest id it saw, and a bound adds every envelope stored since by another
    node: the ids above that newest one, less this node's own envelopes (already in
    its admitted messages). The node learns the newest id from its own stores
    (`stored`) and, in a cluster, reads it again when its copy is older than
    `NEWEST_REFRESH_MS`: what another node stored within that time is the most the
    quota can be passed by (as one turn's messages can pass it on one node).
    Reactor thread only.
    """

    def __init__(self) -> None:
        self._bounds: dict[int, _Bound] = {}
        #: The newest envelope id known committed, and when it was last read (ms).
        self._newest = 0
        self._newest_read_ms: int | None = None
        #: Envelopes this node stored (committed), in all.
        self._own_stored = 0

    def stored(self, row_ids: list[int]) -> None:
        """A turn's new envelopes were committed (reactor thread, after the commit)."""
        if row_ids:
            self._newest = max(self._newest, *row_ids)
            self._own_stored += len(row_ids)

    def has_room(self, ctx: Context, user_id: int, limit: int) -> bool:
        """Whether one more message fits; if so it is counted in the bound."""
        if ctx.sessions.spans_nodes:
            self._refresh_newest(ctx)
        entry = self._bounds.get(user_id)
        if entry is None or self._bound(entry) >= limit:
            counted, newest = _count_and_newest(ctx, user_id, limit)
            self._newest = max(self._newest, newest)
            entry = self._bounds[user_id] = _Bound(counted, newest, self._own_stored)
        if self._bound(entry) >= limit:
            return False
        entry.admitted += 1
        return True

    def _bound(self, entry: _Bound) -> int:
        others = (self._newest - entry.newest) - (self._own_stored - entry.own_stored)
        return entry.counted + entry.admitted + max(0, others)

    def _refresh_newest(self, ctx: Context) -> None:
        now = ctx.now()
        if self._newest_read_ms is None or now - self._newest_read_ms >= NEWEST_REFRESH_MS:
            self._newest = max(self._newest, messages.newest_id(ctx.db))
            self._newest_read_ms = now


def _count_and_newest(ctx: Context, user_id: int, limit: int) -> tuple[int, int]:
    row = ctx.db.one(_UNDELIVERED_AND_NEWEST, (user_id, limit))
    if row is None:  # an aggregate always has its row
        raise RuntimeError("the inbox count returned no row")
    return int(row[0]), int(row[1])


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
