"""Client side of KEM keys: making and rotating ours, verifying and recording friends'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from client.core.event_types import KemKeyRejected, KemKeyVerified
from client.core.kem_keys import (
    KemKeyRefused,
    PeerKemKeys,
    PeerKemObserver,
    new_user_keys,
    publish_if_needed,
    signed_current,
    verify_peer_kem_key,
    with_current_kem_key,
)
from client.core.store import LocalStore
from common.crypto.certs import (
    CsrInfo,
    ServerIdentity,
    UserCertificate,
    issue_certificate,
    load_user_certificate,
)
from common.crypto.kem import KEM_KEY_GRACE_MS, KEM_KEY_LIFETIME_MS, KemKeyPair, SignedKemKey
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import RemoteProtocolError, RequestError
from common.protocol.opcodes import MessageType

CA = ServerIdentity.create()
NOW = 1_700_000_000_000


def _certificate(name: str, keys: UserKeys) -> UserCertificate:
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


def _store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "history.db")


def test_peer_key_addition_rotation_and_rollback(tmp_path: Path) -> None:
    bob = new_user_keys(NOW)
    certificate = _certificate("bob", bob)
    peers = PeerKemKeys(_store(tmp_path))
    first = signed_current(bob).to_bytes()
    change = peers.record(certificate, first)
    assert change is not None and change.first  # a verified key addition
    assert peers.record(certificate, first) is None
    newer = SignedKemKey.sign(bob.identity, KemKeyPair.generate(), NOW + 1).to_bytes()
    change = peers.record(certificate, newer)
    assert change is not None and not change.first
    assert peers.record(certificate, first) is None
    current = peers.get(certificate)
    assert current is not None and current.to_bytes() == newer


def test_peer_keys_are_kept_in_the_local_store(tmp_path: Path) -> None:
    bob = new_user_keys(NOW)
    certificate = _certificate("bob", bob)
    store = _store(tmp_path)
    PeerKemKeys(store).record(certificate, signed_current(bob).to_bytes())
    store.close()
    reopened = PeerKemKeys(_store(tmp_path))
    kept = reopened.get(certificate)
    assert kept is not None and kept.to_bytes() == signed_current(bob).to_bytes()
    # after a trusted identity change the old KEM key means nothing for the new identity
    new_bob = new_user_keys(NOW)
    new_certificate = _certificate("bob", new_bob)
    assert reopened.get(new_certificate) is None
    change = reopened.record(new_certificate, signed_current(new_bob).to_bytes())
    assert change is not None and change.first


def test_a_key_the_pinned_identity_did_not_sign_is_refused_loudly(tmp_path: Path) -> None:
    bob, mallory = new_user_keys(NOW), new_user_keys(NOW)
    swapped = SignedKemKey.sign(mallory.identity, KemKeyPair.generate(), NOW).to_bytes()
    with pytest.raises(KemKeyRefused, match="not signed by bob's verified identity key"):
        PeerKemKeys(_store(tmp_path)).record(_certificate("bob", bob), swapped)


def _observer(store: LocalStore) -> tuple[PeerKemObserver, list[object]]:
    events: list[object] = []
    observer = PeerKemObserver(
        keys=PeerKemKeys(store), pins=store, ca=CA.certificate_der, emit=events.append, me="me"
    )
    return observer, events


def test_the_observer_announces_additions_and_keeps_rotations_quiet(tmp_path: Path) -> None:
    bob = new_user_keys(NOW)
    der = _certificate("bob", bob).der
    store = _store(tmp_path)
    observer, events = _observer(store)
    observer.observe("bob", der, None)  # not upgraded yet: nothing to say
    first = signed_current(bob)
    observer.observe("bob", der, first.to_bytes())  # first sight: not even pinned yet
    assert events == [KemKeyVerified("bob", first.key_id, True)]
    store.pin_certificate("bob", der)
    observer.observe("bob", der, first.to_bytes())
    newer = SignedKemKey.sign(bob.identity, KemKeyPair.generate(), NOW + 1)
    observer.observe("bob", der, newer.to_bytes())
    assert events[1:] == [KemKeyVerified("bob", newer.key_id, False)]


def test_the_observer_refuses_a_swapped_key_once_and_keeps_the_verified_one(
    tmp_path: Path,
) -> None:
    bob, mallory = new_user_keys(NOW), new_user_keys(NOW)
    certificate = _certificate("bob", bob)
    store = _store(tmp_path)
    store.pin_certificate("bob", certificate.der)
    observer, events = _observer(store)
    observer.observe("bob", certificate.der, signed_current(bob).to_bytes())
    swapped = SignedKemKey.sign(mallory.identity, KemKeyPair.generate(), NOW + 5).to_bytes()
    observer.observe("bob", certificate.der, swapped)
    observer.observe("bob", certificate.der, swapped)
    assert events[1:] == [KemKeyRejected("bob")]
    kept = observer.keys.get(certificate)
    assert kept is not None and kept.to_bytes() == signed_current(bob).to_bytes()


def test_the_observer_waits_while_the_identity_key_change_is_not_trusted(
    tmp_path: Path,
) -> None:
    bob, new_bob = new_user_keys(NOW), new_user_keys(NOW)
    store = _store(tmp_path)
    store.pin_certificate("bob", _certificate("bob", bob).der)
    observer, events = _observer(store)
    served = _certificate("bob", new_bob)
    observer.observe("bob", served.der, signed_current(new_bob).to_bytes())
    assert events == []  # the key-change warning speaks for it
    assert observer.keys.get(served) is None
    # a certificate that names someone else is the certificate book's to refuse
    observer.observe("carol", served.der, signed_current(new_bob).to_bytes())
    assert events == []
    # our own key, served back in a room's member list, is not a friend's addition
    me = new_user_keys(NOW)
    observer.observe("me", _certificate("me", me).der, signed_current(me).to_bytes())
    assert events == []


def test_missing_and_malformed_peer_keys() -> None:
    certificate = _certificate("bob", new_user_keys(NOW))
    assert verify_peer_kem_key(certificate, None) is None
    with pytest.raises(RemoteProtocolError):
        verify_peer_kem_key(certificate, "text")
    with pytest.raises(KemKeyRefused):
        verify_peer_kem_key(certificate, bytes(10))


def test_publishing_checks_that_the_server_logged_the_key() -> None:
    keys = new_user_keys(NOW)
    signed = signed_current(keys).to_bytes()
    proof = {"head": {"size": 1}, "position": 0, "proof": b""}
    sent: list[MessageType] = []

    def request(kind: MessageType, params: dict[str, Any] | None) -> dict[str, Any]:
        sent.append(kind)
        if kind is MessageType.CERTIFICATE:
            return {"kem_key": None}
        return {"key_id": b"k" * 16, "transparency": proof}

    checked: list[tuple[str, str, bytes, object]] = []
    assert publish_if_needed(request, "alice", keys, lambda *args: checked.append(args))
    assert sent == [MessageType.CERTIFICATE, MessageType.PUBLISH_KEM_KEY]
    assert checked == [("kem_key", "alice", signed, proof)]

    def refuse(*args: object) -> None:
        raise RequestError("key_not_logged", "not in the log", None)

    with pytest.raises(RequestError):
        publish_if_needed(request, "alice", keys, refuse)
