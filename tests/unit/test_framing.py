"""Framing: any split of the byte stream gives the same frames, and a bad length is
refused from the 53-byte header alone, before any of the body is buffered."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol.framing import (
    BLOCK_SIZE,
    DEFAULT_MAX_BODY,
    HANDSHAKE_MARKER,
    HEADER_SIZE,
    ZERO_IV,
    ZERO_MAC,
    Frame,
    FrameDecoder,
    decode_handshake_frame,
    encode_frame,
    encode_handshake_frame,
)

IV = bytes(range(16))
MAC = bytes(range(100, 132))

FRAMES = st.builds(
    Frame,
    pad=st.integers(min_value=0, max_value=255),
    iv=st.binary(min_size=16, max_size=16),
    mac=st.binary(min_size=32, max_size=32),
    body=st.integers(min_value=1, max_value=8).flatmap(
        lambda blocks: st.binary(min_size=16 * blocks, max_size=16 * blocks)
    ),
)


def wire(frame: Frame) -> bytes:
    return encode_frame(frame.pad, frame.iv, frame.mac, frame.body)


def header(length: int, pad: int = 1) -> bytes:
    return struct.pack("!IB", length, pad) + IV + MAC


# --------------------------------------------------------------- encoding


def test_header_layout() -> None:
    data = encode_frame(5, IV, MAC, b"B" * 32)
    assert len(data) == HEADER_SIZE + 32 == 85
    assert data[:4] == b"\x00\x00\x00\x20"
    assert data[4] == 5
    assert data[5:21] == IV
    assert data[21:53] == MAC
    assert data[53:] == b"B" * 32


def test_frame_header_property_matches_the_wire() -> None:
    frame = Frame(pad=7, iv=IV, mac=MAC, body=bytes(48))
    assert frame.header == wire(frame)[:HEADER_SIZE]
    assert not frame.is_handshake
    assert Frame(pad=HANDSHAKE_MARKER | 3, iv=IV, mac=MAC, body=bytes(16)).is_handshake


@pytest.mark.parametrize(
    ("pad", "iv", "mac", "body"),
    [
        (1, bytes(15), MAC, bytes(16)),
        (1, IV, bytes(31), bytes(16)),
        (-1, IV, MAC, bytes(16)),
        (256, IV, MAC, bytes(16)),
        (1, IV, MAC, b""),
        (1, IV, MAC, bytes(17)),
    ],
    ids=["short-iv", "short-mac", "negative-pad", "big-pad", "empty-body", "unaligned-body"],
)
def test_encode_frame_rejects_malformed_fields(
    pad: int, iv: bytes, mac: bytes, body: bytes
) -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(pad, iv, mac, body)


# --------------------------------------------------------------- decoding


def test_one_frame_in_one_piece() -> None:
    frame = Frame(pad=3, iv=IV, mac=MAC, body=bytes(range(32)))
    decoder = FrameDecoder()
    assert decoder.receive_data(wire(frame)) == [frame]
    assert decoder.buffered == 0


def test_several_frames_in_one_piece_and_a_partial_one() -> None:
    frames = [Frame(pad=i, iv=IV, mac=MAC, body=bytes([i]) * 16 * (i + 1)) for i in range(3)]
    stream = b"".join(wire(f) for f in frames)
    extra = wire(Frame(pad=9, iv=IV, mac=MAC, body=bytes(16)))
    decoder = FrameDecoder()
    assert decoder.receive_data(stream + extra[:10]) == frames
    assert decoder.buffered == 10
    assert decoder.receive_data(extra[10:])[0].pad == 9
    assert decoder.buffered == 0


@settings(deadline=None, max_examples=100)
@given(st.lists(FRAMES, min_size=1, max_size=8), st.integers(min_value=1, max_value=3))
def test_a_limit_leaves_whole_frames_buffered_in_order(frames: list[Frame], limit: int) -> None:
    stream = b"".join(wire(f) for f in frames)
    decoder = FrameDecoder()
    received = decoder.receive_data(stream, limit)
    assert len(received) == min(limit, len(frames))
    while decoder.frame_ready:
        taken = decoder.receive_data(b"", limit)
        assert 1 <= len(taken) <= limit
        received += taken
    assert received == frames
    assert decoder.buffered == 0


def test_a_bad_header_left_by_a_limit_is_refused_when_taken() -> None:
    good = wire(Frame(pad=1, iv=IV, mac=MAC, body=bytes(16)))
    bad = (17).to_bytes(4, "big") + bytes(HEADER_SIZE - 4)  # length not a multiple of 16
    decoder = FrameDecoder()
    assert len(decoder.receive_data(good + bad, 1)) == 1
    assert decoder.frame_ready  # taking it is what refuses it
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(b"", 1)


@settings(deadline=None, max_examples=200)
@given(st.lists(FRAMES, min_size=1, max_size=5))
def test_frames_fed_one_byte_at_a_time(frames: list[Frame]) -> None:
    stream = b"".join(wire(f) for f in frames)
    decoder = FrameDecoder()
    received: list[Frame] = []
    for i in range(len(stream)):
        received += decoder.receive_data(stream[i : i + 1])
    assert received == frames
    assert decoder.buffered == 0


@settings(deadline=None, max_examples=200)
@given(st.lists(FRAMES, min_size=1, max_size=5), st.data())
def test_frames_fed_in_random_splits(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(wire(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12)))
    decoder = FrameDecoder()
    received: list[Frame] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += decoder.receive_data(stream[start:stop])
    assert received == frames
    assert decoder.buffered == 0


def test_body_of_exactly_max_body_is_accepted() -> None:
    frame = Frame(pad=1, iv=IV, mac=MAC, body=bytes(64))
    assert FrameDecoder(max_body=64).receive_data(wire(frame)) == [frame]


def assert_rejected_from_header(decoder: FrameDecoder, bad_header: bytes) -> None:
    """Feed the header a byte at a time: it must raise on the 53rd byte, not later."""
    for i in range(HEADER_SIZE - 1):
        assert decoder.receive_data(bad_header[i : i + 1]) == []
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(bad_header[HEADER_SIZE - 1 :])
    assert decoder.buffered <= HEADER_SIZE


@pytest.mark.parametrize(
    ("max_body", "length"),
    [(64, 80), (64, 2**32 - 16), (DEFAULT_MAX_BODY, DEFAULT_MAX_BODY + BLOCK_SIZE)],
    ids=["one-block-over", "huge", "default-cap"],
)
def test_length_over_the_cap_is_rejected_from_the_header(max_body: int, length: int) -> None:
    assert_rejected_from_header(FrameDecoder(max_body=max_body), header(length))


def test_zero_length_is_rejected_from_the_header() -> None:
    assert_rejected_from_header(FrameDecoder(), header(0))


@pytest.mark.parametrize("length", [1, 15, 17, 31, 1000])
def test_length_not_a_multiple_of_16_is_rejected_from_the_header(length: int) -> None:
    assert_rejected_from_header(FrameDecoder(), header(length))


def test_bad_header_in_one_chunk_with_a_body_is_rejected() -> None:
    decoder = FrameDecoder(max_body=64)
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(header(80) + bytes(80))


def test_bad_header_after_a_good_frame_is_rejected() -> None:
    good = wire(Frame(pad=1, iv=IV, mac=MAC, body=bytes(16)))
    decoder = FrameDecoder()
    assert len(decoder.receive_data(good)) == 1
    assert_rejected_from_header(decoder, header(8))


# --------------------------------------------------------------- handshake frames


@pytest.mark.parametrize("size", [1, 2, 15, 16, 17, 31, 32, 33, 100])
def test_handshake_frame_round_trip(size: int) -> None:
    payload = bytes((i * 7 + 1) % 256 for i in range(size))
    data = encode_handshake_frame(payload)
    [frame] = FrameDecoder().receive_data(data)
    assert frame.is_handshake
    assert frame.iv == ZERO_IV and frame.mac == ZERO_MAC
    assert len(frame.body) % BLOCK_SIZE == 0
    assert frame.pad == HANDSHAKE_MARKER | (len(frame.body) - size)
    assert decode_handshake_frame(frame) == payload


def test_handshake_payload_ending_in_zero_bytes_round_trips() -> None:
    payload = b"abc" + bytes(20)
    [frame] = FrameDecoder().receive_data(encode_handshake_frame(payload))
    assert decode_handshake_frame(frame) == payload


def test_empty_handshake_payload_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_handshake_frame(b"")


def valid_handshake_frame() -> Frame:
    [frame] = FrameDecoder().receive_data(encode_handshake_frame(b"hello"))
    return frame


def test_a_record_is_not_a_handshake_frame() -> None:
    frame = valid_handshake_frame()
    with pytest.raises(RemoteProtocolError):
        decode_handshake_frame(Frame(pad=11, iv=ZERO_IV, mac=ZERO_MAC, body=frame.body))


@pytest.mark.parametrize("pad", [0x80 | 16, 0x80 | 0x40, 0xFF])
def test_handshake_padding_of_16_or_more_is_rejected(pad: int) -> None:
    frame = valid_handshake_frame()
    with pytest.raises(RemoteProtocolError):
        decode_handshake_frame(Frame(pad=pad, iv=ZERO_IV, mac=ZERO_MAC, body=frame.body))


def test_handshake_padding_must_be_zero_bytes() -> None:
    frame = valid_handshake_frame()
    body = frame.body[:-1] + b"\x01"
    with pytest.raises(RemoteProtocolError):
        decode_handshake_frame(Frame(pad=frame.pad, iv=ZERO_IV, mac=ZERO_MAC, body=body))


def test_handshake_frame_with_nonzero_iv_or_mac_is_rejected() -> None:
    frame = valid_handshake_frame()
    with pytest.raises(RemoteProtocolError):
        decode_handshake_frame(Frame(pad=frame.pad, iv=IV, mac=ZERO_MAC, body=frame.body))
    with pytest.raises(RemoteProtocolError):
        decode_handshake_frame(Frame(pad=frame.pad, iv=ZERO_IV, mac=MAC, body=frame.body))
