"""A server that swaps a friend's KEM key (issue 7): real server processes, handlers
swapped (`tests.security.kt_attacks`, modes `kem_swap` and `kem_unlogged`).

A swapped key the log does not hold is refused by the key log check (the chat is
blocked); one the server did log passes the log check but not the identity signature:
it is refused, shown, never stored or used, the owner's monitoring sees it under her
name, and the auditor names her.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.core import kem_keys as client_kem_keys
from tests.integration.conftest import RunningServer
from tests.integration.helpers import (
    Accounts,
    EventLog,
    User,
    make_accounts,
    refused,
    wait_until,
)
from tests.security.test_key_transparency import attack, malicious_server, run_audit, trio

accounts = pytest.fixture(name="accounts")(make_accounts)


@pytest.fixture
def kem_swap(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "kem_swap")


@pytest.fixture
def kem_unlogged(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "kem_unlogged")


def published(server: RunningServer, name: str, count: int = 1) -> bool:
    """At least `count` KEM keys of `name` were accepted."""
    with sqlite3.connect(server.data_dir / "uchat.db") as db:
        row = db.execute(
            "SELECT COUNT(*) FROM kem_keys k JOIN users u ON u.id = k.user_id WHERE u.username = ?",
            (name,),
        ).fetchone()
    return bool(row[0] >= count)


def carol_verified_by_alice(server: RunningServer, accounts: Accounts) -> tuple[User, User, User]:
    alice, bob, carol = trio(server, accounts)
    wait_until(lambda: published(server, "carol"), what="carol's KEM key")
    accounts.reopen(alice, server)  # a fresh session fetches carol's keys again
    alice.client.send_text("carol", "hello carol")
    carol.events.wait("message")
    alice.events.wait("kem_key_verified", username="carol", first=True)
    return alice, bob, carol


def test_a_kem_key_the_identity_did_not_sign_is_refused_shown_and_not_used(
    kem_swap: RunningServer, accounts: Accounts
) -> None:
    alice, _, carol = carol_verified_by_alice(kem_swap, accounts)
    real = alice.client.verified_kem_key("carol")
    assert real is not None
    attack(kem_swap)
    accounts.reopen(alice, kem_swap)
    alice.client.send_text("carol", "are you still you?")  # the identity key is intact
    alice.events.wait("kem_key_refused", username="carol")
    assert not alice.events.matching("transparency_alarm")  # the log holds the swapped key
    assert not alice.events.matching("kem_key_verified", username="carol")
    assert alice.client.verified_kem_key("carol") == real  # the swapped one is not used
    assert alice.client.pending_key_changes() == []
    assert alice.client.safety_number("carol") == carol.client.safety_number("alice")
    # Carol's own monitoring finds a KEM key under her name that she did not make.
    accounts.reopen(carol, kem_swap)
    carol.events.wait("transparency_alarm", reason="foreign_key", username="carol")
    # The auditor names her: a KEM key her identity key did not sign.
    database = ("--db", str(kem_swap.data_dir / "uchat.db"))
    ca = ("--ca", str(kem_swap.data_dir / "server_ca_cert.pem"))
    result = run_audit(*database, *ca, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert list(report["usernames_with_unsigned_kem_keys"]) == ["carol"]
    assert report["usernames_with_several_keys"] == {} and report["problems"] == []


def test_a_swapped_kem_key_missing_from_the_log_blocks_the_chat(
    kem_unlogged: RunningServer, accounts: Accounts
) -> None:
    alice, _, carol = carol_verified_by_alice(kem_unlogged, accounts)
    attack(kem_unlogged)
    accounts.reopen(alice, kem_unlogged)
    error = refused(alice.client.send_text, "carol", "first words")
    assert error.code == "key_not_logged"
    alice.events.wait("transparency_alarm", reason="not_logged", username="carol")
    carol.events.stays_quiet("message")


def link_a_second_computer(
    server: RunningServer, accounts: Accounts, user: User, folder: Path
) -> User:
    """`user`'s account on a new computer, linked with a code (device linking)."""
    new = accounts.client(server, folder)
    new_events = EventLog(new)
    code, _ = new.start_link(user.name)
    user.client.join_link(code)
    user.events.wait_one("link_compare")
    new_events.wait_one("link_compare")
    user.client.confirm_link(True)
    user.events.wait_one("link_finished")
    new.confirm_link(True)
    new_events.wait_one("link_finished")
    return User(user.name, user.password, folder, new, new_events)


def log_in_with_a_new_kem_key(
    monkeypatch: pytest.MonkeyPatch, computer: User, server: RunningServer, keys: int
) -> None:
    """Log `computer` in with its KEM key due for rotation (30 days cannot pass in a
    test), so it makes and publishes a key of its own: the account's `keys`-th."""
    with monkeypatch.context() as patch:
        patch.setattr(client_kem_keys, "rotation_due", lambda created, now: True)
        computer.client.login(computer.name, computer.password)
    wait_until(lambda: published(server, computer.name, keys), what=f"KEM key {keys}")


def test_kem_keys_of_linked_computers_are_ours_and_a_key_we_did_not_sign_still_alarms(
    kem_swap: RunningServer, accounts: Accounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each computer of one account makes and rotates its own KEM keys, all signed by
    the one identity key the link moved: none of them is foreign to another computer's
    monitoring. A key under the name that the identity did not sign still is."""
    alice, _, carol = carol_verified_by_alice(kem_swap, accounts)
    laptop = link_a_second_computer(kem_swap, accounts, carol, tmp_path / "carol-laptop")
    log_in_with_a_new_kem_key(monkeypatch, laptop, kem_swap, keys=2)
    carol.events.wait("kicked")  # one login at a time
    accounts.reopen(carol, kem_swap, login=False)
    log_in_with_a_new_kem_key(monkeypatch, carol, kem_swap, keys=3)
    laptop.events.wait("kicked")
    carol.events.stays_quiet("transparency_alarm", within=2.0)  # monitoring at login
    accounts.reopen(laptop, kem_swap)
    laptop.events.stays_quiet("transparency_alarm", within=2.0)
    assert not carol.events.matching("transparency_alarm")
    assert not laptop.events.matching("transparency_alarm")
    # The server logs a KEM key under carol's name signed by an identity it made.
    attack(kem_swap)
    accounts.reopen(alice, kem_swap)
    alice.client.send_text("carol", "which computer are you on?")
    alice.events.wait("kem_key_refused", username="carol")
    accounts.reopen(laptop, kem_swap)
    laptop.events.wait("transparency_alarm", reason="foreign_key", username="carol")
