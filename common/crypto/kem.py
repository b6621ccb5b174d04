"""X-Wing KEM keys (ML-KEM-768 + X25519) and their signed form (DESIGN.md section 3b).

A user's KEM key is what HPKE seals chain distributions to. Its public half is
published as a *signed KEM key*, Signal's signed-prekey pattern: the user's Ed25519
identity key signs (label, key id, creation time, public key), so a server that swaps
the KEM key is caught by anyone who pinned the identity key. The key id is the first
16 bytes of SHA-256 of the public key: it names the key (old private halves are kept
for a grace period after rotation) and cannot disagree with it.

Signed KEM key wire form, fixed size (1304 bytes):
key id (16) || created, ms since epoch, big-endian (8) || public key (1216) || signature (64)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from Crypto.PublicKey import Hybrid
from Crypto.PublicKey.Hybrid import HybridKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.crypto.primitives import ed25519_sign, ed25519_verify, sha256
from common.crypto.transcript import bind
from common.errors import EndToEndError

RandomSource = Callable[[int], bytes]

KEM_SEED_SIZE = 32
KEM_PUBLIC_KEY_SIZE = 1216  # ML-KEM-768 encapsulation key (1184) || X25519 (32)
KEM_CIPHERTEXT_SIZE = 1120  # ML-KEM-768 ciphertext (1088) || X25519 (32)
KEY_ID_SIZE = 16
SIGNATURE_SIZE = 64
SIGNED_KEM_KEY_LABEL = b"uchat-v2 signed kem key"
_CREATED = struct.Struct(">Q")
SIGNED_KEM_KEY_SIZE = KEY_ID_SIZE + _CREATED.size + KEM_PUBLIC_KEY_SIZE + SIGNATURE_SIZE

# Rotation schedule (Signal rotates signed prekeys every week to month): a new key every
# 30 days; a replaced private half is kept 30 more days for distributions still in flight.
KEM_KEY_LIFETIME_MS = 30 * 24 * 3600 * 1000
KEM_KEY_GRACE_MS = 30 * 24 * 3600 * 1000


def key_id_of(public: bytes) -> bytes:
    return sha256(public)[:KEY_ID_SIZE]


@dataclass(frozen=True)
class KemKeyPair:
    """An X-Wing key pair; the 32-byte seed is the whole private half (X-Wing's format)."""

    seed: bytes
    public: bytes

    @classmethod
    def generate(cls, random: RandomSource = os.urandom) -> KemKeyPair:
        return cls.from_seed(random(KEM_SEED_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> KemKeyPair:
        if len(seed) != KEM_SEED_SIZE:
            raise EndToEndError("bad KEM seed")
        key = Hybrid.HybridKey(param_set=Hybrid.MLKEM768_X25519, seed=seed)
        return cls(seed=bytes(seed), public=kem_public_bytes(key))

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.public)

    def private_key(self) -> HybridKey:
        return Hybrid.HybridKey(param_set=Hybrid.MLKEM768_X25519, seed=self.seed)

    def __repr__(self) -> str:  # never print the seed
        return f"KemKeyPair(key_id={self.key_id.hex()})"


def kem_public_bytes(key: HybridKey) -> bytes:
    """The X-Wing public key bytes (pycryptodome exposes them only as `_pk`)."""
    public: bytes = key._pk
    return public


def kem_public_key(public: bytes) -> HybridKey:
    """Import a peer's X-Wing public key; a malformed one is refused."""
    if len(public) != KEM_PUBLIC_KEY_SIZE:
        raise EndToEndError("bad KEM public key")
    try:
        return Hybrid.HybridKey(param_set=Hybrid.MLKEM768_X25519, pk=public)
    except ValueError:
        raise EndToEndError("bad KEM public key") from None


@dataclass(frozen=True)
class SignedKemKey:
    """A KEM public key, its creation time and key id, signed by an identity key."""

    key_id: bytes
    created_ms: int
    public: bytes
    signature: bytes

    @classmethod
    def sign(cls, identity: Ed25519PrivateKey, pair: KemKeyPair, created_ms: int) -> SignedKemKey:
        if not 0 <= created_ms < 2**63:
            raise ValueError("created_ms out of range")
        key_id = pair.key_id
        signature = ed25519_sign(identity, _signed_part(key_id, created_ms, pair.public))
        return cls(key_id, created_ms, pair.public, signature)

    def verify(self, identity_public: bytes) -> None:
        """Raise `EndToEndError` unless `identity_public` signed exactly this key."""
        if (
            len(self.public) != KEM_PUBLIC_KEY_SIZE
            or len(self.signature) != SIGNATURE_SIZE
            or not 0 <= self.created_ms < 2**63
            or self.key_id != key_id_of(self.public)
            or not ed25519_verify(
                identity_public,
                self.signature,
                _signed_part(self.key_id, self.created_ms, self.public),
            )
        ):
            raise EndToEndError("KEM key not signed by this identity")
        kem_public_key(self.public)  # and it must be a usable X-Wing key

    def to_bytes(self) -> bytes:
        return self.key_id + _CREATED.pack(self.created_ms) + self.public + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedKemKey:
        """Parse the fixed layout; says nothing about the signature (call `verify`)."""
        if len(data) != SIGNED_KEM_KEY_SIZE:
            raise EndToEndError("bad signed KEM key")
        key_id = data[:KEY_ID_SIZE]
        (created_ms,) = _CREATED.unpack_from(data, KEY_ID_SIZE)
        start = KEY_ID_SIZE + _CREATED.size
        public = data[start : start + KEM_PUBLIC_KEY_SIZE]
        return cls(key_id, created_ms, public, data[start + KEM_PUBLIC_KEY_SIZE :])


def _signed_part(key_id: bytes, created_ms: int, public: bytes) -> bytes:
    return SIGNED_KEM_KEY_LABEL + bind(key_id, _CREATED.pack(created_ms), public)


def rotation_due(created_ms: int, now_ms: int, lifetime_ms: int = KEM_KEY_LIFETIME_MS) -> bool:
    """Whether the current KEM key is old enough to be replaced."""
    return now_ms - created_ms >= lifetime_ms


def keep_retired(retired_ms: int, now_ms: int, grace_ms: int = KEM_KEY_GRACE_MS) -> bool:
    """Whether a replaced private half must still be kept (distributions in flight)."""
    return now_ms - retired_ms < grace_ms


_KEYRING_RECORD = struct.Struct(">32sQQ")  # seed, created ms, retired ms (0 = current)


@dataclass(frozen=True)
class KemKeyring:
    """A user's KEM private halves: the current one and those retired but in grace."""

    current: KemKeyPair
    created_ms: int
    retired: tuple[tuple[KemKeyPair, int, int], ...] = ()  # (pair, created, retired)

    def find(self, key_id: bytes) -> KemKeyPair | None:
        """The private half named by a distribution's key id, current or retired."""
        if self.current.key_id == key_id:
            return self.current
        return next((pair for pair, _, _ in self.retired if pair.key_id == key_id), None)

    def rotated(self, new: KemKeyPair, now_ms: int) -> KemKeyring:
        """`new` becomes current; the old one is kept for the grace period."""
        retired = ((self.current, self.created_ms, now_ms), *self.retired)
        return KemKeyring(new, now_ms, retired).pruned(now_ms)

    def pruned(self, now_ms: int) -> KemKeyring:
        """Drop retired halves whose grace period is over (forward secrecy of the KEM)."""
        kept = tuple(item for item in self.retired if keep_retired(item[2], now_ms))
        return KemKeyring(self.current, self.created_ms, kept)

    def to_bytes(self) -> bytes:
        records = [_KEYRING_RECORD.pack(self.current.seed, self.created_ms, 0)]
        records += [_KEYRING_RECORD.pack(p.seed, c, r) for p, c, r in self.retired]
        return b"".join(records)

    @classmethod
    def from_bytes(cls, data: bytes) -> KemKeyring:
        size = _KEYRING_RECORD.size
        if not data or len(data) % size:
            raise EndToEndError("bad KEM keyring")
        records = [_KEYRING_RECORD.unpack_from(data, i) for i in range(0, len(data), size)]
        (seed, created, retired_at), rest = records[0], records[1:]
        if retired_at != 0 or any(r == 0 for _, _, r in rest):
            raise EndToEndError("bad KEM keyring")
        retired = tuple((KemKeyPair.from_seed(s), c, r) for s, c, r in rest)
        return cls(KemKeyPair.from_seed(seed), created, retired)

    def __repr__(self) -> str:
        return f"KemKeyring(current={self.current!r}, retired={len(self.retired)})"
