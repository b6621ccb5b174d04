"""The channel handshake: hybrid X25519 + ML-KEM-768, server signs the transcript.

Hybrid like TLS 1.3's X25519MLKEM768: a recording made today stays closed unless
both X25519 and ML-KEM-768 are broken ("harvest now, decrypt later").

Three messages, each a codec-encoded dict carried in a plaintext handshake frame:

1. ClientHello  {version, nonce, key, kem, macs}: `key` the client's ephemeral X25519
   public key, `kem` its ephemeral ML-KEM-768 encapsulation key.
2. ServerHello  {core, signature, finished}; `core` is the encoded dict
   {version, nonce, key, kem, mac, certificate} (`kem` the ML-KEM ciphertext) so both
   sides hash the exact bytes sent.
3. ClientFinished {finished}

Both secrets enter HKDF as ML-KEM secret || X25519 secret (TLS's order). The signature
covers the hash of ClientHello and the core, so a middle-man can change neither the
ephemeral keys, the KEM ciphertext, the MAC choice nor the client's offer. Finished
messages (HMAC over the transcript with keys from the schedule) prove both sides
derived the same keys. Each class is a small state machine; any failure raises
`HandshakeError` with a reason a person can read, and the object is dead after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.crypto.certs import ServerIdentity, fingerprint
from common.crypto.primitives import (
    constant_time_equal,
    ed25519_sign,
    ed25519_verify,
    hkdf_sha256,
    hmac_sha256,
    sha256,
    x25519_public_bytes,
    x25519_shared,
)
from common.crypto.record import MAC_ALGORITHMS
from common.errors import CryptoError, HandshakeError, ProtocolError
from common.protocol import codec

VERSION = 2
NONCE_SIZE = 32
X25519_KEY_SIZE = 32
MLKEM768_ENCAPSULATION_KEY_SIZE = 1184
MLKEM768_CIPHERTEXT_SIZE = 1088
MLKEM768_SEED_SIZE = 64
# The server's certificate is the one variable-size part of a hello; a bigger one is a
# configuration error caught when the server starts, not on the wire.
MAX_SERVER_CERTIFICATE = 2048
# The largest handshake message either side sends or accepts (a ServerHello with the
# largest certificate is about 3.3 KB). A multiple of 16, so a handshake frame's body
# is never larger: the server caps pre-login frames at this.
MAX_HANDSHAKE_MESSAGE = 4096
HANDSHAKE_LIMITS = codec.Limits(max_size=MAX_HANDSHAKE_MESSAGE, max_depth=4, max_items=64)
SIGNATURE_LABEL = b"uchat-v2 server signature"
KEYS_INFO = b"uchat-v2 keys"
SERVER_FINISHED_LABEL = b"uchat-v2 server finished"
CLIENT_FINISHED_LABEL = b"uchat-v2 client finished"

RandomSource = Callable[[int], bytes]


@dataclass(frozen=True)
class SessionKeys:
    """Per-direction record keys of one side; `send_*` protects what this side sends."""

    send_enc: bytes
    send_mac: bytes
    recv_enc: bytes
    recv_mac: bytes
    mac_alg: str


@dataclass(frozen=True)
class _Schedule:
    c2s_enc: bytes
    c2s_mac: bytes
    s2c_enc: bytes
    s2c_mac: bytes
    client_finished: bytes
    server_finished: bytes


def _schedule(mlkem_secret: bytes, x25519_secret: bytes, transcript_hash: bytes) -> _Schedule:
    okm = hkdf_sha256(mlkem_secret + x25519_secret, transcript_hash, KEYS_INFO, 6 * 32)
    parts = [okm[i : i + 32] for i in range(0, len(okm), 32)]
    return _Schedule(*parts)


def _decode_dict(payload: bytes, what: str) -> dict[str, Any]:
    try:
        value = codec.decode(payload, HANDSHAKE_LIMITS)
    except ProtocolError:
        raise HandshakeError(f"malformed {what}") from None
    if not isinstance(value, dict):
        raise HandshakeError(f"malformed {what}")
    return value


def _field(
    message: dict[str, Any], name: str, kind: type[Any], what: str, size: int | None = None
) -> Any:
    value: Any = message.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise HandshakeError(f"malformed {what}: bad {name}")
    if size is not None and len(value) != size:
        raise HandshakeError(f"malformed {what}: bad {name}")
    return value


def _new_ephemeral(random: RandomSource) -> X25519PrivateKey:
    if random is os.urandom:
        return X25519PrivateKey.generate()
    return X25519PrivateKey.from_private_bytes(random(32))


def _new_kem_key(random: RandomSource) -> MLKEM768PrivateKey:
    if random is os.urandom:
        return MLKEM768PrivateKey.generate()
    return MLKEM768PrivateKey.from_seed_bytes(random(MLKEM768_SEED_SIZE))


def _encapsulate(encapsulation_key: bytes) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext) for the client's key; a malformed key is the client's fault."""
    try:
        public = MLKEM768PublicKey.from_public_bytes(encapsulation_key)
        return public.encapsulate()
    except ValueError:
        raise HandshakeError("the client sent an invalid key exchange value") from None


def _checked_size(payload: bytes) -> bytes:
    if len(payload) > MAX_HANDSHAKE_MESSAGE:
        raise HandshakeError("handshake message larger than MAX_HANDSHAKE_MESSAGE")
    return payload


class ClientHandshake:
    """Client side. `expected_fingerprint` is the pin (configured or stored on first use)."""

    def __init__(
        self,
        expected_fingerprint: str | None = None,
        accepted_macs: Sequence[str] = MAC_ALGORITHMS,
        random: RandomSource = os.urandom,
    ) -> None:
        macs = list(accepted_macs)
        if not macs or any(m not in MAC_ALGORITHMS for m in macs):
            raise ValueError("accepted_macs must be a non-empty subset of MAC_ALGORITHMS")
        self._expected = expected_fingerprint.lower() if expected_fingerprint else None
        self._macs = macs
        self._random = random
        self._ephemeral = _new_ephemeral(random)
        self._kem = _new_kem_key(random)
        self._hello: bytes | None = None
        self.keys: SessionKeys | None = None
        self.peer_fingerprint: str | None = None
        self.peer_certificate_der: bytes | None = None

    def hello(self) -> bytes:
        if self._hello is not None:
            raise HandshakeError("client hello already sent")
        self._hello = _checked_size(
            codec.encode(
                {
                    "version": VERSION,
                    "nonce": self._random(NONCE_SIZE),
                    "key": x25519_public_bytes(self._ephemeral),
                    "kem": self._kem.public_key().public_bytes_raw(),
                    "macs": self._macs,
                }
            )
        )
        return self._hello

    def receive_server_hello(self, payload: bytes) -> bytes:
        """Check the server's hello; return the ClientFinished payload to send."""
        if self._hello is None or self.keys is not None:
            raise HandshakeError("unexpected server hello")
        message = _decode_dict(payload, "server hello")
        core_bytes = _field(message, "core", bytes, "server hello")
        signature = _field(message, "signature", bytes, "server hello", 64)
        server_finished = _field(message, "finished", bytes, "server hello", 32)
        core = _decode_dict(core_bytes, "server hello")
        if core.get("version") != VERSION:
            raise HandshakeError("the server speaks an unsupported protocol version")
        _field(core, "nonce", bytes, "server hello", NONCE_SIZE)
        server_key = _field(core, "key", bytes, "server hello", X25519_KEY_SIZE)
        kem_ciphertext = _field(core, "kem", bytes, "server hello", MLKEM768_CIPHERTEXT_SIZE)
        mac_alg = _field(core, "mac", str, "server hello")
        certificate_der = _field(core, "certificate", bytes, "server hello")
        if mac_alg not in self._macs:
            raise HandshakeError("the server chose a record MAC we did not offer")

        server_fp = fingerprint(certificate_der)
        if self._expected is not None and not constant_time_equal(
            server_fp.encode(), self._expected.encode()
        ):
            raise HandshakeError(
                "the server's certificate does not match the pinned fingerprint "
                f"(got {server_fp}); someone may be intercepting the connection"
            )
        identity_public = _certificate_public_key(certificate_der)

        transcript = self._hello + core_bytes
        if not ed25519_verify(identity_public, signature, SIGNATURE_LABEL + sha256(transcript)):
            raise HandshakeError("the server's handshake signature is invalid")
        try:
            shared = x25519_shared(self._ephemeral, server_key)
            # ML-KEM decapsulation never fails on a well-sized ciphertext (implicit
            # rejection): a forged one yields a secret the Finished check then refuses.
            kem_secret = self._kem.decapsulate(kem_ciphertext)
        except (CryptoError, ValueError):
            raise HandshakeError("the server sent an invalid key exchange value") from None
        schedule = _schedule(kem_secret, shared, sha256(transcript))

        transcript += signature
        expected_finished = hmac_sha256(
            schedule.server_finished, SERVER_FINISHED_LABEL + sha256(transcript)
        )
        if not constant_time_equal(expected_finished, server_finished):
            raise HandshakeError("the server's Finished message is invalid")
        transcript += server_finished
        client_finished = hmac_sha256(
            schedule.client_finished, CLIENT_FINISHED_LABEL + sha256(transcript)
        )
        self.keys = SessionKeys(
            schedule.c2s_enc, schedule.c2s_mac, schedule.s2c_enc, schedule.s2c_mac, mac_alg
        )
        self.peer_fingerprint = server_fp
        self.peer_certificate_der = certificate_der
        return codec.encode({"finished": client_finished})


def _certificate_public_key(der: bytes) -> bytes:
    try:
        certificate = x509.load_der_x509_certificate(der)
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise HandshakeError("the server sent a malformed certificate") from None
    if not isinstance(key, Ed25519PublicKey):
        raise HandshakeError("the server's certificate does not carry an Ed25519 key")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class ServerHandshake:
    """Server side: answers a ClientHello, then checks the ClientFinished."""

    def __init__(
        self,
        identity: ServerIdentity,
        mac_alg: str = "hmac-sha256",
        random: RandomSource = os.urandom,
    ) -> None:
        if mac_alg not in MAC_ALGORITHMS:
            raise ValueError(f"unknown record MAC {mac_alg!r}")
        if len(identity.certificate_der) > MAX_SERVER_CERTIFICATE:
            raise ValueError("the server certificate is larger than MAX_SERVER_CERTIFICATE")
        self._identity = identity
        self._mac_alg = mac_alg
        self._random = random
        self._transcript: bytes | None = None
        self._schedule: _Schedule | None = None
        self.keys: SessionKeys | None = None
        self.complete = False

    def receive_client_hello(self, payload: bytes) -> bytes:
        """Check the client's offer; return the ServerHello payload."""
        if self._transcript is not None:
            raise HandshakeError("unexpected client hello")
        message = _decode_dict(payload, "client hello")
        if message.get("version") != VERSION:
            raise HandshakeError("the client speaks an unsupported protocol version")
        _field(message, "nonce", bytes, "client hello", NONCE_SIZE)
        client_key = _field(message, "key", bytes, "client hello", X25519_KEY_SIZE)
        client_kem = _field(message, "kem", bytes, "client hello", MLKEM768_ENCAPSULATION_KEY_SIZE)
        macs = _field(message, "macs", list, "client hello")
        if self._mac_alg not in macs:
            raise HandshakeError(
                f"the client does not accept the server's record MAC {self._mac_alg}"
            )

        ephemeral = _new_ephemeral(self._random)
        try:
            shared = x25519_shared(ephemeral, client_key)
        except CryptoError:
            raise HandshakeError("the client sent an invalid key exchange value") from None
        kem_secret, kem_ciphertext = _encapsulate(client_kem)
        core = codec.encode(
            {
                "version": VERSION,
                "nonce": self._random(NONCE_SIZE),
                "key": x25519_public_bytes(ephemeral),
                "kem": kem_ciphertext,
                "mac": self._mac_alg,
                "certificate": self._identity.certificate_der,
            }
        )
        transcript = payload + core
        signature = ed25519_sign(self._identity.key, SIGNATURE_LABEL + sha256(transcript))
        schedule = _schedule(kem_secret, shared, sha256(transcript))
        transcript += signature
        finished = hmac_sha256(schedule.server_finished, SERVER_FINISHED_LABEL + sha256(transcript))
        self._transcript = transcript + finished
        self._schedule = schedule
        return _checked_size(
            codec.encode({"core": core, "signature": signature, "finished": finished})
        )

    def receive_client_finished(self, payload: bytes) -> None:
        if self._schedule is None or self._transcript is None or self.complete:
            raise HandshakeError("unexpected client finished")
        message = _decode_dict(payload, "client finished")
        received = _field(message, "finished", bytes, "client finished", 32)
        expected = hmac_sha256(
            self._schedule.client_finished, CLIENT_FINISHED_LABEL + sha256(self._transcript)
        )
        if not constant_time_equal(expected, received):
            raise HandshakeError("the client's Finished message is invalid")
        s = self._schedule
        self.keys = SessionKeys(s.s2c_enc, s.s2c_mac, s.c2s_enc, s.c2s_mac, self._mac_alg)
        self.complete = True
