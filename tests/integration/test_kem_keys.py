"""Signed KEM keys on a real server: made at registration, published at login, verified
by friends against the pinned identity, and added to accounts from before (upgrade of
a version-1 key file and a server database from before the kem_keys migration, history kept)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.core.kem_keys import KemKeyRefused, verify_peer_kem_key
from client.core.keystore import KeyStore, server_id_for
from common.crypto.certs import load_user_certificate
from common.crypto.kem import SignedKemKey
from common.crypto.keys import UserKeys, load_keys, save_keys
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server.app import DATABASE_FILE
from server.storage.database import MIGRATIONS, _migration_004
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.helpers import (
    FAST_KEYS,
    PASSWORD,
    Accounts,
    User,
    befriend,
    make_accounts,
    raw_connection,
    restart_on_same_port,
    wait_until,
)

accounts = pytest.fixture(name="accounts")(make_accounts)


def served(server: RunningServer, as_user: User, username: str) -> dict[str, Any]:
    """CERTIFICATE for `username` as the server gives it to `as_user` (a fresh login,
    which replaces that user's client session)."""
    with raw_connection(server) as connection:
        login = connection.request(
            MessageType.LOGIN, {"username": as_user.name, "password": PASSWORD}
        )
        reply = connection.request(MessageType.CERTIFICATE, {"username": username})
        return {**reply, "ca": login["ca_certificate"]}


def key_file(server: RunningServer, user: User) -> Path:
    store = KeyStore(user.data_dir, FAST_KEYS)
    return store.path_for(server_id_for(server.fingerprint), user.name)


def test_registration_and_login_publish_a_kem_key_friends_can_verify(
    server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(server, "alice")
    bob = accounts.user(server, "bob")
    befriend(alice, bob)
    wait_until(lambda: served(server, bob, alice.name)["kem_key"] is not None, what="kem key")
    reply = served(server, bob, alice.name)
    certificate = load_user_certificate(reply["certificate"], reply["ca"])
    signed = verify_peer_kem_key(certificate, reply["kem_key"])
    assert signed is not None
    # It is the key sealed in alice's own key file (version 2).
    keys = load_keys(key_file(server, alice), PASSWORD)
    assert keys.kem is not None and keys.kem.current.public == signed.public
    assert json.loads(key_file(server, alice).read_text())["version"] == 2
    # Bob's KEM key does not pass as alice's: the identity key decides, not the server.
    wait_until(lambda: served(server, alice, bob.name)["kem_key"] is not None, what="bob's key")
    with pytest.raises(KemKeyRefused, match=alice.name):
        verify_peer_kem_key(certificate, served(server, alice, bob.name)["kem_key"])


def test_a_second_login_does_not_publish_again(server: RunningServer, accounts: Accounts) -> None:
    alice = accounts.user(server, "alice")
    wait_until(lambda: served(server, alice, alice.name)["kem_key"] is not None, what="kem key")
    first = served(server, alice, alice.name)["kem_key"]
    accounts.reopen(alice, server)
    assert served(server, alice, alice.name)["kem_key"] == first
    database = sqlite3.connect(server.data_dir / DATABASE_FILE)
    try:
        assert database.execute("SELECT COUNT(*) FROM kem_keys").fetchone()[0] == 1
    finally:
        database.close()


KEM_KEYS_VERSION = MIGRATIONS.index(_migration_004) + 1


def _downgrade(server: RunningServer, user: User) -> None:
    """Turn the data folder and database into what the previous release left behind."""
    path = key_file(server, user)
    keys = load_keys(path, PASSWORD)
    _write_version_1(path, UserKeys(keys.identity, keys.agreement))
    database = sqlite3.connect(server.data_dir / DATABASE_FILE)
    try:
        # Undo the migrations from the KEM keys' (version 4) on: the room log's and the
        # sender chains' storage too.
        database.executescript(
            "BEGIN; DROP TABLE room_join_requests; DROP TABLE room_log;"
            " ALTER TABLE room_user DROP COLUMN admin; ALTER TABLE rooms DROP COLUMN join_policy;"
            f" {_BEFORE_KEM_KEYS} PRAGMA user_version = {KEM_KEYS_VERSION - 1}; COMMIT;"
        )
    finally:
        database.close()


# Schema 3: no kem_keys (version 4) and one delivery row per recipient (before the
# sender-chain storage of version 5).
_BEFORE_KEM_KEYS = """
DROP TABLE kem_keys;
DROP TABLE chain_distributions;
DROP TABLE delivery_cursors;
DROP TABLE envelopes;
CREATE TABLE chat_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    target_id    INTEGER NOT NULL,
    target_type  TEXT    NOT NULL CHECK (target_type IN ('user', 'room')),
    recipient_id INTEGER NOT NULL REFERENCES users(id),
    data         BLOB    NOT NULL,
    time         INTEGER NOT NULL,
    sent         INTEGER NOT NULL DEFAULT 0 CHECK (sent IN (0, 1)),
    UNIQUE (message_id, recipient_id)
);
CREATE INDEX chat_history_undelivered ON chat_history (recipient_id, sent, id);
CREATE INDEX chat_history_delivered ON chat_history (time) WHERE sent = 1;
"""


def _write_version_1(path: Path, keys: UserKeys) -> None:
    from tests.unit.test_keys import _write_version_1 as write

    write(path, keys, PASSWORD)


@pytest.fixture
def upgraded_pair(
    server_factory: ServerFactory, accounts: Accounts
) -> Iterator[tuple[RunningServer, User, User]]:
    server = server_factory()
    alice = accounts.user(server, "alice")
    bob = accounts.user(server, "bob")
    befriend(alice, bob)
    alice.client.send_text(bob.name, "before the upgrade")
    wait_until(lambda: len(bob.client.history(alice.name)) == 1, what="first message")
    alice.client.close()
    bob.client.close()
    server.stop()
    _downgrade(server, alice)
    yield restart_on_same_port(server_factory, server), alice, bob


def test_upgrade_adds_the_kem_key_and_keeps_history(
    upgraded_pair: tuple[RunningServer, User, User], accounts: Accounts
) -> None:
    server, alice, bob = upgraded_pair
    assert load_keys(key_file(server, alice), PASSWORD).kem is None  # really version 1
    assert served(server, bob, alice.name)["kem_key"] is None  # table recreated, empty
    accounts.reopen(alice, server)
    # (`served` logs in as bob on its own connection, so bob's client comes back after.)
    wait_until(lambda: served(server, bob, alice.name)["kem_key"] is not None, what="kem key")
    keys = load_keys(key_file(server, alice), PASSWORD)
    assert keys.kem is not None
    reply = served(server, bob, alice.name)
    signed = verify_peer_kem_key(
        load_user_certificate(reply["certificate"], reply["ca"]), reply["kem_key"]
    )
    assert signed is not None and signed.public == keys.kem.current.public
    accounts.reopen(bob, server)
    # The identity did not change, so neither did the safety number; history is intact.
    assert alice.client.safety_number(bob.name) == bob.client.safety_number(alice.name)
    assert [m.text for m in alice.client.history(bob.name)] == ["before the upgrade"]
    assert [m.text for m in bob.client.history(alice.name)] == ["before the upgrade"]
    alice.client.send_text(bob.name, "after the upgrade")
    wait_until(lambda: len(bob.client.history(alice.name)) == 2, what="second message")


def test_server_refuses_a_kem_key_signed_by_someone_else(
    server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(server, "alice")
    mallory = accounts.user(server, "mallory")
    mallory_keys = load_keys(key_file(server, mallory), PASSWORD)
    assert mallory_keys.kem is not None
    forged = SignedKemKey.sign(mallory_keys.identity, mallory_keys.kem.current, 1).to_bytes()
    with raw_connection(server) as connection:
        connection.request(MessageType.LOGIN, {"username": alice.name, "password": PASSWORD})
        with pytest.raises(RequestError) as refused:
            connection.request(MessageType.PUBLISH_KEM_KEY, {"kem_key": forged})
    assert refused.value.code == "bad_kem_key"


def test_save_keys_keeps_version_2_for_new_accounts(
    server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(server, "alice", login=False)
    keys = load_keys(key_file(server, alice), PASSWORD)
    assert keys.kem is not None  # made at registration, before the first login
    save_keys(key_file(server, alice), keys, PASSWORD, FAST_KEYS)
    assert load_keys(key_file(server, alice), PASSWORD).kem == keys.kem
