"""One logged-in account on this machine: its parts, and the slot that holds it.

Why it exists: everything that belongs to an account (local store, pinned
certificates, outbox, transfers, inbox, contacts, server limits) is created together at
login and closed together at logout, and several threads (the caller's, the push thread,
the reconnect thread, `run_async` workers) reach it. `Session` keeps those parts
together, `open_session` wires them to the server and the event queue, and
`SessionSlot` is the single place the current session is swapped, under one lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from client.core.acks import DeferredAcks
from client.core.bodies import BODY_LIMITS
from client.core.chain_recovery import ChainRecovery
from client.core.chains import ChainBook
from client.core.connection import PendingRequest
from client.core.contacts import ContactBook
from client.core.event_types import (
    ChainWarning,
    KeyChanged,
    MessageStatusChanged,
    TransferProgress,
)
from client.core.events import Emit
from client.core.inbox import ChainNotice, Inbox
from client.core.kem_keys import PeerKemKeys, PeerKemObserver
from client.core.models import ChatMessage, MessageStatus, Profile
from client.core.outbox import Outbox, RebuildFunction
from client.core.receipts import ReceiptSender, apply_receipt
from client.core.recipients import Recipients
from client.core.room_membership import RoomMembership
from client.core.store import LocalStore
from client.core.transfers import Transfers
from client.core.transparency import KeyTransparency, ca_public_key, gossiped_head
from client.core.trust import CertificateBook, Identity
from common.crypto.certs import UserCertificate
from common.crypto.merkle import TreeHead
from common.crypto.sender_chain import RotationPolicy
from common.errors import ConnectionLost, RemoteProtocolError, RequestError, RequestTimeout
from common.protocol.opcodes import MessageType

log_ = logging.getLogger(__name__)

Request = Callable[[MessageType, dict[str, Any] | None], dict[str, Any]]
MAX_CERTIFICATE_PAGES = 1_000  # 200 members a page; a server never saying "done" stops here
StartRequest = Callable[[MessageType, dict[str, Any]], PendingRequest]


@dataclass(frozen=True)
class Limits:
    max_attachment_size: int
    chunk_size: int


@dataclass
class Session:
    """Everything that belongs to one logged-in account on this machine."""

    profile: Profile
    server_id: str
    certificate: UserCertificate
    identity: Identity | None
    store: LocalStore
    certificates: CertificateBook
    outbox: Outbox
    transfers: Transfers
    inbox: Inbox | None
    contacts: ContactBook
    limits: Limits
    transparency: KeyTransparency
    recipients: Recipients
    peer_kem_keys: PeerKemObserver  # friends' verified KEM keys (`.keys.get(certificate)`)
    membership: RoomMembership
    chains: ChainBook | None = None
    receipts: ReceiptSender | None = None
    acks: DeferredAcks | None = None  # room acknowledgements waiting a moment
    recovery: ChainRecovery | None = None  # asks for chain states that never came
    uploads_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    active_uploads: set[str] = dataclasses.field(default_factory=set)

    @property
    def username(self) -> str:
        return self.profile.username

    def close(self) -> None:
        """The account logs out here: stop waiting acknowledgements, close the store."""
        if self.acks is not None:
            self.acks.close()
        if self.recovery is not None:
            self.recovery.close()
        self.store.close()


# ---------------------------------------------------------------- the login reply


def parse_limits(raw: Any) -> Limits:
    if not isinstance(raw, dict):
        raise RemoteProtocolError("login reply lacks limits")
    size, chunk = raw.get("max_attachment_size"), raw.get("chunk_size")
    if type(size) is not int or type(chunk) is not int or size < 0 or chunk <= 0:
        raise RemoteProtocolError("login reply has bad limits")
    return Limits(size, chunk)


def parse_profile(raw: Any) -> Profile:
    if not isinstance(raw, dict):
        raise RemoteProtocolError("login reply lacks a profile")
    username, email, sex, age = (raw.get(k) for k in ("username", "email", "sex", "age"))
    if not (isinstance(username, str) and isinstance(email, str) and isinstance(sex, str)):
        raise RemoteProtocolError("login reply has a bad profile")
    if type(age) is not int:
        raise RemoteProtocolError("login reply has a bad profile")
    return Profile(username, email, sex, age)


def bytes_field(reply: Mapping[str, Any], name: str) -> bytes:
    value = reply.get(name)
    if not isinstance(value, bytes):
        raise RemoteProtocolError(f"reply lacks {name}")
    return value


# ---------------------------------------------------------------- wiring the parts


@dataclass(frozen=True)
class SessionWiring:
    """How a session's parts reach the server and the event queue."""

    request: Request
    start_request: StartRequest
    rebuild: RebuildFunction  # reseal a queued message for changed recipients
    announce: Callable[[ChatMessage], None]  # a new incoming message was stored
    emit: Emit
    clock: Callable[[], int] = dataclasses.field(default=lambda: int(time.time() * 1000))
    rotation: RotationPolicy = dataclasses.field(default_factory=RotationPolicy)

    def fetch_certificate(self, username: str, log: KeyTransparency, kem: PeerKemObserver) -> bytes:
        """The certificate of `username`, refused unless the key log proves it; its KEM
        key too, which must also be in the log and signed by the pinned identity."""
        reply = self.request(MessageType.CERTIFICATE, {"username": username})
        der = bytes_field(reply, "certificate")
        head = log.check_certificate(username, der, reply.get("transparency"))
        _check_kem_key(log, kem, username, der, reply, head)
        return der

    def fetch_room_certificates(
        self, room_id: int, log: KeyTransparency, kem: PeerKemObserver
    ) -> dict[str, bytes]:
        """Every page of ROOM_CERTIFICATES (a room holds up to 10,000 members)."""
        result: dict[str, bytes] = {}
        params: dict[str, Any] = {"room_id": room_id}
        for _ in range(MAX_CERTIFICATE_PAGES):
            reply = self.request(MessageType.ROOM_CERTIFICATES, params)
            members = reply.get("members")
            if not isinstance(members, list):
                raise RemoteProtocolError("ROOM_CERTIFICATES reply lacks members")
            head = log.accept_head(reply.get("transparency_head"))
            for entry in members:
                if not isinstance(entry, dict):
                    raise RemoteProtocolError("malformed room certificate")
                name, der = entry.get("username"), entry.get("certificate")
                if not isinstance(name, str) or not isinstance(der, bytes):
                    raise RemoteProtocolError("malformed room certificate")
                log.check_member(name, der, entry.get("transparency"), head)
                _check_kem_key(log, kem, name, der, entry, head)
                result[name] = der
            after = reply.get("next")
            if type(after) is not int or not members:
                break
            params = {"room_id": room_id, "after": after}
        return result

    def check_gossip(self, log: KeyTransparency, sender: str, body: bytes) -> None:
        """A friend's sealed body may carry their newest tree head: compare it with ours."""
        raw = gossiped_head(body, BODY_LIMITS)
        if raw is None:
            return
        try:
            log.check_gossip(sender, raw)
        except (RequestError, ConnectionLost, RequestTimeout) as exc:
            log_.info("tree head from %s not checked or refused: %s", sender, exc)

    def acknowledge(self, message_ids: list[str]) -> None:
        self.request(MessageType.ACK_DELIVERY, {"message_ids": message_ids})

    def on_status(self, message_id: str, status: MessageStatus) -> None:
        self.emit(MessageStatusChanged(message_id, status))

    def on_key_changed(self, username: str, old: str, new: str) -> None:
        self.emit(KeyChanged(username, old, new))

    def on_chain_notice(self, notice: ChainNotice) -> None:
        self.emit(ChainWarning(notice.sender, notice.chat_kind, notice.chat_id, notice.kind))

    def on_transfer(self, attachment_id: str, done: int, total: int, direction: str) -> None:
        self.emit(
            TransferProgress(
                attachment_id, done, total, "upload" if direction == "upload" else "download"
            )
        )


def _check_kem_key(
    log: KeyTransparency,
    kem: PeerKemObserver,
    username: str,
    der: bytes,
    reply: Mapping[str, Any],
    head: TreeHead,
) -> None:
    """A served KEM key must be in the log (else the chat is blocked, as for a
    certificate), then signed by the pinned identity (else refused, loudly)."""
    encoded = reply.get("kem_key")
    if encoded is None:
        return
    if not isinstance(encoded, bytes):
        raise RemoteProtocolError("malformed kem_key")
    log.check_entry("kem_key", username, encoded, reply.get("kem_transparency"), head)
    kem.observe(username, der, encoded)


def _logged(log: KeyTransparency, username: str, der: bytes, transparency: Any) -> None:
    log.check_certificate(username, der, transparency)


def open_session(
    profile: Profile,
    server_id: str,
    certificate: UserCertificate,
    ca: bytes,
    limits: Limits,
    identity: Identity | None,
    store: LocalStore,
    wiring: SessionWiring,
) -> Session:
    """Build a session's parts around an opened store (and keys, if this machine has them)."""
    transparency = KeyTransparency(
        ca_public=ca_public_key(ca), store=store, request=wiring.request, alarm=wiring.emit
    )
    kem = PeerKemObserver(
        keys=PeerKemKeys(store), pins=store, ca=ca, emit=wiring.emit, me=profile.username
    )
    certificates = CertificateBook(
        ca_certificate=ca,
        pins=store,
        fetch_user=lambda username: wiring.fetch_certificate(username, transparency, kem),
        fetch_room=lambda room_id: wiring.fetch_room_certificates(room_id, transparency, kem),
        on_key_changed=wiring.on_key_changed,
    )
    recipients = Recipients(certificates=certificates, kem_keys=kem.keys)
    chains = None
    if identity is not None:
        chains = ChainBook(
            username=profile.username,
            keys=identity.keys,
            records=store,
            policy=wiring.rotation,
            clock=wiring.clock,
        )
    outbox = Outbox(
        store,
        send=lambda params: wiring.request(MessageType.SEND_MESSAGE, params),
        rebuild=wiring.rebuild,
        on_status=wiring.on_status,
        on_dropped=None if chains is None else chains.dropped,
    )
    transfers = Transfers(
        store=store,
        staging_dir=store.path.parent / "uploads",
        request=wiring.request,
        start_request=wiring.start_request,
        report=wiring.on_transfer,
    )
    inbox = receipts = acks = recovery = None
    if identity is not None and chains is not None:
        receipts = ReceiptSender(
            username=profile.username,
            chains=chains,
            recipients=recipients,
            request=wiring.request,
            clock=wiring.clock,
            queue=store,
        )

        def report(message_id: str) -> None:
            stored = store.get_message(message_id)
            if stored is not None:
                wiring.on_status(message_id, stored.status)

        acks = DeferredAcks(wiring.acknowledge)
        recovery = ChainRecovery(chains=chains, control=receipts)
        inbox = Inbox(
            identity=identity,
            certificates=certificates,
            chains=chains,
            store=store,
            acknowledge=acks.now,
            defer_acknowledge=acks.defer,
            announce=wiring.announce,
            gossip=lambda sender, body: wiring.check_gossip(transparency, sender, body),
            notice=wiring.on_chain_notice,
            on_receipt=lambda sender, receipt: apply_receipt(store, sender, receipt, report),
            delivered=receipts_sender(receipts),
            missing_chain=recovery.missing,
            chain_requested=recovery.requested,
        )
    membership = RoomMembership(
        username=profile.username,
        identity=identity,
        certificates=certificates,
        store=store,
        request=wiring.request,
        emit=wiring.emit,
        check_logged=lambda name, der, proved: _logged(transparency, name, der, proved),
    )
    recipients.use_verified_members(
        lambda room_id, fetch: membership.member_names(room_id, fetch=fetch)
    )
    return Session(
        profile,
        server_id,
        certificate,
        identity,
        store,
        certificates,
        outbox,
        transfers,
        inbox,
        ContactBook(),
        limits,
        transparency,
        recipients,
        kem,
        membership,
        chains,
        receipts,
        acks,
        recovery,
    )


def receipts_sender(receipts: ReceiptSender) -> Callable[[str, list[str]], None]:
    return lambda peer, ids: receipts.send(peer, "delivered", ids)


def report_status(session: Session, message_id: str, emit: Emit) -> None:
    """Emit `message_status` with what the store now says about an outgoing message."""
    stored = session.store.get_message(message_id)
    if stored is not None and stored.outgoing:
        emit(MessageStatusChanged(message_id, stored.status))


# ---------------------------------------------------------------- the current session


class SessionSlot:
    """The current session, if any.

    Reading it takes no lock (callers get the session or None, and use that object);
    replacing it, and handling a push against it, happen under `lock`, so a push is
    never handled against a session that logout is closing.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._session: Session | None = None

    def get(self) -> Session | None:
        return self._session

    def set(self, session: Session | None) -> None:
        """Swap the session; the caller holds `lock`."""
        self._session = session

    def close(self) -> None:
        """Drop the current session and close its store."""
        with self.lock:
            session, self._session = self._session, None
            if session is not None:
                session.close()

    def require(self) -> Session:
        session = self._session
        if session is None:
            raise RequestError("not_authenticated", "log in first")
        return session

    def require_sender(self) -> tuple[Session, Identity]:
        session = self.require()
        if session.identity is None:
            raise RequestError(
                "key_missing",
                "this computer does not hold your private keys, so it cannot send messages",
            )
        return session, session.identity
