"""Upgrade: data folders and a server database left by an older release open with this
code, keep their history, and end up exactly as a fresh install's.

Every directory under `tests/fixtures/upgrade/` with a `manifest.json` is one case,
made by `tests/fixtures/upgrade/make_fixture.py` run with that release's code. Each
case goes through every migration between its schema and this code's, so a new
migration is covered by the old fixtures without touching this file; the schema
comparison with a fresh database catches a migration that does not end where
`schema.sql` plus the other migrations end. Add a fixture when a release changes
what is on disk.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.core.event_types import Event
from client.core.keystore import KeyStore, server_id_for
from client.core.store import SCHEMA_VERSION as STORE_SCHEMA_VERSION
from client.core.store import LocalStore
from common.crypto.keys import load_keys
from server.storage.database import SCHEMA_VERSION, SqliteDatabase
from tests.fixtures.upgrade.data_folders import load_folder, user_version
from tests.integration.conftest import RunningServer, start_server
from tests.integration.helpers import (
    FAST_KEYS,
    Accounts,
    EventLog,
    User,
    make_accounts,
    wait_until,
)
from tests.security.test_key_transparency import run_audit

accounts = pytest.fixture(name="accounts")(make_accounts)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"
CASES = sorted(path.parent for path in FIXTURES.glob("*/manifest.json"))


@dataclass
class Upgraded:
    manifest: dict[str, Any]
    server: RunningServer
    clients_root: Path


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Upgraded]:
    case: Path = request.param
    manifest = json.loads((case / "manifest.json").read_text("utf-8"))
    server_dir = tmp_path / "server"
    load_folder(case / "server", server_dir, manifest["server"])
    assert user_version(server_dir / "uchat.db") == manifest["server_schema"]
    for name, versions in manifest["clients"].items():
        load_folder(case / "clients" / name, tmp_path / "clients" / name, versions)
    server = start_server(server_dir)  # migrates at start
    try:
        yield Upgraded(manifest, server, tmp_path / "clients")
    finally:
        server.stop()


def test_there_is_an_upgrade_fixture_older_than_this_code() -> None:
    assert CASES, "no upgrade fixture under tests/fixtures/upgrade"
    for case in CASES:
        manifest = json.loads((case / "manifest.json").read_text("utf-8"))
        assert manifest["server_schema"] <= SCHEMA_VERSION
        assert all(
            v <= STORE_SCHEMA_VERSION for c in manifest["clients"].values() for v in c.values()
        )


# -- the schema after the upgrade is the schema of a fresh install -----------------------


def schema_of(path: Path) -> dict[str, Any]:
    """Tables with their columns, indexes with their columns, triggers, by name."""
    db = sqlite3.connect(path)
    try:
        objects = db.execute(
            "SELECT type, name, tbl_name FROM sqlite_master"
            " WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%' ORDER BY name"
        ).fetchall()
        shape: dict[str, Any] = {}
        for kind, name, table in objects:
            if kind == "table":
                columns = db.execute(f"PRAGMA table_info('{name}')").fetchall()
                shape[name] = sorted((c[1], c[2].upper(), c[3], c[4], c[5]) for c in columns)
            elif kind == "index":
                columns = db.execute(f"PRAGMA index_info('{name}')").fetchall()
                shape[name] = (table, [c[2] for c in columns])
            else:
                shape[name] = (kind, table)
        return shape
    finally:
        db.close()


def test_the_upgraded_server_database_has_the_fresh_schema(
    upgraded: Upgraded, tmp_path: Path
) -> None:
    database = upgraded.server.data_dir / "uchat.db"
    assert user_version(database) == SCHEMA_VERSION
    SqliteDatabase.open(tmp_path / "fresh.db").close()
    assert schema_of(database) == schema_of(tmp_path / "fresh.db")


def test_the_upgraded_client_stores_have_the_fresh_schema(
    upgraded: Upgraded, tmp_path: Path
) -> None:
    LocalStore(tmp_path / "fresh.sqlite3").close()  # a fresh store, for its schema
    for name, versions in upgraded.manifest["clients"].items():
        for relative in versions:
            path = upgraded.clients_root / name / relative.removesuffix(".sql")
            with LocalStore(path) as store:
                assert store.full_text  # the search index was built again
            assert user_version(path) == STORE_SCHEMA_VERSION
            assert schema_of(path) == schema_of(tmp_path / "fresh.sqlite3")


# -- accounts, history and keys after the upgrade ----------------------------------------


def log_in(accounts: Accounts, upgraded: Upgraded, name: str) -> User:
    data_dir = upgraded.clients_root / name
    client = accounts.client(upgraded.server, data_dir)
    user = User(name, upgraded.manifest["password"], data_dir, client, EventLog(client))
    client.login(name, user.password)
    return user


def chat_target(key: str) -> str | int:
    kind, _, value = key.partition(":")
    return int(value) if kind == "room" else value


def kem_key_published(server: RunningServer, name: str) -> bool:
    with sqlite3.connect(server.data_dir / "uchat.db") as db:
        row = db.execute(
            "SELECT COUNT(*) FROM kem_keys k JOIN users u ON u.id = k.user_id WHERE u.username = ?",
            (name,),
        ).fetchone()
    return bool(row[0])


def published(server: RunningServer, name: str) -> Callable[[], bool]:
    return lambda: kem_key_published(server, name)


def from_sender(name: str) -> Callable[[Event], bool]:
    return lambda event: event.data["message"].sender == name


def last_text_is(user: User, room_id: int, text: str) -> Callable[[], bool]:
    return lambda: user.client.history(room_id)[-1].text == text


def test_accounts_log_in_keep_their_history_and_gain_verified_kem_keys(
    upgraded: Upgraded, accounts: Accounts
) -> None:
    manifest, server = upgraded.manifest, upgraded.server
    users: dict[str, User] = {}
    for name, facts in manifest["users"].items():
        users[name] = log_in(accounts, upgraded, name)
        for chat, expected in manifest["history"][name].items():
            shown = [[m.sender, m.text] for m in users[name].client.history(chat_target(chat))]
            assert shown == expected, (name, chat)
        key_path = KeyStore(users[name].data_dir, FAST_KEYS).path_for(
            server_id_for(server.fingerprint), name
        )
        assert load_keys(key_path, users[name].password).kem is not None  # made at login
        wait_until(published(server, name), what=f"{name}'s KEM key")
        assert facts["key_file_version"] in (1, 2)

    for first, second in manifest["friends"]:
        for sender, receiver in ((first, second), (second, first)):
            users[sender].client.send_text(receiver, f"after the upgrade, {sender} to {receiver}")
            # The friend's KEM key, new or from before, is a verified addition: not a
            # key change, and the safety number is the one both saw before.
            users[sender].events.wait("kem_key_verified", username=receiver, first=True)
            users[receiver].events.wait("message", from_sender(sender))
            assert users[sender].client.pending_key_changes() == []
            assert users[sender].client.verified_kem_key(receiver) is not None
        assert users[first].client.safety_number(second) == users[second].client.safety_number(
            first
        )
    for room in manifest["rooms"]:
        sender, *others = room["members"]
        users[sender].client.send_text(room["room_id"], "the room, after the upgrade")
        for other in others:
            wait_until(
                last_text_is(users[other], room["room_id"], "the room, after the upgrade"),
                what=f"{other}'s room copy",
            )
    for user in users.values():  # monitoring found only keys made on these computers
        user.events.stays_quiet("transparency_alarm")
        assert not user.events.matching("transparency_alarm")
        assert not user.events.matching("kem_key_refused")

    # From outside: the log holds every certificate and every KEM key, all signed.
    database = ("--db", str(server.data_dir / "uchat.db"))
    ca = ("--ca", str(server.data_dir / "server_ca_cert.pem"))
    result = run_audit(*database, *ca, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["kem_keys"] == len(manifest["users"])
    assert report["usernames_with_unsigned_kem_keys"] == {}
