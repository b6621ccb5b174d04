"""This user's signed KEM key (make, rotate, publish) and checking friends' KEM keys.

End-to-end v2 seals chain distributions to each member's X-Wing KEM key. The key
lives in the password-sealed key file beside the identity key (version 2 of that
file); an account from before gets one at its next login, and every account replaces
it every 30 days, keeping the old private half for the grace period (DESIGN.md 3b).

A friend's KEM key is trusted only through the identity key already pinned for that
friend: `verify_peer_kem_key` refuses, loudly, a key that identity did not sign, and a
first valid key is a *verified key addition*, not a key change: the safety number
covers the identity key only and does not move.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from client.core.event_types import KemKeyRejected, KemKeyVerified
from client.core.events import Emit
from common.crypto.certs import UserCertificate, load_user_certificate
from common.crypto.kem import KemKeyPair, KemKeyring, SignedKemKey, rotation_due
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import (
    CertificateError,
    EndToEndError,
    RemoteProtocolError,
    RequestError,
    UchatError,
)
from common.protocol.opcodes import MessageType

RandomSource = Callable[[int], bytes]
Request = Callable[[MessageType, dict[str, Any] | None], dict[str, Any]]

log = logging.getLogger(__name__)


class KemKeyRefused(UchatError):
    """The server served a KEM key for a user that the user's pinned identity did not sign."""

    def __init__(self, username: str) -> None:
        super().__init__(
            f"the encryption key the server gave for {username} is not signed by "
            f"{username}'s verified identity key; it was refused"
        )
        self.username = username


def new_user_keys(now_ms: int, random: RandomSource = os.urandom) -> UserKeys:
    """A new account's keys: identity, agreement and its first KEM key."""
    keys = generate_user_keys()
    return UserKeys(keys.identity, keys.agreement, KemKeyring(KemKeyPair.generate(random), now_ms))


def made_key_ids(keys: UserKeys) -> list[tuple[bytes, int]]:
    """(key id, created) of every KEM key in this computer's keyring, for monitoring."""
    ring = keys.kem
    if ring is None:
        return []
    return [(ring.current.key_id, ring.created_ms)] + [
        (pair.key_id, created) for pair, created, _ in ring.retired
    ]


def with_current_kem_key(
    keys: UserKeys, now_ms: int, random: RandomSource = os.urandom
) -> UserKeys | None:
    """`keys` with a KEM key made (first time) or rotated (due); None if nothing changed."""
    ring = keys.kem
    if ring is None:
        ring = KemKeyring(KemKeyPair.generate(random), now_ms)
    elif rotation_due(ring.created_ms, now_ms):
        ring = ring.rotated(KemKeyPair.generate(random), now_ms)
    else:
        pruned = ring.pruned(now_ms)
        if pruned == ring:
            return None
        ring = pruned
    return UserKeys(keys.identity, keys.agreement, ring)


def signed_current(keys: UserKeys) -> SignedKemKey:
    """Our current KEM key signed by our identity key (Ed25519: the same bytes each time)."""
    if keys.kem is None:
        raise EndToEndError("no KEM key yet")
    return SignedKemKey.sign(keys.identity, keys.kem.current, keys.kem.created_ms)


#: Checks that a key is in the key transparency log: (kind, username, payload, proof).
CheckLogged = Callable[[str, str, bytes, Any], object]


def publish_if_needed(
    request: Request, username: str, keys: UserKeys, check_logged: CheckLogged | None = None
) -> bool:
    """Publish our current signed KEM key unless the server already serves it; with
    `check_logged`, the reply's proof that the server logged it is checked too (a
    failure raises and alarms, as for any key the log does not hold)."""
    signed = signed_current(keys).to_bytes()
    reply = request(MessageType.CERTIFICATE, {"username": username})
    if reply.get("kem_key") == signed:
        return False
    try:
        published = request(MessageType.PUBLISH_KEM_KEY, {"kem_key": signed})
    except RequestError as exc:
        if exc.code != "stale_kem_key":  # a newer key from another device is not ours to undo
            raise
        return False
    if check_logged is not None:
        check_logged("kem_key", username, signed, published.get("transparency"))
    return True


def verify_peer_kem_key(certificate: UserCertificate, encoded: Any) -> SignedKemKey | None:
    """The peer's signed KEM key, checked against the identity key in its pinned certificate.

    None when the peer has not published one yet (accounts not upgraded). Anything
    else that does not verify raises `KemKeyRefused`.
    """
    if encoded is None:
        return None
    if not isinstance(encoded, bytes):
        raise RemoteProtocolError("malformed kem_key")
    try:
        signed = SignedKemKey.from_bytes(encoded)
        signed.verify(certificate.identity_public)
    except EndToEndError:
        raise KemKeyRefused(certificate.username) from None
    return signed


@dataclass(frozen=True)
class KemKeyChange:
    """What a newly verified KEM key means for the user: an addition or a rotation."""

    username: str
    key: SignedKemKey
    first: bool  # True: a verified key addition (the user upgraded); never a key change


class PeerKemStore(Protocol):
    """The slice of `LocalStore` that keeps friends' verified KEM keys."""

    def peer_kem_key(self, username: str) -> tuple[bytes, bytes] | None: ...

    def save_peer_kem_key(
        self, username: str, identity: bytes, created: int, encoded: bytes
    ) -> None: ...


class PeerKemKeys:
    """Friends' verified KEM keys, newest per user, kept in the local store.

    Each is stored with the identity key it was verified against: after a trusted
    identity change the old KEM key means nothing, and the next one counts as a first
    (verified) addition again. Older keys than the one held are ignored (rollback).
    """

    def __init__(self, store: PeerKemStore) -> None:
        self._store = store
        self._lock = threading.Lock()

    def record(self, certificate: UserCertificate, encoded: Any) -> KemKeyChange | None:
        """Verify and remember; a change worth telling the user about, else None."""
        signed = verify_peer_kem_key(certificate, encoded)
        if signed is None:
            return None
        with self._lock:
            known = self._known(certificate.username, certificate.identity_public)
            if known is not None and signed.created_ms <= known.created_ms:
                return None  # the same key, or an older one the server replays
            self._store.save_peer_kem_key(
                certificate.username, certificate.identity_public, signed.created_ms, encoded
            )
        return KemKeyChange(certificate.username, signed, first=known is None)

    def _known(self, username: str, identity: bytes) -> SignedKemKey | None:
        stored = self._store.peer_kem_key(username)
        if stored is None or stored[0] != identity:
            return None
        return SignedKemKey.from_bytes(stored[1])

    def get(self, certificate: UserCertificate) -> SignedKemKey | None:
        """The verified KEM key to seal to `certificate`'s holder (the pinned identity)."""
        with self._lock:
            return self._known(certificate.username, certificate.identity_public)


class PinLookup(Protocol):
    def pinned_certificate(self, username: str) -> bytes | None: ...


class PeerKemObserver:
    """Judges every KEM key a reply serves, before any of it is used.

    Called with a certificate and KEM key the key log has already proved. The KEM key
    must be signed by the identity key pinned for that user (or, on first sight, the
    identity of the certificate about to be pinned): a verified first key is announced
    as an addition, a rotation is kept quietly, and anything else is refused loudly
    (`KemKeyRejected`) and not stored. While that user's identity key itself changed
    and is not trusted yet, their KEM key waits: the key-change warning covers it.
    """

    def __init__(
        self, *, keys: PeerKemKeys, pins: PinLookup, ca: bytes, emit: Emit, me: str = ""
    ) -> None:
        self.keys = keys
        self._me = me  # our own key comes back in room replies: monitoring judges it
        self._pins = pins
        self._ca = ca
        self._emit = emit
        self._refused: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def observe(self, username: str, der: bytes, encoded: Any) -> None:
        if encoded is None or username == self._me:
            return
        anchor = self._anchor(username, der)
        if anchor is None:
            return
        try:
            change = self.keys.record(anchor, encoded)
        except KemKeyRefused:
            self._refuse(username, encoded)
            return
        if change is not None:
            log.info("verified KEM key for %s (%s)", username, "new" if change.first else "rotated")
            self._emit(KemKeyVerified(username, change.key.key_id, change.first))

    def _anchor(self, username: str, der: bytes) -> UserCertificate | None:
        """The certificate whose identity key must have signed the KEM key."""
        try:
            served = load_user_certificate(der, self._ca)
            if served.username != username:
                return None  # the certificate book refuses it loudly
            pinned_der = self._pins.pinned_certificate(username)
            if pinned_der is None:
                return served  # first sight: this certificate is about to be pinned
            pinned = load_user_certificate(pinned_der, self._ca)
        except CertificateError:
            return None  # the certificate book refuses it loudly
        if pinned.identity_public != served.identity_public:
            log.info("KEM key for %s waits: their identity key changed", username)
            return None
        return served

    def _refuse(self, username: str, encoded: Any) -> None:
        with self._lock:
            key = (username, encoded if isinstance(encoded, bytes) else b"")
            first = key not in self._refused
            self._refused.add(key)
        if first:
            log.warning("refused a KEM key for %s not signed by the pinned identity", username)
            self._emit(KemKeyRejected(username))
