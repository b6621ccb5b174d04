"""Asking a sender again for its chain's state, and answering when we are asked.

Why it exists: the first envelope of a sender's chain (or the first after we joined)
carries our copy of the chain's state. If that envelope never reaches us (lost between
a client and a node that died, or refused), every later envelope of the chain is held,
unreadable (`client.core.inbox`). As Signal's retry receipts do, the member holding
them asks the sender, in a `chain_request` sealed on its own chain for the same
conversation (`client.core.control_bodies`); the sender's client gives its copy
again, the state that member was first given and no earlier one (`ChainBook.asked`),
in a `chain_copy` envelope sent at once. The held envelopes then open.

Asking waits `ASK_DELAY` first: a distribution delivered just after the envelopes
that need it (deliveries are not ordered across a node's move) comes in a moment, and
is not worth a request. A request unanswered is repeated every `ASK_AGAIN` seconds, at
most `MAX_ASKS` times per chain while logged in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from client.core.bodies import Delivery
from client.core.control_bodies import chain_copy_body, chain_request_body
from client.core.models import ChatKind

log = logging.getLogger(__name__)

ASK_DELAY = 3.0
ASK_AGAIN = 20.0
MAX_ASKS = 5

Schedule = Callable[[float, Callable[[], None]], None]
MissingKey = tuple[str, str, bytes]  # conversation, sender, chain id


class ControlSending(Protocol):
    """The slice of `ReceiptSender` this needs: seal and send a control body."""

    def send_control(
        self, chat_kind: ChatKind, target: str, body: bytes, what: str = ...
    ) -> None: ...


class ChainKnowledge(Protocol):
    """The slice of `ChainBook` this needs."""

    def knows(self, conversation: str, sender: str, chain_id: bytes) -> bool: ...

    def asked(self, conversation: str, requester: str, chain_id: bytes) -> bool: ...


@dataclass
class _Missing:
    """A sender's chain we hold envelopes of, and where to ask for it."""

    chat_kind: ChatKind
    target: str  # the friend, or the room id
    asks: int = 0


class ChainRecovery:
    """See the module docstring. The inbox calls `missing` and `requested`."""

    def __init__(
        self,
        *,
        chains: ChainKnowledge,
        control: ControlSending,
        schedule: Schedule | None = None,
    ) -> None:
        self._chains = chains
        self._control = control
        self._schedule = schedule or self._timer
        self._lock = threading.Lock()
        self._missing: dict[MissingKey, _Missing] = {}
        self._timers: set[threading.Timer] = set()
        self._closed = False

    def missing(self, delivery: Delivery, conversation: str, chain_id: bytes) -> None:
        """We hold an envelope of `delivery.sender`'s chain `chain_id`: ask in a moment."""
        key = (conversation, delivery.sender, chain_id)
        with self._lock:
            if self._closed or key in self._missing:
                return
            self._missing[key] = _Missing(delivery.target_type, _target_of(delivery))
        self._schedule(ASK_DELAY, lambda: self._ask(key))

    def requested(self, delivery: Delivery, conversation: str, chain_id: bytes) -> None:
        """`delivery.sender` asks for its copy of our chain `chain_id`."""
        if not self._chains.asked(conversation, delivery.sender, chain_id):
            log.info("%s asked for a chain of ours it was never given", delivery.sender)
            return
        log.info("giving %s its copy of our chain state again", delivery.sender)
        self._control.send_control(
            delivery.target_type, _target_of(delivery), chain_copy_body(), "chain copy"
        )

    def close(self) -> None:
        """Logged out: ask no more."""
        with self._lock:
            self._closed = True
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()

    def _ask(self, key: MissingKey) -> None:
        conversation, sender, chain_id = key
        with self._lock:
            entry = self._missing.get(key)
            if self._closed or entry is None:
                return
        if self._chains.knows(conversation, sender, chain_id):
            with self._lock:
                self._missing.pop(key, None)
            return
        if entry.asks >= MAX_ASKS:
            log.warning("%s never gave a chain's state asked for %d times", sender, MAX_ASKS)
            return  # the entry stays: not asked again while logged in
        entry.asks += 1
        log.info("asking %s for a chain's state (held envelopes need it)", sender)
        self._control.send_control(
            entry.chat_kind, entry.target, chain_request_body(sender, chain_id), "chain request"
        )
        self._schedule(ASK_AGAIN, lambda: self._ask(key))

    def _timer(self, delay: float, action: Callable[[], None]) -> None:
        def run() -> None:
            with self._lock:
                self._timers.discard(timer)
            action()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._timers.add(timer)
        timer.start()


def _target_of(delivery: Delivery) -> str:
    """Where a control body about this delivery goes: its sender, or its room."""
    return delivery.sender if delivery.target_type == "user" else str(delivery.target)
