"""End-to-end sealing of one message body to one recipient (DESIGN.md section 3).

The server relays envelopes it cannot read. Each envelope mixes a fresh ephemeral X25519
key with the recipient's key (so a later leak of the sender's key alone exposes nothing
sent) and the sender's static key with the recipient's (so no third party could have
made it: only the two parties hold that secret). Both certificate fingerprints and the
message id go into the key derivation, so an envelope cannot be replayed under another
id or attributed to another sender. There is no forward secrecy against a leak of the
recipient's key: that needs ratcheting, which this one-shot design does not attempt.

Envelope: version (1) || ephemeral public (32) || IV (16) || AES-256-CBC ciphertext
(PKCS#7) || HMAC-SHA256 (32) over everything before it.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.crypto.certs import UserCertificate
from common.crypto.keys import UserKeys
from common.crypto.primitives import (
    aes256_cbc_decrypt,
    aes256_cbc_encrypt,
    constant_time_equal,
    hkdf_sha256,
    hmac_sha256,
    x25519_public_bytes,
    x25519_shared,
)
from common.errors import CryptoError

VERSION = 1
KDF_LABEL = b"uchat-e2e-v1"
KDF_SALT = bytes(32)
PUBLIC_SIZE = 32
IV_SIZE = 16
BLOCK_SIZE = 16
MAC_SIZE = 32
KEY_SIZE = 32
FINGERPRINT_SIZE = 32
HEADER_SIZE = 1 + PUBLIC_SIZE + IV_SIZE
MIN_ENVELOPE_SIZE = HEADER_SIZE + BLOCK_SIZE + MAC_SIZE


def _fingerprint_bytes(fp: str) -> bytes:
    """Fixed-size binary fingerprint, so the KDF context cannot be parsed two ways."""
    try:
        raw = bytes.fromhex(fp)
    except ValueError:
        raise ValueError("fingerprint must be SHA-256 hex") from None
    if len(raw) != FINGERPRINT_SIZE:
        raise ValueError("fingerprint must be SHA-256 hex")
    return raw


def _derive_keys(
    ikm: bytes, sender_fingerprint: str, recipient_fingerprint: str, message_id: str
) -> tuple[bytes, bytes]:
    info = (
        KDF_LABEL
        + _fingerprint_bytes(sender_fingerprint)
        + _fingerprint_bytes(recipient_fingerprint)
        + message_id.encode("utf-8")
    )
    material = hkdf_sha256(ikm, KDF_SALT, info, 2 * KEY_SIZE)
    return material[:KEY_SIZE], material[KEY_SIZE:]


def seal(
    sender: UserKeys,
    sender_fingerprint: str,
    recipient: UserCertificate,
    message_id: str,
    plaintext: bytes,
    *,
    iv: bytes | None = None,
    ephemeral: X25519PrivateKey | None = None,
) -> bytes:
    """Encrypt and authenticate `plaintext` for `recipient`.

    `iv` and `ephemeral` exist only so tests can check exact output; never pass them
    otherwise, since reusing either weakens every message that shares it.
    """
    ephemeral_key = X25519PrivateKey.generate() if ephemeral is None else ephemeral
    iv = os.urandom(IV_SIZE) if iv is None else iv
    if len(iv) != IV_SIZE:
        raise ValueError("IV must be 16 bytes")
    ikm = x25519_shared(ephemeral_key, recipient.agreement_public) + x25519_shared(
        sender.agreement, recipient.agreement_public
    )
    enc_key, mac_key = _derive_keys(ikm, sender_fingerprint, recipient.fingerprint, message_id)
    padder = padding.PKCS7(BLOCK_SIZE * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    header = bytes([VERSION]) + x25519_public_bytes(ephemeral_key) + iv
    body = header + aes256_cbc_encrypt(enc_key, iv, padded)
    return body + hmac_sha256(mac_key, body)


def open_sealed(
    recipient: UserKeys,
    recipient_fingerprint: str,
    sender: UserCertificate,
    message_id: str,
    envelope: bytes,
) -> bytes:
    """Check then decrypt an envelope; every failure is the same opaque `CryptoError()`.

    Only a malformed fingerprint argument (a local bug, not an attack) is a `ValueError`.
    """
    size = len(envelope)
    if size < MIN_ENVELOPE_SIZE or (size - HEADER_SIZE - MAC_SIZE) % BLOCK_SIZE:
        raise CryptoError()
    if envelope[0] != VERSION:
        raise CryptoError()
    body, mac = envelope[:-MAC_SIZE], envelope[-MAC_SIZE:]
    ephemeral_public = envelope[1 : 1 + PUBLIC_SIZE]
    iv = envelope[1 + PUBLIC_SIZE : HEADER_SIZE]
    try:
        ikm = x25519_shared(recipient.agreement, ephemeral_public) + x25519_shared(
            recipient.agreement, sender.agreement_public
        )
    except CryptoError:
        raise CryptoError() from None
    enc_key, mac_key = _derive_keys(ikm, sender.fingerprint, recipient_fingerprint, message_id)
    if not constant_time_equal(hmac_sha256(mac_key, body), mac):
        raise CryptoError()
    padded = aes256_cbc_decrypt(enc_key, iv, body[HEADER_SIZE:])
    unpadder = padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CryptoError() from None
