"""Fan-out: one push to many users' live sessions.

Each recipient connection gets exactly one copy, however often its user appears in
the list. The message is serialised once; only the record encryption, whose keys
differ per connection, is done per recipient (with the rest of that connection's
output of the turn, in one record).
"""

from __future__ import annotations

from collections.abc import Iterable

from common.protocol.message import Message, encode_message
from server.sessions import Sessions


def send_to_users(sessions: Sessions, user_ids: Iterable[int], message: Message) -> int:
    """Queue `message` on the live session of each user; return how many got it."""
    body: bytes | None = None
    delivered = 0
    for user_id in dict.fromkeys(user_ids):
        connection = sessions.connection_for(user_id)
        if connection is None or not connection.is_open:
            continue
        if body is None:
            body = encode_message(message)
        connection.send_encoded(body)
        delivered += 1
    return delivered
