"""Active attacks on the channel handshake: each must abort with a clear HandshakeError."""

from __future__ import annotations

import pytest

from common.channel import SecureChannel
from common.crypto.certs import ServerIdentity
from common.crypto.handshake import ClientHandshake, ServerHandshake
from common.errors import HandshakeError, RemoteProtocolError, UchatError
from common.protocol import codec
from common.protocol.framing import FrameDecoder, decode_handshake_frame, encode_handshake_frame
from common.protocol.message import Message
from common.protocol.opcodes import MessageType


@pytest.fixture(scope="module")
def identity() -> ServerIdentity:
    return ServerIdentity.create()


@pytest.fixture(scope="module")
def other_identity() -> ServerIdentity:
    return ServerIdentity.create("Impostor CA")


def _rewrite(payload: bytes, **changes: object) -> bytes:
    message = codec.decode(payload)
    message.update(changes)
    return codec.encode(message)


def _rewrite_core(server_hello: bytes, **changes: object) -> bytes:
    message = codec.decode(server_hello)
    message["core"] = _rewrite(message["core"], **changes)
    return codec.encode(message)


def test_honest_handshake_agrees_on_keys(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    finished = client.receive_server_hello(server.receive_client_hello(client.hello()))
    server.receive_client_finished(finished)
    assert client.keys is not None and server.keys is not None
    assert client.keys.send_enc == server.keys.recv_enc
    assert client.keys.send_mac == server.keys.recv_mac
    assert client.keys.recv_enc == server.keys.send_enc
    assert client.keys.send_enc != client.keys.recv_enc  # per-direction keys
    assert client.peer_fingerprint == identity.fingerprint


def test_wrong_pinned_fingerprint_aborts(identity: ServerIdentity) -> None:
    client = ClientHandshake("00" * 32)
    server = ServerHandshake(identity)
    with pytest.raises(HandshakeError, match="pinned fingerprint"):
        client.receive_server_hello(server.receive_client_hello(client.hello()))


def test_impostor_server_with_its_own_key_fails_the_pin(
    identity: ServerIdentity, other_identity: ServerIdentity
) -> None:
    client = ClientHandshake(identity.fingerprint)
    impostor = ServerHandshake(other_identity)
    with pytest.raises(HandshakeError, match="pinned fingerprint"):
        client.receive_server_hello(impostor.receive_client_hello(client.hello()))


def test_changed_certificate_breaks_the_signature(
    identity: ServerIdentity, other_identity: ServerIdentity
) -> None:
    # A middle-man substitutes its certificate but cannot sign as it; no pin is set (TOFU).
    client = ClientHandshake(None)
    server = ServerHandshake(identity)
    hello = server.receive_client_hello(client.hello())
    forged = _rewrite_core(hello, certificate=other_identity.certificate_der)
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(forged)


def test_wrong_server_key_signature_rejected(
    identity: ServerIdentity, other_identity: ServerIdentity
) -> None:
    # The impostor presents the genuine certificate but signs with its own key.
    client = ClientHandshake(identity.fingerprint)
    impostor = ServerHandshake(ServerIdentity(other_identity.key, identity.certificate))
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(impostor.receive_client_hello(client.hello()))


def test_swapped_server_ephemeral_key_rejected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    hello = server.receive_client_hello(client.hello())
    attacker_key = ClientHandshake(None)  # any other X25519 public value
    other = codec.decode(attacker_key.hello())["key"]
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(_rewrite_core(hello, key=other))


def test_swapped_client_ephemeral_key_rejected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    other = codec.decode(ClientHandshake(None).hello())["key"]
    tampered_hello = _rewrite(client.hello(), key=other)
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(server.receive_client_hello(tampered_hello))


def test_middle_man_changing_the_mac_choice_is_detected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity, "hmac-sha256")
    hello = server.receive_client_hello(client.hello())
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(_rewrite_core(hello, mac="hmac-md5"))


def test_middle_man_narrowing_the_client_offer_is_detected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity, "hmac-md5")
    narrowed = _rewrite(client.hello(), macs=["hmac-md5"])
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(server.receive_client_hello(narrowed))


def test_server_refuses_a_client_without_its_mac(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint, accepted_macs=["hmac-sha256"])
    server = ServerHandshake(identity, "hmac-md5")
    with pytest.raises(HandshakeError, match="record MAC"):
        server.receive_client_hello(client.hello())


def test_all_zero_client_key_is_rejected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    with pytest.raises(HandshakeError, match="invalid key exchange"):
        server.receive_client_hello(_rewrite(client.hello(), key=bytes(32)))


def test_all_zero_server_key_is_rejected_even_if_signed(identity: ServerIdentity) -> None:
    # Even the genuine server (or a stolen key) cannot force a known shared secret.
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    server.receive_client_hello(client.hello())
    core = codec.encode(
        {
            "version": 1,
            "nonce": bytes(32),
            "key": bytes(32),
            "mac": "hmac-sha256",
            "certificate": identity.certificate_der,
        }
    )
    from common.crypto.handshake import SIGNATURE_LABEL
    from common.crypto.primitives import ed25519_sign, sha256

    hello = client._hello
    assert hello is not None
    signature = ed25519_sign(identity.key, SIGNATURE_LABEL + sha256(hello + core))
    forged = codec.encode({"core": core, "signature": signature, "finished": bytes(32)})
    with pytest.raises(HandshakeError, match="invalid key exchange"):
        client.receive_server_hello(forged)


def test_bad_server_finished_rejected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    hello = codec.decode(server.receive_client_hello(client.hello()))
    hello["finished"] = bytes(32)
    with pytest.raises(HandshakeError, match="Finished"):
        client.receive_server_hello(codec.encode(hello))


def test_bad_client_finished_rejected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    client.receive_server_hello(server.receive_client_hello(client.hello()))
    with pytest.raises(HandshakeError, match="Finished"):
        server.receive_client_finished(codec.encode({"finished": bytes(32)}))
    assert server.keys is None


def test_replayed_server_hello_from_another_session_rejected(identity: ServerIdentity) -> None:
    old_client = ClientHandshake(identity.fingerprint)
    old_hello = ServerHandshake(identity).receive_client_hello(old_client.hello())
    new_client = ClientHandshake(identity.fingerprint)
    new_client.hello()
    with pytest.raises(HandshakeError, match="signature"):
        new_client.receive_server_hello(old_hello)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x07\x00\x00\x00\x00", codec.encode([1, 2]), codec.encode({"version": 9})],
)
def test_malformed_client_hello(identity: ServerIdentity, payload: bytes) -> None:
    with pytest.raises(HandshakeError):
        ServerHandshake(identity).receive_client_hello(payload)


def test_unsupported_version(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    with pytest.raises(HandshakeError, match="version"):
        ServerHandshake(identity).receive_client_hello(_rewrite(client.hello(), version=2))


def _pair(identity: ServerIdentity) -> tuple[SecureChannel, SecureChannel]:
    client = SecureChannel.client(identity.fingerprint)
    server = SecureChannel.server(identity)
    server.receive_data(client.initiate())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    assert client.established and server.established
    return client, server


def test_channel_rejects_records_before_the_handshake(identity: ServerIdentity) -> None:
    client, _ = _pair(identity)
    record = client.send(Message(MessageType.PING, 1, {}))
    fresh_server = SecureChannel.server(identity)
    with pytest.raises(RemoteProtocolError):
        fresh_server.receive_data(record)
    assert fresh_server.failed


def test_channel_is_dead_after_a_failure(identity: ServerIdentity) -> None:
    client, server = _pair(identity)
    record = bytearray(client.send(Message(MessageType.PING, 1, {})))
    record[-1] ^= 1
    with pytest.raises(UchatError):
        server.receive_data(bytes(record))
    with pytest.raises(RemoteProtocolError):
        server.receive_data(client.send(Message(MessageType.PING, 2, {})))


def test_handshake_frames_after_establishment_are_rejected(identity: ServerIdentity) -> None:
    _, server = _pair(identity)
    with pytest.raises(UchatError):
        server.receive_data(encode_handshake_frame(b"hello again"))


def test_client_hello_travels_as_a_marked_handshake_frame(identity: ServerIdentity) -> None:
    client = SecureChannel.client(identity.fingerprint)
    frames = FrameDecoder().receive_data(client.initiate())
    assert len(frames) == 1 and frames[0].is_handshake
    assert codec.decode(decode_handshake_frame(frames[0]))["version"] == 1


def test_a_certificate_with_an_unsupported_key_is_a_handshake_error(
    identity: ServerIdentity,
) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    client = ClientHandshake(None)
    server = ServerHandshake(identity)
    hello = server.receive_client_hello(client.hello())
    forged = _rewrite_core(hello, certificate=certificate.public_bytes(Encoding.DER))
    with pytest.raises(HandshakeError):
        client.receive_server_hello(forged)
