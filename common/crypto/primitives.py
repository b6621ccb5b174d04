"""Thin, fast wrappers over `cryptography` and the standard library.

Every other module goes through these names, so the known-answer and Wycheproof tests
cover exactly the calls the protocol makes. Nothing here is hand-rolled crypto: each
function only fixes the algorithm and checks the inputs the library would accept
silently or report with a library-specific exception.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.errors import CryptoError

X25519_KEY_SIZE = 32
ED25519_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
AES256_KEY_SIZE = 32
AES_BLOCK_SIZE = 16

_ZERO_SHARED_SECRET = bytes(X25519_KEY_SIZE)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256; an empty salt means the RFC's all-zero salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def hmac_md5_hex(key: bytes, data: bytes) -> bytes:
    """HMAC-MD5 as 32 lowercase ASCII hex bytes: the original wire format of the MAC field."""
    return hmac.digest(key, data, "md5").hex().encode("ascii")


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _check_cbc_inputs(key: bytes, iv: bytes, data: bytes) -> None:
    if len(key) != AES256_KEY_SIZE:
        raise ValueError("AES-256 needs a 32-byte key")
    if len(iv) != AES_BLOCK_SIZE:
        raise ValueError("CBC needs a 16-byte IV")
    if len(data) % AES_BLOCK_SIZE:
        raise ValueError("CBC data must be a multiple of 16 bytes")


def aes256_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Raw AES-256-CBC (no padding: callers pad, so the record layer controls it)."""
    _check_cbc_inputs(key, iv, data)
    encryptor = Cipher(algorithms.AES256(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def aes256_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Raw AES-256-CBC decryption; padding is the caller's to check."""
    _check_cbc_inputs(key, iv, data)
    decryptor = Cipher(algorithms.AES256(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def x25519_private_from_bytes(raw: bytes) -> X25519PrivateKey:
    if len(raw) != X25519_KEY_SIZE:
        raise CryptoError("invalid X25519 private key")
    return X25519PrivateKey.from_private_bytes(raw)


def x25519_public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """The 32 raw public bytes of a private or public X25519 key."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_shared(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """RFC 7748 Diffie-Hellman; rejects small-order peers (all-zero secret) explicitly.

    The library rejects them too, but the protocol's safety must not depend on a
    library default, so the zero check is ours and runs in constant time.
    """
    if len(peer_public) != X25519_KEY_SIZE:
        raise CryptoError("invalid X25519 public key")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise CryptoError("invalid X25519 public key") from None
    if hmac.compare_digest(shared, _ZERO_SHARED_SECRET):
        raise CryptoError("invalid X25519 public key")
    return shared


def ed25519_private_from_bytes(raw: bytes) -> Ed25519PrivateKey:
    """An Ed25519 key from its 32-byte RFC 8032 seed."""
    if len(raw) != ED25519_KEY_SIZE:
        raise CryptoError("invalid Ed25519 private key")
    return Ed25519PrivateKey.from_private_bytes(raw)


def ed25519_public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32 raw public bytes of a private or public Ed25519 key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_sign(private: Ed25519PrivateKey, message: bytes) -> bytes:
    return private.sign(message)


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True only for a valid signature; never raises, whatever the inputs."""
    if len(public) != ED25519_KEY_SIZE or len(signature) != ED25519_SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
