"""Linking a computer through a server that substitutes its own keys (a middle-man).

The relay (tests/security/link_mitm.py) runs the exchange with each computer itself.
The commitment stops it from steering the short codes, so the two screens show
different digits; a user who compares and refuses gives the server nothing. The
second test shows the attack is real: a user who accepts codes that differ hands
the identity to the server, so the comparison is what protects it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.core import LinkCompare, LinkFailed
from client.core.keystore import KeyStore, server_id_for
from common.crypto.device_link import unpack_identity
from common.crypto.keys import keys_to_bytes
from tests.integration.conftest import RunningServer, start_server
from tests.integration.helpers import (
    FAST_KEYS,
    PASSWORD,
    Accounts,
    EventLog,
    User,
    make_accounts,
)

accounts = pytest.fixture(name="accounts")(make_accounts)


@pytest.fixture
def middle_server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path / "server", env={"UCHAT_TEST_SERVER_HOOK": "tests.security.link_mitm"}
    )
    yield running
    if running.is_alive():
        running.stop()


def learned(server: RunningServer) -> list[dict[str, Any]]:
    path = server.data_dir / "link_mitm.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def linked_until_compare(
    server: RunningServer, accounts: Accounts, tmp_path: Path
) -> tuple[User, EventLog, str, str]:
    alice = accounts.user(server, name="alice")
    new = accounts.client(server, tmp_path / "new")
    new_events = EventLog(new)
    code, _ = new.start_link("alice")
    alice.client.join_link(code)
    old_sas = alice.events.wait_one("link_compare")
    new_sas = new_events.wait_one("link_compare")
    assert isinstance(old_sas, LinkCompare) and isinstance(new_sas, LinkCompare)
    return alice, new_events, old_sas.sas, new_sas.sas


def test_the_codes_differ_and_a_user_who_refuses_gives_the_server_nothing(
    middle_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice, new_events, old_sas, new_sas = linked_until_compare(middle_server, accounts, tmp_path)
    assert old_sas != new_sas
    # the server did run the exchange: it knows the codes each victim sees
    notes = learned(middle_server)
    assert {"sas_with_old": old_sas} in notes and {"sas_with_new": new_sas} in notes
    alice.client.confirm_link(False)
    failed = alice.events.wait_one("link_failed")
    assert isinstance(failed, LinkFailed) and failed.reason == "refused"
    new_events.wait("link_failed")
    assert not any("identity" in note for note in learned(middle_server))
    # the new computer holds nothing: logging in there gives a computer without keys
    new_events.client.login("alice", PASSWORD)
    new_events.wait("key_missing")


def test_accepting_codes_that_differ_would_hand_the_identity_over(
    middle_server: RunningServer, accounts: Accounts, tmp_path: Path
) -> None:
    alice, _, old_sas, new_sas = linked_until_compare(middle_server, accounts, tmp_path)
    assert old_sas != new_sas
    alice.client.confirm_link(True)  # the mistake the comparison exists to prevent
    alice.events.wait("link_finished")
    stolen = [note["identity"] for note in learned(middle_server) if "identity" in note]
    assert stolen, "the middle-man should have opened what the old computer sealed"
    username, keys = unpack_identity(bytes.fromhex(stolen[0]))
    assert username == "alice"
    server_id = server_id_for(alice.client.server_fingerprint)
    real = KeyStore(alice.data_dir, FAST_KEYS).load(server_id, "alice", PASSWORD)
    assert keys_to_bytes(keys) == keys_to_bytes(real)
