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

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.crypto.certs import UserCertificate
from common.crypto.kem import KemKeyPair, KemKeyring, SignedKemKey, rotation_due
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import EndToEndError, RemoteProtocolError, RequestError, UchatError
from common.protocol.opcodes import MessageType

RandomSource = Callable[[int], bytes]
Request = Callable[[MessageType, dict[str, Any] | None], dict[str, Any]]


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


def publish_if_needed(request: Request, username: str, keys: UserKeys) -> bool:
    """Publish our current signed KEM key unless the server already serves it."""
    signed = signed_current(keys).to_bytes()
    reply = request(MessageType.CERTIFICATE, {"username": username})
    if reply.get("kem_key") == signed:
        return False
    try:
        request(MessageType.PUBLISH_KEM_KEY, {"kem_key": signed})
    except RequestError as exc:
        if exc.code != "stale_kem_key":  # a newer key from another device is not ours to undo
            raise
        return False
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


class PeerKemKeys:
    """Friends' verified KEM keys, newest per user; refuses rollbacks to older keys."""

    def __init__(self) -> None:
        self._keys: dict[str, SignedKemKey] = {}
        self._lock = threading.Lock()

    def record(self, certificate: UserCertificate, encoded: Any) -> KemKeyChange | None:
        """Verify and remember; a change worth telling the user about, else None."""
        signed = verify_peer_kem_key(certificate, encoded)
        if signed is None:
            return None
        with self._lock:
            known = self._keys.get(certificate.username)
            if known is not None and signed.created_ms <= known.created_ms:
                return None  # the same key, or an older one the server replays
            self._keys[certificate.username] = signed
        return KemKeyChange(certificate.username, signed, first=known is None)

    def get(self, username: str) -> SignedKemKey | None:
        with self._lock:
            return self._keys.get(username)

    def forget(self, username: str) -> None:
        """The identity key changed: its KEM keys mean nothing until re-verified."""
        with self._lock:
            self._keys.pop(username, None)
