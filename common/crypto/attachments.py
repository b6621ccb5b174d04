"""Attachment encryption: once per file, streamed in independently checkable chunks.

A file is encrypted once under a random 32-byte key and uploaded once; only the key
(with the ciphertext digest and sizes) travels inside the sealed message. Chunks use
the STREAM construction over AES-256-GCM: chunk i has nonce 0^4 || i and associated
data naming its index and whether it is the last, so a chunk cannot be moved,
dropped, duplicated or presented as the end of the file. Every chunk can be checked on
its own, which lets a download resume at any chunk and never buffers the whole file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.crypto.primitives import constant_time_equal
from common.errors import CryptoError

CHUNK_SIZE = 256 * 1024
KEY_SIZE = 32
TAG_SIZE = 16
DIGEST_SIZE = 32
AAD_LABEL = b"uchat-attachment-v1"
_NONCE_PREFIX = bytes(4)
_MAX_CHUNKS = 2**64


def _check_layout(plain_size: int, chunk_size: int) -> None:
    if plain_size < 0:
        raise ValueError("plain size cannot be negative")
    if chunk_size <= 0:
        raise ValueError("chunk size must be positive")


def chunk_count(plain_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Number of chunks; an empty file still has one (empty, final) chunk."""
    _check_layout(plain_size, chunk_size)
    return max(1, -(-plain_size // chunk_size))


def encrypted_size(plain_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    return plain_size + TAG_SIZE * chunk_count(plain_size, chunk_size)


def _nonce(index: int) -> bytes:
    return _NONCE_PREFIX + index.to_bytes(8, "big")


def _associated_data(index: int, final: bool) -> bytes:
    return AAD_LABEL + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise ValueError("attachment key must be 32 bytes")
    return AESGCM(key)


@dataclass(frozen=True)
class EncryptedFile:
    """What the recipient needs, beside the ciphertext, to fetch and check a file."""

    key: bytes
    digest: bytes
    size: int
    plain_size: int
    chunk_size: int


class AttachmentEncryptor:
    """Encrypts chunks in any order; the caller says which chunk is the last.

    One key must only ever encrypt one file: the nonces are chunk indices, so a key
    reused for different contents would repeat nonces.
    """

    def __init__(self, key: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        _check_layout(0, chunk_size)
        self._aead = _cipher(key)
        self.chunk_size = chunk_size

    def encrypt_chunk(self, index: int, data: bytes, final: bool) -> bytes:
        if not 0 <= index < _MAX_CHUNKS:
            raise ValueError("chunk index out of range")
        if len(data) > self.chunk_size or (not final and len(data) != self.chunk_size):
            raise ValueError("only the final chunk may be shorter than the chunk size")
        if not data and index:
            raise ValueError("only the single chunk of an empty file may be empty")
        return self._aead.encrypt(_nonce(index), data, _associated_data(index, final))


class AttachmentDecryptor:
    """Checks and decrypts the chunks of one file whose key and size came sealed."""

    def __init__(self, key: bytes, plain_size: int, chunk_size: int = CHUNK_SIZE) -> None:
        self._aead = _cipher(key)
        self.plain_size = plain_size
        self.chunk_size = chunk_size
        self.chunk_count = chunk_count(plain_size, chunk_size)
        self.encrypted_size = encrypted_size(plain_size, chunk_size)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.chunk_count:
            raise IndexError(f"chunk {index} out of range 0..{self.chunk_count - 1}")

    def plain_chunk_length(self, index: int) -> int:
        self._check_index(index)
        return min(self.chunk_size, self.plain_size - index * self.chunk_size)

    def cipher_chunk_span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk `index` in the ciphertext: what to download."""
        length = self.plain_chunk_length(index) + TAG_SIZE
        return index * (self.chunk_size + TAG_SIZE), length

    def decrypt_chunk(self, index: int, data: bytes) -> bytes:
        """Plaintext of chunk `index`, or `CryptoError()` if it is not exactly that chunk."""
        if not 0 <= index < self.chunk_count:
            raise CryptoError()
        if len(data) != self.plain_chunk_length(index) + TAG_SIZE:
            raise CryptoError()
        final = index == self.chunk_count - 1
        try:
            return self._aead.decrypt(_nonce(index), data, _associated_data(index, final))
        except InvalidTag:
            raise CryptoError() from None


@contextmanager
def _atomic_output(dst: Path) -> Iterator[BinaryIO]:
    """A 0600 temp file beside `dst` that replaces `dst` only if the block succeeds."""
    dst = Path(dst)
    temp = dst.parent / f".{dst.name}.{os.urandom(6).hex()}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(temp, dst)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def encrypt_file(
    src: Path, dst: Path, key: bytes | None = None, chunk_size: int = CHUNK_SIZE
) -> EncryptedFile:
    """Stream-encrypt `src` into `dst` (written atomically) under `key` or a fresh one."""
    key = os.urandom(KEY_SIZE) if key is None else key
    encryptor = AttachmentEncryptor(key, chunk_size)
    digest = hashlib.sha256()
    plain_size = size = index = 0
    with open(src, "rb") as source, _atomic_output(dst) as sink:
        current = source.read(chunk_size)
        while True:
            following = source.read(chunk_size) if current else b""
            final = not following
            chunk = encryptor.encrypt_chunk(index, current, final)
            sink.write(chunk)
            digest.update(chunk)
            plain_size += len(current)
            size += len(chunk)
            if final:
                break
            current, index = following, index + 1
    return EncryptedFile(key, digest.digest(), size, plain_size, chunk_size)


def decrypt_file(
    src: Path,
    dst: Path,
    key: bytes,
    digest: bytes,
    plain_size: int,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> None:
    """Stream-decrypt `src` into `dst`; `dst` appears only if every check passed."""
    decryptor = AttachmentDecryptor(key, plain_size, chunk_size)
    if len(digest) != DIGEST_SIZE or Path(src).stat().st_size != decryptor.encrypted_size:
        raise CryptoError()
    running = hashlib.sha256()
    with open(src, "rb") as source, _atomic_output(dst) as sink:
        for index in range(decryptor.chunk_count):
            _, length = decryptor.cipher_chunk_span(index)
            chunk = source.read(length)
            running.update(chunk)
            sink.write(decryptor.decrypt_chunk(index, chunk))
        if source.read(1) or not constant_time_equal(running.digest(), digest):
            raise CryptoError()
