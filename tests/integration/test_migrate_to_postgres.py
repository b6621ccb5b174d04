"""`python -m server.migrate_to_postgres`: a single-node server moves to a cluster.

Run as a real process on the upgrade fixtures (an older schema, migrated on the way)
and on a database a real server session left; every row of every table must arrive
unchanged, the target must be empty, and cluster nodes started on the result must
serve the same fingerprint and the same accounts, friends, rooms and backlog.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from server.cluster.local_services import LocalPostgres, LocalRedis
from server.launcher import REPO_ROOT, RunningServer, start_server
from server.storage.database import SqliteDatabase
from tests.fixtures.upgrade.data_folders import load_folder, user_version
from tests.integration.helpers import (
    Accounts,
    EventLog,
    User,
    befriend,
    make_accounts,
)

accounts = pytest.fixture(name="accounts")(make_accounts)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"
CASES = sorted(path.parent for path in FIXTURES.glob("*/manifest.json"))
PASSPHRASE = "the passphrase of the migrated cluster\n"
_numbers = itertools.count(1)
_redis_dbs = itertools.count(11)


@pytest.fixture
def empty_dsn(local_postgres: LocalPostgres) -> Iterator[str]:
    """A database with nothing in it, not even the schema (the command makes it)."""
    name = f"uchat_migrate_{next(_numbers)}"
    yield local_postgres.create_database(name)
    local_postgres.drop_database(name)


@pytest.fixture
def passphrase_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca-passphrase"
    path.write_text(PASSPHRASE)
    path.chmod(0o600)
    return path


def run_migration(sqlite_path: Path, dsn: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("UCHAT_")}
    command = [sys.executable, "-m", "server.migrate_to_postgres", "--sqlite", str(sqlite_path)]
    return subprocess.run(
        [*command, "--dsn", dsn, *extra],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _norm(value: object) -> object:
    return bytes(value) if isinstance(value, memoryview) else value


def sqlite_content(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, migrated to this code's schema (on a copy)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "copy.db"
        shutil.copy(path, copy)
        SqliteDatabase.open(copy).close()
        db = sqlite3.connect(copy)
        try:
            tables = [
                str(row[0])
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                )
            ]
            return {
                table: sorted(
                    (tuple(_norm(v) for v in row) for row in db.execute(_all_rows(db, table))),
                    key=repr,
                )
                for table in tables
            }
        finally:
            db.close()


def _all_rows(db: sqlite3.Connection, table: str) -> str:
    columns = sorted(str(row[1]) for row in db.execute(f"PRAGMA table_info({table})"))
    return f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 -- our own table names


def postgres_content(dsn: str, tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(dsn) as db:
        for table in tables:
            columns = [
                str(row[0])
                for row in db.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s",
                    (table,),
                )
            ]
            rows = db.execute(f"SELECT {', '.join(sorted(columns))} FROM {table}").fetchall()  # noqa: S608
            out[table] = sorted((tuple(_norm(v) for v in row) for row in rows), key=repr)
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cluster_env(local_redis: LocalRedis, passphrase_file: Path) -> Callable[[str], dict[str, str]]:
    url = f"redis://127.0.0.1:{local_redis.port}/{next(_redis_dbs) % 16}"
    redis.Redis.from_url(url).flushdb()

    def env(dsn: str) -> dict[str, str]:
        return {
            "UCHAT_SERVER_DATABASE_URL": dsn,
            "UCHAT_SERVER_REDIS_URL": url,
            "UCHAT_SERVER_CA_PASSPHRASE_FILE": str(passphrase_file),
        }

    return env


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], RunningServer]]:
    started: list[RunningServer] = []

    def start(name: str, env: dict[str, str]) -> RunningServer:
        running = start_server(tmp_path / name, {**env, "UCHAT_SERVER_NODE_ID": name})
        started.append(running)
        return running

    yield start
    for running in started:
        if running.is_alive():
            running.stop()
        assert " ERROR " not in running.log_text(), running.log_text()[-3000:]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_an_upgrade_fixture_moves_whole_and_its_users_log_in_on_two_nodes(
    case: Path,
    tmp_path: Path,
    empty_dsn: str,
    passphrase_file: Path,
    cluster_env: Callable[[str], dict[str, str]],
    nodes: Callable[[str, dict[str, str]], RunningServer],
    accounts: Accounts,
) -> None:
    manifest = json.loads((case / "manifest.json").read_text("utf-8"))
    server_dir = tmp_path / "server"
    load_folder(case / "server", server_dir, manifest["server"])
    database = server_dir / "uchat.db"
    before = digest(database)

    done = run_migration(database, empty_dsn, "--ca-passphrase-file", str(passphrase_file))
    assert done.returncode == 0, done.stderr
    assert "counts match" in done.stdout
    assert digest(database) == before  # the source is left as it was
    assert user_version(database) == manifest["server_schema"]

    expected = sqlite_content(database)
    assert sum(len(rows) for rows in expected.values()) > 0
    assert postgres_content(empty_dsn, list(expected)) == expected

    node_a, node_b = nodes("a", cluster_env(empty_dsn)), nodes("b", cluster_env(empty_dsn))
    users: dict[str, User] = {}
    for name, node in zip(sorted(manifest["users"]), (node_a, node_b), strict=False):
        data_dir = tmp_path / "clients" / name
        load_folder(case / "clients" / name, data_dir, manifest["clients"][name])
        client = accounts.client(node, data_dir)  # pinned to the single server's CA
        users[name] = User(name, manifest["password"], data_dir, client, EventLog(client))
        client.login(name, manifest["password"])
    first, second = manifest["friends"][0]
    sent = users[first].client.send_text(second, "after the move to PostgreSQL")
    assert users[second].events.message(sent.message_id).text == "after the move to PostgreSQL"
    for room in manifest["rooms"]:
        sender, *others = room["members"]
        sent = users[sender].client.send_text(room["room_id"], "the room, on the cluster")
        for other in others:
            assert users[other].events.message(sent.message_id).text == "the room, on the cluster"


def test_a_real_server_session_moves_with_its_backlog_and_fingerprint(
    tmp_path: Path,
    empty_dsn: str,
    passphrase_file: Path,
    cluster_env: Callable[[str], dict[str, str]],
    nodes: Callable[[str, dict[str, str]], RunningServer],
    accounts: Accounts,
) -> None:
    single = start_server(tmp_path / "single")
    alice = accounts.user(single, "alice")
    bob = accounts.user(single, "bob")
    befriend(alice, bob)
    room_id = int(alice.client.create_room(f"room {alice.name}").id)
    bob.client.join_room(room_id)
    seen = alice.client.send_text(bob.name, "seen before the move")
    bob.events.message(seen.message_id)
    document = tmp_path / "report.bin"
    document.write_bytes(os.urandom(700_000))  # three chunks
    filed = alice.client.send_file(bob.name, document)
    bob.events.message(filed.message_id)
    bob.client.logout()
    alice.events.wait("presence", username=bob.name, online=False)
    waiting = [alice.client.send_text(bob.name, f"waiting {i}") for i in range(3)]
    in_room = alice.client.send_text(room_id, "in the room while bob is away")
    for sent in [*waiting, in_room]:
        alice.events.status(sent.message_id, "sent")
    alice.client.close()
    bob.client.close()
    assert single.stop() == 0

    done = run_migration(
        single.data_dir / "uchat.db",
        empty_dsn,
        "--ca-passphrase-file",
        str(passphrase_file),
        "--attachments",
        "database",
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^uchat_attachment_chunks +3 rows$", done.stdout, re.MULTILINE)
    for table in ("users", "friends", "rooms", "room_user", "room_log", "envelopes", "kt_entries"):
        assert f"{table} " in done.stdout
    expected = sqlite_content(single.data_dir / "uchat.db")
    assert postgres_content(empty_dsn, list(expected)) == expected

    env = {**cluster_env(empty_dsn), "UCHAT_SERVER_ATTACHMENT_STORE": "database"}
    node_a, node_b = nodes("a", env), nodes("b", env)
    assert node_a.fingerprint == node_b.fingerprint == single.fingerprint
    accounts.reopen(bob, node_b)  # the backlog left on the single server arrives on B
    assert [bob.events.message(m.message_id).text for m in waiting] == [
        f"waiting {i}" for i in range(3)
    ]
    assert bob.events.message(in_room.message_id).text == "in the room while bob is away"
    stored = next(m for m in bob.client.history(alice.name) if m.message_id == filed.message_id)
    fetched = bob.client.download(stored, tmp_path / "inbox")  # from PostgreSQL rows
    assert fetched.read_bytes() == document.read_bytes()
    accounts.reopen(alice, node_a)
    fresh = alice.client.send_text(bob.name, "new ids after the copied ones")
    assert bob.events.message(fresh.message_id).text == "new ids after the copied ones"
    carol = accounts.user(node_a, "carol")  # a new account: the id sequence moved on
    assert carol.client.connected


def test_a_target_with_data_is_refused_and_left_alone(
    tmp_path: Path, empty_dsn: str, accounts: Accounts
) -> None:
    single = start_server(tmp_path / "single")
    accounts.user(single, "alice")
    accounts.close_all()
    single.stop()
    database = single.data_dir / "uchat.db"
    assert run_migration(database, empty_dsn).returncode == 0
    before = postgres_content(empty_dsn, ["users", "kt_entries"])

    again = run_migration(database, empty_dsn)
    assert again.returncode == 1
    assert "the target database is not empty: " in again.stderr
    assert "users (1 rows)" in again.stderr and "nothing was committed" in again.stderr
    assert postgres_content(empty_dsn, ["users", "kt_entries"]) == before

    missing = run_migration(tmp_path / "nowhere.db", empty_dsn)
    assert missing.returncode == 1 and "no SQLite database at" in missing.stderr
