"""Signed room membership end to end: real server process, real clients, real stores."""

from __future__ import annotations

import pytest

from client.core.directory import JoinPending
from client.core.event_types import JoinRequested, MembershipChanged
from common.errors import RequestError
from tests.integration.conftest import RunningServer
from tests.integration.helpers import (
    Accounts,
    make_accounts,
    refused,
    serve_one_module,
    unique_name,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)


def lines(events: list[MembershipChanged]) -> list[tuple[str, str, str]]:
    return [(e.change, e.actor, e.subject) for e in events]


def test_every_change_is_a_verified_line_and_admins_remove_and_grant(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    carol = accounts.user(shared_server, "carol")
    room = alice.client.create_room(unique_name("club")).room_id
    bob.client.join_room(room)
    carol.client.join_room(room)
    alice.events.wait("membership", room_id=room, change="join", subject=carol.name)
    assert alice.client.room_admins(room) == [alice.name]

    alice.client.grant_admin(room, bob.name)
    bob.events.wait("membership", room_id=room, change="grant_admin", subject=bob.name)
    assert bob.client.room_admins(room) == sorted([alice.name, bob.name])
    with pytest.raises(RequestError) as not_admin:
        carol.client.remove_member(room, bob.name)
    assert not_admin.value.code == "event_refused"
    bob.client.remove_member(room, carol.name)
    carol.events.wait("contact_removed")
    alice.events.wait("membership", room_id=room, change="remove", subject=carol.name)

    expected = [
        ("create", alice.name, alice.name),
        ("join", bob.name, bob.name),
        ("join", carol.name, carol.name),
        ("grant_admin", alice.name, bob.name),
        ("remove", bob.name, carol.name),
    ]
    assert lines(alice.client.membership_lines(room)) == expected
    assert lines(bob.client.membership_lines(room)) == expected
    members = alice.client.room_members(room)
    assert [(m["username"], m["admin"]) for m in members] == sorted(
        [(alice.name, True), (bob.name, True)]
    )
    assert [name for name, _ in alice.client.verified_members(room)] == sorted(
        [alice.name, bob.name]
    )
    # The owner stays while others remain, unless naming a successor.
    assert refused(alice.client.leave_room, room).code == "successor_needed"
    bob.client.leave_room(room)
    alice.events.wait("membership", room_id=room, change="leave", subject=bob.name)
    assert not alice.events.matching("membership_alarm")
    assert not bob.events.matching("membership_alarm")


def test_the_owner_hands_the_group_over_and_leaves(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    carol = accounts.user(shared_server, "carol")
    room = alice.client.create_room(unique_name("handover")).room_id
    bob.client.join_room(room)
    carol.client.join_room(room)
    alice.client.grant_admin(room, carol.name)
    bob.events.wait("membership", room_id=room, change="grant_admin", subject=carol.name)
    assert alice.client.room_successors(room) == [carol.name, bob.name]  # admins first
    assert refused(bob.client.transfer_ownership, room, bob.name).code == "event_refused"
    assert refused(alice.client.leave_room, room, "stranger").code == "event_refused"
    assert {m["username"] for m in alice.client.room_members(room)} >= {alice.name}

    alice.client.leave_room(room, bob.name)  # hand over, then leave as a member
    for user in (bob, carol):
        user.events.wait("membership", room_id=room, change="leave", subject=alice.name)
        assert user.client.room_owner(room) == bob.name
        assert lines(user.client.membership_lines(room))[-2:] == [
            ("transfer_owner", alice.name, bob.name),
            ("leave", alice.name, alice.name),
        ]
        owners = [m["username"] for m in user.client.room_members(room) if m["owner"]]
        assert owners == [bob.name]
    assert sorted(bob.client.room_admins(room)) == sorted([bob.name, carol.name])
    bob.client.remove_member(room, carol.name)  # the new owner's rights are real
    carol.events.wait("contact_removed")
    assert not bob.events.matching("membership_alarm")
    assert not carol.events.matching("membership_alarm")


def test_approval_rooms_wait_for_an_admin(shared_server: RunningServer, accounts: Accounts) -> None:
    owner = accounts.user(shared_server, "owner")
    asker = accounts.user(shared_server, "asker")
    other = accounts.user(shared_server, "other")
    room = owner.client.create_room(unique_name("private"), "approval").room_id
    with pytest.raises(JoinPending):
        asker.client.join_room(room)
    asked = owner.events.wait_one("join_requested", room_id=room)
    assert isinstance(asked, JoinRequested) and asked.username == asker.name
    assert owner.client.join_requests(room) == [asker.name]
    owner.client.approve_join(room, asker.name)
    asker.events.wait("contact_added")
    joined = asker.events.wait_one("membership", room_id=room, change="join")
    assert isinstance(joined, MembershipChanged) and joined.approver == owner.name
    assert {m["username"] for m in asker.client.room_members(room)} == {owner.name, asker.name}

    with pytest.raises(JoinPending):
        other.client.join_room(room)
    owner.events.wait("join_requested", room_id=room, username=other.name)
    owner.client.refuse_join(room, other.name)
    other.events.wait("join_refused", room_id=room, reason="refused")
    assert owner.client.join_requests(room) == []
    assert refused(other.client.room_members, room).code == "not_member"
    assert not owner.events.matching("membership_alarm")
    assert not asker.events.matching("membership_alarm")


def test_a_late_approval_is_signed_again_by_the_joiner(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    owner = accounts.user(shared_server, "owner")
    early = accounts.user(shared_server, "early")
    late = accounts.user(shared_server, "late")
    room = owner.client.create_room(unique_name("busy"), "approval").room_id
    with pytest.raises(JoinPending):
        late.client.join_room(room)
    with pytest.raises(JoinPending):
        early.client.join_room(room)
    owner.events.wait("join_requested", room_id=room, count=2)
    owner.client.approve_join(room, early.name)  # the log moves past late's request
    assert refused(owner.client.approve_join, room, late.name).code == "log_moved"
    # late's client signs a fresh request on the new head by itself; the admin is asked again
    owner.events.wait("join_requested", room_id=room, username=late.name, count=2)
    owner.client.approve_join(room, late.name)
    late.events.wait("membership", room_id=room, change="join", subject=late.name)
    names = {m["username"] for m in owner.client.room_members(room)}
    assert names == {owner.name, early.name, late.name}


def test_joining_needs_the_keys_to_sign(shared_server: RunningServer, accounts: Accounts) -> None:
    owner = accounts.user(shared_server, "owner")
    room = owner.client.create_room(unique_name("keys")).room_id
    assert refused(owner.client.create_room, "   ").code == "invalid_room_name"
    assert refused(owner.client.create_room, "x", "secret").code == "bad_request"
    assert refused(owner.client.join_room, room).code == "already_member"


def test_changes_while_away_are_caught_up_at_login(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    room = alice.client.create_room(unique_name("away")).room_id
    alice.client.close()
    bob.client.join_room(room)  # no push reaches alice: she is away
    alice = accounts.reopen(alice, shared_server)
    joined = alice.events.wait_one("membership", room_id=room, change="join")
    assert isinstance(joined, MembershipChanged) and joined.subject == bob.name
    assert lines(alice.client.membership_lines(room)) == [
        ("create", alice.name, alice.name),
        ("join", bob.name, bob.name),
    ]
    assert not alice.events.matching("membership_alarm")
