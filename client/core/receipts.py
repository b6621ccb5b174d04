"""Delivery and read receipts, sealed by the recipient's client (DESIGN.md section 3b).

The server's acknowledgement of a SEND_MESSAGE means "sent" and nothing more: a server
could drop a message and still claim it was delivered. So a recipient's client, once it
has stored a friend's messages, seals a receipt back on its own sender chain for that
chat ("delivered"), and another when they were shown in a focused window ("read").
Only these move an outgoing message to delivered or read; a receipt may only speak of
messages we sent to the friend who seals it.

Room messages get no receipts: 499 receipts per message in a 500-member room would cost
more than the message itself, and a room shows "sent" (docs/architecture.md).

The same sender carries the other control bodies (`client.core.control_bodies`: a
request for a chain's state, a copy of it), to a friend or to a room: they need the same
care, since each uses keys of our chain too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from client.core.binding import bind_chat
from client.core.chains import ChainBook, direct_conversation, room_conversation
from client.core.control_bodies import MAX_RECEIPT_IDS, Receipt, receipt_body
from client.core.models import ChatKind, ChatMessage, MessageStatus
from common.crypto.kem import SignedKemKey
from common.errors import (
    ConnectionLost,
    EndToEndError,
    ProtocolError,
    RequestError,
    RequestTimeout,
)
from common.protocol import codec
from common.protocol.ids import time_ordered_id
from common.protocol.opcodes import MessageType

log = logging.getLogger(__name__)

Request = Callable[[MessageType, dict[str, Any] | None], dict[str, Any]]


RETRY_SECONDS = 2.0
#: Answers that mean "not now" (a session being re-established, a busy server).
WAIT_CODES = frozenset({"not_authenticated", "server_busy", "internal_error"})
MAX_PENDING = 1000  # receipts waiting for a connection, then the oldest go
MAX_TIMER_RUNS = 150  # five minutes of retries every RETRY_SECONDS


class ControlRecipients(Protocol):
    """The slice of `Recipients` a control body needs: the verified KEM keys."""

    def direct(self, username: str, *, refresh: bool = False) -> dict[str, SignedKemKey | None]: ...

    def room(
        self, room_id: int, me: str, *, refresh: bool = False
    ) -> tuple[dict[str, SignedKemKey | None], bytes]: ...


class ReceiptQueue(Protocol):
    """The slice of `LocalStore` keeping sealed receipts until the server took them."""

    def queue_receipt(self, message_id: str, params: bytes) -> None: ...

    def queued_receipts(self) -> list[tuple[str, bytes]]: ...

    def drop_receipt(self, message_id: str) -> None: ...


class ReceiptSender:
    """Seals and sends receipts and other control bodies. One that cannot go now (no
    connection: a receipt for a backlog pushed right after login may be handled before
    the link is up) is retried a moment later, and after every login (`flush`).

    A receipt not sealed yet waits in memory (losing it loses only a receipt). A sealed
    one waits in the store (`ReceiptQueue`): it used keys of our chain, and the first
    envelope of a chain carries the chain's state to the friend; dropped with the
    client, it would leave every later envelope of that chain unreadable to them. One
    the server refuses for good is dropped, and our chain's state goes again with the
    next envelope (`ChainBook.dropped`).
    """

    def __init__(
        self,
        *,
        username: str,
        chains: ChainBook,
        recipients: ControlRecipients,
        request: Request,
        clock: Callable[[], int],
        queue: ReceiptQueue,
    ) -> None:
        self._username = username
        self._chains = chains
        self._recipients = recipients
        self._request = request
        self._clock = clock
        self._queue = queue
        self._lock = threading.Lock()
        self._pending: list[Callable[[], None]] = []
        self._timer: threading.Timer | None = None
        self._timer_runs = 0  # flushes by the timer since the last login

    def send(self, peer: str, state: str, ids: list[str]) -> None:
        for start in range(0, len(ids), MAX_RECEIPT_IDS):
            part = ids[start : start + MAX_RECEIPT_IDS]
            self.send_control("user", peer, receipt_body(state, part), f"{state} receipt")

    def send_control(
        self, chat_kind: ChatKind, target: str, body: bytes, what: str = "control message"
    ) -> None:
        """Seal a control body (`client.core.control_bodies`) for a friend or a room, and
        send it as reliably as a receipt."""
        try:
            params = self._seal(chat_kind, target, body)
        except (ConnectionLost, RequestTimeout) as exc:  # nothing sealed yet
            log.info("a %s waits for the connection: %s", what, exc)
            self._park(partial(self.send_control, chat_kind, target, body, what))
            return
        except RequestError as exc:
            if exc.code in WAIT_CODES:  # reconnected but not logged in yet
                self._park(partial(self.send_control, chat_kind, target, body, what))
            else:
                log.info("a %s was not sent: %s", what, exc.code)
            return
        except EndToEndError as exc:
            log.info("a %s was not sent: %s", what, exc)
            return
        # kept before it goes: a client closed while the request is out keeps it too
        if self._keep(str(params["message_id"]), params):
            self._deliver(params)

    def flush(self, *, timer: bool = False) -> None:
        """Send what waited for a connection (called after login and by the retry timer):
        sealed receipts from the store first (older, and maybe from a run before this
        one), then those waiting to be sealed."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._timer = None
            self._timer_runs = self._timer_runs + 1 if timer else 0
        try:
            queued = self._queue.queued_receipts()
        except RequestError:  # logged out meanwhile: the store is closed
            queued = []
        for message_id, encoded in queued:
            try:
                params = codec.decode(encoded)
            except ProtocolError:
                log.warning("dropping a queued receipt that does not decode")
                self._drop(message_id)
                continue
            if not isinstance(params, dict) or not self._deliver(params):
                break  # still no connection: the rest wait too
        for retry in pending:
            retry()

    def _park(self, retry: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(retry)
            del self._pending[:-MAX_PENDING]
            # the timer gives up after a while (logged out?); the next login flushes
            if self._timer is None and self._timer_runs < MAX_TIMER_RUNS:
                self._timer = threading.Timer(RETRY_SECONDS, partial(self.flush, timer=True))
                self._timer.daemon = True
                self._timer.start()

    def _seal(self, chat_kind: ChatKind, target: str, body: bytes) -> dict[str, Any]:
        member_hash: bytes | None = None
        label: str | int
        if chat_kind == "user":
            recipients = self._recipients.direct(target)
            label = next(iter(recipients))
            conversation = direct_conversation(self._username, label)
        else:
            label = int(target)
            recipients, member_hash = self._recipients.room(label, self._username)
            conversation = room_conversation(label)
        now = self._clock()
        sealed = self._chains.seal(
            conversation=conversation,
            recipients=recipients,
            body=bind_chat(body, chat_kind, str(label)),
            member_hash=member_hash,
            sent_ms=now,
        )
        params: dict[str, Any] = {
            "message_id": time_ordered_id(),
            "target_type": chat_kind,
            "target": label,
            "time": now,
            "envelope": sealed.envelope,
            "distributions": sealed.distributions,
            "attachments": [],
        }
        if member_hash is not None:
            params["member_hash"] = member_hash
        return params

    def _deliver(self, params: dict[str, Any]) -> bool:
        """Send sealed params, already in the queue (`_keep`); False if they stay there
        for a connection.

        They wait as they are (they may carry our chain's state, and resending the same
        id is a no-op on the server).
        """
        message_id = str(params["message_id"])
        try:
            self._request(MessageType.SEND_MESSAGE, params)
        except (ConnectionLost, RequestTimeout) as exc:
            log.info("a receipt waits for the connection: %s", exc)
            self._park(_nothing)  # it is in the queue: the timer's flush sends it
            return False
        except RequestError as exc:
            if exc.code in WAIT_CODES:
                self._park(_nothing)
                return False
            log.info("a receipt was refused: %s", exc.code)
            self._refused(params)
        self._drop(message_id)
        return True

    def _keep(self, message_id: str, params: dict[str, Any]) -> bool:
        """Put sealed params in the queue (a no-op if they are there); False if the
        store is closed (logged out), when nothing can wait or go."""
        try:
            self._queue.queue_receipt(message_id, codec.encode(params))
        except RequestError as exc:
            log.info("a receipt was dropped: %s", exc.code)
            return False
        return True

    def _drop(self, message_id: str) -> None:
        with contextlib.suppress(RequestError):  # a store closed by logout keeps it
            self._queue.drop_receipt(message_id)

    def _refused(self, params: dict[str, Any]) -> None:
        """The chain state these params carried never reached those friends: again."""
        with contextlib.suppress(RequestError):  # logged out: the store is closed
            self._chains.dropped(params)


def _nothing() -> None:
    """A parked retry with nothing of its own: the timer's flush sends the queue."""


class ReceiptStore(Protocol):
    """The slice of `LocalStore` applying a receipt needs."""

    def get_message(self, message_id: str) -> ChatMessage | None: ...

    def set_status(self, message_id: str, status: MessageStatus) -> None: ...


def apply_receipt(
    store: ReceiptStore,
    sender: str,
    receipt: Receipt,
    report: Callable[[str], None],
) -> int:
    """Move our messages to `sender` to delivered/read; ids of anything else are ignored."""
    status: MessageStatus = "read" if receipt.state == "read" else "delivered"
    moved = 0
    for message_id in receipt.ids:
        message = store.get_message(message_id)
        if message is None or not message.outgoing or message.chat_kind != "user":
            continue
        if message.chat_id != sender:
            log.warning("a receipt from %s named a message sent to someone else", sender)
            continue
        store.set_status(message_id, status)
        report(message_id)
        moved += 1
    return moved
