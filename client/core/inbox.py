"""NEW_MESSAGE batches: open, store (committed), acknowledge, then announce.

Messages come sealed on their sender's chain (end-to-end v2, `client.core.chains`);
the first message of a chain (or the first after we joined, or after a rotation)
carries the chain's state sealed to us. Envelopes of version 1, which the server
stored before the upgrade, still open with the static keys.

A bad envelope is still stored, as a visible placeholder, and acknowledged, so it
cannot jam the queue. Two kinds of delivery are kept aside instead (in the local
store, so they survive a restart, and acknowledged, since the server's cursor only
moves forward): those of a sender whose key changed, until the user trusts the new
key; and those on a chain whose state has not reached us yet (the server delivered
them before the message carrying it), tried again when that sender's state arrives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from client.core.bodies import Delivery
from client.core.chains import ChainBook, Opened, direct_conversation, room_conversation
from client.core.control_bodies import ChainRequest, Control, Receipt, parse_control
from client.core.models import ChatMessage
from client.core.trust import CertificateBook, Identity, KeyChangedError
from common.crypto.certs import UserCertificate
from common.crypto.envelope_v2 import VERSION as ENVELOPE_V2
from common.crypto.envelope_v2 import envelope_header, verify_envelope_signature
from common.errors import (
    CertificateError,
    ConnectionLost,
    CryptoError,
    EndToEndError,
    ProtocolError,
    RemoteProtocolError,
    RequestError,
    RequestTimeout,
)
from common.protocol import codec

log = logging.getLogger(__name__)


class InboxStore(Protocol):
    def add_messages(self, ms: Sequence[ChatMessage]) -> list[bool]: ...

    def hold_delivery(self, message_id: str, sender: str, delivery: bytes) -> None: ...

    def held_deliveries(self, sender: str) -> list[bytes]: ...

    def drop_held(self, sender: str) -> None: ...

    def held_senders(self) -> list[str]: ...


@dataclass(frozen=True)
class ChainNotice:
    """Something about a sender's chain the user should see (a server misbehaving)."""

    sender: str
    chat_kind: str
    chat_id: str
    kind: str  # "replayed_distribution" | "bad_distribution"


#: Room batches smaller than this may have their acknowledgement deferred; a larger one
#: is a backlog window, and the server pushes the next only once it is acknowledged.
DEFER_BATCH = 32
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000  # sender and server clocks further apart are flagged


#: (the delivery, its conversation, a chain id): see `client.core.chain_recovery`
ChainCallback = Callable[[Delivery, str, bytes], None]


class _Consumed(Exception):
    """Acknowledge this delivery but store no message (a receipt)."""


class _Hold(Exception):
    """Keep this delivery aside (changed key, or its chain's state not here yet)."""


def open_v1(identity: Identity, sender: UserCertificate, delivery: Delivery) -> bytes:
    return identity.open_from(sender, delivery.message_id, delivery.envelope)


class Inbox:
    """Opens and stores deliveries; see the module docstring."""

    def __init__(
        self,
        *,
        identity: Identity,
        certificates: CertificateBook,
        chains: ChainBook,
        store: InboxStore,
        acknowledge: Callable[[list[str]], None],
        announce: Callable[[ChatMessage], None],
        gossip: Callable[[str, bytes], None] | None = None,
        notice: Callable[[ChainNotice], None] | None = None,
        opened: Callable[[ChatMessage, Opened], None] | None = None,
        on_receipt: Callable[[str, Receipt], object] | None = None,
        delivered: Callable[[str, list[str]], None] | None = None,
        defer_acknowledge: Callable[[list[str]], None] | None = None,
        missing_chain: ChainCallback | None = None,
        chain_requested: ChainCallback | None = None,
    ) -> None:
        # held envelopes of a chain whose state never came (`client.core.chain_recovery`)
        self._missing_chain = missing_chain
        self._chain_requested = chain_requested  # a member asks for our chain's state
        # room messages only, a small batch: acknowledged a moment later, with others
        # (`client.core.acks`); None: every batch is acknowledged at once
        self._defer_acknowledge = defer_acknowledge
        self._on_receipt = on_receipt  # a friend's client says it stored or read ours
        self._delivered = delivered  # we stored a friend's messages: seal a receipt
        self._gossip = gossip  # sees each opened body (key transparency tree heads)
        self._notice = notice
        self._opened = opened  # sees each v2 message with its chain position (order checks)
        self._identity = identity
        self._certificates = certificates
        self._chains = chains
        self._store = store
        self._acknowledge = acknowledge
        self._announce = announce
        self._lock = threading.Lock()

    # -- batches -------------------------------------------------------------------------

    def receive(self, raw_deliveries: Sequence[Any]) -> int:
        """Handle one batch; returns how many new messages were stored.

        Transport errors while fetching a certificate propagate before anything is
        acknowledged: the server will push the batch again.
        """
        with self._lock:
            return self._receive(raw_deliveries, acknowledge=True)

    def _receive(self, raw_deliveries: Sequence[Any], *, acknowledge: bool) -> int:
        opened: list[ChatMessage] = []
        acknowledged: list[str] = []
        retry: set[str] = set()
        rooms_only = True
        for raw in raw_deliveries:
            try:
                delivery = Delivery.parse(raw)
            except RemoteProtocolError:
                rooms_only = False
                junk_id = raw.get("message_id") if isinstance(raw, dict) else None
                if isinstance(junk_id, str):
                    acknowledged.append(junk_id)  # unreadable forever: do not loop on it
                log.warning("ignoring a malformed delivery")
                continue
            rooms_only = rooms_only and delivery.target_type == "room"
            try:
                message = self._open(delivery)
            except _Consumed:
                if delivery.distribution is not None:  # a chain copy: what waited may open
                    retry.add(delivery.sender)
                acknowledged.append(delivery.message_id)
                continue
            except _Hold:
                self._store.hold_delivery(
                    delivery.message_id, delivery.sender, codec.encode(delivery.to_dict())
                )
                acknowledged.append(delivery.message_id)
                continue
            if delivery.distribution is not None:
                retry.add(delivery.sender)
            opened.append(message)
            acknowledged.append(delivery.message_id)
        added = self._store.add_messages(opened) if opened else []
        if acknowledged and acknowledge:
            try:
                self._send_acknowledgement(acknowledged, rooms_only=rooms_only)
            except (ConnectionLost, RequestTimeout, RequestError) as exc:
                log.info("acknowledgement not sent (%s); the server will re-deliver", exc)
        new = [message for message, is_new in zip(opened, added, strict=True) if is_new]
        for message in new:
            self._announce(message)
        self._receipt_for(new)
        count = len(new)
        for sender in sorted(retry):  # a chain's state arrived: what waited for it may open
            count += self._release(sender)
        return count

    def _send_acknowledgement(self, message_ids: list[str], *, rooms_only: bool) -> None:
        if rooms_only and len(message_ids) < DEFER_BATCH and self._defer_acknowledge is not None:
            self._defer_acknowledge(message_ids)
        else:
            self._acknowledge(message_ids)

    def _receipt_for(self, new: list[ChatMessage]) -> None:
        """One "delivered" receipt per friend for the direct messages just stored."""
        if self._delivered is None:
            return
        by_sender: dict[str, list[str]] = {}
        for message in new:
            if message.chat_kind == "user" and not message.outgoing:
                by_sender.setdefault(message.sender, []).append(message.message_id)
        for sender, ids in by_sender.items():
            self._delivered(sender, ids)

    def release(self, username: str) -> int:
        """The user trusted `username`'s new key: handle what was held back."""
        with self._lock:
            return self._release(username)

    def _release(self, username: str) -> int:
        held = self._store.held_deliveries(username)
        if not held:
            return 0
        self._store.drop_held(username)
        values = []
        for raw in held:
            try:
                values.append(codec.decode(raw))
            except ProtocolError:
                log.warning("dropping an unreadable held delivery")
        return self._receive(values, acknowledge=False)

    def recheck_held(self) -> int:
        """After a login: try what is held again (what can open now opens; a chain state
        still missing is asked for, `client.core.chain_recovery`); how many opened."""
        with self._lock:
            return sum(self._release(sender) for sender in self._store.held_senders())

    def held(self, username: str) -> int:
        return len(self._store.held_deliveries(username))

    # -- one delivery ----------------------------------------------------------------------

    def _open(self, delivery: Delivery) -> ChatMessage:
        """The message to store; raises `_Hold` to keep the delivery aside."""
        try:
            sender = self._certificates.certificate(delivery.sender)
        except KeyChangedError:
            raise _Hold() from None
        except (RequestError, CertificateError):
            return delivery.undecryptable()
        if delivery.envelope[:1] == bytes([ENVELOPE_V2]):
            return self._open_v2(sender, delivery)
        return self._open_v1(sender, delivery)

    def _conversation(self, delivery: Delivery) -> str:
        if delivery.target_type == "user":
            return direct_conversation(self._identity.username, delivery.sender)
        return room_conversation(int(delivery.target))

    def _open_v2(self, sender: UserCertificate, delivery: Delivery) -> ChatMessage:
        conversation = self._conversation(delivery)
        if delivery.distribution is not None:
            if self._repeat(delivery, conversation):
                # pushed again (our acknowledgement was lost with a connection): its
                # distribution is the one we took with it, not a replay to report
                raise _Consumed()
            self._take_distribution(sender, delivery, delivery.distribution, conversation)
        try:
            opened = self._chains.open(
                conversation=conversation,
                sender=delivery.sender,
                sender_identity=sender.identity_public,
                envelope=delivery.envelope,
            )
        except EndToEndError:
            return self._unopened(sender, delivery, conversation)
        body = opened.body
        me = self._identity.username
        try:
            control = parse_control(body.body, delivery.target_type, delivery.target, me)
            if control is not None:
                self._control(delivery, conversation, control)
                raise _Consumed()
            message = delivery.to_message(body.body, me)
        except (RemoteProtocolError, ValueError):
            return delivery.undecryptable()
        flags = [
            name
            for name, found in (
                ("gap", bool(opened.skipped)),
                ("late", opened.late),
                ("skew", abs(body.sent_ms - delivery.time) > MAX_CLOCK_SKEW_MS),
            )
            if found
        ]
        # The sender's sealed clock orders the conversation; the server's is a hint.
        message = replace(
            message, time=body.sent_ms, server_time=delivery.time, flags=" ".join(flags)
        )
        if self._gossip is not None:
            self._gossip(delivery.sender, opened.body.body)
        if self._opened is not None:
            self._opened(message, opened)
        return message

    def _repeat(self, delivery: Delivery, conversation: str) -> bool:
        """Whether this envelope's message was opened before (its key is gone)."""
        try:
            header = envelope_header(delivery.envelope)
        except EndToEndError:
            return False
        return self._chains.already_opened(
            conversation, delivery.sender, header.chain_id, header.iteration
        )

    def _control(self, delivery: Delivery, conversation: str, control: Control) -> None:
        """A receipt or a chain request: for us to act on, never shown."""
        if isinstance(control, Receipt):
            if self._on_receipt is not None:
                self._on_receipt(delivery.sender, control)
        elif (
            isinstance(control, ChainRequest)
            and control.sender == self._identity.username
            and self._chain_requested is not None
        ):
            self._chain_requested(delivery, conversation, control.chain_id)

    def _unopened(
        self, sender: UserCertificate, delivery: Delivery, conversation: str
    ) -> ChatMessage:
        """Why an envelope did not open: relabelled, waiting for its chain, or bad.

        The sender signs the conversation into every envelope: a signature that does not
        verify for the conversation the server labelled it with means the server moved
        it (or forged it), which the user is told. A signed envelope on a chain whose
        state has not reached us is held until it does.
        """
        try:
            verify_envelope_signature(delivery.envelope, conversation, sender.identity_public)
        except EndToEndError:
            log.warning(
                "refusing message %r: not signed for this conversation", delivery.message_id
            )
            self._tell(delivery, "relabelled")
            return delivery.undecryptable()
        header = envelope_header(delivery.envelope)
        if not self._chains.knows(conversation, delivery.sender, header.chain_id):
            if self._missing_chain is not None:
                self._missing_chain(delivery, conversation, header.chain_id)
            raise _Hold()
        if self._chains.already_opened(
            conversation, delivery.sender, header.chain_id, header.iteration
        ):
            raise _Consumed()  # a repeat (the server lost our acknowledgement): done already
        return delivery.undecryptable()

    def _take_distribution(
        self, sender: UserCertificate, delivery: Delivery, data: bytes, conversation: str
    ) -> None:
        try:
            fresh = self._chains.take_distribution(
                conversation=conversation,
                sender=delivery.sender,
                sender_identity=sender.identity_public,
                data=data,
            )
        except EndToEndError:
            log.warning("a chain distribution from %s did not verify", delivery.sender)
            self._tell(delivery, "bad_distribution")
            return
        if not fresh:
            log.warning("a chain distribution from %s was replayed", delivery.sender)
            self._tell(delivery, "replayed_distribution")

    def _tell(self, delivery: Delivery, kind: str) -> None:
        if self._notice is not None:
            self._notice(ChainNotice(delivery.sender, delivery.target_type, delivery.chat_id, kind))

    def _open_v1(self, sender: UserCertificate, delivery: Delivery) -> ChatMessage:
        """History stored before the upgrade: sealed per recipient with static keys."""
        message = self._try_v1(sender, delivery)
        if message is not None:
            return message
        # maybe our cached certificate is stale: ask the server once
        try:
            fresh = self._certificates.certificate(delivery.sender, refresh=True)
        except KeyChangedError:
            raise _Hold() from None
        except (RequestError, CertificateError):
            return delivery.undecryptable()
        if fresh.fingerprint != sender.fingerprint:
            message = self._try_v1(fresh, delivery)
        return message or delivery.undecryptable()

    def _try_v1(self, sender: UserCertificate, delivery: Delivery) -> ChatMessage | None:
        try:
            body = open_v1(self._identity, sender, delivery)
            message = delivery.to_message(body, self._identity.username)
        except (CryptoError, RemoteProtocolError, ValueError):
            return None
        if self._gossip is not None:
            self._gossip(delivery.sender, body)
        return replace(message, server_time=delivery.time)
