"""Message envelopes v2: exact bytes from injected keys, round trips, every field
tampered, forward secrecy of a captured envelope, and one envelope per message."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.envelope_v2 import (
    MIN_ENVELOPE_SIZE,
    SealedBody,
    envelope_header,
    open_envelope,
    seal_envelope,
    verify_envelope_signature,
)
from common.crypto.primitives import ed25519_private_from_bytes, ed25519_public_bytes, sha256
from common.crypto.sender_chain import ChainState, MessageKeys, ReceiverChain, SenderChain
from common.errors import EndToEndError

ALICE = ed25519_private_from_bytes(bytes([21]) * 32)
MALLORY = ed25519_private_from_bytes(bytes([22]) * 32)
ALICE_PUBLIC = ed25519_public_bytes(ALICE)
CHAIN_ID = bytes(range(16))
SEED = bytes(range(32, 64))
CONVERSATION = "room:4242"
BODY = SealedBody(1_700_000_000_000, b"meet at 10", sha256(b"members"))


def _chain() -> SenderChain:
    return SenderChain(ChainState(CHAIN_ID, 0, SEED))


def _seal(keys: MessageKeys, body: SealedBody = BODY, conversation: str = CONVERSATION) -> bytes:
    return seal_envelope(
        identity=ALICE, conversation=conversation, chain_id=CHAIN_ID, keys=keys, body=body
    )


def _open(data: bytes, keys: MessageKeys, conversation: str = CONVERSATION) -> SealedBody:
    return open_envelope(
        data, conversation=conversation, sender_identity_public=ALICE_PUBLIC, keys=keys
    )


def test_exact_envelope_from_injected_keys() -> None:
    # Deterministic end to end: chain keys from the seed, CBC IV from the chain, Ed25519.
    keys = _chain().next_keys()
    data = _seal(keys)
    assert data == _seal(_chain().next_keys())
    assert data[:21] == b"\x02" + CHAIN_ID + bytes(4)
    assert sha256(data).hex() == EXPECTED_SHA256


EXPECTED_SHA256 = "ba72d97e83f5db20f46aba630d713a1d42caa9f94703068c8d9568e1e71c2cc9"


def test_round_trip_room_and_direct() -> None:
    chain = _chain()
    room_keys, direct_keys = chain.next_keys(), chain.next_keys()
    assert _open(_seal(room_keys), room_keys) == BODY
    direct = SealedBody(5, b"hi")
    assert _open(_seal(direct_keys, direct), direct_keys) == direct


def test_header_names_chain_and_iteration() -> None:
    chain = _chain()
    chain.next_keys()
    keys = chain.next_keys()
    header = envelope_header(_seal(keys))
    assert (header.chain_id, header.iteration) == (CHAIN_ID, 1)


def test_one_envelope_serves_every_member() -> None:
    # Three members each hold the distributed chain state; the same bytes open for all.
    sender = _chain()
    readers = [ReceiverChain(sender.state()) for _ in range(3)]
    data = _seal(sender.next_keys())
    header = envelope_header(data)
    for reader in readers:
        body = reader.open(header.iteration, lambda keys: _open(data, keys))
        assert body == BODY


def test_captured_envelope_cannot_be_opened_after_its_key_was_used() -> None:
    sender = _chain()
    reader = ReceiverChain(sender.state())
    data = _seal(sender.next_keys())
    reader.open(0, lambda keys: _open(data, keys))
    # Whoever later steals the reader's whole state cannot open the captured envelope.
    stolen = ReceiverChain(ChainState.from_bytes(reader.state().to_bytes()))
    with pytest.raises(EndToEndError):
        stolen.open(0, lambda keys: _open(data, keys))
    with pytest.raises(EndToEndError):
        reader.open(0, lambda keys: _open(data, keys))


def test_wrong_keys_are_refused() -> None:
    chain = _chain()
    first, second = chain.next_keys(), chain.next_keys()
    with pytest.raises(EndToEndError):
        _open(_seal(first), second)
    forged_iteration = MessageKeys(0, second.aes_key, second.hmac_key, second.iv)
    with pytest.raises(EndToEndError):
        _open(_seal(first), forged_iteration)


def test_relabelled_conversation_is_refused() -> None:
    keys = _chain().next_keys()
    with pytest.raises(EndToEndError):
        _open(_seal(keys), keys, conversation="room:4243")


def test_another_member_holding_the_chain_key_cannot_forge_the_sender() -> None:
    keys = _chain().next_keys()
    forged = seal_envelope(
        identity=MALLORY, conversation=CONVERSATION, chain_id=CHAIN_ID, keys=keys, body=BODY
    )
    with pytest.raises(EndToEndError):
        _open(forged, keys)
    with pytest.raises(EndToEndError):
        verify_envelope_signature(forged, CONVERSATION, ALICE_PUBLIC)


def test_every_byte_is_covered() -> None:
    keys = _chain().next_keys()
    data = _seal(keys)
    for offset in range(len(data)):
        tampered = bytearray(data)
        tampered[offset] ^= 0x01
        with pytest.raises(EndToEndError):
            _open(bytes(tampered), keys)


def test_restitched_signature_over_a_forged_mac_still_fails_the_mac() -> None:
    # A member (holds the chain) cannot help; an outsider re-signing as the sender is
    # impossible, but even a valid signature over a wrong MAC must not decrypt.
    from common.crypto.envelope_v2 import SIGNATURE_LABEL
    from common.crypto.primitives import ed25519_sign
    from common.crypto.transcript import bind, text

    keys = _chain().next_keys()
    data = bytearray(_seal(keys))
    data[-65] ^= 1  # last MAC byte
    header, ciphertext, mac = bytes(data[:21]), bytes(data[21:-96]), bytes(data[-96:-64])
    signature = ed25519_sign(
        ALICE, SIGNATURE_LABEL + bind(text(CONVERSATION), header, ciphertext, mac)
    )
    with pytest.raises(EndToEndError):
        _open(bytes(data[:-64]) + signature, keys)


@pytest.mark.parametrize("size", [0, 1, MIN_ENVELOPE_SIZE - 1])
def test_truncated_envelopes_are_refused(size: int) -> None:
    keys = _chain().next_keys()
    with pytest.raises(EndToEndError):
        _open(_seal(keys)[:size], keys)


def test_other_versions_are_refused() -> None:
    keys = _chain().next_keys()
    data = b"\x01" + _seal(keys)[1:]
    with pytest.raises(EndToEndError):
        envelope_header(data)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00" * 8, bytes(8) + b"\x02", bytes(8) + b"\x01" + bytes(31), b"\xff" * 8 + b"\x00"],
)
def test_malformed_sealed_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(EndToEndError):
        SealedBody.from_bytes(raw)


def test_sealed_body_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        SealedBody(-1, b"").to_bytes()
    with pytest.raises(ValueError):
        SealedBody(0, b"", b"short").to_bytes()


@settings(max_examples=30, deadline=None)
@given(
    body=st.binary(max_size=300),
    sent_ms=st.integers(0, 2**63 - 1),
    room=st.booleans(),
    conversation=st.text(max_size=30),
)
def test_any_body_round_trips(body: bytes, sent_ms: int, room: bool, conversation: str) -> None:
    sealed = SealedBody(sent_ms, body, sha256(body) if room else None)
    keys = _chain().next_keys()
    data = _seal(keys, sealed, conversation)
    assert _open(data, keys, conversation) == sealed
