"""Key transparency against a lying server: real server processes, handlers swapped.

Each test starts its own server with `tests.security.kt_attacks` installed (see its
docstring); the attack is switched on only after the users were set up honestly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT, RunningServer, start_server
from tests.integration.helpers import (
    PASSWORD,
    Accounts,
    User,
    befriend,
    make_accounts,
    refused,
)

accounts = pytest.fixture(name="accounts")(make_accounts)


def malicious_server(tmp_path: Path, mode: str) -> Iterator[RunningServer]:
    env = {
        "UCHAT_TEST_SERVER_HOOK": "tests.security.kt_attacks",
        "UCHAT_TEST_KT_ATTACK": mode,
    }
    running = start_server(tmp_path / "server", env=env)
    yield running
    if running.is_alive():
        running.stop()


def attack(server: RunningServer) -> None:
    (server.data_dir / "attack_on").touch()


def trio(server: RunningServer, accounts: Accounts) -> tuple[User, User, User]:
    """alice, bob and carol; alice is friends with both, and has already written to bob."""
    alice = accounts.user(server, name="alice")
    bob = accounts.user(server, name="bob")
    carol = accounts.user(server, name="carol")
    befriend(alice, bob)
    befriend(alice, carol)
    alice.client.send_text("bob", "hello bob")
    bob.events.wait("message")
    return alice, bob, carol


@pytest.fixture
def unlogged(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "unlogged")


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "logged")


@pytest.fixture
def fork(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "fork")


@pytest.fixture
def rollback(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "rollback")


def test_a_second_key_missing_from_the_log_alarms_alice_and_blocks_the_chat(
    unlogged: RunningServer, accounts: Accounts
) -> None:
    alice, _, carol = trio(unlogged, accounts)
    attack(unlogged)
    error = refused(alice.client.send_text, "carol", "first words")
    assert error.code == "key_not_logged"
    alice.events.wait("transparency_alarm", reason="not_logged", username="carol")
    carol.events.stays_quiet("message")


def test_a_second_key_in_the_log_alarms_carol_through_monitoring(
    logged: RunningServer, accounts: Accounts
) -> None:
    alice, _, carol = trio(logged, accounts)
    carol.events.stays_quiet("transparency_alarm")
    attack(logged)
    alice.client.send_text("carol", "first words")  # the log proves the forged key
    assert not alice.events.matching("transparency_alarm")
    accounts.reopen(carol, logged)  # monitoring runs at every login
    carol.events.wait("transparency_alarm", reason="foreign_key", username="carol")


def test_a_forked_log_is_detected_by_a_friend_through_gossip(
    fork: RunningServer, accounts: Accounts
) -> None:
    alice, bob, _ = trio(fork, accounts)
    attack(fork)
    alice.client.send_text("carol", "first words")  # alice now holds the forked head
    assert not alice.events.matching("transparency_alarm")
    accounts.user(fork, name="dave")  # the real log moves on without the forged key
    alice.client.send_text("bob", "do you see what I see?")
    bob.events.wait("transparency_alarm", reason="split_view", username="alice")
    error = refused(bob.client.send_text, "alice", "reply")
    assert error.code == "log_inconsistent"


def test_a_rolled_back_head_is_refused(rollback: RunningServer, accounts: Accounts) -> None:
    alice, _, _ = trio(rollback, accounts)
    accounts.user(rollback, name="dave")
    accounts.reopen(alice, rollback)  # alice now holds a head covering dave
    attack(rollback)
    error = refused(alice.client.send_text, "carol", "hello")
    assert error.code == "unknown_tree_size"
    alice.events.wait("transparency_alarm", reason="rolled_back")


def run_audit(*args: str, password: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UCHAT_AUDIT_PASSWORD": password}
    return subprocess.run(
        [sys.executable, "-m", "server.audit", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_auditor_finds_the_second_key_over_the_protocol(
    logged: RunningServer, accounts: Accounts
) -> None:
    alice, _, _ = trio(logged, accounts)
    server = f"{logged.host}:{logged.port}"
    login = ("--server", server, "--fingerprint", logged.fingerprint, "--username", "bob")
    clean = run_audit(*login, "--json", password=PASSWORD)
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert (report["entries"], report["kem_keys"]) == (6, 3)  # a certificate and a KEM key each
    attack(logged)
    alice.client.send_text("carol", "first words")
    found = run_audit(*login, "--json", password=PASSWORD)
    assert found.returncode == 2, found.stderr
    report = json.loads(found.stdout)
    assert list(report["usernames_with_several_keys"]) == ["carol"]
    assert report["problems"] == []


def test_the_auditor_checks_the_database_file_and_catches_a_rewritten_entry(
    logged: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    trio(logged, accounts)
    database = logged.data_dir / "uchat.db"
    ca = ("--ca", str(logged.data_dir / "server_ca_cert.pem"))
    assert run_audit("--db", str(database), *ca).returncode == 0
    copy = tmp_path / "copy.db"
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:  # the operator swaps bob's logged key afterwards
        carol = db.execute("SELECT payload FROM kt_entries WHERE username = 'carol'").fetchone()
        db.execute("UPDATE kt_entries SET payload = ? WHERE username = 'bob'", carol)
    result = run_audit("--db", str(copy), *ca)
    assert result.returncode == 1
    assert "root does not match" in result.stdout
    assert "certificate names 'carol', logged under 'bob'" in result.stdout
