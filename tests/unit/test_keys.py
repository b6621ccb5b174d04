"""The password-protected key file: round trip, permissions, and every way to break it."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from common.crypto import primitives
from common.crypto.keys import KdfParams, UserKeys, generate_user_keys, load_keys, save_keys
from common.errors import KeyStoreError

FAST = KdfParams(n=2**10, r=8, p=1)
PASSWORD = "open sesame"


@pytest.fixture(scope="module")
def keys() -> UserKeys:
    return generate_user_keys()


@pytest.fixture
def key_file(tmp_path: Path, keys: UserKeys) -> Path:
    path = tmp_path / "alice.keys"
    save_keys(path, keys, PASSWORD, FAST)
    return path


def _edit(path: Path, change: dict[str, Any]) -> None:
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))


def test_generated_keys_are_distinct_and_raw_32_bytes() -> None:
    first, second = generate_user_keys(), generate_user_keys()
    assert len(first.identity_public) == len(first.agreement_public) == 32
    assert first.identity_public != second.identity_public
    assert first.agreement_public != second.agreement_public


def test_public_properties_match_the_private_keys(keys: UserKeys) -> None:
    assert keys.identity_public == primitives.ed25519_public_bytes(keys.identity)
    assert keys.agreement_public == primitives.x25519_public_bytes(keys.agreement)
    signature = primitives.ed25519_sign(keys.identity, b"hello")
    assert primitives.ed25519_verify(keys.identity_public, signature, b"hello")


def test_round_trip(key_file: Path, keys: UserKeys) -> None:
    loaded = load_keys(key_file, PASSWORD)
    assert loaded.identity_public == keys.identity_public
    assert loaded.agreement_public == keys.agreement_public
    peer = generate_user_keys()
    assert primitives.x25519_shared(loaded.agreement, peer.agreement_public) == (
        primitives.x25519_shared(peer.agreement, keys.agreement_public)
    )


def test_file_contents(key_file: Path) -> None:
    document = json.loads(key_file.read_text())
    assert document["version"] == 1
    assert document["kdf"] == {"name": "scrypt", "n": 1024, "r": 8, "p": 1}
    assert len(base64.b64decode(document["salt"])) == 16
    assert len(base64.b64decode(document["nonce"])) == 12
    assert len(base64.b64decode(document["ciphertext"])) == 64 + 16
    assert PASSWORD not in key_file.read_text()


def test_mode_0600(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_mode_0600_even_with_a_permissive_umask(tmp_path: Path, keys: UserKeys) -> None:
    old = os.umask(0)
    try:
        save_keys(tmp_path / "k", keys, PASSWORD, FAST)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path: Path, keys: UserKeys) -> None:
    path = tmp_path / "sub" / "k.json"
    save_keys(path, keys, "first", FAST)
    os.chmod(path, 0o644)
    save_keys(path, keys, "second", FAST)
    assert sorted(os.listdir(path.parent)) == ["k.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keys(path, "second").identity_public == keys.identity_public
    with pytest.raises(KeyStoreError, match="wrong password"):
        load_keys(path, "first")


def test_wrong_password(key_file: Path) -> None:
    with pytest.raises(KeyStoreError, match=r"^wrong password for the key file$"):
        load_keys(key_file, "open sesamE")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="not found"):
        load_keys(tmp_path / "absent", PASSWORD)


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'{"version": 1}', b'{"version": 2}'],
)
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(KeyStoreError):
        load_keys(path, PASSWORD)


@pytest.mark.parametrize(
    "change",
    [
        {"salt": "!!!"},
        {"salt": base64.b64encode(bytes(8)).decode()},
        {"nonce": 12},
        {"ciphertext": None},
        {"kdf": {"name": "pbkdf2", "n": 1024, "r": 8, "p": 1}},
        {"kdf": {"name": "scrypt", "n": "1024", "r": 8, "p": 1}},
        {"kdf": {"name": "scrypt", "n": 2**30, "r": 8, "p": 1}},
        {"kdf": {"name": "scrypt", "n": 1000, "r": 8, "p": 1}},
        {"kdf": {"name": "scrypt", "n": 1024, "r": 8}},
    ],
)
def test_malformed_fields(key_file: Path, change: dict[str, Any]) -> None:
    _edit(key_file, change)
    with pytest.raises(KeyStoreError, match="corrupt"):
        load_keys(key_file, PASSWORD)


def test_flipped_ciphertext_byte(key_file: Path) -> None:
    document = json.loads(key_file.read_text())
    raw = bytearray(base64.b64decode(document["ciphertext"]))
    raw[5] ^= 0x40
    _edit(key_file, {"ciphertext": base64.b64encode(bytes(raw)).decode()})
    with pytest.raises(KeyStoreError):
        load_keys(key_file, PASSWORD)


@pytest.mark.parametrize(
    "kdf",
    [
        {"name": "scrypt", "n": 2048, "r": 8, "p": 1},
        {"name": "scrypt", "n": 1024, "r": 4, "p": 1},
        {"name": "scrypt", "n": 1024, "r": 8, "p": 2},
    ],
)
def test_tampered_params_are_detected(key_file: Path, kdf: dict[str, Any]) -> None:
    """Valid but different parameters derive another key, and the header is bound anyway."""
    _edit(key_file, {"kdf": kdf})
    with pytest.raises(KeyStoreError):
        load_keys(key_file, PASSWORD)


def test_tampered_salt_is_detected(key_file: Path) -> None:
    _edit(key_file, {"salt": base64.b64encode(bytes(16)).decode()})
    with pytest.raises(KeyStoreError):
        load_keys(key_file, PASSWORD)


def test_out_of_bounds_params_refused_on_save(tmp_path: Path, keys: UserKeys) -> None:
    with pytest.raises(KeyStoreError):
        save_keys(tmp_path / "k", keys, PASSWORD, KdfParams(n=2**21))
    assert not (tmp_path / "k").exists()


def test_failed_write_keeps_the_old_file_and_no_temp(
    key_file: Path, keys: UserKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = key_file.read_bytes()

    def refuse(source: str, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(KeyStoreError, match=r"cannot be written.*No space left"):
        save_keys(key_file, keys, "new password", FAST)
    monkeypatch.undo()
    assert key_file.read_bytes() == before
    assert os.listdir(key_file.parent) == [key_file.name]
    assert load_keys(key_file, PASSWORD).identity_public == keys.identity_public
