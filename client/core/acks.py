"""Delivery acknowledgements, room ones coalesced: one ACK_DELIVERY per burst, not per message.

Why: a room message to 500 online members used to cost the server 499 ACK_DELIVERY
requests (each a record opened, a cursor moved and a reply sealed), more than the
fan-out itself. The server's cursor for a conversation moves to the newest message
acknowledged there, so one request can acknowledge a whole run of room messages.
Room acknowledgements therefore wait up to `DELAY_S`, or until `MAX_IDS` are pending,
and go out together (with any direct-message acknowledgement that goes out earlier).
Direct messages are acknowledged at once: they are rare per recipient, and the backlog's
next window waits for them.

At-least-once stays: what is stored locally is only acknowledged later, so a
connection lost in between means the server pushes it again after the next login, and
the inbox recognises the id (stored already) and acknowledges it then. Nothing is
shown twice and nothing acknowledged is lost.

Only the push thread adds and flushes; `due_in` tells its queue wait how long it may
sleep. The clock is injectable so tests are exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from common.errors import ConnectionLost, RequestError, RequestTimeout

log = logging.getLogger(__name__)

#: A room acknowledgement waits at most this long.
DELAY_S = 0.25
#: ... or until this many ids wait; a backlog window (hundreds of messages) goes at once.
MAX_IDS = 64


class DeliveryAcks:
    """Pending acknowledgements of one session, sent through `send` (ACK_DELIVERY)."""

    def __init__(
        self,
        send: Callable[[list[str]], None],
        *,
        delay_s: float | None = None,
        max_ids: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._delay_s = DELAY_S if delay_s is None else delay_s  # read now: tests change it
        self._max_ids = MAX_IDS if max_ids is None else max_ids
        self._clock = clock
        self._pending: dict[str, None] = {}  # insertion-ordered, no repeats
        self._since: float | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, message_ids: Sequence[str], *, defer: bool) -> None:
        """Acknowledge `message_ids`: later if `defer` (room messages), else now.

        Whatever waits goes out with an acknowledgement sent now, and a full batch
        goes at once.
        """
        if not message_ids:
            return
        if not self._pending:
            self._since = self._clock()
        self._pending.update(dict.fromkeys(message_ids))
        if not defer or len(self._pending) >= self._max_ids:
            self.flush()

    def due_in(self) -> float | None:
        """Seconds until the pending acknowledgements are due; None when nothing waits."""
        if self._since is None:
            return None
        return max(0.0, self._since + self._delay_s - self._clock())

    def flush_if_due(self) -> None:
        remaining = self.due_in()
        if remaining is not None and remaining <= 0:
            self.flush()

    def flush(self) -> None:
        """Send everything pending now. A failure leaves it to the server to push again."""
        if not self._pending:
            return
        ids = list(self._pending)
        self._pending.clear()
        self._since = None
        try:
            self._send(ids)
        except (ConnectionLost, RequestTimeout, RequestError) as exc:
            log.info("acknowledgement not sent (%s); the server will re-deliver", exc)
