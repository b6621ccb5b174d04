"""SecureChannel as a sans-IO pair: no sockets, bytes handed across by the test."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.channel import HANDSHAKE_MAX_FRAME, SecureChannel
from common.crypto.certs import ServerIdentity
from common.errors import CryptoError, LocalProtocolError, RemoteProtocolError
from common.protocol.message import Message, encode_message
from common.protocol.opcodes import MessageType


@pytest.fixture(scope="module")
def identity() -> ServerIdentity:
    return ServerIdentity.create()


def _pair(
    identity: ServerIdentity, mac: str = "hmac-sha256"
) -> tuple[SecureChannel, SecureChannel]:
    client = SecureChannel.client(identity.fingerprint)
    server = SecureChannel.server(identity, mac)
    assert server.receive_data(client.initiate()) == []
    assert client.receive_data(server.data_to_send()) == []
    assert server.receive_data(client.data_to_send()) == []
    return client, server


@pytest.mark.parametrize("mac", ["hmac-sha256", "hmac-md5"])
def test_messages_flow_both_ways(identity: ServerIdentity, mac: str) -> None:
    client, server = _pair(identity, mac)
    assert client.mac_alg == server.mac_alg == mac
    assert client.peer_fingerprint == identity.fingerprint
    sent = Message(MessageType.SEND_MESSAGE, 7, {"text": "你好 🌏", "n": [1, 2.5, None, True]})
    assert server.receive_data(client.send(sent)) == [sent]
    answer = Message(MessageType.REPLY, 7, {"ok": True})
    assert client.receive_data(server.send(answer)) == [answer]


def test_client_records_may_follow_finished_in_one_write(identity: ServerIdentity) -> None:
    client = SecureChannel.client()
    server = SecureChannel.server(identity)
    server.receive_data(client.initiate())
    client.receive_data(server.data_to_send())
    ping = Message(MessageType.PING, 1, {})
    assert server.receive_data(client.data_to_send() + client.send(ping)) == [ping]


def test_a_pipelined_read_is_opened_a_few_records_at_a_time(identity: ServerIdentity) -> None:
    client, server = _pair(identity)
    pings = [Message(MessageType.PING, n, {}) for n in range(1, 11)]
    stream = b"".join(client.send(ping) for ping in pings)
    opened = server.receive_data(stream, max_records=4)
    assert opened == pings[:4]
    assert server.records_waiting
    assert server.buffered_input == len(stream) * 6 // 10  # still sealed, still held
    opened += server.receive_data(b"", max_records=4)
    opened += server.receive_data(b"", max_records=4)
    assert opened == pings
    assert (server.records_waiting, server.buffered_input) == (False, 0)


def test_a_tampered_record_left_sealed_fails_when_opened(identity: ServerIdentity) -> None:
    client, server = _pair(identity)
    first = client.send(Message(MessageType.PING, 1, {}))
    second = bytearray(client.send(Message(MessageType.PING, 2, {})))
    second[-1] ^= 1
    assert server.receive_data(first + bytes(second), max_records=1) != []
    with pytest.raises(CryptoError):
        server.receive_data(b"", max_records=1)
    assert server.failed


def test_send_before_established_is_a_local_error(identity: ServerIdentity) -> None:
    client = SecureChannel.client(identity.fingerprint)
    with pytest.raises(LocalProtocolError):
        client.send(Message(MessageType.PING, 1, {}))


def test_initiate_twice_is_a_local_error(identity: ServerIdentity) -> None:
    client = SecureChannel.client(identity.fingerprint)
    client.initiate()
    with pytest.raises(LocalProtocolError):
        client.initiate()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=30))
def test_any_split_of_the_byte_stream_gives_the_same_messages(sizes: list[int]) -> None:
    identity = _IDENTITY
    client = SecureChannel.client(identity.fingerprint)
    server = SecureChannel.server(identity)
    server.receive_data(client.initiate())
    client.receive_data(server.data_to_send())
    sent = [Message(MessageType.PING, i + 1, {"i": i, "pad": "x" * i}) for i in range(5)]
    stream = client.data_to_send() + b"".join(client.send(m) for m in sent)
    received: list[Message] = []
    position, index = 0, 0
    while position < len(stream):
        size = sizes[index % len(sizes)]
        received += server.receive_data(stream[position : position + size])
        position += size
        index += 1
    assert received == sent


_IDENTITY = ServerIdentity.create()


def test_a_batch_is_one_record_and_decodes_in_order(identity: ServerIdentity) -> None:
    client, server = _pair(identity)
    answers = [Message(MessageType.REPLY, n, {"n": n}) for n in range(1, 6)]
    record = server.send_batch([encode_message(message) for message in answers])
    assert int.from_bytes(record[:4], "big") == len(record) - 53  # one frame
    assert client.receive_data(record) == answers
    # The record sequence moved by one: the next single record still opens.
    ping = Message(MessageType.PING, 0, {})
    assert client.receive_data(server.send(ping)) == [ping]


def test_frames_before_finished_are_capped_at_the_handshake_maximum(
    identity: ServerIdentity,
) -> None:
    server = SecureChannel.server(identity)
    assert server.max_frame == HANDSHAKE_MAX_FRAME
    header = (HANDSHAKE_MAX_FRAME + 16).to_bytes(4, "big") + bytes([0x80]) + bytes(48)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(header)  # refused from the header: no body is buffered
    assert server.buffered_input <= len(header)


def test_records_stay_small_until_the_owner_lifts_the_cap(identity: ServerIdentity) -> None:
    client = SecureChannel.client(identity.fingerprint)
    server = SecureChannel.server(identity)
    server.limit_frames(16 * 1024)  # what the server's reactor does before LOGIN
    server.receive_data(client.initiate())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    assert server.max_frame == 16 * 1024
    big = Message(MessageType.PING, 1, {"pad": bytes(20_000)})
    server.limit_frames(1024 * 1024)  # after LOGIN
    assert server.receive_data(client.send(big)) == [big]
    server.limit_frames(16 * 1024)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(client.send(big))


def test_an_established_channel_keeps_nothing_of_its_handshake() -> None:
    """The handshake's keys, KEM ciphertexts and transcript are several KB a connection:
    once both sides hold the session keys they are garbage (a server holds 10,000)."""
    import gc
    import weakref

    from common.crypto.handshake import ClientHandshake, ServerHandshake

    client_handshake = ClientHandshake(None, ("hmac-sha256",), os.urandom)
    server_handshake = ServerHandshake(ServerIdentity.create(), "hmac-sha256", os.urandom)
    handshakes: list[weakref.ref[object]] = [
        weakref.ref(client_handshake),
        weakref.ref(server_handshake),
    ]
    client = SecureChannel(client=client_handshake)
    server = SecureChannel(server=server_handshake)
    del client_handshake, server_handshake
    server.receive_data(client.initiate())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    assert client.established and server.established
    gc.collect()
    assert [ref() for ref in handshakes] == [None, None]
    assert client.peer_fingerprint is not None
    sealed = client.send(Message(MessageType.PING, 1, {}))
    assert server.receive_data(sealed) == [Message(MessageType.PING, 1, {})]


def test_a_held_channel_has_no_instance_dictionaries_and_shares_its_limits(
    identity: ServerIdentity,
) -> None:
    """What a server keeps per connection is slotted (an instance dictionary is a few
    hundred bytes, times 10,000 links) and the decoding limits are one shared object."""
    client, server = _pair(identity)
    other_client, other = _pair(identity)
    for channel in (server, other, client):
        parts = [channel, channel._sender, channel._receiver, channel._decoder]
        assert [hasattr(part, "__dict__") for part in parts] == [False] * 4
    assert server._limits is other._limits is client._limits
    ping = Message(MessageType.PING, 7, {})
    assert other.receive_data(other_client.send(ping)) == [ping]
