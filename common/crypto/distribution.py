"""Chain distribution messages: a sender chain's state sealed with HPKE to one recipient.

RFC 9180 HPKE, base mode, KEM X-Wing (ML-KEM-768 + X25519), HKDF-SHA256, AES-256-GCM,
through pycryptodome's `Crypto.Protocol.HPKE`. `info` binds the conversation, the
sender, the recipient and the chain id, so a distribution cannot be replayed into
another conversation or to another member. X-Wing has no authenticated mode, so the
sender's Ed25519 identity key signs the whole message (DESIGN.md section 3b).

Wire form, fixed size (1,277 bytes):
    version (1) || chain id (16) || recipient KEM key id (16) || enc (1120)
    || HPKE ciphertext of [iteration (4) || chain key (32) || sender time ms (8)] (60)
    || Ed25519 signature (64) over label || bind(info, everything before the signature)

The header (version, chain id, key id) is also the HPKE AAD. The recipient checks the
signature before opening anything; every failure is one `EndToEndError`.

pycryptodome draws the HPKE encapsulation randomness itself, so sealing is not
reproducible; opening is, and is tested against a captured message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from Crypto.Protocol import HPKE
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.crypto.kem import (
    KEM_CIPHERTEXT_SIZE,
    KEY_ID_SIZE,
    SIGNATURE_SIZE,
    KemKeyPair,
    SignedKemKey,
    kem_public_key,
)
from common.crypto.primitives import ed25519_sign, ed25519_verify
from common.crypto.sender_chain import CHAIN_ID_SIZE, ChainState
from common.crypto.transcript import bind, text
from common.errors import EndToEndError

VERSION = 2
INFO_LABEL = b"uchat-v2 distribution"
SIGNATURE_LABEL = b"uchat-v2 distribution signature"
_PAYLOAD = struct.Struct(">I32sQ")
_TAG_SIZE = 16
_HEADER_SIZE = 1 + CHAIN_ID_SIZE + KEY_ID_SIZE
_SEALED_SIZE = _PAYLOAD.size + _TAG_SIZE
DISTRIBUTION_SIZE = _HEADER_SIZE + KEM_CIPHERTEXT_SIZE + _SEALED_SIZE + SIGNATURE_SIZE


@dataclass(frozen=True)
class Distribution:
    """An opened distribution: the chain to read from, and when the sender sent it."""

    state: ChainState
    sent_ms: int
    recipient_key_id: bytes


def distribution_info(conversation: str, sender: str, recipient: str, chain_id: bytes) -> bytes:
    return INFO_LABEL + bind(text(conversation), text(sender), text(recipient), chain_id)


def seal_distribution(
    *,
    identity: Ed25519PrivateKey,
    state: ChainState,
    sent_ms: int,
    conversation: str,
    sender: str,
    recipient: str,
    recipient_kem: SignedKemKey,
) -> bytes:
    """Seal `state` to a recipient's KEM key. The caller has verified `recipient_kem`."""
    if not 0 <= sent_ms < 2**63:
        raise ValueError("sent_ms out of range")
    info = distribution_info(conversation, sender, recipient, state.chain_id)
    header = bytes([VERSION]) + state.chain_id + recipient_kem.key_id
    cipher = HPKE.new(
        receiver_key=kem_public_key(recipient_kem.public),
        aead_id=HPKE.AEAD.AES256_GCM,
        info=info,
    )
    payload = _PAYLOAD.pack(state.iteration, state.chain_key, sent_ms)
    body = header + cipher.enc + cipher.seal(payload, header)
    return body + ed25519_sign(identity, SIGNATURE_LABEL + bind(info, body))


def distribution_key_id(data: bytes) -> bytes:
    """Which of the recipient's KEM keys (current or retired) the message was sealed to."""
    if len(data) != DISTRIBUTION_SIZE:
        raise EndToEndError()
    return data[1 + CHAIN_ID_SIZE : _HEADER_SIZE]


def open_distribution(
    data: bytes,
    *,
    conversation: str,
    sender: str,
    recipient: str,
    sender_identity_public: bytes,
    kem_key: Callable[[bytes], KemKeyPair | None],
) -> Distribution:
    """Verify and open; `kem_key(key_id)` returns the recipient's matching private half."""
    if len(data) != DISTRIBUTION_SIZE or data[0] != VERSION:
        raise EndToEndError()
    chain_id = data[1 : 1 + CHAIN_ID_SIZE]
    key_id = data[1 + CHAIN_ID_SIZE : _HEADER_SIZE]
    body, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    info = distribution_info(conversation, sender, recipient, chain_id)
    if not ed25519_verify(sender_identity_public, signature, SIGNATURE_LABEL + bind(info, body)):
        raise EndToEndError()
    pair = kem_key(key_id)
    if pair is None or pair.key_id != key_id:
        raise EndToEndError()
    enc = data[_HEADER_SIZE : _HEADER_SIZE + KEM_CIPHERTEXT_SIZE]
    sealed = body[_HEADER_SIZE + KEM_CIPHERTEXT_SIZE :]
    try:
        cipher = HPKE.new(
            receiver_key=pair.private_key(),
            aead_id=HPKE.AEAD.AES256_GCM,
            info=info,
            enc=enc,
        )
        payload = cipher.unseal(sealed, data[:_HEADER_SIZE])
    except ValueError:  # DeserializeError and a failed GCM tag are both ValueErrors
        raise EndToEndError() from None
    iteration, chain_key, sent_ms = _PAYLOAD.unpack(payload)
    return Distribution(ChainState(chain_id, iteration, chain_key), sent_ms, key_id)
