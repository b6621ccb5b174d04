"""Linking a new computer with a one-time code, against the real server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from client.core import LinkCompare, LinkFailed, LinkFinished, LinkJoined
from tests.integration.conftest import RunningServer, start_server
from tests.integration.helpers import (
    PASSWORD,
    Accounts,
    EventLog,
    befriended_pair,
    make_accounts,
    refused,
    serve_one_module,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)


def sas_of(events: EventLog) -> str:
    event = events.wait_one("link_compare")
    assert isinstance(event, LinkCompare)
    return event.sas


def test_a_code_and_matching_short_codes_move_the_identity(
    shared_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice, bob = befriended_pair(shared_server, accounts)

    new = accounts.client(shared_server, tmp_path / "new-computer")
    new_events = EventLog(new)
    code, expires_in = new.start_link(alice.name)
    assert len(code) == 8 and code.isdigit() and expires_in == 300

    address = alice.client.join_link(f"{code[:4]}-{code[4:]}")  # typed with a dash
    assert address.startswith("127.0.0.1:")
    joined = new_events.wait_one("link_joined")
    assert isinstance(joined, LinkJoined) and joined.address.startswith("127.0.0.1:")
    old_sas, new_sas = sas_of(alice.events), sas_of(new_events)
    assert old_sas == new_sas and len(old_sas) == 7

    alice.client.confirm_link(True)
    sent = alice.events.wait_one("link_finished")
    assert isinstance(sent, LinkFinished) and sent.role == "old"
    new.confirm_link(True)
    arrived = new_events.wait_one("link_finished")
    assert isinstance(arrived, LinkFinished) and arrived.role == "new"
    assert arrived.username == alice.name

    # a mistyped password keeps the identity for the next try
    assert refused(new.login, alice.name, "not the password 1").code == "login_failed"
    new.login(alice.name, PASSWORD)
    assert new.can_send
    alice.events.wait("kicked")  # one login at a time, as always
    bob.client.send_text(alice.name, "can the new computer read this?")
    got = new_events.wait("message")
    assert got[0].data["message"].text == "can the new computer read this?"
    new.send_text(bob.name, "hello from the linked computer")
    assert bob.events.wait("message")[-1].data["message"].text == "hello from the linked computer"
    # the key file is here now, sealed under the account password
    new.logout()
    again = accounts.client(shared_server, tmp_path / "new-computer")
    again.login(alice.name, PASSWORD)
    assert again.can_send


def test_a_user_who_says_the_codes_differ_moves_nothing(
    shared_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice = accounts.user(shared_server, "al")
    new = accounts.client(shared_server, tmp_path / "new")
    new_events = EventLog(new)
    code, _ = new.start_link(alice.name)
    alice.client.join_link(code)
    sas_of(alice.events)
    sas_of(new_events)
    alice.client.confirm_link(False)
    refused_event = alice.events.wait_one("link_failed")
    assert isinstance(refused_event, LinkFailed) and refused_event.reason == "refused"
    told = new_events.wait_one("link_failed")
    assert isinstance(told, LinkFailed) and told.reason == "refused"
    new.login(alice.name, PASSWORD)  # nothing arrived: a computer without keys
    new_events.wait("key_missing")
    assert not new.can_send


def test_wrong_codes_are_refused_clearly_and_limited(
    shared_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice = accounts.user(shared_server, "wc")
    mallory = accounts.user(shared_server, "ml")
    new = accounts.client(shared_server, tmp_path / "new")
    code, _ = new.start_link(alice.name)
    wrong = refused(alice.client.join_link, "00000000" if code != "00000000" else "11111111")
    assert wrong.code == "link_code_invalid" and "wrong" in str(wrong)
    # a code asked for alice is no code for anyone else
    assert refused(mallory.client.join_link, code).code == "link_code_invalid"
    alice.client.join_link(code)
    assert refused(alice.client.join_link, code).code == "link_code_invalid"  # single use
    codes = [refused(mallory.client.join_link, "12345678").code for _ in range(5)]
    assert codes[-1] == "too_many_attempts"


def test_a_computer_without_keys_cannot_send_its_identity(
    shared_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice = accounts.user(shared_server, "nk")
    bare = accounts.client(shared_server, tmp_path / "bare")
    bare.login(alice.name, PASSWORD)  # kicks alice's first client; has no keys
    new = accounts.client(shared_server, tmp_path / "new")
    code, _ = new.start_link(alice.name)
    assert refused(bare.join_link, code).code == "key_missing"


def test_the_waiting_connection_outlives_the_login_deadline_and_a_cancel_is_heard(
    tmp_path: Path, accounts: Accounts
) -> None:
    # a short login deadline shows the link connection is held past it
    server = start_server(tmp_path / "server", {"UCHAT_SERVER_LOGIN_TIMEOUT": "1"})
    try:
        alice = accounts.user(server, "ex")
        new = accounts.client(server, tmp_path / "new")
        code, _ = new.start_link(alice.name)
        time.sleep(2.5)
        assert new.connected
        alice.client.join_link(code)  # still valid: codes live five minutes
        assert new.wait_for_event(lambda e: isinstance(e, LinkJoined), 5.0)
        new.cancel_link()
        failed = alice.events.wait_one("link_failed")
        assert isinstance(failed, LinkFailed) and failed.reason == "cancelled"
    finally:
        server.stop()
