"""The protected record of docs/protocol.md section 1: AES-256-CBC, then HMAC.

Encrypt-then-MAC with the sequence number inside the MAC: the receiver checks the MAC
in constant time before it decrypts anything, so a forged, replayed, reordered,
dropped or reflected record is rejected without touching the cipher, and padding can
never become an oracle. Every failure is the same bare `CryptoError`, and a receiver
that failed once refuses everything after: the connection is to be closed.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from common.crypto.primitives import hmac_md5_hex, hmac_sha256
from common.errors import CryptoError, LocalProtocolError
from common.protocol.framing import BLOCK_SIZE, Frame, encode_frame

MAC_ALGORITHMS = ("hmac-sha256", "hmac-md5")
KEY_SIZE = 32
MAX_SEQUENCE = 2**64 - 1

_MAC_PREFIX = struct.Struct("!QIB")  # seq64 || body length || pad length
_PADDINGS = tuple(bytes([n]) * n for n in range(BLOCK_SIZE + 1))


_MAC_FUNCTIONS: Mapping[str, Callable[[bytes, bytes], bytes]] = MappingProxyType(
    {"hmac-sha256": hmac_sha256, "hmac-md5": hmac_md5_hex}
)


class _SteeredCbc:
    """One CBC encryption context for a whole direction, restarted at each record's IV.

    Building a fresh `Cipher(AES256, CBC(iv))` per record was half the cost of sealing
    a small record. CBC encrypts block P as C = E(P xor C_prev), where C_prev is the
    last ciphertext block the context produced. Feeding first the block
    S = D(IV) xor C_prev gives E(D(IV)) = IV as its output (dropped), which makes the
    record's IV the chaining value: the record's blocks then come out exactly as a
    fresh `CBC(iv)` context would produce them (tests/unit/test_record.py checks it
    byte for byte on random keys, IVs and records, and the KATs still pass). D is one
    AES block decryption by a long-lived ECB context: a single block, never data.
    """

    __slots__ = ("_cbc", "_chain", "_unblock")

    def __init__(self, key: algorithms.AES256) -> None:
        self._cbc = Cipher(key, modes.CBC(bytes(BLOCK_SIZE))).encryptor()
        self._unblock = Cipher(key, modes.ECB()).decryptor()  # noqa: S305 -- one block, see above
        self._chain = 0  # the last ciphertext block, as an int (the zero IV to begin)

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        steer = int.from_bytes(self._unblock.update(iv), "big") ^ self._chain
        out = self._cbc.update(steer.to_bytes(BLOCK_SIZE, "big") + data)
        self._chain = int.from_bytes(out[-BLOCK_SIZE:], "big")
        return out[BLOCK_SIZE:]


def _decrypt(decryptor: CipherContext, iv: bytes, data: bytes) -> bytes:
    """The only place records are decrypted, so tests can prove it never runs on a bad MAC.

    One CBC decryption context serves the whole connection, which saves building one
    per record (most of the cost of a small record). CBC decrypts each block using only
    the block before it, so feeding the record's IV as a block first -- and discarding
    that output -- makes the IV the chaining value, exactly as a fresh context would.
    """
    decryptor.update(iv)
    return decryptor.update(data)


def _mac_function(mac_alg: str) -> Callable[[bytes, bytes], bytes]:
    try:
        return _MAC_FUNCTIONS[mac_alg]
    except KeyError:
        raise ValueError(f"unknown record MAC algorithm {mac_alg!r}") from None


def _check_keys(enc_key: bytes, mac_key: bytes) -> None:
    if len(enc_key) != KEY_SIZE or len(mac_key) != KEY_SIZE:
        raise ValueError("record keys must be 32 bytes each")


class RecordSender:
    """Seals plaintexts into whole record frames for one direction of a connection."""

    __slots__ = ("_cbc", "_iv_source", "_mac", "_mac_key", "_seq")

    def __init__(
        self,
        enc_key: bytes,
        mac_key: bytes,
        mac_alg: str,
        iv_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        _check_keys(enc_key, mac_key)
        self._cbc = _SteeredCbc(algorithms.AES256(enc_key))
        self._mac_key = mac_key
        self._mac = _mac_function(mac_alg)
        self._iv_source = iv_source
        self._seq = 0

    @property
    def sequence(self) -> int:
        """The sequence number the next record will carry."""
        return self._seq

    def seal(self, plaintext: bytes) -> bytes:
        """Pad, encrypt under a fresh IV, MAC, and return the frame ready to send."""
        if self._seq > MAX_SEQUENCE:
            raise LocalProtocolError("record sequence numbers exhausted: reconnect")
        pad = BLOCK_SIZE - len(plaintext) % BLOCK_SIZE
        iv = self._iv_source(BLOCK_SIZE)
        ciphertext = self._cbc.encrypt(iv, plaintext + _PADDINGS[pad])
        prefix = _MAC_PREFIX.pack(self._seq, len(ciphertext), pad)
        mac = self._mac(self._mac_key, b"".join((prefix, iv, ciphertext)))
        self._seq += 1
        return encode_frame(pad, iv, mac, ciphertext)


class RecordReceiver:
    """Authenticates and decrypts record frames for one direction, strictly in order."""

    __slots__ = ("_decryptor", "_failed", "_mac", "_mac_key", "_seq")

    def __init__(self, enc_key: bytes, mac_key: bytes, mac_alg: str) -> None:
        _check_keys(enc_key, mac_key)
        self._decryptor = Cipher(
            algorithms.AES256(enc_key), modes.CBC(bytes(BLOCK_SIZE))
        ).decryptor()
        self._mac_key = mac_key
        self._mac = _mac_function(mac_alg)
        self._seq = 0
        self._failed = False

    @property
    def sequence(self) -> int:
        """The sequence number the next record must carry."""
        return self._seq

    @property
    def failed(self) -> bool:
        return self._failed

    def open(self, frame: Frame) -> bytes:
        """Return the plaintext of the next record or raise `CryptoError` (then always)."""
        if self._failed:
            raise CryptoError()
        plaintext = self._open(frame)
        if plaintext is None:
            self._failed = True
            raise CryptoError()
        self._seq += 1
        return plaintext

    def _open(self, frame: Frame) -> bytes | None:
        """The checks, in order; None for any failure so there is one error path.

        The header checks come first (they are public and cost nothing), then the MAC,
        and only a record with a valid MAC is ever decrypted.
        """
        body, pad, iv = frame.body, frame.pad, frame.iv
        if frame.is_handshake or not 1 <= pad <= BLOCK_SIZE or self._seq > MAX_SEQUENCE:
            return None
        if not body or len(body) % BLOCK_SIZE or len(iv) != BLOCK_SIZE:
            return None
        prefix = _MAC_PREFIX.pack(self._seq, len(body), pad)
        expected = self._mac(self._mac_key, b"".join((prefix, iv, body)))
        if not hmac.compare_digest(expected, frame.mac):
            return None
        padded = _decrypt(self._decryptor, iv, body)
        if len(padded) != len(body) or not hmac.compare_digest(padded[-pad:], _PADDINGS[pad]):
            return None
        return padded[:-pad]
