"""The outbox: a message is stored, with its SEND_MESSAGE params, before it is sent.

A message leaves the outbox only when the server said it stored it (REPLY: `sent`) or
refused it for good (ERROR: `failed`). Anything else (a timeout, a lost connection)
leaves it queued, and `replay()` sends the very same params, same message id, after the
next login: the server treats a repeated id as a no-op, so retries never duplicate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from client.core.models import ChatMessage, MessageStatus
from common.errors import ConnectionLost, ProtocolError, RequestError, RequestTimeout
from common.protocol import codec

log = logging.getLogger(__name__)

#: Errors after which the same request may well succeed later.
#: Refusals after which the message stays queued for the next login's replay:
#: `not_authenticated` comes back when a send races a reconnect (the new connection is
#: up, its login not done yet), e.g. while moving to another cluster node.
TRANSIENT_ERRORS = frozenset({"server_busy", "internal_error", "not_authenticated"})
#: The recipients changed (a room member joined): rebuild the envelopes once and retry.
STALE_ENVELOPES = "missing_envelope"
# A SEND_MESSAGE must fit one record the server accepts (its cap is 1 MiB + 128 KiB by
# default). A bigger one would get the connection closed, and the outbox would resend
# it after every reconnect: refuse it here instead, before anything is stored.
MAX_SEND_BYTES = 1024 * 1024


def _encoded_within_limit(params: dict[str, Any]) -> bytes:
    encoded = codec.encode(params)
    if len(encoded) > MAX_SEND_BYTES:
        raise RequestError(
            "message_too_large",
            "this message is too large to send (long text to a large group?)",
            "text",
        )
    return encoded


class OutboxStore(Protocol):
    """The slice of `LocalStore` the outbox needs."""

    def add_message(self, m: ChatMessage) -> bool: ...

    def get_message(self, message_id: str) -> ChatMessage | None: ...

    def set_status(self, message_id: str, status: MessageStatus) -> None: ...

    def outbox_add(self, message_id: str, params: bytes) -> None: ...

    def outbox_pending(self) -> list[tuple[str, bytes]]: ...

    def outbox_remove(self, message_id: str) -> None: ...


SendFunction = Callable[[dict[str, Any]], dict[str, Any]]
RebuildFunction = Callable[[ChatMessage, dict[str, Any]], dict[str, Any]]
StatusListener = Callable[[str, MessageStatus], None]
#: Told of params refused for good: the chain state they carried never arrived
#: (`ChainBook.dropped` sends it again with the next envelope).
DroppedListener = Callable[[dict[str, Any]], None]


class Outbox:
    """Durable sending of SEND_MESSAGE requests with status tracking."""

    def __init__(
        self,
        store: OutboxStore,
        *,
        send: SendFunction,
        rebuild: RebuildFunction,
        on_status: StatusListener,
        on_dropped: DroppedListener | None = None,
    ) -> None:
        self._store = store
        self._send = send
        self._rebuild = rebuild
        self._on_status = on_status
        self._on_dropped = on_dropped
        self._replay_lock = threading.Lock()

    def submit(self, message: ChatMessage, params: dict[str, Any]) -> ChatMessage:
        """Store `message` (status `sending`) and its params, then try to send it.

        Returns the message with its current status; raises `RequestError` only if the
        server refused it for good (the message is then stored as `failed`).
        """
        encoded = _encoded_within_limit(params)
        self._store.add_message(message)
        self._store.outbox_add(message.message_id, encoded)
        self._deliver(message.message_id, params)
        return self._store.get_message(message.message_id) or message

    def replay(self) -> int:
        """Send every queued message again, oldest first; returns how many were sent."""
        sent = 0
        with self._replay_lock:
            for message_id, raw in self._store.outbox_pending():
                params = _decode_params(raw)
                if params is None:
                    log.warning("dropping an unreadable outbox entry")
                    self._give_up(message_id)
                    continue
                try:
                    if self._deliver(message_id, params):
                        sent += 1
                except RequestError:
                    continue  # stored as failed and reported; the others still go
                except (ConnectionLost, RequestTimeout):
                    break
        return sent

    def _deliver(self, message_id: str, params: dict[str, Any]) -> bool:
        """One send attempt; True if the server stored it. Keeps it queued on transport loss."""
        try:
            self._send_with_rebuild(message_id, params)
        except RequestError as error:
            if error.code in TRANSIENT_ERRORS:
                return False
            self._give_up(message_id)
            self._dropped(params)
            raise
        except (ConnectionLost, RequestTimeout):
            return False
        self._store.set_status(message_id, "sent")
        self._store.outbox_remove(message_id)
        self._report(message_id)
        return True

    def _send_with_rebuild(self, message_id: str, params: dict[str, Any]) -> None:
        # `params` passed the size check when they were stored (`submit`, or below):
        # encoding them again here only to measure them would be wasted work.
        try:
            self._send(params)
        except RequestError as error:
            message = self._store.get_message(message_id)
            if error.code != STALE_ENVELOPES or message is None:
                raise
            fresh = self._rebuild(message, params)
            self._store.outbox_add(message_id, _encoded_within_limit(fresh))
            try:
                self._send(fresh)
            except RequestError as again:
                if again.code not in TRANSIENT_ERRORS:
                    self._dropped(fresh)  # it carried the state to everyone again
                raise

    def _dropped(self, params: dict[str, Any]) -> None:
        """Params refused for good: whoever their distributions named gets the state again."""
        if self._on_dropped is not None:
            self._on_dropped(params)

    def _give_up(self, message_id: str) -> None:
        self._store.set_status(message_id, "failed")
        self._store.outbox_remove(message_id)
        self._report(message_id)

    def _report(self, message_id: str) -> None:
        """Report the stored status: a `delivered` that raced ahead is never undone."""
        message = self._store.get_message(message_id)
        if message is not None:
            self._on_status(message_id, message.status)


def _decode_params(raw: bytes) -> dict[str, Any] | None:
    try:
        value = codec.decode(raw)
    except ProtocolError:
        return None
    return value if isinstance(value, dict) else None
