"""Acknowledgements of room messages, gathered for a moment and sent as one.

Why: a room message reaches every member, and if each member acknowledged each message
on its own, a 500-member room would cost the server 499 requests per message, more
than the message itself. An acknowledgement only moves this user's delivery cursor on
the server (what to push again after a reconnect), so it can wait a moment: one
ACK_DELIVERY then covers every room message of that moment. If it is lost (the
connection drops first), the server pushes those messages again and the inbox
recognises them as repeats, so nothing is shown twice.

Direct messages, and batches that are not small (a backlog window, whose
acknowledgement lets the server push the next window), are acknowledged at once, with
whatever was waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from common.errors import ConnectionLost, RequestError, RequestTimeout

log = logging.getLogger(__name__)

#: How long a room message's acknowledgement may wait for others to join it.
ACK_DELAY_SECONDS = 0.25
#: Past this many waiting ids the acknowledgement goes at once.
MAX_DEFERRED = 256


class DeferredAcks:
    """Room acknowledgements waiting up to `delay` seconds; everything else at once.

    `send` is the blocking ACK_DELIVERY request. `now` raises what `send` raises (the
    inbox logs it: the server will push again); the timer's flush logs it itself.
    """

    def __init__(
        self,
        send: Callable[[list[str]], None],
        *,
        delay: float = ACK_DELAY_SECONDS,
        max_deferred: int = MAX_DEFERRED,
    ) -> None:
        self._send = send
        self._delay = delay
        self._max_deferred = max_deferred
        self._lock = threading.Lock()
        self._waiting: list[str] = []
        self._timer: threading.Timer | None = None
        self._closed = False

    def now(self, message_ids: list[str]) -> None:
        """Acknowledge these, and whatever was waiting, in one request."""
        batch = self._take() + list(message_ids)
        if batch:
            self._send(batch)

    def defer(self, message_ids: list[str]) -> None:
        """Acknowledge these within `delay` seconds, together with any others by then."""
        with self._lock:
            if self._closed:
                return
            self._waiting.extend(message_ids)
            if len(self._waiting) < self._max_deferred:
                if self._timer is None:
                    self._timer = threading.Timer(self._delay, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.now([])

    def flush(self) -> None:
        """Send what is waiting (the timer calls this); a failure is only logged."""
        try:
            self.now([])
        except (ConnectionLost, RequestTimeout, RequestError) as exc:
            log.info("acknowledgement not sent (%s); the server will push again", exc)

    def close(self) -> None:
        """The session ends: stop the timer. Unsent ids are pushed again next login."""
        with self._lock:
            self._closed = True
        self._take()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _take(self) -> list[str]:
        with self._lock:
            waiting, self._waiting = self._waiting, []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        return waiting
