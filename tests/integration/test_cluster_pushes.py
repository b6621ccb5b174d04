"""Pushes that are not messages, across nodes: alice on node A, bob on node B.

Friend requests and their answers, a friendship ended, a room joined, left and a
member removed, a join asked for and answered: each push reaches the user on the
other node at once (a `Relay` hint after the commit), not at their next refresh.
Presence across nodes is in test_cluster_nodes.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.core.directory import JoinPending
from server.cluster.local_services import LocalRedis
from server.launcher import RunningServer, start_server
from tests.integration.cluster_env import cluster_env
from tests.integration.helpers import (
    Accounts,
    User,
    added_contact,
    contact_of,
    make_accounts,
)

accounts = pytest.fixture(name="accounts")(make_accounts)


@pytest.fixture
def two_nodes(
    tmp_path: Path, fresh_pg_dsn: Callable[[], str], local_redis: LocalRedis
) -> Iterator[tuple[RunningServer, RunningServer]]:
    env = cluster_env(tmp_path, fresh_pg_dsn(), local_redis)
    started = [
        start_server(tmp_path / name, {**env, "UCHAT_SERVER_NODE_ID": name}) for name in "ab"
    ]
    yield started[0], started[1]
    for running in started:
        running.stop()
        assert " ERROR " not in running.log_text(), running.log_text()[-3000:]


def test_friend_requests_answers_and_removals_cross_nodes(
    two_nodes: tuple[RunningServer, RunningServer], accounts: Accounts
) -> None:
    node_a, node_b = two_nodes
    alice = accounts.user(node_a, "alice")
    carol = accounts.user(node_a, "carol")
    bob = accounts.user(node_b, "bob")

    alice.client.add_friend(bob.name)
    bob.events.wait("friend_request", username=alice.name)
    bob.client.answer_friend_request(alice.name, True)
    added = alice.events.wait_one("contact_added", added_contact(bob.name))
    assert added.data["contact"].online  # bob is online, on node B
    bob.events.wait("contact_added", added_contact(alice.name))
    assert contact_of(bob, alice.name).online

    carol.client.add_friend(bob.name)
    bob.events.wait("friend_request", username=carol.name)
    bob.client.answer_friend_request(carol.name, False)
    carol.events.wait("friend_refused", username=bob.name)

    # The new friendship reached node A's caches: bob leaving B shows on A.
    bob.client.logout()
    alice.events.wait("presence", username=bob.name, online=False)
    accounts.reopen(bob, node_b)
    alice.events.wait("presence", username=bob.name, online=True)

    alice.client.delete_friend(bob.name)
    bob.events.wait("contact_removed", added_contact(alice.name))
    assert contact_of(bob, alice.name) is None


def test_room_membership_changes_cross_nodes(
    two_nodes: tuple[RunningServer, RunningServer], accounts: Accounts
) -> None:
    node_a, node_b = two_nodes
    owner = accounts.user(node_a, "owner")
    member = accounts.user(node_b, "member")
    room_id = int(owner.client.create_room(f"open {owner.name}").id)

    member.client.join_room(room_id)
    owner.events.wait("room_member", room_id=room_id, username=member.name, event="joined")
    owner.client.remove_member(room_id, member.name)
    member.events.wait("contact_removed", added_contact(str(room_id)))

    member.client.join_room(room_id)  # back in, then leaving by itself
    owner.events.wait("room_member", room_id=room_id, username=member.name, event="joined", count=2)
    member.client.leave_room(room_id)
    owner.events.wait("room_member", room_id=room_id, username=member.name, event="left")


def test_join_requests_and_their_answers_cross_nodes(
    two_nodes: tuple[RunningServer, RunningServer], accounts: Accounts
) -> None:
    node_a, node_b = two_nodes
    owner = accounts.user(node_a, "owner")
    asker = accounts.user(node_b, "asker")
    other = accounts.user(node_b, "other")
    room_id = int(owner.client.create_room(f"private {owner.name}", "approval").id)

    with pytest.raises(JoinPending):
        asker.client.join_room(room_id)
    owner.events.wait("join_requested", room_id=room_id, username=asker.name)
    owner.client.approve_join(room_id, asker.name)
    asker.events.wait("contact_added", added_contact(str(room_id)))

    with pytest.raises(JoinPending):
        other.client.join_room(room_id)
    owner.events.wait("join_requested", room_id=room_id, username=other.name)
    owner.client.refuse_join(room_id, other.name)
    other.events.wait("join_refused", room_id=room_id, reason="refused")
    _quiet_on_the_sender_side(owner)


def _quiet_on_the_sender_side(user: User) -> None:
    """Nothing alarming was seen (a relayed push is the genuine one, signed logs agree)."""
    assert not user.events.matching("membership_alarm")
