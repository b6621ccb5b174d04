"""Active attacks on the channel handshake: each must abort with a clear HandshakeError."""

from __future__ import annotations

import pytest

from common.channel import SecureChannel
from common.crypto.certs import ServerIdentity
from common.crypto.handshake import (
    MAX_HANDSHAKE_MESSAGE,
    MAX_SERVER_CERTIFICATE,
    MLKEM768_CIPHERTEXT_SIZE,
    MLKEM768_ENCAPSULATION_KEY_SIZE,
    SIGNATURE_LABEL,
    VERSION,
    ClientHandshake,
    ServerHandshake,
)
from common.crypto.primitives import ed25519_sign, sha256
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
    genuine_core = codec.decode(codec.decode(server.receive_client_hello(client.hello()))["core"])
    core = codec.encode(
        {
            "version": VERSION,
            "nonce": bytes(32),
            "key": bytes(32),
            "kem": genuine_core["kem"],
            "mac": "hmac-sha256",
            "certificate": identity.certificate_der,
        }
    )
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
        ServerHandshake(identity).receive_client_hello(_rewrite(client.hello(), version=1))


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
    assert codec.decode(decode_handshake_frame(frames[0]))["version"] == VERSION


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


# --- the hybrid (X25519 + ML-KEM-768) part ---------------------------------------------


def test_client_hello_carries_an_mlkem_encapsulation_key(identity: ServerIdentity) -> None:
    hello = codec.decode(ClientHandshake(identity.fingerprint).hello())
    assert len(hello["kem"]) == MLKEM768_ENCAPSULATION_KEY_SIZE
    server_hello = ServerHandshake(identity).receive_client_hello(codec.encode(hello))
    core = codec.decode(codec.decode(server_hello)["core"])
    assert len(core["kem"]) == MLKEM768_CIPHERTEXT_SIZE


def test_swapped_client_kem_key_rejected(identity: ServerIdentity) -> None:
    # A middle-man who substitutes its own ML-KEM key could decapsulate; the signature
    # over the transcript catches the substitution.
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    other = codec.decode(ClientHandshake(None).hello())["kem"]
    tampered = _rewrite(client.hello(), kem=other)
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(server.receive_client_hello(tampered))


def test_swapped_kem_ciphertext_rejected(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    hello = server.receive_client_hello(client.hello())
    other_core = codec.decode(
        codec.decode(ServerHandshake(identity).receive_client_hello(client._hello or b""))["core"]
    )
    with pytest.raises(HandshakeError, match="signature"):
        client.receive_server_hello(_rewrite_core(hello, kem=other_core["kem"]))


def test_a_forged_kem_ciphertext_signed_by_a_stolen_key_fails_finished(
    identity: ServerIdentity,
) -> None:
    # Even with the server's signing key, a ciphertext not made for the client's key
    # gives a different ML-KEM secret (implicit rejection): Finished does not verify.
    client = ClientHandshake(identity.fingerprint)
    server = ServerHandshake(identity)
    hello = codec.decode(server.receive_client_hello(client.hello()))
    core = codec.decode(hello["core"])
    core["kem"] = bytes(MLKEM768_CIPHERTEXT_SIZE)
    core_bytes = codec.encode(core)
    assert client._hello is not None
    hello["core"] = core_bytes
    hello["signature"] = ed25519_sign(
        identity.key, SIGNATURE_LABEL + sha256(client._hello + core_bytes)
    )
    with pytest.raises(HandshakeError, match="Finished"):
        client.receive_server_hello(codec.encode(hello))


@pytest.mark.parametrize("size", [0, 32, MLKEM768_ENCAPSULATION_KEY_SIZE - 1])
def test_client_kem_key_of_the_wrong_size_is_malformed(identity: ServerIdentity, size: int) -> None:
    hello = _rewrite(ClientHandshake(None).hello(), kem=bytes(size))
    with pytest.raises(HandshakeError, match="malformed client hello"):
        ServerHandshake(identity).receive_client_hello(hello)


def test_client_hello_without_kem_key_is_refused(identity: ServerIdentity) -> None:
    # A version-1 style hello (X25519 only) cannot downgrade to a classical exchange.
    message = codec.decode(ClientHandshake(None).hello())
    del message["kem"]
    with pytest.raises(HandshakeError, match="malformed client hello"):
        ServerHandshake(identity).receive_client_hello(codec.encode(message))


def test_an_mlkem_key_failing_the_modulus_check_is_refused(identity: ServerIdentity) -> None:
    # FIPS 203 encapsulation-key check: every 12-bit coefficient must be < q = 3329.
    bad = b"\xff" * MLKEM768_ENCAPSULATION_KEY_SIZE
    hello = _rewrite(ClientHandshake(None).hello(), kem=bad)
    with pytest.raises(HandshakeError, match="invalid key exchange"):
        ServerHandshake(identity).receive_client_hello(hello)


def test_key_schedule_is_hkdf_over_mlkem_then_x25519_secret(identity: ServerIdentity) -> None:
    # Recompute both secrets from the injected client keys and derive the record keys
    # independently: ikm = ML-KEM secret || X25519 secret, salt = SHA256(hellos).
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    from common.crypto.handshake import KEYS_INFO
    from common.crypto.primitives import hkdf_sha256

    x_private, kem_seed = bytes([7]) * 32, bytes([3]) * 64
    draws = iter([x_private, kem_seed, bytes(32)])
    client = ClientHandshake(identity.fingerprint, random=lambda n: next(draws)[:n])
    hello = client.hello()
    server_hello = ServerHandshake(identity).receive_client_hello(hello)
    client.receive_server_hello(server_hello)
    core_bytes = codec.decode(server_hello)["core"]
    core = codec.decode(core_bytes)
    x_secret = X25519PrivateKey.from_private_bytes(x_private).exchange(
        X25519PublicKey.from_public_bytes(core["key"])
    )
    kem_secret = MLKEM768PrivateKey.from_seed_bytes(kem_seed).decapsulate(core["kem"])
    okm = hkdf_sha256(kem_secret + x_secret, sha256(hello + core_bytes), KEYS_INFO, 192)
    assert client.keys is not None
    assert client.keys.send_enc == okm[0:32] and client.keys.send_mac == okm[32:64]
    assert client.keys.recv_enc == okm[64:96] and client.keys.recv_mac == okm[96:128]
    # Without the ML-KEM secret the keys would be different: it really contributes.
    classical = hkdf_sha256(x_secret, sha256(hello + core_bytes), KEYS_INFO, 192)
    assert classical[0:32] != client.keys.send_enc


def test_hellos_fit_the_published_maximum(identity: ServerIdentity) -> None:
    client = ClientHandshake(identity.fingerprint)
    server_hello = ServerHandshake(identity).receive_client_hello(client.hello())
    assert client._hello is not None
    assert len(client._hello) <= MAX_HANDSHAKE_MESSAGE
    assert len(server_hello) <= MAX_HANDSHAKE_MESSAGE
    assert MAX_HANDSHAKE_MESSAGE % 16 == 0  # a padded handshake frame body never exceeds it


def test_worst_case_server_hello_fits_the_maximum(identity: ServerIdentity) -> None:
    # The largest certificate a server accepts, the longest MAC name: still within bounds.
    core = codec.encode(
        {
            "version": VERSION,
            "nonce": bytes(32),
            "key": bytes(32),
            "kem": bytes(MLKEM768_CIPHERTEXT_SIZE),
            "mac": "hmac-sha256",
            "certificate": bytes(MAX_SERVER_CERTIFICATE),
        }
    )
    worst = codec.encode({"core": core, "signature": bytes(64), "finished": bytes(32)})
    assert len(worst) <= MAX_HANDSHAKE_MESSAGE


def test_oversized_client_hello_is_refused(identity: ServerIdentity) -> None:
    hello = _rewrite(ClientHandshake(None).hello(), padding=bytes(MAX_HANDSHAKE_MESSAGE))
    with pytest.raises(HandshakeError, match="malformed client hello"):
        ServerHandshake(identity).receive_client_hello(hello)
