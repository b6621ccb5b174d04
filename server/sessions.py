"""Who is online, on which connection; one login per account.

A new login of a user who is already online takes the session over: the old
connection is told why and from where (`KICKED`), marked `replaced` so its close
is not reported as the user going offline, and closed once that push is written.
Only the reactor thread uses this object.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common.protocol.message import Message, push
from common.protocol.opcodes import MessageType
from server.net.connection import Connection

log = logging.getLogger(__name__)

KICK_REASON = "logged_in_elsewhere"


class Sessions:
    """user_id -> the Connection that is that user's live session."""

    #: True when other nodes hold sessions too (cluster mode): pushes may need `relay`.
    spans_nodes = False

    def __init__(self) -> None:
        self._by_user: dict[int, Connection] = {}

    def bind(self, connection: Connection, user_id: int, username: str) -> Connection | None:
        """Make `connection` the session of `user_id`; return the connection it replaced."""
        previous = self._by_user.get(user_id)
        if previous is connection:
            return None
        if connection.user_id is not None and connection.user_id != user_id:
            self.unbind(connection)
        self._by_user[user_id] = connection
        connection.user_id = user_id
        connection.username = username
        log.info("user %s came online from %s", username, connection.address)
        if previous is None:
            return None
        previous.replaced = True
        previous.send(
            push(MessageType.KICKED, {"reason": KICK_REASON, "address": connection.address})
        )
        previous.close_after_flush(f"user {username} logged in from {connection.address}")
        return previous

    def unbind(self, connection: Connection) -> bool:
        """Detach the user from `connection`; True if it was that user's live session."""
        user_id = connection.user_id
        connection.user_id = None
        connection.username = None
        if user_id is None or self._by_user.get(user_id) is not connection:
            return False
        del self._by_user[user_id]
        return True

    def is_online(self, user_id: int) -> bool:
        return user_id in self._by_user

    def connection_for(self, user_id: int) -> Connection | None:
        return self._by_user.get(user_id)

    def online_user_ids(self) -> list[int]:
        return list(self._by_user)

    def relay(self, user_ids: Sequence[int], message: Message) -> bool:
        """Hand a push for users not held here to the nodes holding them; True if any.

        One node holds every session, so nothing to do here; cluster mode overrides it
        (server/cluster/node.py).
        """
        del user_ids, message
        return False

    @property
    def online_count(self) -> int:
        return len(self._by_user)
