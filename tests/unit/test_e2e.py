"""Unit tests for end-to-end sealing: round trips, exact bytes, and binding to context."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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


class Party:
    """A user with keys and a certificate from the test CA."""

    def __init__(self, ca: ServerIdentity, name: str, keys: UserKeys | None = None) -> None:
        self.keys = keys or generate_user_keys()
        csr = build_csr(name, f"{name}@example.org", self.keys)
        der = issue_certificate(ca, verify_csr(csr))
        self.cert = load_user_certificate(der, ca.certificate)
        self.fp = self.cert.fingerprint


@pytest.fixture(scope="module")
def ca() -> ServerIdentity:
    return ServerIdentity.create()


@pytest.fixture(scope="module")
def alice(ca: ServerIdentity) -> Party:
    return Party(ca, "alice")


@pytest.fixture(scope="module")
def bob(ca: ServerIdentity) -> Party:
    return Party(ca, "bob")


@pytest.fixture(scope="module")
def mallory(ca: ServerIdentity) -> Party:
    return Party(ca, "mallory")


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 1000, 70_000])
def test_round_trip_and_size(alice: Party, bob: Party, size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    envelope = seal(alice.keys, alice.fp, bob.cert, "m-1", plaintext)
    padded = (size // 16 + 1) * 16
    assert len(envelope) == 1 + 32 + 16 + padded + 32
    assert envelope[0] == 1
    assert open_sealed(bob.keys, bob.fp, alice.cert, "m-1", envelope) == plaintext


def test_unicode_message_id_round_trip(alice: Party, bob: Party) -> None:
    envelope = seal(alice.keys, alice.fp, bob.cert, "消息-7", b"hi")
    assert open_sealed(bob.keys, bob.fp, alice.cert, "消息-7", envelope) == b"hi"


def test_each_seal_is_fresh(alice: Party, bob: Party) -> None:
    one = seal(alice.keys, alice.fp, bob.cert, "m", b"same")
    two = seal(alice.keys, alice.fp, bob.cert, "m", b"same")
    assert one[1:33] != two[1:33]  # ephemeral key
    assert one[33:49] != two[33:49]  # IV
    assert one[49:] != two[49:]


def test_envelope_does_not_contain_the_plaintext(alice: Party, bob: Party) -> None:
    plaintext = b"the quick brown fox meets the lazy dog at noon " * 8
    envelope = seal(alice.keys, alice.fp, bob.cert, "m", plaintext)
    for start in range(0, len(plaintext) - 8, 8):
        assert plaintext[start : start + 8] not in envelope


def _reference_envelope(
    sender: UserKeys,
    sender_fp: str,
    recipient: UserCertificate,
    message_id: str,
    plaintext: bytes,
    iv: bytes,
    ephemeral: X25519PrivateKey,
) -> bytes:
    """DESIGN.md section 3 written out again with the library directly."""
    peer = X25519PublicKey.from_public_bytes(recipient.agreement_public)
    ikm = ephemeral.exchange(peer) + sender.agreement.exchange(peer)
    info = (
        b"uchat-e2e-v1"
        + bytes.fromhex(sender_fp)
        + bytes.fromhex(recipient.fingerprint)
        + message_id.encode()
    )
    okm = HKDF(hashes.SHA256(), 64, salt=bytes(32), info=info).derive(ikm)
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(okm[:32]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()
    public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = b"\x01" + public + iv + ciphertext
    return body + hmac.new(okm[32:], body, hashlib.sha256).digest()


@pytest.mark.parametrize("plaintext", [b"", b"hello", b"x" * 16, "你好".encode()])
def test_exact_output_with_injected_iv_and_ephemeral(
    alice: Party, bob: Party, plaintext: bytes
) -> None:
    iv = bytes(range(16))
    ephemeral = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"ephemeral").digest())
    envelope = seal(alice.keys, alice.fp, bob.cert, "id-42", plaintext, iv=iv, ephemeral=ephemeral)
    expected = _reference_envelope(
        alice.keys, alice.fp, bob.cert, "id-42", plaintext, iv, ephemeral
    )
    assert envelope == expected
    assert envelope[33:49] == iv


def test_seal_refuses_a_bad_iv_length(alice: Party, bob: Party) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        seal(alice.keys, alice.fp, bob.cert, "m", b"x", iv=b"short")


@pytest.mark.parametrize("bad_fp", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_malformed_fingerprints_are_a_local_error(alice: Party, bob: Party, bad_fp: str) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        seal(alice.keys, bad_fp, bob.cert, "m", b"x")
    envelope = seal(alice.keys, alice.fp, bob.cert, "m", b"x")
    with pytest.raises(ValueError, match="fingerprint"):
        open_sealed(bob.keys, bad_fp, alice.cert, "m", envelope)


def test_wrong_recipient_cannot_open(alice: Party, bob: Party, mallory: Party) -> None:
    envelope = seal(alice.keys, alice.fp, bob.cert, "m", b"for bob")
    with pytest.raises(CryptoError) as caught:
        open_sealed(mallory.keys, mallory.fp, alice.cert, "m", envelope)
    assert str(caught.value) == OPAQUE
    with pytest.raises(CryptoError):
        open_sealed(mallory.keys, bob.fp, alice.cert, "m", envelope)


def test_wrong_sender_certificate_fails(alice: Party, bob: Party, mallory: Party) -> None:
    envelope = seal(alice.keys, alice.fp, bob.cert, "m", b"from alice")
    with pytest.raises(CryptoError) as caught:
        open_sealed(bob.keys, bob.fp, mallory.cert, "m", envelope)
    assert str(caught.value) == OPAQUE


def test_wrong_message_id_fails(alice: Party, bob: Party) -> None:
    envelope = seal(alice.keys, alice.fp, bob.cert, "m-1", b"hello")
    for other in ("m-2", "m-1 ", "", "M-1"):
        with pytest.raises(CryptoError):
            open_sealed(bob.keys, bob.fp, alice.cert, other, envelope)


def test_swapped_fingerprints_fail(alice: Party, bob: Party) -> None:
    envelope = seal(alice.keys, alice.fp, bob.cert, "m", b"hello")
    with pytest.raises(CryptoError):
        open_sealed(bob.keys, alice.fp, alice.cert, "m", envelope)
    swapped_sender = UserCertificate(
        alice.cert.username,
        alice.cert.email,
        alice.cert.identity_public,
        alice.cert.agreement_public,
        bob.fp,
        alice.cert.der,
    )
    with pytest.raises(CryptoError):
        open_sealed(bob.keys, alice.fp, swapped_sender, "m", envelope)


def test_a_reissued_certificate_changes_the_context(ca: ServerIdentity, alice: Party) -> None:
    bob_before = Party(ca, "bob")
    bob_after = Party(ca, "bob", bob_before.keys)
    assert bob_before.fp != bob_after.fp
    envelope = seal(alice.keys, alice.fp, bob_before.cert, "m", b"pinned")
    with pytest.raises(CryptoError):
        open_sealed(bob_after.keys, bob_after.fp, alice.cert, "m", envelope)
    assert open_sealed(bob_before.keys, bob_before.fp, alice.cert, "m", envelope) == b"pinned"


def test_sender_cannot_open_its_own_envelope_as_if_received(alice: Party, bob: Party) -> None:
    envelope = seal(alice.keys, alice.fp, bob.cert, "m", b"reflect")
    with pytest.raises(CryptoError):
        open_sealed(alice.keys, alice.fp, bob.cert, "m", envelope)
