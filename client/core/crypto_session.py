"""Friends' certificates and the end-to-end sealed message bodies.

Certificates come from the server but are trusted only after two checks: they must be
issued by the CA whose fingerprint we pinned in the handshake, and they must match
the certificate pinned for that user on first sight. A different key is never
accepted silently: it is parked, reported once through `on_key_changed`, and every
message to or from that user is refused until `trust_new_key` is called.
An opened body must also name the conversation it was delivered as (`client.core.binding`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from client.core.binding import chat_matches
from client.core.models import Attachment, ChatKind, ChatMessage
from common.crypto.certs import (
    UserCertificate,
    fingerprint,
    load_user_certificate,
    safety_number,
)
from common.crypto.e2e import open_sealed, seal
from common.crypto.keys import UserKeys
from common.errors import (
    CertificateError,
    ConnectionLost,
    CryptoError,
    ProtocolError,
    RemoteProtocolError,
    RequestError,
    RequestTimeout,
)
from common.protocol import codec

log = logging.getLogger(__name__)

UNDECRYPTABLE_TEXT = "\u26a0 This message could not be decrypted."
COLOR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")
MIN_FONT_SIZE = 6
MAX_FONT_SIZE = 72
MAX_NAME_LENGTH = 255
MAX_ATTACHMENT_CHUNK = 16 * 1024 * 1024
ATTACHMENT_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
BODY_LIMITS = codec.Limits(max_size=1_179_648, max_depth=2, max_items=32)


class PinnedCertificates(Protocol):
    """The slice of `LocalStore` this module needs."""

    def pinned_certificate(self, username: str) -> bytes | None: ...

    def pin_certificate(self, username: str, der: bytes) -> None: ...


class KeyChangedError(RequestError):
    """A user's certificate differs from the pinned one and was not trusted yet."""

    def __init__(self, username: str, old_fingerprint: str, new_fingerprint: str) -> None:
        super().__init__(
            "key_changed",
            f"{username}'s key changed; compare the safety number, then trust the new key",
            None,
        )
        self.username = username
        self.old_fingerprint = old_fingerprint
        self.new_fingerprint = new_fingerprint


KeyChangedHandler = Callable[[str, str, str], None]


class CertificateBook:
    """Verified, pinned user certificates, cached for the session; thread-safe."""

    def __init__(
        self,
        *,
        ca_certificate: bytes,
        pins: PinnedCertificates,
        fetch_user: Callable[[str], bytes],
        fetch_room: Callable[[int], Mapping[str, bytes]],
        on_key_changed: KeyChangedHandler,
    ) -> None:
        self._ca = ca_certificate
        self._pins = pins
        self._fetch_user = fetch_user
        self._fetch_room = fetch_room
        self._on_key_changed = on_key_changed
        self._lock = threading.RLock()
        self._trusted: dict[str, UserCertificate] = {}
        self._changed: dict[str, tuple[str, UserCertificate]] = {}  # user -> (old fp, new)
        self._rooms: dict[int, dict[str, UserCertificate]] = {}

    def verify(self, username: str, der: bytes) -> UserCertificate:
        """Check `der` against the CA and the pin; KeyChangedError if it differs."""
        certificate = load_user_certificate(der, self._ca)
        if certificate.username != username:
            raise CertificateError(f"certificate names {certificate.username!r}, not {username!r}")
        with self._lock:
            pinned = self._pins.pinned_certificate(username)
            if pinned is None or self._same_keys(pinned, certificate):
                if pinned != certificate.der:
                    self._pins.pin_certificate(username, certificate.der)
                self._trusted[username] = certificate
                self._changed.pop(username, None)
                return certificate
            old = fingerprint(pinned)
            self._trusted.pop(username, None)
            previous = self._changed.get(username)
            self._changed[username] = (old, certificate)
            first_report = previous is None or previous[1].fingerprint != certificate.fingerprint
        if first_report:
            self._on_key_changed(username, old, certificate.fingerprint)
        raise KeyChangedError(username, old, certificate.fingerprint)

    def _same_keys(self, pinned_der: bytes, certificate: UserCertificate) -> bool:
        """A renewed certificate with the same keys is not a key change."""
        if pinned_der == certificate.der:
            return True
        try:
            pinned = load_user_certificate(pinned_der, self._ca)
        except CertificateError:
            return False
        return (pinned.identity_public, pinned.agreement_public) == (
            certificate.identity_public,
            certificate.agreement_public,
        )

    def certificate(self, username: str, *, refresh: bool = False) -> UserCertificate:
        """The trusted certificate of `username`, fetched on first use."""
        with self._lock:
            if username in self._changed:
                old, new = self._changed[username]
                raise KeyChangedError(username, old, new.fingerprint)
            cached = self._trusted.get(username)
        if cached is not None and not refresh:
            return cached
        try:
            der = self._fetch_user(username)
        except (ConnectionLost, RequestTimeout):
            return self._pinned_while_offline(username)
        return self.verify(username, der)

    def _pinned_while_offline(self, username: str) -> UserCertificate:
        """Offline, the pinned certificate is what we trust anyway: seal to it (not cached,
        so the server's copy is checked against the pin once we are back)."""
        pinned = self._pins.pinned_certificate(username)
        if pinned is None:
            raise ConnectionLost(f"not connected, and {username}'s key was never fetched")
        return load_user_certificate(pinned, self._ca)

    def room_certificates(
        self, room_id: int, *, refresh: bool = False
    ) -> dict[str, UserCertificate]:
        """Every member's trusted certificate; KeyChangedError names the first changed one."""
        with self._lock:
            cached = self._rooms.get(room_id)
        if cached is not None and not refresh:
            return dict(cached)
        members: dict[str, UserCertificate] = {}
        first_change: KeyChangedError | None = None
        for username, der in self._fetch_room(room_id).items():
            try:
                members[username] = self.verify(username, der)
            except KeyChangedError as change:
                first_change = first_change or change
        if first_change is not None:
            raise first_change
        with self._lock:
            self._rooms[room_id] = members
        return dict(members)

    def forget_room(self, room_id: int) -> None:
        """Membership changed: fetch the member list again before the next send."""
        with self._lock:
            self._rooms.pop(room_id, None)

    def forget_user(self, username: str) -> None:
        with self._lock:
            self._trusted.pop(username, None)

    def changed_key(self, username: str) -> UserCertificate | None:
        """The new, not yet trusted certificate of `username`, if there is one."""
        with self._lock:
            entry = self._changed.get(username)
        return entry[1] if entry else None

    def trust_new_key(self, username: str) -> UserCertificate:
        """Pin the parked certificate of `username` (the user compared safety numbers)."""
        with self._lock:
            entry = self._changed.pop(username, None)
            if entry is None:
                raise RequestError("no_key_change", f"no changed key is waiting for {username}")
            certificate = entry[1]
            self._pins.pin_certificate(username, certificate.der)
            self._trusted[username] = certificate
            for room in self._rooms.values():
                if username in room:
                    room[username] = certificate
            return certificate

    def newest(self, username: str) -> UserCertificate:
        """The certificate a person should verify now: a parked new one, else the trusted."""
        return self.changed_key(username) or self.certificate(username)


@dataclass(frozen=True)
class Identity:
    """This user's keys and verified certificate: what sealing and opening need."""

    username: str
    keys: UserKeys
    certificate: UserCertificate

    def seal_for(self, recipient: UserCertificate, message_id: str, body: bytes) -> bytes:
        return seal(self.keys, self.certificate.fingerprint, recipient, message_id, body)

    def open_from(self, sender: UserCertificate, message_id: str, envelope: bytes) -> bytes:
        return open_sealed(self.keys, self.certificate.fingerprint, sender, message_id, envelope)


def safety_number_between(mine: UserCertificate, peer: UserCertificate) -> str:
    """The 60 digits both users see identically when nobody swapped a key."""
    return safety_number(mine.username, mine.identity_public, peer.username, peer.identity_public)


def keys_match(keys: UserKeys, certificate: UserCertificate) -> bool:
    """True if `certificate` certifies exactly these private keys."""
    return (keys.identity_public, keys.agreement_public) == (
        certificate.identity_public,
        certificate.agreement_public,
    )


# ---------------------------------------------------------------- sealed bodies


def text_body(text: str, font_size: int, color: str) -> bytes:
    """The codec dict sealed for a text message (docs/protocol.md)."""
    return codec.encode({"kind": "text", "text": text, "font_size": font_size, "color": color})


def attachment_body(kind: str, attachment: Attachment) -> bytes:
    """The codec dict sealed for an image or file message."""
    return codec.encode(
        {
            "kind": kind,
            "attachment_id": attachment.attachment_id,
            "name": attachment.name,
            "size": attachment.size,
            "key": attachment.key,
            "digest": attachment.digest,
            "chunk_size": attachment.chunk_size,
        }
    )


def check_style(font_size: int, color: str) -> None:
    """Refuse styles a peer would reject, before anything is sealed."""
    if type(font_size) is not int or not MIN_FONT_SIZE <= font_size <= MAX_FONT_SIZE:
        raise RequestError(
            "invalid_font_size", f"font size must be {MIN_FONT_SIZE}..{MAX_FONT_SIZE}"
        )
    if not isinstance(color, str) or not COLOR_PATTERN.fullmatch(color):
        raise RequestError("invalid_color", "colour must look like #rrggbb")


@dataclass(frozen=True)
class Delivery:
    """One validated entry of a NEW_MESSAGE push."""

    message_id: str
    sender: str
    target_type: ChatKind
    target: str | int
    time: int
    envelope: bytes
    attachments: tuple[str, ...]

    @property
    def chat_id(self) -> str:
        return self.sender if self.target_type == "user" else str(self.target)

    @staticmethod
    def parse(raw: Any) -> Delivery:
        """Check the shape; RemoteProtocolError if the server sent nonsense."""
        if not isinstance(raw, dict):
            raise RemoteProtocolError("a delivery must be a dict")
        message_id, sender = raw.get("message_id"), raw.get("sender")
        target, sent_at, envelope = raw.get("target"), raw.get("time"), raw.get("envelope")
        attachments = raw.get("attachments", [])
        if not isinstance(message_id, str) or not isinstance(sender, str):
            raise RemoteProtocolError("malformed delivery: ids")
        if type(sent_at) is not int or not isinstance(envelope, bytes):
            raise RemoteProtocolError("malformed delivery: time or envelope")
        if not isinstance(attachments, list) or not all(isinstance(a, str) for a in attachments):
            raise RemoteProtocolError("malformed delivery: attachments")
        target_type: ChatKind
        if raw.get("target_type") == "user" and isinstance(target, str):
            target_type = "user"
        elif raw.get("target_type") == "room" and type(target) is int:
            target_type = "room"
        else:
            raise RemoteProtocolError("malformed delivery: target")
        return Delivery(
            message_id, sender, target_type, target, sent_at, envelope, tuple(attachments)
        )

    def undecryptable(self) -> ChatMessage:
        """What is stored (and shown) when the envelope cannot be opened or understood."""
        return ChatMessage(
            self.message_id,
            self.target_type,
            self.chat_id,
            self.sender,
            self.time,
            "text",
            text=UNDECRYPTABLE_TEXT,
        )

    def to_message(self, body: bytes, recipient: str) -> ChatMessage:
        """Decode a body `recipient` opened; RemoteProtocolError if it breaks the protocol
        or was sealed for another conversation than the one it is delivered as."""
        try:
            value = codec.decode(body, BODY_LIMITS)
        except ProtocolError as exc:
            raise RemoteProtocolError("sealed body is not a codec dict") from exc
        if not isinstance(value, dict):
            raise RemoteProtocolError("sealed body is not a dict")
        if not chat_matches(value.get("chat"), self.target_type, self.target, recipient):
            log.warning("refusing message %r: sealed for another conversation", self.message_id)
            raise RemoteProtocolError("sealed conversation differs from the delivery's")
        kind = value.get("kind")
        base = (self.message_id, self.target_type, self.chat_id, self.sender, self.time)
        if kind == "text":
            text, size, color = value.get("text"), value.get("font_size"), value.get("color")
            if not isinstance(text, str) or type(size) is not int or not isinstance(color, str):
                raise RemoteProtocolError("malformed text body")
            try:
                check_style(size, color)
            except RequestError as exc:
                raise RemoteProtocolError(exc.message) from exc
            return ChatMessage(*base, "text", text=text, font_size=size, color=color)
        if kind in ("image", "file"):
            attachment = _attachment(value)
            if attachment.attachment_id not in self.attachments:
                raise RemoteProtocolError("sealed attachment is not listed in the delivery")
            return ChatMessage(*base, "image" if kind == "image" else "file", attachment=attachment)
        raise RemoteProtocolError("unknown sealed body kind")


def _attachment(value: dict[str, Any]) -> Attachment:
    attachment_id, name, size = value.get("attachment_id"), value.get("name"), value.get("size")
    key, digest, chunk_size = value.get("key"), value.get("digest"), value.get("chunk_size")
    if not isinstance(attachment_id, str) or not ATTACHMENT_ID_PATTERN.fullmatch(attachment_id):
        raise RemoteProtocolError("malformed attachment id")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise RemoteProtocolError("malformed attachment name")
    if not isinstance(key, bytes) or not isinstance(digest, bytes):
        raise RemoteProtocolError("malformed attachment key")
    if len(key) != 32 or len(digest) != 32:
        raise RemoteProtocolError("malformed attachment key")
    if type(size) is not int or type(chunk_size) is not int or size < 0:
        raise RemoteProtocolError("malformed attachment size")
    if not 0 < chunk_size <= MAX_ATTACHMENT_CHUNK:  # bounds what one chunk can buffer
        raise RemoteProtocolError("attachment chunk size out of range")
    return Attachment(attachment_id, name, size, key, digest, chunk_size)


def try_open(
    identity: Identity,
    sender: UserCertificate,
    delivery: Delivery,
    on_body: Callable[[str, bytes], None] | None = None,
) -> ChatMessage | None:
    """Open and decode one delivery; None if the envelope or its body is bad, or if it
    was sealed for another conversation than the one it is delivered as."""
    try:
        body = identity.open_from(sender, delivery.message_id, delivery.envelope)
        message = delivery.to_message(body, identity.username)
    except (CryptoError, RemoteProtocolError, ValueError):
        return None
    if on_body is not None:
        on_body(delivery.sender, body)
    return message


# ---------------------------------------------------------------- incoming batches


class InboxStore(Protocol):
    def add_messages(self, ms: Sequence[ChatMessage]) -> list[bool]: ...


class Inbox:
    """NEW_MESSAGE batches: open, store (committed), acknowledge, then announce.

    A bad envelope is still stored, as a visible placeholder, and acknowledged, so it
    cannot jam the queue. A sender whose key changed is different: those deliveries
    are held unacknowledged (the server keeps them) until the user trusts the new key.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        certificates: CertificateBook,
        store: InboxStore,
        acknowledge: Callable[[list[str]], None],
        announce: Callable[[ChatMessage], None],
        gossip: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._gossip = gossip  # sees each opened body (key transparency tree heads)
        self._identity = identity
        self._certificates = certificates
        self._store = store
        self._acknowledge = acknowledge
        self._announce = announce
        self._lock = threading.Lock()
        self._held: dict[str, list[Delivery]] = {}

    def receive(self, raw_deliveries: Sequence[Any]) -> int:
        """Handle one batch; returns how many new messages were stored.

        Transport errors while fetching a certificate propagate before anything is
        acknowledged: the server will push the batch again.
        """
        opened: list[ChatMessage] = []
        acknowledged: list[str] = []
        for raw in raw_deliveries:
            try:
                delivery = Delivery.parse(raw)
            except RemoteProtocolError:
                junk_id = raw.get("message_id") if isinstance(raw, dict) else None
                if isinstance(junk_id, str):
                    acknowledged.append(junk_id)  # unreadable forever: do not loop on it
                log.warning("ignoring a malformed delivery")
                continue
            message = self._open(delivery)
            if message is not None:
                opened.append(message)
                acknowledged.append(delivery.message_id)
        added = self._store.add_messages(opened) if opened else []
        if acknowledged:
            try:
                self._acknowledge(acknowledged)
            except (ConnectionLost, RequestTimeout, RequestError) as exc:
                log.info("acknowledgement not sent (%s); the server will re-deliver", exc)
        new = [message for message, is_new in zip(opened, added, strict=True) if is_new]
        for message in new:
            self._announce(message)
        return len(new)

    def release(self, username: str) -> int:
        """The user trusted `username`'s new key: handle what was held back."""
        with self._lock:
            held = self._held.pop(username, [])
        if not held:
            return 0
        return self.receive([_delivery_dict(delivery) for delivery in held])

    def held(self, username: str) -> int:
        with self._lock:
            return len(self._held.get(username, []))

    def _hold(self, delivery: Delivery) -> None:
        with self._lock:
            queue = self._held.setdefault(delivery.sender, [])
            if all(item.message_id != delivery.message_id for item in queue):
                queue.append(delivery)

    def _open(self, delivery: Delivery) -> ChatMessage | None:
        """The message to store, or None when it is held for a changed key."""
        try:
            sender = self._certificates.certificate(delivery.sender)
        except KeyChangedError:
            self._hold(delivery)
            return None
        except (RequestError, CertificateError):
            return delivery.undecryptable()
        message = try_open(self._identity, sender, delivery, self._gossip)
        if message is not None:
            return message
        # maybe our cached certificate is stale: ask the server once
        try:
            fresh = self._certificates.certificate(delivery.sender, refresh=True)
        except KeyChangedError:
            self._hold(delivery)
            return None
        except (RequestError, CertificateError):
            return delivery.undecryptable()
        if fresh.fingerprint != sender.fingerprint:
            message = try_open(self._identity, fresh, delivery, self._gossip)
        return message or delivery.undecryptable()


def _delivery_dict(delivery: Delivery) -> dict[str, Any]:
    return {
        "message_id": delivery.message_id,
        "sender": delivery.sender,
        "target_type": delivery.target_type,
        "target": delivery.target,
        "time": delivery.time,
        "envelope": delivery.envelope,
        "attachments": list(delivery.attachments),
    }
