"""Active attacks on sealed envelopes: every one ends in the same opaque CryptoError."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.certs import (
    ServerIdentity,
    UserCertificate,
    build_csr,
    issue_certificate,
    load_user_certificate,
    verify_csr,
)
from common.crypto.e2e import open_sealed, seal
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import CryptoError

OPAQUE = str(CryptoError())
# Points of small order on Curve25519 (RFC 7748 section 7 and the usual list).
SMALL_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def _party(ca: ServerIdentity, name: str) -> tuple[UserKeys, UserCertificate]:
    keys = generate_user_keys()
    der = issue_certificate(ca, verify_csr(build_csr(name, f"{name}@example.org", keys)))
    return keys, load_user_certificate(der, ca.certificate)


CA = ServerIdentity.create()
ALICE_KEYS, ALICE = _party(CA, "alice")
BOB_KEYS, BOB = _party(CA, "bob")
MALLORY_KEYS, MALLORY = _party(CA, "mallory")
ENVELOPE = seal(ALICE_KEYS, ALICE.fingerprint, BOB, "msg-1", b"meet me at the usual place")


def _bob_opens(envelope: bytes, message_id: str = "msg-1") -> bytes:
    return open_sealed(BOB_KEYS, BOB.fingerprint, ALICE, message_id, envelope)


def _assert_opaque_failure(envelope: bytes, message_id: str = "msg-1") -> None:
    with pytest.raises(CryptoError) as caught:
        _bob_opens(envelope, message_id)
    assert type(caught.value) is CryptoError
    assert str(caught.value) == OPAQUE


def test_the_untouched_envelope_opens() -> None:
    assert _bob_opens(ENVELOPE) == b"meet me at the usual place"


@settings(max_examples=300, deadline=None)
@given(bit=st.integers(min_value=0, max_value=len(ENVELOPE) * 8 - 1))
def test_any_single_bit_flip_fails_the_same_way(bit: int) -> None:
    tampered = bytearray(ENVELOPE)
    tampered[bit // 8] ^= 1 << (bit % 8)
    _assert_opaque_failure(bytes(tampered))


def test_every_single_bit_flip_fails_exhaustively() -> None:
    for bit in range(len(ENVELOPE) * 8):
        tampered = bytearray(ENVELOPE)
        tampered[bit // 8] ^= 1 << (bit % 8)
        _assert_opaque_failure(bytes(tampered))


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(ENVELOPE) - 1), extra=st.binary(max_size=48))
def test_truncated_or_extended_envelopes_fail(cut: int, extra: bytes) -> None:
    _assert_opaque_failure(ENVELOPE[:cut])
    if extra:
        _assert_opaque_failure(ENVELOPE + extra)


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_random_bytes_fail_the_same_way(garbage: bytes) -> None:
    _assert_opaque_failure(garbage)


def test_replay_under_another_message_id_fails() -> None:
    _assert_opaque_failure(ENVELOPE, "msg-2")


def test_mallory_cannot_impersonate_alice() -> None:
    forged = seal(MALLORY_KEYS, ALICE.fingerprint, BOB, "msg-1", b"send money")
    _assert_opaque_failure(forged)


def test_envelope_for_bob_cannot_be_redirected_to_mallory() -> None:
    with pytest.raises(CryptoError) as caught:
        open_sealed(MALLORY_KEYS, MALLORY.fingerprint, ALICE, "msg-1", ENVELOPE)
    assert str(caught.value) == OPAQUE


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS)
def test_small_order_ephemeral_keys_fail_opaquely(point: bytes) -> None:
    tampered = ENVELOPE[:1] + point + ENVELOPE[33:]
    _assert_opaque_failure(tampered)


def test_wrong_version_byte_fails() -> None:
    for version in (0, 2, 255):
        _assert_opaque_failure(bytes([version]) + ENVELOPE[1:])


def _keys_for(ephemeral_public: bytes, message_id: str) -> tuple[bytes, bytes]:
    """What Bob derives, recomputed so the test can mint validly MACed bad plaintexts."""
    ikm = BOB_KEYS.agreement.exchange(
        X25519PublicKey.from_public_bytes(ephemeral_public)
    ) + BOB_KEYS.agreement.exchange(X25519PublicKey.from_public_bytes(ALICE.agreement_public))
    info = (
        b"uchat-e2e-v1"
        + bytes.fromhex(ALICE.fingerprint)
        + bytes.fromhex(BOB.fingerprint)
        + message_id.encode()
    )
    okm = HKDF(hashes.SHA256(), 64, salt=bytes(32), info=info).derive(ikm)
    return okm[:32], okm[32:]


def _mint(padded_plaintext: bytes) -> bytes:
    ephemeral_public = ENVELOPE[1:33]
    iv = bytes(16)
    enc_key, mac_key = _keys_for(ephemeral_public, "msg-1")
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    body = b"\x01" + ephemeral_public + iv + encryptor.update(padded_plaintext)
    return body + encryptor.finalize() + hmac.new(mac_key, body, hashlib.sha256).digest()


def test_minting_helper_agrees_with_the_implementation() -> None:
    assert _bob_opens(_mint(b"hello" + bytes([11]) * 11)) == b"hello"


@pytest.mark.parametrize(
    "padded",
    [
        b"A" * 16,  # last byte 0x41 > 16
        b"A" * 15 + b"\x00",  # zero padding
        b"A" * 12 + b"\x01\x04\x04\x04",  # one inner byte wrong
        b"A" * 16 + b"\x11" * 16,  # 17 > block size
        b"\x03" * 13 + b"\x02\x03\x03",  # wrong byte in the middle of the padding
    ],
)
def test_every_padding_byte_is_checked_even_with_a_valid_mac(padded: bytes) -> None:
    _assert_opaque_failure(_mint(padded))
