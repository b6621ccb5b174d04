"""A user's long-term key pair and its password-protected file.

The file is JSON so it is inspectable and versioned; the two raw private keys are
sealed with AES-256-GCM under a scrypt key, and the KDF parameters are bound into the
GCM associated data so editing them (say, to weaken a later re-save) breaks the file.

Version 2 (end-to-end v2) appends the KEM keyring (current X-Wing key and the retired
ones still in their grace period) to the sealed bytes. Version 1 files still load
(with no keyring); the client adds the keyring at the next login and saves version 2.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from common.crypto.kem import KemKeyring
from common.errors import EndToEndError, KeyStoreError
from common.fileio import write_private_file

FILE_VERSION = 2
READABLE_VERSIONS = (1, 2)
KDF_NAME = "scrypt"
SALT_SIZE = 16
NONCE_SIZE = 12
RAW_KEY_SIZE = 32
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_R = 32
MAX_SCRYPT_P = 16
MAX_SCRYPT_MEMORY = 2**30  # bytes: 128 * n * r
MAX_SCRYPT_WORK = 2**24  # n * r * p, a few seconds at most


@dataclass(frozen=True)
class UserKeys:
    """Ed25519 identity (signs) and X25519 agreement (end-to-end encryption) keys."""

    identity: Ed25519PrivateKey
    agreement: X25519PrivateKey
    kem: KemKeyring | None = None  # None: a version-1 file not upgraded yet

    @property
    def identity_public(self) -> bytes:
        return self.identity.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def agreement_public(self) -> bytes:
        return self.agreement.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost; the defaults take a fraction of a second, once per login."""

    n: int = 2**15
    r: int = 8
    p: int = 1


def generate_user_keys() -> UserKeys:
    return UserKeys(identity=Ed25519PrivateKey.generate(), agreement=X25519PrivateKey.generate())


def keys_to_bytes(keys: UserKeys) -> bytes:
    """The raw private keys (and KEM keyring) a key file seals; secret."""
    raw = (Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    kem = keys.kem.to_bytes() if keys.kem is not None else b""
    return keys.identity.private_bytes(*raw) + keys.agreement.private_bytes(*raw) + kem


def _derive_key(password: str, salt: bytes, params: KdfParams) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params.n, r=params.r, p=params.p)
    return kdf.derive(password.encode("utf-8"))


def _associated_data(params: KdfParams, salt: bytes, version: int = FILE_VERSION) -> bytes:
    """Everything in the header the ciphertext must be bound to (the version included)."""
    return (
        f"uchat-keys v{version} {KDF_NAME} {params.n} {params.r} {params.p}".encode("ascii") + salt
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def save_keys(path: Path, keys: UserKeys, password: str, params: KdfParams = KdfParams()) -> None:
    """Encrypt `keys` under `password` and write them atomically, mode 0600 from creation."""
    _check_params(params)
    salt = os.urandom(SALT_SIZE)
    nonce = os.urandom(NONCE_SIZE)
    key = _derive_key(password, salt, params)
    ciphertext = AESGCM(key).encrypt(nonce, keys_to_bytes(keys), _associated_data(params, salt))
    document = {
        "version": FILE_VERSION,
        "kdf": {"name": KDF_NAME, "n": params.n, "r": params.r, "p": params.p},
        "salt": _b64(salt),
        "nonce": _b64(nonce),
        "ciphertext": _b64(ciphertext),
    }
    try:
        write_private_file(Path(path), json.dumps(document, indent=2).encode("utf-8"))
    except OSError as error:
        raise KeyStoreError(f"key file cannot be written: {path}: {error.strerror}") from error


def load_keys(path: Path, password: str) -> UserKeys:
    """Read and decrypt a key file; every failure is a `KeyStoreError` saying which."""
    document = _read_document(Path(path))
    params, salt, nonce, ciphertext = _parse_document(document)
    version = document["version"]
    key = _derive_key(password, salt, params)
    try:
        raw = AESGCM(key).decrypt(nonce, ciphertext, _associated_data(params, salt, version))
    except InvalidTag:
        raise KeyStoreError("wrong password for the key file") from None
    if version == 1 and len(raw) != 2 * RAW_KEY_SIZE:
        raise KeyStoreError("key file is corrupt: wrong key length")
    return keys_from_bytes(raw)


def keys_from_bytes(raw: bytes) -> UserKeys:
    """The inverse of `keys_to_bytes`; `KeyStoreError` for anything malformed."""
    if len(raw) < 2 * RAW_KEY_SIZE:
        raise KeyStoreError("key file is corrupt: wrong key length")
    kem = None
    if len(raw) > 2 * RAW_KEY_SIZE:  # version 2 with a keyring
        try:
            kem = KemKeyring.from_bytes(raw[2 * RAW_KEY_SIZE :])
        except EndToEndError:
            raise KeyStoreError("key file is corrupt: bad KEM keys") from None
    return UserKeys(
        identity=Ed25519PrivateKey.from_private_bytes(raw[:RAW_KEY_SIZE]),
        agreement=X25519PrivateKey.from_private_bytes(raw[RAW_KEY_SIZE : 2 * RAW_KEY_SIZE]),
        kem=kem,
    )


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise KeyStoreError(f"key file not found: {path}") from None
    except OSError as error:
        raise KeyStoreError(f"key file cannot be read: {path}: {error.strerror}") from None
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise KeyStoreError("key file is corrupt: not valid JSON") from None
    if not isinstance(document, dict):
        raise KeyStoreError("key file is corrupt: not a JSON object")
    return document


def _parse_document(document: dict[str, Any]) -> tuple[KdfParams, bytes, bytes, bytes]:
    if document.get("version") not in READABLE_VERSIONS:
        raise KeyStoreError("key file has an unsupported version")
    kdf = document.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != KDF_NAME:
        raise KeyStoreError("key file is corrupt: unknown key derivation")
    values: list[int] = []
    for name in ("n", "r", "p"):
        value = kdf.get(name)
        if type(value) is not int:
            raise KeyStoreError("key file is corrupt: bad key derivation parameters")
        values.append(value)
    params = KdfParams(n=values[0], r=values[1], p=values[2])
    _check_params(params)
    salt = _field_bytes(document, "salt")
    nonce = _field_bytes(document, "nonce")
    ciphertext = _field_bytes(document, "ciphertext")
    if len(salt) != SALT_SIZE or len(nonce) != NONCE_SIZE:
        raise KeyStoreError("key file is corrupt: bad salt or nonce")
    return params, salt, nonce, ciphertext


def _check_params(params: KdfParams) -> None:
    """Bounds that keep a tampered file from making us allocate gigabytes or spin forever."""
    power_of_two = params.n > 1 and params.n & (params.n - 1) == 0
    in_range = (
        power_of_two
        and params.n <= MAX_SCRYPT_N
        and 1 <= params.r <= MAX_SCRYPT_R
        and 1 <= params.p <= MAX_SCRYPT_P
        and 128 * params.n * params.r <= MAX_SCRYPT_MEMORY
        and params.n * params.r * params.p <= MAX_SCRYPT_WORK
    )
    if not in_range:
        raise KeyStoreError("key file is corrupt: bad key derivation parameters")


def _field_bytes(document: dict[str, Any], name: str) -> bytes:
    value = document.get(name)
    if not isinstance(value, str):
        raise KeyStoreError(f"key file is corrupt: missing {name}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeyStoreError(f"key file is corrupt: bad {name}") from None
