"""Client side of KEM keys: making and rotating ours, verifying and recording friends'."""

from __future__ import annotations

import pytest

from client.core.kem_keys import (
    KemKeyRefused,
    PeerKemKeys,
    new_user_keys,
    signed_current,
    verify_peer_kem_key,
    with_current_kem_key,
)
from common.crypto.certs import CsrInfo, ServerIdentity, issue_certificate, load_user_certificate
from common.crypto.kem import KEM_KEY_GRACE_MS, KEM_KEY_LIFETIME_MS, KemKeyPair, SignedKemKey
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import RemoteProtocolError

CA = ServerIdentity.create()
NOW = 1_700_000_000_000


def _certificate(name: str, keys: UserKeys) -> object:
    info = CsrInfo(name, f"{name}@example.com", keys.identity_public, keys.agreement_public)
    return load_user_certificate(issue_certificate(CA, info), CA.certificate_der)


def test_new_accounts_get_a_kem_key() -> None:
    keys = new_user_keys(NOW, random=lambda n: bytes([1]) * n)
    assert keys.kem is not None and keys.kem.created_ms == NOW
    assert keys.kem.current == KemKeyPair.from_seed(bytes([1]) * 32)
    assert with_current_kem_key(keys, NOW + 1) is None  # nothing to do


def test_version_1_keys_get_one_and_due_keys_rotate() -> None:
    old = generate_user_keys()
    upgraded = with_current_kem_key(old, NOW)
    assert upgraded is not None and upgraded.kem is not None
    assert upgraded.identity_public == old.identity_public  # identity untouched
    later = NOW + KEM_KEY_LIFETIME_MS
    rotated = with_current_kem_key(upgraded, later)
    assert rotated is not None and rotated.kem is not None
    assert rotated.kem.current != upgraded.kem.current
    assert rotated.kem.find(upgraded.kem.current.key_id) == upgraded.kem.current
    # After the grace period the first private half is gone (the next rotation is due
    # at the same moment, so the second becomes the one retired).
    pruned = with_current_kem_key(rotated, later + KEM_KEY_GRACE_MS)
    assert pruned is not None and pruned.kem is not None
    assert pruned.kem.find(upgraded.kem.current.key_id) is None
    assert [pair for pair, _, _ in pruned.kem.retired] == [rotated.kem.current]


def test_signed_current_is_stable_and_verifies() -> None:
    keys = new_user_keys(NOW)
    assert signed_current(keys) == signed_current(keys)
    signed_current(keys).verify(keys.identity_public)


def test_peer_key_addition_rotation_and_rollback() -> None:
    bob = new_user_keys(NOW)
    certificate = _certificate("bob", bob)
    peers = PeerKemKeys()
    first = signed_current(bob).to_bytes()
    change = peers.record(certificate, first)  # type: ignore[arg-type]
    assert change is not None and change.first  # a verified key addition
    assert peers.record(certificate, first) is None  # type: ignore[arg-type]
    newer = SignedKemKey.sign(bob.identity, KemKeyPair.generate(), NOW + 1).to_bytes()
    change = peers.record(certificate, newer)  # type: ignore[arg-type]
    assert change is not None and not change.first
    assert peers.record(certificate, first) is None  # type: ignore[arg-type]
    current = peers.get("bob")
    assert current is not None and current.to_bytes() == newer


def test_a_key_the_pinned_identity_did_not_sign_is_refused_loudly() -> None:
    bob, mallory = new_user_keys(NOW), new_user_keys(NOW)
    swapped = SignedKemKey.sign(mallory.identity, KemKeyPair.generate(), NOW).to_bytes()
    with pytest.raises(KemKeyRefused, match="not signed by bob's verified identity key"):
        PeerKemKeys().record(_certificate("bob", bob), swapped)  # type: ignore[arg-type]


def test_missing_and_malformed_peer_keys() -> None:
    certificate = _certificate("bob", new_user_keys(NOW))
    assert verify_peer_kem_key(certificate, None) is None  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError):
        verify_peer_kem_key(certificate, "text")  # type: ignore[arg-type]
    with pytest.raises(KemKeyRefused):
        verify_peer_kem_key(certificate, bytes(10))  # type: ignore[arg-type]
