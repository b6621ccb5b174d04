"""Server side of signed KEM keys: PUBLISH_KEM_KEY, serving with certificates, and the
single acceptance function (`server.kem_publication.accept_kem_key`)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.crypto import merkle
from common.crypto.certs import CsrInfo, build_csr, issue_certificate
from common.crypto.kem import KemKeyPair, SignedKemKey
from common.crypto.keys import UserKeys, generate_user_keys
from common.errors import RequestError
from server.handlers import (
    certificate,
    publish_kem_key,
    register,
    room_certificates,
)
from server.kem_publication import accept_kem_key
from server.storage import kem_keys, keylog, users
from server.storage.database import MIGRATIONS, SqliteDatabase, _kem_keys_transparency
from server.transparency import TransparencyLog
from tests.unit.test_handlers import (
    CA,
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
    db = SqliteDatabase.open(tmp_path / "server.db")
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
    proved = reply.pop("transparency")
    assert reply == {"key_id": SignedKemKey.from_bytes(key).key_id}
    # the reply proves the new entry under a head signed for it, which friends then get
    _check_proof("alice", key, proved, proved["head"])
    served = ok(certificate, as_user(server, "bob"), username="alice")
    assert served["transparency"]["head"] == proved["head"]
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


# -- key transparency: every accepted KEM key is logged and served with a proof ----------


def _logged_kem_keys(server: FakeServer) -> list[tuple[str, bytes]]:
    rows = server.db.all(
        "SELECT username, payload FROM kt_entries WHERE kind = 'kem_key' ORDER BY position"
    )
    return [(str(row["username"]), bytes(row["payload"])) for row in rows]


def _check_proof(name: str, key: bytes, proved: dict[str, object], head_wire: object) -> None:
    head = merkle.TreeHead.from_wire(head_wire)
    merkle.verify_tree_head(head, CA.public_key_bytes)
    leaf = merkle.LogEntry("kem_key", name, key).leaf_hash
    position, proof = proved["position"], proved["proof"]
    assert isinstance(position, int) and isinstance(proof, bytes)
    merkle.verify_inclusion(leaf, position, head.size, merkle.unpack_proof(proof), head.root)


def test_every_accepted_key_is_appended_to_the_log(server: FakeServer) -> None:
    alice = signup_with_keys(server, "alice")
    mallory = signup_with_keys(server, "mallory")
    old, new = signed(alice, 1, server.time - 40 * DAY), signed(alice, 2, server.time)
    ok(publish_kem_key, as_user(server, "alice"), kem_key=old)
    ok(publish_kem_key, as_user(server, "alice"), kem_key=new)
    # refusals leave no trace in the log
    fails(publish_kem_key, as_user(server, "alice"), kem_key=old)
    fails(publish_kem_key, as_user(server, "alice"), kem_key=signed(mallory, 3, server.time))
    assert _logged_kem_keys(server) == [("alice", old), ("alice", new)]


def test_certificate_and_room_replies_prove_the_kem_key(server: FakeServer) -> None:
    alice, bob = signup_with_keys(server, "alice"), signup_with_keys(server, "bob")
    server.keys.update(alice=alice, bob=bob)
    befriend(server, "alice", "bob")
    room = make_room(server, "alice", "Team")
    enter_room(server, "bob", room["room_id"])
    key = signed(alice, 1, server.time)
    ok(publish_kem_key, as_user(server, "alice"), kem_key=key)
    reply = ok(certificate, as_user(server, "bob"), username="alice")
    _check_proof("alice", key, reply["kem_transparency"], reply["transparency"]["head"])
    members = ok(room_certificates, as_user(server, "bob"), room_id=room["room_id"])
    by_name = {m["username"]: m for m in members["members"]}
    _check_proof("alice", key, by_name["alice"]["kem_transparency"], members["transparency_head"])
    assert by_name["bob"]["kem_transparency"] is None
    # the proof is for the KEM key kind: it does not prove the same bytes as a certificate
    head = merkle.TreeHead.from_wire(reply["transparency"]["head"])
    wrong = merkle.LogEntry("certificate", "alice", key).leaf_hash
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(
            wrong,
            reply["kem_transparency"]["position"],
            head.size,
            merkle.unpack_proof(reply["kem_transparency"]["proof"]),
            head.root,
        )


# The sender chains' storage (server/storage/migration_chains.sql) undone: what a
# schema-5 server held.
UNDO_CHAINS = """
DROP TABLE chain_distributions; DROP TABLE delivery_cursors; DROP TABLE envelopes;
CREATE TABLE chat_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id), target_id INTEGER NOT NULL,
    target_type TEXT NOT NULL CHECK (target_type IN ('user', 'room')),
    recipient_id INTEGER NOT NULL REFERENCES users(id), data BLOB NOT NULL,
    time INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0 CHECK (sent IN (0, 1)),
    UNIQUE (message_id, recipient_id)
);
"""


def test_keys_published_before_the_log_are_backfilled(tmp_path: Path) -> None:
    """Migration 5 appends keys accepted by a schema-4 server, after what is logged."""
    path = tmp_path / "server.db"
    db = SqliteDatabase.open(path)
    fake = FakeServer(db=db, config=CONFIG, data_dir=tmp_path / "data")
    alice = signup_with_keys(fake, "alice")
    key = signed(alice, 1, fake.time)
    ok(publish_kem_key, as_user(fake, "alice"), kem_key=key)
    db.execute("DELETE FROM kt_entries WHERE kind = 'kem_key'")
    db.commit()
    db.close()
    raw = sqlite3.connect(path)  # back to schema 5: undo the sender chains' storage too
    version = MIGRATIONS.index(_kem_keys_transparency)
    raw.executescript(f"BEGIN; {UNDO_CHAINS} PRAGMA user_version = {version}; COMMIT;")
    raw.close()
    upgraded = SqliteDatabase.open(path)
    try:
        rows = upgraded.all("SELECT position, kind, username, payload FROM kt_entries")
        assert [(r["position"], r["kind"], r["username"]) for r in rows] == [
            (0, "certificate", "alice"),
            (1, "kem_key", "alice"),
        ]
        assert bytes(rows[1]["payload"]) == key
    finally:
        upgraded.close()


def test_two_cluster_nodes_publishing_for_one_account_log_its_keys_in_time_order(
    fresh_pg_dsn: Callable[[], str],
) -> None:
    """The newer-key check and the append happen under the log's lock: a node that
    checks while another node's publication is in flight waits for it, sees the
    newer key and refuses the older one, so the log never goes back in time for a
    name (which monitoring and the auditor would report as a replay)."""
    from server.storage.postgres import PostgresDatabase

    now = 1_800_000_000_000
    dsn = fresh_pg_dsn()
    nodes = [PostgresDatabase.connect(dsn) for _ in range(2)]
    logs = [TransparencyLog(db, CA, lambda: now) for db in nodes]
    keys = generate_user_keys()
    info = CsrInfo("alice", "alice@example.com", keys.identity_public, keys.agreement_public)
    users.create_user(
        nodes[0],
        username="alice",
        password_hash="x",
        email="alice@example.com",
        sex="unspecified",
        age=30,
        certificate=issue_certificate(CA, info),
        now=now,
    )
    nodes[0].commit()
    alice = users.by_username(nodes[0], "alice")
    assert alice is not None
    outcome: list[str] = []

    def publish_the_older_key_on_the_second_node() -> None:
        try:
            accept_kem_key(nodes[1], CA, logs[1], alice, signed(keys, 2, now - 2000), now)
            outcome.append("accepted")
        except RequestError as exc:
            outcome.append(exc.code)
        nodes[1].commit()

    try:
        accept_kem_key(nodes[0], CA, logs[0], alice, signed(keys, 1, now - 1000), now)
        second = threading.Thread(target=publish_the_older_key_on_the_second_node)
        second.start()
        second.join(0.5)
        assert second.is_alive()  # waiting for the first node's turn to commit
        nodes[0].commit()
        second.join(10)
        assert outcome == ["stale_kem_key"]
        entries = keylog.entries_for(nodes[0], "alice", 10)
        assert [e.entry.payload for e in entries if e.entry.kind == "kem_key"] == [
            signed(keys, 1, now - 1000)
        ]
    finally:
        for db in nodes:
            db.close()
