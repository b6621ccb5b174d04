"""ServerPins (TOFU fingerprints) and KeyStore (sealed key files and per-user paths)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from client.core.keystore import KeyStore, server_id_for, user_dir_name
from client.core.pins import ServerPins, pin_key
from common.crypto.keys import KdfParams, generate_user_keys
from common.errors import KeyStoreError, ValidationError

FP_A = "a" * 64
FP_B = "0123456789abcdef" * 4
FAST_KDF = KdfParams(n=2**4, r=8, p=1)
SERVER = "00112233aabbccdd"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- ServerPins


def test_pins_trust_on_first_use_and_persist(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "pins.json"
    pins = ServerPins(path)
    assert pins.get("chat.example", 7000) is None
    pins.set("Chat.Example", 7000, FP_A.upper())
    pins.set("chat.example", 7001, FP_B)
    pins.set("::1", 7000, FP_B)
    again = ServerPins(path)
    assert again.get("chat.example", 7000) == FP_A
    assert again.get("CHAT.example", 7001) == FP_B
    assert again.get("::1", 7000) == FP_B
    assert again.get("chat.example", 7002) is None
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["pins.json"]  # no temp files left


def test_pins_file_mode_is_private_even_if_it_was_not(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    path.write_text(json.dumps({"version": 1, "pins": {}}))
    path.chmod(0o644)
    ServerPins(path).set("h", 1, FP_A)
    assert mode(path) == 0o600


def test_pins_repin_replaces(tmp_path: Path) -> None:
    pins = ServerPins(tmp_path / "pins.json")
    pins.set("h", 1, FP_A)
    pins.set("h", 1, FP_B)
    assert pins.get("h", 1) == FP_B


@pytest.mark.parametrize("fingerprint", ["", "abc", "g" * 64, "a" * 63, "a" * 65])
def test_pins_reject_malformed_fingerprints(tmp_path: Path, fingerprint: str) -> None:
    pins = ServerPins(tmp_path / "pins.json")
    with pytest.raises(ValueError):
        pins.set("h", 1, fingerprint)
    assert not (tmp_path / "pins.json").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"version": 2, "pins": {}}',
        b'{"version": 1}',
        b'{"version": 1, "pins": {"h:1": "nothex"}}',
        b'{"version": 1, "pins": {"h:1": 5}}',
        b"\xff\xfe",
    ],
)
def test_corrupt_pin_file_is_an_error_not_an_empty_store(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pins.json"
    path.write_bytes(content)
    pins = ServerPins(path)
    with pytest.raises(KeyStoreError):
        pins.get("h", 1)
    with pytest.raises(KeyStoreError):
        pins.set("h", 1, FP_A)
    assert path.read_bytes() == content


def test_pin_key_forms() -> None:
    assert pin_key("Example.COM", 80) == "example.com:80"
    assert pin_key("fe80::1", 7000) == "[fe80::1]:7000"
    for host, port in (("h", 0), ("h", 65536), ("  ", 1)):
        with pytest.raises(ValueError):
            pin_key(host, port)


# ---------------------------------------------------------------- KeyStore


def test_keystore_round_trip_and_wrong_password(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, kdf_params=FAST_KDF)
    keys = generate_user_keys()
    assert not store.exists(SERVER, "alice")
    store.save(SERVER, "alice", keys, "correct horse 1")
    assert store.exists(SERVER, "alice")
    loaded = store.load(SERVER, "alice", "correct horse 1")
    assert loaded.identity_public == keys.identity_public
    assert loaded.agreement_public == keys.agreement_public
    with pytest.raises(KeyStoreError):
        store.load(SERVER, "alice", "wrong password 1")
    path = store.path_for(SERVER, "alice")
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_keystore_missing_file_is_a_keystore_error(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError):
        KeyStore(tmp_path, kdf_params=FAST_KDF).load(SERVER, "nobody", "whatever 1")


def test_change_password(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, kdf_params=FAST_KDF)
    keys = generate_user_keys()
    store.save(SERVER, "alice", keys, "old password 1")
    with pytest.raises(KeyStoreError):
        store.change_password(SERVER, "alice", "not the old 1", "new password 1")
    assert store.load(SERVER, "alice", "old password 1").identity_public == keys.identity_public
    store.change_password(SERVER, "alice", "old password 1", "new password 1")
    with pytest.raises(KeyStoreError):
        store.load(SERVER, "alice", "old password 1")
    assert store.load(SERVER, "alice", "new password 1").identity_public == keys.identity_public


def test_paths_are_per_server_and_per_user(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    other = "ffeeddccbbaa9988"
    paths = {
        store.path_for(SERVER, "alice"),
        store.path_for(SERVER, "Alice"),
        store.path_for(other, "alice"),
        store.store_path(SERVER, "alice"),
    }
    assert len(paths) == 4
    for path in paths:
        assert path.is_relative_to(tmp_path)
    assert store.store_path(SERVER, "alice").parent == store.path_for(SERVER, "alice").parent
    # case-insensitive disks: Alice and alice must still differ ignoring case
    assert user_dir_name("Alice").lower() != user_dir_name("alice").lower()
    assert store.pins_path.parent == tmp_path


def test_reserved_and_chinese_usernames_make_valid_directories(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    assert user_dir_name("CON").startswith("CON-")
    assert user_dir_name("张三").startswith("张三-")
    downloads = store.downloads_dir("CON")
    assert downloads.name == "_CON" and downloads.is_dir()
    assert store.downloads_dir("张三").name == "张三"


@pytest.mark.parametrize("username", ["../evil", "a/b", "..", "", "x", "a b", "a\x00b"])
def test_unsafe_usernames_are_refused(tmp_path: Path, username: str) -> None:
    store = KeyStore(tmp_path)
    with pytest.raises(ValidationError):
        store.path_for(SERVER, username)
    with pytest.raises(ValidationError):
        store.downloads_dir(username)


@pytest.mark.parametrize("server_id", ["", "../../etc", "00112233AABBCCDD", "0011", "g" * 16])
def test_bad_server_ids_are_refused(tmp_path: Path, server_id: str) -> None:
    with pytest.raises(ValueError):
        KeyStore(tmp_path).path_for(server_id, "alice")


def test_server_id_from_fingerprint() -> None:
    assert server_id_for(FP_B.upper()) == "0123456789abcdef"
    with pytest.raises(ValueError):
        server_id_for("xyz")
