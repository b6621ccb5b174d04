"""Signed room membership against a lying server: real server processes, handlers swapped.

Each test starts its own server with `tests.security.membership_attacks` installed (see
its docstring); the room is set up honestly, then the attack is switched on. Every lie
must reach alice as a `MembershipAlarm` for that room, and none may change the member
list her client shows or seals to (`room_members`, `verified_members`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.core.event_types import MembershipAlarm
from common.errors import RequestError
from tests.integration.conftest import RunningServer, start_server
from tests.integration.helpers import Accounts, User, make_accounts

accounts = pytest.fixture(name="accounts")(make_accounts)


def malicious_server(tmp_path: Path, mode: str) -> Iterator[RunningServer]:
    env = {
        "UCHAT_TEST_SERVER_HOOK": "tests.security.membership_attacks",
        "UCHAT_TEST_MEMBERSHIP_ATTACK": mode,
    }
    running = start_server(tmp_path / "server", env=env)
    yield running
    if running.is_alive():
        running.stop()


@pytest.fixture
def ghost(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "ghost")


@pytest.fixture
def stale(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "stale")


@pytest.fixture
def unlogged(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "unlogged")


@pytest.fixture
def withhold(tmp_path: Path) -> Iterator[RunningServer]:
    yield from malicious_server(tmp_path, "withhold")


def attack(server: RunningServer) -> None:
    (server.data_dir / "attack_on").touch()


def room_of_three(server: RunningServer, accounts: Accounts) -> tuple[int, User, User, User]:
    """alice's open room with bob and carol, as alice's client verified it."""
    alice = accounts.user(server, name="alice")
    bob = accounts.user(server, name="bob")
    carol = accounts.user(server, name="carol")
    room = alice.client.create_room("club").room_id
    bob.client.join_room(room)
    carol.client.join_room(room)
    alice.events.wait("membership", room_id=room, change="join", subject="carol")
    assert names(alice, room) == ["alice", "bob", "carol"]
    assert sealed_to(alice, room) == ["alice", "bob", "carol"]
    assert not alice.events.matching("membership_alarm")
    return room, alice, bob, carol


def names(user: User, room: int) -> list[str]:
    return [m["username"] for m in user.client.room_members(room)]


def sealed_to(user: User, room: int) -> list[str]:
    return [name for name, _ in user.client.verified_members(room)]


def chain_recipients(user: User, room: int) -> list[str]:
    """Whom the send path distributes its chain to and seals the list hash for."""
    session = user.client._slot.get()
    assert session is not None
    return sorted(session.recipients.room_recipients(room, refresh=True))


def alarm(user: User, room: int, reason: str) -> MembershipAlarm:
    event = user.events.wait_one("membership_alarm", room_id=room, reason=reason)
    assert isinstance(event, MembershipAlarm)
    return event


def test_a_member_added_without_a_signed_join_is_shown_and_not_sealed_to(
    ghost: RunningServer, accounts: Accounts
) -> None:
    room, alice, _, _ = room_of_three(ghost, accounts)
    mallory = accounts.user(ghost, name="mallory")
    attack(ghost)
    mallory.client.join_room(room)  # the server lets mallory in with no signed join
    raised = alarm(alice, room, "server_list_differs")
    assert raised.names == ("mallory",) and "mallory" in raised.detail
    assert names(alice, room) == ["alice", "bob", "carol"]
    assert sealed_to(alice, room) == ["alice", "bob", "carol"]
    assert chain_recipients(alice, room) == ["alice", "bob", "carol"]  # no chain for mallory
    assert not alice.events.matching("membership", room_id=room, subject="mallory")


def test_a_stale_member_list_and_log_are_shown(stale: RunningServer, accounts: Accounts) -> None:
    room, alice, _, carol = room_of_three(stale, accounts)
    attack(stale)  # from now on alice is shown the room as it was
    carol.client.leave_room(room)
    alice.events.wait("membership", room_id=room, change="leave", subject="carol")
    listed = alarm(alice, room, "server_list_differs")
    assert listed.names == ("carol",)
    assert names(alice, room) == ["alice", "bob"]
    with pytest.raises(RequestError) as refused:  # the log alice is shown rolled back
        sealed_to(alice, room)
    assert refused.value.code == "membership_unverified"
    rolled_back = alarm(alice, room, "rollback")
    assert "we verified 4" in rolled_back.detail


def test_a_withheld_leave_breaks_the_chain_and_is_shown(
    withhold: RunningServer, accounts: Accounts
) -> None:
    room, alice, bob, carol = room_of_three(withhold, accounts)
    dave = accounts.user(withhold, name="dave")
    attack(withhold)
    carol.client.leave_room(room)  # everyone but alice hears of it
    bob.events.wait("membership", room_id=room, change="leave", subject="carol")
    dave.client.join_room(room)  # signed on the head after carol's leave
    gap = alarm(alice, room, "gap")
    assert "does not follow" in gap.detail
    # Nothing past the gap is taken: alice's list stays what members signed so far.
    assert not alice.events.matching("membership", room_id=room, subject="dave")
    assert [line.subject for line in alice.client.membership_lines(room)] == [
        "alice",
        "bob",
        "carol",
    ]
    with pytest.raises(RequestError) as refused:  # nothing is sealed into a broken room
        alice.client.verified_members(room)
    assert refused.value.code == "membership_unverified"


def test_a_signer_whose_certificate_is_not_in_the_key_log_signs_nothing(
    unlogged: RunningServer, accounts: Accounts
) -> None:
    carol = accounts.user(unlogged, name="carol")
    bob = accounts.user(unlogged, name="bob")
    room = carol.client.create_room("book club").room_id
    bob.client.join_room(room)
    attack(unlogged)
    alice = accounts.user(unlogged, name="alice")  # has never seen carol's or bob's key
    alice.client.join_room(room)
    refused = alarm(alice, room, "invalid_log")
    assert "no verified identity key for carol" in refused.detail
    with pytest.raises(RequestError) as unverified:
        sealed_to(alice, room)
    assert unverified.value.code == "membership_unverified"
