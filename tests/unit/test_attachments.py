"""Attachment encryption: STREAM chunks over AES-256-GCM, round trips and tampering."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.crypto.attachments import (
    CHUNK_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    EncryptedFile,
    chunk_count,
    decrypt_file,
    encrypt_file,
    encrypted_size,
)
from common.errors import CryptoError

SMALL = 64
KEY = bytes(range(32))


def _write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def _encrypt(tmp_path: Path, size: int, chunk: int = SMALL) -> tuple[bytes, EncryptedFile, Path]:
    plain = _write(tmp_path / "plain", size)
    info = encrypt_file(tmp_path / "plain", tmp_path / "cipher", chunk_size=chunk)
    return plain, info, tmp_path / "cipher"


def _decrypt(tmp_path: Path, info: EncryptedFile, cipher: Path | None = None) -> bytes:
    out = tmp_path / "out"
    decrypt_file(
        cipher or tmp_path / "cipher",
        out,
        info.key,
        info.digest,
        info.plain_size,
        chunk_size=info.chunk_size,
    )
    return out.read_bytes()


def test_sizes_follow_the_chunk_layout() -> None:
    assert CHUNK_SIZE == 256 * 1024
    assert [chunk_count(n, SMALL) for n in (0, 1, 63, 64, 65, 3 * 64 + 5)] == [1, 1, 1, 1, 2, 4]
    assert encrypted_size(0, SMALL) == 16
    assert encrypted_size(64, SMALL) == 80
    assert encrypted_size(65, SMALL) == 65 + 32
    assert encrypted_size(50 * 2**20) == 50 * 2**20 + 16 * 200
    with pytest.raises(ValueError, match="negative"):
        encrypted_size(-1)
    with pytest.raises(ValueError, match="positive"):
        encrypted_size(1, 0)


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL + 5])
def test_round_trip(tmp_path: Path, size: int) -> None:
    plain, info, cipher = _encrypt(tmp_path, size)
    ciphertext = cipher.read_bytes()
    assert info.size == len(ciphertext) == encrypted_size(size, SMALL)
    assert info.plain_size == size
    assert info.chunk_size == SMALL
    assert len(info.key) == 32
    assert info.digest == hashlib.sha256(ciphertext).digest()
    assert _decrypt(tmp_path, info) == plain


def test_round_trip_one_mebibyte_with_the_default_chunk(tmp_path: Path) -> None:
    plain, info, cipher = _encrypt(tmp_path, 2**20, CHUNK_SIZE)
    assert info.size == 2**20 + 4 * 16
    assert plain[:4096] not in cipher.read_bytes()
    assert _decrypt(tmp_path, info) == plain


def test_chunks_are_the_stream_construction(tmp_path: Path) -> None:
    plain = _write(tmp_path / "plain", 2 * SMALL + 3)
    info = encrypt_file(tmp_path / "plain", tmp_path / "cipher", key=KEY, chunk_size=SMALL)
    ciphertext = (tmp_path / "cipher").read_bytes()
    aead = AESGCM(KEY)
    expected = b""
    for index, final in ((0, False), (1, False), (2, True)):
        nonce = bytes(4) + index.to_bytes(8, "big")
        aad = b"uchat-attachment-v1" + index.to_bytes(8, "big") + bytes([final])
        chunk = plain[index * SMALL : (index + 1) * SMALL]
        expected += aead.encrypt(nonce, chunk, aad)
    assert ciphertext == expected
    assert info.key == KEY


def test_fresh_keys_per_file(tmp_path: Path) -> None:
    _write(tmp_path / "plain", 10)
    one = encrypt_file(tmp_path / "plain", tmp_path / "c1", chunk_size=SMALL)
    two = encrypt_file(tmp_path / "plain", tmp_path / "c2", chunk_size=SMALL)
    assert one.key != two.key
    assert one.digest != two.digest


def test_chunks_decrypt_independently_in_any_order(tmp_path: Path) -> None:
    plain, info, cipher = _encrypt(tmp_path, 3 * SMALL + 5)
    ciphertext = cipher.read_bytes()
    decryptor = AttachmentDecryptor(info.key, info.plain_size, SMALL)
    assert decryptor.chunk_count == 4
    pieces = {}
    for index in (3, 1, 0, 2):
        offset, length = decryptor.cipher_chunk_span(index)
        pieces[index] = decryptor.decrypt_chunk(index, ciphertext[offset : offset + length])
    assert b"".join(pieces[i] for i in range(4)) == plain
    assert decryptor.cipher_chunk_span(3) == (3 * (SMALL + 16), 5 + 16)


def test_chunk_span_out_of_range_is_an_index_error() -> None:
    decryptor = AttachmentDecryptor(KEY, 10, SMALL)
    with pytest.raises(IndexError):
        decryptor.cipher_chunk_span(1)
    with pytest.raises(IndexError):
        decryptor.cipher_chunk_span(-1)


def test_decrypt_chunk_refuses_out_of_range_or_wrong_length(tmp_path: Path) -> None:
    _, info, cipher = _encrypt(tmp_path, 2 * SMALL)
    ciphertext = cipher.read_bytes()
    decryptor = AttachmentDecryptor(info.key, info.plain_size, SMALL)
    first = ciphertext[: SMALL + 16]
    for index, data in ((2, first), (-1, first), (0, first[:-1]), (0, first + b"\x00")):
        with pytest.raises(CryptoError):
            decryptor.decrypt_chunk(index, data)


def test_wrong_key_fails(tmp_path: Path) -> None:
    plain, info, cipher = _encrypt(tmp_path, 10)
    assert AttachmentDecryptor(info.key, 10, SMALL).decrypt_chunk(0, cipher.read_bytes()) == plain
    decryptor = AttachmentDecryptor(os.urandom(32), 10, SMALL)
    with pytest.raises(CryptoError):
        decryptor.decrypt_chunk(0, cipher.read_bytes())


def _tamper_and_expect_failure(tmp_path: Path, info: EncryptedFile, data: bytes) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(data)
    with pytest.raises(CryptoError):
        _decrypt(tmp_path, info, bad)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_a_flipped_byte_is_detected(tmp_path: Path) -> None:
    _, info, cipher = _encrypt(tmp_path, 3 * SMALL + 5)
    ciphertext = cipher.read_bytes()
    for position in (0, SMALL + 3, len(ciphertext) - 1):
        tampered = bytearray(ciphertext)
        tampered[position] ^= 0x01
        _tamper_and_expect_failure(tmp_path, info, bytes(tampered))


def test_swapped_chunks_are_detected(tmp_path: Path) -> None:
    _, info, cipher = _encrypt(tmp_path, 3 * SMALL)
    ciphertext = cipher.read_bytes()
    size = SMALL + 16
    chunks = [ciphertext[i : i + size] for i in range(0, len(ciphertext), size)]
    swapped = chunks[1] + chunks[0] + chunks[2]
    _tamper_and_expect_failure(tmp_path, info, swapped)
    decryptor = AttachmentDecryptor(info.key, info.plain_size, SMALL)
    with pytest.raises(CryptoError):
        decryptor.decrypt_chunk(0, chunks[1])


def test_truncated_last_chunk_is_detected(tmp_path: Path) -> None:
    _, info, cipher = _encrypt(tmp_path, 3 * SMALL + 5)
    _tamper_and_expect_failure(tmp_path, info, cipher.read_bytes()[:-1])


def test_dropped_final_chunk_is_detected_even_with_a_matching_size(tmp_path: Path) -> None:
    _, info, cipher = _encrypt(tmp_path, 3 * SMALL)
    ciphertext = cipher.read_bytes()
    shortened = ciphertext[: 2 * (SMALL + 16)]
    _tamper_and_expect_failure(tmp_path, info, shortened)
    # An attacker who also lies about the size: the new last chunk is not marked final.
    lying = EncryptedFile(
        info.key, hashlib.sha256(shortened).digest(), len(shortened), 2 * SMALL, SMALL
    )
    _tamper_and_expect_failure(tmp_path, lying, shortened)


def test_appended_data_is_detected(tmp_path: Path) -> None:
    _, info, cipher = _encrypt(tmp_path, SMALL + 1)
    _tamper_and_expect_failure(tmp_path, info, cipher.read_bytes() + b"\x00")


def test_wrong_digest_is_detected(tmp_path: Path) -> None:
    _, info, _cipher = _encrypt(tmp_path, 100)
    for digest in (bytes(32), info.digest[:31]):
        wrong = EncryptedFile(info.key, digest, info.size, info.plain_size, SMALL)
        with pytest.raises(CryptoError):
            _decrypt(tmp_path, wrong)
    assert not (tmp_path / "out").exists()


def test_encryptor_enforces_the_chunk_layout() -> None:
    encryptor = AttachmentEncryptor(KEY, SMALL)
    assert len(encryptor.encrypt_chunk(0, b"", final=True)) == 16
    with pytest.raises(ValueError, match="final chunk"):
        encryptor.encrypt_chunk(0, b"x" * (SMALL - 1), final=False)
    with pytest.raises(ValueError, match="final chunk"):
        encryptor.encrypt_chunk(0, b"x" * (SMALL + 1), final=True)
    with pytest.raises(ValueError, match="empty"):
        encryptor.encrypt_chunk(1, b"", final=True)
    with pytest.raises(ValueError, match="index"):
        encryptor.encrypt_chunk(-1, b"x", final=True)
    with pytest.raises(ValueError, match="32 bytes"):
        AttachmentEncryptor(b"short")


def test_encryptor_matches_the_decryptor() -> None:
    encryptor = AttachmentEncryptor(KEY, SMALL)
    decryptor = AttachmentDecryptor(KEY, SMALL + 3, SMALL)
    first = encryptor.encrypt_chunk(0, b"a" * SMALL, final=False)
    last = encryptor.encrypt_chunk(1, b"abc", final=True)
    assert (
        decryptor.decrypt_chunk(0, first) + decryptor.decrypt_chunk(1, last) == b"a" * 64 + b"abc"
    )
    marked_final = encryptor.encrypt_chunk(0, b"a" * SMALL, final=True)
    with pytest.raises(CryptoError):
        decryptor.decrypt_chunk(0, marked_final)


def test_failed_encryption_leaves_no_output(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        encrypt_file(tmp_path / "missing", tmp_path / "cipher")
    assert list(tmp_path.iterdir()) == []
    _write(tmp_path / "plain", 5)
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_file(tmp_path / "plain", tmp_path / "cipher", key=b"short")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_files_are_streamed_not_loaded_whole(tmp_path: Path) -> None:
    size = 8 * 2**20
    with open(tmp_path / "plain", "wb") as handle:
        for _ in range(size // 2**20):
            handle.write(os.urandom(2**20))
    chunk = 64 * 1024
    tracemalloc.start()
    try:
        info = encrypt_file(tmp_path / "plain", tmp_path / "cipher", chunk_size=chunk)
        decrypt_file(
            tmp_path / "cipher", tmp_path / "out", info.key, info.digest, size, chunk_size=chunk
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * 2**20
    assert (tmp_path / "out").stat().st_size == size
