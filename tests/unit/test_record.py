"""The protected record: exact layout, round trips and sequence numbers."""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto import primitives
from common.crypto.record import MAC_ALGORITHMS, RecordReceiver, RecordSender
from common.errors import CryptoError, LocalProtocolError
from common.protocol.framing import HEADER, HEADER_SIZE, Frame, FrameDecoder

ENC_KEY = bytes(range(32))
MAC_KEY = bytes(range(32, 64))


def _counting_ivs() -> Callable[[int], bytes]:
    """Deterministic, distinct IVs: 0x00..., 0x01..., ... so expected frames can be rebuilt."""
    counter: Iterator[int] = itertools.count()

    def source(size: int) -> bytes:
        return bytes([next(counter) % 256]) * size

    return source


def _parse(data: bytes) -> Frame:
    frames = FrameDecoder(max_body=4 * 1024 * 1024).receive_data(data)
    assert len(frames) == 1
    return frames[0]


def _expected_frame(seq: int, iv: bytes, plaintext: bytes, mac_alg: str) -> bytes:
    """The record rebuilt from docs/protocol.md section 1 with the primitives alone."""
    pad = 16 - len(plaintext) % 16
    ciphertext = primitives.aes256_cbc_encrypt(ENC_KEY, iv, plaintext + bytes([pad]) * pad)
    mac_input = struct.pack(">Q", seq) + struct.pack(">I", len(ciphertext)) + bytes([pad])
    mac_input += iv + ciphertext
    if mac_alg == "hmac-sha256":
        mac = primitives.hmac_sha256(MAC_KEY, mac_input)
    else:
        mac = primitives.hmac_md5_hex(MAC_KEY, mac_input)
    return struct.pack(">IB", len(ciphertext), pad) + iv + mac + ciphertext


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_exact_output_with_injected_iv(mac_alg: str) -> None:
    sender = RecordSender(ENC_KEY, MAC_KEY, mac_alg, iv_source=_counting_ivs())
    messages = [b"hello, world", b"", b"x" * 16, b"y" * 33]
    for seq, message in enumerate(messages):
        frame = sender.seal(message)
        assert frame == _expected_frame(seq, bytes([seq]) * 16, message, mac_alg)


def test_md5_mac_field_is_lowercase_hex() -> None:
    frame = _parse(RecordSender(ENC_KEY, MAC_KEY, "hmac-md5").seal(b"abc"))
    assert len(frame.mac) == 32
    assert set(frame.mac) <= set(b"0123456789abcdef")


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 200, 4096])
def test_round_trip(mac_alg: str, size: int) -> None:
    sender = RecordSender(ENC_KEY, MAC_KEY, mac_alg)
    receiver = RecordReceiver(ENC_KEY, MAC_KEY, mac_alg)
    plaintext = os.urandom(size)
    data = sender.seal(plaintext)
    frame = _parse(data)
    assert len(frame.body) == (size // 16 + 1) * 16
    assert frame.pad == 16 - size % 16
    assert not frame.is_handshake
    assert receiver.open(frame) == plaintext


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_empty_plaintext_is_one_block_of_padding(mac_alg: str) -> None:
    sender = RecordSender(ENC_KEY, MAC_KEY, mac_alg)
    frame = _parse(sender.seal(b""))
    assert (frame.pad, len(frame.body)) == (16, 16)
    assert RecordReceiver(ENC_KEY, MAC_KEY, mac_alg).open(frame) == b""


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_one_mebibyte(mac_alg: str) -> None:
    plaintext = os.urandom(1024 * 1024)
    data = RecordSender(ENC_KEY, MAC_KEY, mac_alg).seal(plaintext)
    assert len(data) == HEADER_SIZE + 1024 * 1024 + 16
    frame = _parse(data)
    assert RecordReceiver(ENC_KEY, MAC_KEY, mac_alg).open(frame) == plaintext


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_sequence_numbers_advance(mac_alg: str) -> None:
    sender = RecordSender(ENC_KEY, MAC_KEY, mac_alg)
    receiver = RecordReceiver(ENC_KEY, MAC_KEY, mac_alg)
    decoder = FrameDecoder()
    assert sender.sequence == receiver.sequence == 0
    stream = b"".join(sender.seal(f"message {n}".encode()) for n in range(50))
    assert sender.sequence == 50
    opened = [receiver.open(frame) for frame in decoder.receive_data(stream)]
    assert opened == [f"message {n}".encode() for n in range(50)]
    assert receiver.sequence == 50


def test_same_plaintext_gives_different_records() -> None:
    """Fresh IV and a new sequence number each time: no two records repeat."""
    sender = RecordSender(ENC_KEY, MAC_KEY, "hmac-sha256")
    records = {sender.seal(b"same") for _ in range(20)}
    assert len(records) == 20


def test_fixed_iv_still_changes_mac_per_sequence_number() -> None:
    sender = RecordSender(ENC_KEY, MAC_KEY, "hmac-sha256", iv_source=bytes)
    first, second = _parse(sender.seal(b"same")), _parse(sender.seal(b"same"))
    assert first.body == second.body
    assert first.mac != second.mac


def test_header_matches_framing() -> None:
    data = RecordSender(ENC_KEY, MAC_KEY, "hmac-sha256").seal(b"abc")
    length, pad, iv, mac = HEADER.unpack_from(data)
    assert (length, pad, len(iv), len(mac)) == (16, 13, 16, 32)
    assert _parse(data).header == data[:HEADER_SIZE]


@pytest.mark.parametrize(
    ("enc_key", "mac_key", "mac_alg"),
    [
        (bytes(16), MAC_KEY, "hmac-sha256"),
        (ENC_KEY, b"", "hmac-sha256"),
        (ENC_KEY, MAC_KEY, "hmac-sha1"),
        (ENC_KEY, MAC_KEY, "HMAC-SHA256"),
    ],
)
def test_bad_construction_is_refused(enc_key: bytes, mac_key: bytes, mac_alg: str) -> None:
    with pytest.raises(ValueError):
        RecordSender(enc_key, mac_key, mac_alg)
    with pytest.raises(ValueError):
        RecordReceiver(enc_key, mac_key, mac_alg)


def test_sequence_number_exhaustion_is_a_clean_error() -> None:
    """2**64 records never happen in practice; if they did, refuse rather than wrap."""
    sender = RecordSender(ENC_KEY, MAC_KEY, "hmac-sha256")
    receiver = RecordReceiver(ENC_KEY, MAC_KEY, "hmac-sha256")
    sender._seq = receiver._seq = 2**64 - 1
    last = _parse(sender.seal(b"last"))
    assert receiver.open(last) == b"last"
    with pytest.raises(LocalProtocolError):
        sender.seal(b"one too many")
    with pytest.raises(CryptoError):
        receiver.open(last)


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
@given(plaintexts=st.lists(st.binary(max_size=100), min_size=1, max_size=20))
def test_one_receiver_opens_a_long_stream(mac_alg: str, plaintexts: list[bytes]) -> None:
    """The receiver keeps one CBC context for the connection; every record still opens."""
    sender = RecordSender(ENC_KEY, MAC_KEY, mac_alg)
    receiver = RecordReceiver(ENC_KEY, MAC_KEY, mac_alg)
    frames = FrameDecoder().receive_data(b"".join(sender.seal(p) for p in plaintexts))
    assert [receiver.open(frame) for frame in frames] == plaintexts


# -- the one long-lived CBC context per direction ---------------------------------------


@given(
    st.binary(min_size=32, max_size=32),
    st.lists(
        st.tuples(st.binary(min_size=16, max_size=16), st.binary(max_size=200)),
        min_size=1,
        max_size=12,
    ),
)
@settings(max_examples=300, deadline=None)
def test_every_record_is_byte_for_byte_a_fresh_cbc_under_its_iv(
    key: bytes, records: list[tuple[bytes, bytes]]
) -> None:
    """Sealing in sequence with one steered context = a fresh CBC(iv) for each record."""
    ivs = iter([iv for iv, _ in records])
    sender = RecordSender(key, MAC_KEY, "hmac-sha256", iv_source=lambda size: next(ivs))
    for iv, plaintext in records:
        frame = _parse(sender.seal(plaintext))
        padded = plaintext + bytes([frame.pad]) * frame.pad
        assert frame.iv == iv
        assert frame.body == primitives.aes256_cbc_encrypt(key, iv, padded)


def test_steering_holds_over_many_records_and_repeated_ivs() -> None:
    """Long runs, the same IV twice in a row, and the zero IV all match a fresh context."""
    ivs = [bytes(16), bytes(16), os.urandom(16), *(os.urandom(16) for _ in range(500))]
    source = iter(ivs)
    sender = RecordSender(ENC_KEY, MAC_KEY, "hmac-sha256", iv_source=lambda size: next(source))
    receiver = RecordReceiver(ENC_KEY, MAC_KEY, "hmac-sha256")
    for index, iv in enumerate(ivs):
        plaintext = os.urandom(index % 97)
        frame = _parse(sender.seal(plaintext))
        padded = plaintext + bytes([frame.pad]) * frame.pad
        assert frame.body == primitives.aes256_cbc_encrypt(ENC_KEY, iv, padded)
        assert receiver.open(frame) == plaintext
