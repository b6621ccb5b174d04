"""Server side of signed KEM keys: PUBLISH_KEM_KEY, serving with certificates, and the
single acceptance function (`server.kem_publication.accept_kem_key`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.crypto.certs import build_csr
from common.crypto.kem import KemKeyPair, SignedKemKey
from common.crypto.keys import UserKeys, generate_user_keys
from server.handlers import (
    certificate,
    publish_kem_key,
    register,
    room_certificates,
)
from server.storage import kem_keys, users
from server.storage.database import Database
from tests.unit.test_handlers import (
    CONFIG,
    FakeContext,
    FakeServer,
    as_user,
    befriend,
    enter_room,
    fails,
    form,
    make_room,
    ok,
)

DAY = 24 * 3600 * 1000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    db = Database.open(tmp_path / "server.db")
    fake = FakeServer(db=db, config=CONFIG, data_dir=tmp_path / "data")
    yield fake
    fake.db.close()


def signup_with_keys(server: FakeServer, name: str) -> UserKeys:
    keys = generate_user_keys()
    values = form(name, csr=build_csr(name, f"{name}@example.com", keys))
    ok(register, FakeContext(server), **values)
    return keys


def signed(keys: UserKeys, seed: int, created: int) -> bytes:
    return SignedKemKey.sign(
        keys.identity, KemKeyPair.from_seed(bytes([seed]) * 32), created
    ).to_bytes()


def test_publish_then_served_with_the_certificate(server: FakeServer) -> None:
    alice, _ = signup_with_keys(server, "alice"), signup_with_keys(server, "bob")
    befriend(server, "alice", "bob")
    key = signed(alice, 1, server.time)
    reply = ok(publish_kem_key, as_user(server, "alice"), kem_key=key)
    assert reply == {"key_id": SignedKemKey.from_bytes(key).key_id}
    assert ok(certificate, as_user(server, "bob"), username="alice")["kem_key"] == key
    assert ok(certificate, as_user(server, "alice"), username="bob")["kem_key"] is None


def test_served_with_room_certificates(server: FakeServer) -> None:
    alice, carol = signup_with_keys(server, "alice"), signup_with_keys(server, "carol")
    server.keys.update(alice=alice, carol=carol)
    room = make_room(server, "alice", "Team")
    enter_room(server, "carol", room["room_id"])
    key = signed(alice, 1, server.time)
    ok(publish_kem_key, as_user(server, "alice"), kem_key=key)
    reply = ok(room_certificates, as_user(server, "carol"), room_id=room["room_id"])
    by_name = {m["username"]: m["kem_key"] for m in reply["members"]}
    assert by_name == {"alice": key, "carol": None}


def test_key_signed_by_another_identity_is_refused(server: FakeServer) -> None:
    signup_with_keys(server, "alice")
    mallory = signup_with_keys(server, "mallory")
    error = fails(
        publish_kem_key, as_user(server, "alice"), kem_key=signed(mallory, 1, server.time)
    )
    assert error.code == "bad_kem_key"
    alice_id = users.by_username(server.db, "alice")
    assert alice_id is not None and kem_keys.current(server.db, alice_id.id) is None


@pytest.mark.parametrize("value", [b"", bytes(100), bytes(1304), bytes(1305), "text", None])
def test_malformed_keys_are_refused(server: FakeServer, value: object) -> None:
    signup_with_keys(server, "alice")
    error = fails(publish_kem_key, as_user(server, "alice"), kem_key=value)
    assert error.code in {"bad_kem_key", "bad_request"}


def test_tampered_key_is_refused(server: FakeServer) -> None:
    alice = signup_with_keys(server, "alice")
    key = bytearray(signed(alice, 1, server.time))
    key[100] ^= 1
    assert (
        fails(publish_kem_key, as_user(server, "alice"), kem_key=bytes(key)).code == "bad_kem_key"
    )


def test_future_dated_key_is_refused(server: FakeServer) -> None:
    alice = signup_with_keys(server, "alice")
    key = signed(alice, 1, server.time + 2 * DAY)
    assert fails(publish_kem_key, as_user(server, "alice"), kem_key=key).code == "bad_kem_key"


def test_rotation_forward_only(server: FakeServer) -> None:
    alice = signup_with_keys(server, "alice")
    old, new = signed(alice, 1, server.time - 40 * DAY), signed(alice, 2, server.time)
    ok(publish_kem_key, as_user(server, "alice"), kem_key=old)
    ok(publish_kem_key, as_user(server, "alice"), kem_key=new)
    assert ok(certificate, as_user(server, "alice"), username="alice")["kem_key"] == new
    # Replaying the old key (a rollback) or the same one again is refused.
    assert fails(publish_kem_key, as_user(server, "alice"), kem_key=old).code == "stale_kem_key"
    assert fails(publish_kem_key, as_user(server, "alice"), kem_key=new).code == "stale_kem_key"
    user = users.by_username(server.db, "alice")
    assert user is not None
    count = server.db.scalar("SELECT COUNT(*) FROM kem_keys WHERE user_id = ?", (user.id,))
    assert count == 2  # the old one is kept (history), the new one is served


def test_anonymous_cannot_publish() -> None:
    assert publish_kem_key.REQUIRES_AUTH is True
