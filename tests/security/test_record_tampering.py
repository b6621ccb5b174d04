"""An active attacker on the record layer: every change is caught before decryption.

Every rejection must be the same bare `CryptoError` (no oracle), `_decrypt` must not
run unless the MAC was valid, and a receiver that failed once must refuse everything.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.crypto import primitives, record
from common.crypto.record import MAC_ALGORITHMS, RecordReceiver, RecordSender
from common.errors import CryptoError, RemoteProtocolError
from common.protocol.framing import HEADER_SIZE, Frame, FrameDecoder

C2S_ENC, C2S_MAC = bytes(range(32)), bytes(range(32, 64))
S2C_ENC, S2C_MAC = bytes(range(64, 96)), bytes(range(96, 128))
OPAQUE = str(CryptoError())


class DecryptSpy:
    """Wraps `record._decrypt` and counts calls, to prove bad records never reach it."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = record._decrypt

    def __call__(self, key: object, iv: bytes, data: bytes) -> bytes:
        self.calls += 1
        return self._real(key, iv, data)  # type: ignore[arg-type]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecryptSpy]:
    decrypt_spy = DecryptSpy()
    monkeypatch.setattr(record, "_decrypt", decrypt_spy)
    yield decrypt_spy


def _pair(mac_alg: str) -> tuple[RecordSender, RecordReceiver]:
    return (
        RecordSender(C2S_ENC, C2S_MAC, mac_alg),
        RecordReceiver(C2S_ENC, C2S_MAC, mac_alg),
    )


def _parse_all(data: bytes) -> list[Frame]:
    return FrameDecoder().receive_data(data)


def _assert_opaque_failure(receiver: RecordReceiver, frame: Frame) -> None:
    with pytest.raises(CryptoError) as caught:
        receiver.open(frame)
    assert type(caught.value) is CryptoError
    assert str(caught.value) == OPAQUE
    assert caught.value.__cause__ is None


def _flip(data: bytes, bit: int) -> bytes:
    tampered = bytearray(data)
    tampered[bit // 8] ^= 1 << (bit % 8)
    return bytes(tampered)


def _check_flipped(data: bytes, bit: int, mac_alg: str, spy: DecryptSpy) -> None:
    """Re-parse the tampered bytes as the server would and demand a rejection.

    Flips in the length field may already be refused by the framing layer (not a
    multiple of 16) or leave the frame incomplete (longer); both are rejections too.
    """
    try:
        frames = _parse_all(_flip(data, bit))
    except RemoteProtocolError:
        return
    if not frames:
        assert bit < 32, "only a longer length field can leave the frame incomplete"
        return
    calls_before = spy.calls
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, mac_alg), frames[0])
    assert spy.calls == calls_before


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_every_single_bit_flip_is_rejected_before_decryption(mac_alg: str, spy: DecryptSpy) -> None:
    data = RecordSender(C2S_ENC, C2S_MAC, mac_alg).seal(b"twenty bytes of text")
    assert len(data) == HEADER_SIZE + 32
    for bit in range(len(data) * 8):
        _check_flipped(data, bit, mac_alg, spy)
    assert spy.calls == 0
    assert RecordReceiver(C2S_ENC, C2S_MAC, mac_alg).open(_parse_all(data)[0])
    assert spy.calls == 1


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
@given(plaintext=st.binary(max_size=300), draw=st.data())
def test_random_bit_flips_are_rejected(mac_alg: str, plaintext: bytes, draw: st.DataObject) -> None:
    with pytest.MonkeyPatch.context() as patch:
        decrypt_spy = DecryptSpy()
        patch.setattr(record, "_decrypt", decrypt_spy)
        data = RecordSender(C2S_ENC, C2S_MAC, mac_alg).seal(plaintext)
        bit = draw.draw(st.integers(min_value=0, max_value=len(data) * 8 - 1), label="bit")
        _check_flipped(data, bit, mac_alg, decrypt_spy)
        assert decrypt_spy.calls == 0


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_replay_is_rejected(mac_alg: str, spy: DecryptSpy) -> None:
    sender, receiver = _pair(mac_alg)
    (frame,) = _parse_all(sender.seal(b"pay alice 10"))
    assert receiver.open(frame) == b"pay alice 10"
    _assert_opaque_failure(receiver, frame)
    assert spy.calls == 1


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_reorder_is_rejected(mac_alg: str, spy: DecryptSpy) -> None:
    sender, receiver = _pair(mac_alg)
    first, second = _parse_all(sender.seal(b"first") + sender.seal(b"second"))
    _assert_opaque_failure(receiver, second)
    _assert_opaque_failure(receiver, first)
    assert spy.calls == 0


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_dropped_record_is_detected(mac_alg: str, spy: DecryptSpy) -> None:
    sender, receiver = _pair(mac_alg)
    frames = _parse_all(b"".join(sender.seal(b"record %d" % n) for n in range(3)))
    assert receiver.open(frames[0]) == b"record 0"
    _assert_opaque_failure(receiver, frames[2])
    assert spy.calls == 1


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_reflected_record_is_rejected(mac_alg: str, spy: DecryptSpy) -> None:
    """A client's record bounced back at the client fails under the server's keys."""
    client_sender = RecordSender(C2S_ENC, C2S_MAC, mac_alg)
    client_receiver = RecordReceiver(S2C_ENC, S2C_MAC, mac_alg)
    (frame,) = _parse_all(client_sender.seal(b"hello server"))
    _assert_opaque_failure(client_receiver, frame)
    assert spy.calls == 0


def test_mac_algorithm_downgrade_is_rejected(spy: DecryptSpy) -> None:
    (frame,) = _parse_all(RecordSender(C2S_ENC, C2S_MAC, "hmac-md5").seal(b"x"))
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, "hmac-sha256"), frame)
    assert spy.calls == 0


def test_md5_uppercase_hex_is_rejected(spy: DecryptSpy) -> None:
    (frame,) = _parse_all(RecordSender(C2S_ENC, C2S_MAC, "hmac-md5").seal(b"abc"))
    shouted = Frame(pad=frame.pad, iv=frame.iv, mac=frame.mac.upper(), body=frame.body)
    assert shouted.mac != frame.mac
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, "hmac-md5"), shouted)
    assert spy.calls == 0


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_handshake_marked_frame_is_rejected(mac_alg: str, spy: DecryptSpy) -> None:
    (frame,) = _parse_all(RecordSender(C2S_ENC, C2S_MAC, mac_alg).seal(b"abc"))
    marked = Frame(pad=frame.pad | 0x80, iv=frame.iv, mac=frame.mac, body=frame.body)
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, mac_alg), marked)
    assert spy.calls == 0


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_handshake_marked_frame_with_valid_mac_is_rejected(mac_alg: str, spy: DecryptSpy) -> None:
    forged = _forge(mac_alg, 0x80 | 3, b"A" * 13 + b"\x03\x03\x03")
    assert forged.is_handshake
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, mac_alg), forged)
    assert spy.calls == 0


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_truncated_or_extended_body_is_rejected(mac_alg: str, spy: DecryptSpy) -> None:
    (frame,) = _parse_all(RecordSender(C2S_ENC, C2S_MAC, mac_alg).seal(b"a" * 40))
    variants = [
        frame.body[:-16],
        frame.body[16:],
        frame.body + bytes(16),
        frame.body[:-1],
        b"",
    ]
    for body in variants:
        changed = Frame(pad=frame.pad, iv=frame.iv, mac=frame.mac, body=body)
        _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, mac_alg), changed)
    short_mac = Frame(pad=frame.pad, iv=frame.iv, mac=frame.mac[:16], body=frame.body)
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, mac_alg), short_mac)
    assert spy.calls == 0


def _forge(mac_alg: str, pad: int, padded_plaintext: bytes, seq: int = 0) -> Frame:
    """A record with a VALID MAC over whatever padding we like: only the padding is wrong."""
    iv = os.urandom(16)
    ciphertext = primitives.aes256_cbc_encrypt(C2S_ENC, iv, padded_plaintext)
    mac_input = struct.pack(">QIB", seq, len(ciphertext), pad) + iv + ciphertext
    if mac_alg == "hmac-sha256":
        mac = primitives.hmac_sha256(C2S_MAC, mac_input)
    else:
        mac = primitives.hmac_md5_hex(C2S_MAC, mac_input)
    return Frame(pad=pad, iv=iv, mac=mac, body=ciphertext)


BAD_PADDINGS = {
    "last byte differs from header": (3, b"A" * 13 + b"\x03\x03\x02"),
    "inner byte differs": (3, b"A" * 13 + b"\x03\x02\x03"),
    "ascending bytes": (3, b"A" * 13 + b"\x01\x02\x03"),
    "header longer than padding": (4, b"A" * 13 + b"\x03\x03\x03"),
    "header shorter than padding": (2, b"A" * 13 + b"\x03\x03\x03"),
    "zero padding length": (0, b"A" * 16),
    "zero bytes with zero header": (0, b"A" * 15 + b"\x00"),
    "padding longer than a block": (17, b"\x11" * 32),
    "full block pad with one wrong byte": (16, b"\x10" * 15 + b"\x0f"),
    "pad byte 255": (255, b"\xff" * 16),
}


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
@pytest.mark.parametrize("case", sorted(BAD_PADDINGS))
def test_valid_mac_bad_padding_looks_like_bad_mac(mac_alg: str, case: str) -> None:
    pad, padded = BAD_PADDINGS[case]
    forged = _forge(mac_alg, pad, padded)
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, mac_alg), forged)
    bad_mac = Frame(pad=forged.pad, iv=forged.iv, mac=bytes(32), body=forged.body)
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, mac_alg), bad_mac)


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_forgery_helper_builds_valid_records(mac_alg: str) -> None:
    """Control for the padding tests: with good padding the same forgery is accepted."""
    good = _forge(mac_alg, 3, b"A" * 13 + b"\x03\x03\x03")
    assert RecordReceiver(C2S_ENC, C2S_MAC, mac_alg).open(good) == b"A" * 13
    full = _forge(mac_alg, 16, b"B" * 16 + b"\x10" * 16)
    assert RecordReceiver(C2S_ENC, C2S_MAC, mac_alg).open(full) == b"B" * 16


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_receiver_stays_dead_after_a_failure(mac_alg: str, spy: DecryptSpy) -> None:
    sender, receiver = _pair(mac_alg)
    first, second, third = _parse_all(b"".join(sender.seal(b"m%d" % n) for n in range(3)))
    assert receiver.open(first) == b"m0"
    tampered = Frame(pad=second.pad, iv=_flip(second.iv, 0), mac=second.mac, body=second.body)
    _assert_opaque_failure(receiver, tampered)
    assert receiver.failed
    calls = spy.calls
    _assert_opaque_failure(receiver, second)
    _assert_opaque_failure(receiver, third)
    assert spy.calls == calls
    assert receiver.sequence == 1


@pytest.mark.parametrize("mac_alg", MAC_ALGORITHMS)
def test_receiver_stays_dead_after_bad_padding(mac_alg: str) -> None:
    receiver = RecordReceiver(C2S_ENC, C2S_MAC, mac_alg)
    _assert_opaque_failure(receiver, _forge(mac_alg, 2, b"A" * 14 + b"\x01\x02"))
    _assert_opaque_failure(receiver, _forge(mac_alg, 2, b"A" * 14 + b"\x02\x02"))


@pytest.mark.parametrize("pad", [256, -1, 0x100 | 3])
def test_out_of_range_pad_field_is_opaque(pad: int) -> None:
    """A Frame built by hand (not by the decoder) still only ever gives CryptoError."""
    (frame,) = _parse_all(RecordSender(C2S_ENC, C2S_MAC, "hmac-sha256").seal(b"abc"))
    odd = Frame(pad=pad, iv=frame.iv, mac=frame.mac, body=frame.body)
    _assert_opaque_failure(RecordReceiver(C2S_ENC, C2S_MAC, "hmac-sha256"), odd)
