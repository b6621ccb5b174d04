"""One envelope per message, whatever the number of recipients (DESIGN.md section 3b).

Wire form:
    header = version (1) || chain id (16) || iteration (4, big-endian)
    header || AES-256-CBC ciphertext (PKCS#7) || HMAC-SHA256 (32) || Ed25519 signature (64)

The AES key, HMAC key and IV are message n's keys from the sender chain, so no IV
travels. The HMAC covers header and ciphertext and is checked (constant time) before
anything is decrypted. The signature is by the sender's identity key over
label || bind(conversation, header, ciphertext, HMAC): every member holds the chain
key and could make a valid HMAC, but only the sender can sign, and the conversation
binding stops the server relabelling an envelope into another chat.

Sealed body: sender time ms (8) || flag (1: 0 = no member list, 1 = room) ||
member-list hash (32, only when flag is 1) || the message body (codec bytes).

Every failure is one `EndToEndError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.crypto.primitives import (
    aes256_cbc_decrypt,
    aes256_cbc_encrypt,
    constant_time_equal,
    ed25519_sign,
    ed25519_verify,
    hmac_sha256,
)
from common.crypto.sender_chain import CHAIN_ID_SIZE, MessageKeys
from common.crypto.transcript import bind, text
from common.errors import EndToEndError

VERSION = 2
SIGNATURE_LABEL = b"uchat-v2 envelope signature"
MAC_SIZE = 32
SIGNATURE_SIZE = 64
BLOCK_SIZE = 16
MEMBER_HASH_SIZE = 32
_HEADER = struct.Struct(">B16sI")
_TIME = struct.Struct(">Q")
MIN_ENVELOPE_SIZE = _HEADER.size + BLOCK_SIZE + MAC_SIZE + SIGNATURE_SIZE


@dataclass(frozen=True)
class SealedBody:
    """What only members read: the sender's clock, the member list sealed for, the body."""

    sent_ms: int
    body: bytes
    member_hash: bytes | None = None  # rooms only

    def to_bytes(self) -> bytes:
        if not 0 <= self.sent_ms < 2**63:
            raise ValueError("sent_ms out of range")
        if self.member_hash is None:
            return _TIME.pack(self.sent_ms) + b"\x00" + self.body
        if len(self.member_hash) != MEMBER_HASH_SIZE:
            raise ValueError("member_hash must be 32 bytes")
        return _TIME.pack(self.sent_ms) + b"\x01" + self.member_hash + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedBody:
        if len(data) < _TIME.size + 1:
            raise EndToEndError()
        (sent_ms,) = _TIME.unpack_from(data)
        flag, rest = data[_TIME.size], data[_TIME.size + 1 :]
        if sent_ms >= 2**63 or flag not in (0, 1):
            raise EndToEndError()
        if flag == 0:
            return cls(sent_ms, rest)
        if len(rest) < MEMBER_HASH_SIZE:
            raise EndToEndError()
        return cls(sent_ms, rest[MEMBER_HASH_SIZE:], rest[:MEMBER_HASH_SIZE])


@dataclass(frozen=True)
class EnvelopeHeader:
    """The clear part: which chain and iteration, so the reader can find the keys."""

    chain_id: bytes
    iteration: int


def envelope_header(data: bytes) -> EnvelopeHeader:
    """Parse only the header (to look up the chain); nothing is verified yet."""
    if len(data) < MIN_ENVELOPE_SIZE:
        raise EndToEndError()
    version, chain_id, iteration = _HEADER.unpack_from(data)
    if version != VERSION:
        raise EndToEndError()
    return EnvelopeHeader(chain_id, iteration)


def _signed_part(conversation: str, header: bytes, ciphertext: bytes, mac: bytes) -> bytes:
    return SIGNATURE_LABEL + bind(text(conversation), header, ciphertext, mac)


def seal_envelope(
    *,
    identity: Ed25519PrivateKey,
    conversation: str,
    chain_id: bytes,
    keys: MessageKeys,
    body: SealedBody,
) -> bytes:
    if len(chain_id) != CHAIN_ID_SIZE:
        raise ValueError("chain_id must be 16 bytes")
    header = _HEADER.pack(VERSION, chain_id, keys.iteration)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(body.to_bytes()) + padder.finalize()
    ciphertext = aes256_cbc_encrypt(keys.aes_key, keys.iv, padded)
    mac = hmac_sha256(keys.hmac_key, header + ciphertext)
    signature = ed25519_sign(identity, _signed_part(conversation, header, ciphertext, mac))
    return header + ciphertext + mac + signature


def verify_envelope_signature(
    data: bytes, conversation: str, sender_identity_public: bytes
) -> None:
    """The sender's signature alone: checked before any chain state is touched."""
    header_size = _HEADER.size
    envelope_header(data)
    header = data[:header_size]
    ciphertext = data[header_size : -(MAC_SIZE + SIGNATURE_SIZE)]
    mac = data[-(MAC_SIZE + SIGNATURE_SIZE) : -SIGNATURE_SIZE]
    if len(ciphertext) % BLOCK_SIZE or not ed25519_verify(
        sender_identity_public,
        data[-SIGNATURE_SIZE:],
        _signed_part(conversation, header, ciphertext, mac),
    ):
        raise EndToEndError()


def open_envelope(
    data: bytes, *, conversation: str, sender_identity_public: bytes, keys: MessageKeys
) -> SealedBody:
    """Signature, then HMAC (before decrypting), then decrypt and unpad."""
    verify_envelope_signature(data, conversation, sender_identity_public)
    parsed = envelope_header(data)
    if parsed.iteration != keys.iteration:
        raise EndToEndError()
    header = data[: _HEADER.size]
    ciphertext = data[_HEADER.size : -(MAC_SIZE + SIGNATURE_SIZE)]
    mac = data[-(MAC_SIZE + SIGNATURE_SIZE) : -SIGNATURE_SIZE]
    if not constant_time_equal(hmac_sha256(keys.hmac_key, header + ciphertext), mac):
        raise EndToEndError()
    try:
        padded = aes256_cbc_decrypt(keys.aes_key, keys.iv, ciphertext)
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise EndToEndError() from None
    return SealedBody.from_bytes(plain)
