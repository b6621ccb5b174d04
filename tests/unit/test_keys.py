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
from common.crypto.kem import KemKeyPair, KemKeyring
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
    assert document["version"] == 2
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


# --- version 2: the KEM keyring, and version-1 files from before it --------------------


def _write_version_1(path: Path, keys: UserKeys, password: str = PASSWORD) -> None:
    """A key file exactly as the previous release wrote it (version 1, 64 raw bytes)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from common.crypto.keys import _associated_data, _derive_key, keys_to_bytes

    params, salt, nonce = KdfParams(n=1024), os.urandom(16), os.urandom(12)
    raw = keys_to_bytes(UserKeys(keys.identity, keys.agreement))
    ciphertext = AESGCM(_derive_key(password, salt, params)).encrypt(
        nonce, raw, _associated_data(params, salt, 1)
    )
    document = {
        "version": 1,
        "kdf": {"name": "scrypt", "n": 1024, "r": 8, "p": 1},
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    path.write_text(json.dumps(document))


def _keyring(seed: int, created: int) -> KemKeyring:
    return KemKeyring(KemKeyPair.from_seed(bytes([seed]) * 32), created)


def test_version_1_file_loads_without_a_keyring_and_upgrades(tmp_path: Path) -> None:
    keys = generate_user_keys()
    path = tmp_path / "keys.json"
    _write_version_1(path, keys)
    old = load_keys(path, PASSWORD)
    assert old.kem is None and old.identity_public == keys.identity_public
    upgraded = UserKeys(old.identity, old.agreement, _keyring(1, 1000))
    save_keys(path, upgraded, PASSWORD, KdfParams(n=1024))
    assert json.loads(path.read_text())["version"] == 2
    again = load_keys(path, PASSWORD)
    assert again.kem == upgraded.kem and again.agreement_public == keys.agreement_public


def test_keyring_with_retired_keys_round_trips(tmp_path: Path) -> None:
    ring = _keyring(1, 1000).rotated(KemKeyPair.from_seed(bytes([2]) * 32), 5000)
    keys = UserKeys(generate_user_keys().identity, generate_user_keys().agreement, ring)
    path = tmp_path / "keys.json"
    save_keys(path, keys, PASSWORD, KdfParams(n=1024))
    loaded = load_keys(path, PASSWORD)
    assert loaded.kem == ring
    assert loaded.kem.find(KemKeyPair.from_seed(bytes([1]) * 32).key_id) is not None


def test_changing_the_version_field_breaks_the_file(tmp_path: Path) -> None:
    keys = generate_user_keys()
    path = tmp_path / "keys.json"
    _write_version_1(path, keys)
    document = json.loads(path.read_text())
    document["version"] = 2
    path.write_text(json.dumps(document))
    with pytest.raises(KeyStoreError):
        load_keys(path, PASSWORD)


def test_keyring_grace_period_and_lookup() -> None:
    from common.crypto.kem import KEM_KEY_GRACE_MS

    first = KemKeyPair.from_seed(bytes([1]) * 32)
    ring = KemKeyring(first, 0).rotated(KemKeyPair.from_seed(bytes([2]) * 32), 10)
    assert ring.find(first.key_id) == first
    assert ring.pruned(10 + KEM_KEY_GRACE_MS - 1).find(first.key_id) == first
    assert ring.pruned(10 + KEM_KEY_GRACE_MS).find(first.key_id) is None
    assert KemKeyring.from_bytes(ring.to_bytes()) == ring


@pytest.mark.parametrize("raw", [b"", bytes(47), bytes(48) + bytes(47)])
def test_malformed_keyring_is_refused(raw: bytes) -> None:
    from common.errors import EndToEndError

    with pytest.raises(EndToEndError):
        KemKeyring.from_bytes(raw)
