"""End-to-end v2 against a lying server: real server processes, SEND_MESSAGE swapped.

Each test starts its own server with `tests.security.chain_attacks` installed (see its
docstring), sets the users up honestly, then arms one attack. Every attack must be
detected and shown to the user; none may be accepted silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.core.event_types import MessageReceived
from tests.integration.conftest import RunningServer, start_server
from tests.integration.helpers import Accounts, User, befriend, make_accounts, wait_until

accounts = pytest.fixture(name="accounts")(make_accounts)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path / "server", env={"UCHAT_TEST_SERVER_HOOK": "tests.security.chain_attacks"}
    )
    yield running
    if running.is_alive():
        running.stop()


def arm(server: RunningServer, name: str, sender: User) -> None:
    """Attack `sender`'s next message (see tests/security/chain_attacks.py)."""
    (server.data_dir / f"attack_{name}").write_text(sender.name)


def pair(server: RunningServer, accounts: Accounts) -> tuple[User, User]:
    """alice and bob, friends, with one honest message each way (chains distributed)."""
    alice = accounts.user(server, name="alice")
    bob = accounts.user(server, name="bob")
    befriend(alice, bob)
    hi_alice = bob.client.send_text("alice", "hi alice")
    alice.events.wait("message")
    hi_bob = alice.client.send_text("bob", "hi bob")
    bob.events.wait("message")
    # both receipts are in, so the next message each sends is the one attacked
    bob.events.status(hi_alice.message_id, "delivered")
    alice.events.status(hi_bob.message_id, "delivered")
    return alice, bob


def test_a_replayed_distribution_is_refused_and_shown(
    server: RunningServer, accounts: Accounts
) -> None:
    alice, bob = pair(server, accounts)
    arm(server, "replay", bob)
    bob.client.send_text("alice", "second")
    alice.events.wait("chain_warning", reason="replayed_distribution", username="bob")
    opened = alice.events.wait(
        "message", where=lambda e: isinstance(e, MessageReceived) and e.message.text == "second"
    )
    assert opened  # the message itself still opens on the chain alice already had


def test_reordered_and_retimed_messages_are_shown_in_the_senders_order_and_flagged(
    server: RunningServer, accounts: Accounts
) -> None:
    alice, bob = pair(server, accounts)
    arm(server, "reorder", bob)
    first = bob.client.send_text("alice", "1st: meet at 10")
    second = bob.client.send_text("alice", "2nd: CANCELLED")
    wait_until(lambda: len(alice.client.history("bob")) == 4, what="both messages")
    history = alice.client.history("bob")
    assert [m.text for m in history[-2:]] == ["1st: meet at 10", "2nd: CANCELLED"]
    shown = {m.message_id: m for m in history}
    assert "gap" in shown[second.message_id].flags.split()  # 1st missing when 2nd came
    late = shown[first.message_id]
    assert "late" in late.flags.split() and "skew" in late.flags.split()
    assert late.time == first.time  # the sender's clock, not the server's
    assert late.server_time < late.time - 3_000_000  # the server's hour-old claim, kept


def test_a_forged_delivered_is_not_believed(server: RunningServer, accounts: Accounts) -> None:
    alice, bob = pair(server, accounts)
    arm(server, "drop", alice)
    dropped = alice.client.send_text("bob", "never stored")
    honest = alice.client.send_text("bob", "stored")
    alice.events.status(honest.message_id, "delivered")  # bob's client sealed a receipt
    assert alice.client.history("bob")[-2].status == "sent"  # the server's word: ignored
    assert not alice.events.matching(
        "message_status", message_id=dropped.message_id, status="delivered"
    )
    assert [m.text for m in bob.client.history("alice")][-1] == "stored"


def test_a_relabelled_conversation_is_refused_and_shown(
    server: RunningServer, accounts: Accounts
) -> None:
    alice, bob = pair(server, accounts)
    room = alice.client.create_room(f"both {os.urandom(3).hex()}")
    bob.client.join_room(int(room.id))
    alice.events.wait("room_member", username=bob.name, event="joined")
    arm(server, "relabel", alice)
    alice.client.send_text("bob", "for bob only")
    bob.events.wait("chain_warning", reason="relabelled", username="alice")
    assert "could not be decrypted" in bob.client.history(int(room.id))[-1].text
    assert all(m.text != "for bob only" for m in bob.client.history(int(room.id)))


def test_a_withheld_chain_state_is_asked_for_and_the_held_messages_then_open(
    server: RunningServer, accounts: Accounts
) -> None:
    """The first envelope of alice's chain reaches bob without its state: bob holds what
    he cannot open, asks alice (sealed, `client.core.chain_recovery`), and alice's
    client gives the state again, from where bob was first given it."""
    alice = accounts.user(server, name="alice")
    bob = accounts.user(server, name="bob")
    befriend(alice, bob)
    arm(server, "strip", alice)
    sent = [alice.client.send_text("bob", f"number {n}") for n in range(3)]
    for message in sent:
        alice.events.status(message.message_id, "sent")

    def opened() -> list[str]:
        return [m.text for m in bob.client.history("alice") if not m.outgoing]

    wait_until(lambda: len(opened()) == 3, timeout=20, what="the held messages at bob")
    assert opened() == ["number 0", "number 1", "number 2"]


def test_a_withheld_room_chain_state_is_asked_for_by_each_member_in_the_room(
    server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(server, name="alice")
    bob = accounts.user(server, name="bob")
    carol = accounts.user(server, name="carol")
    room = int(alice.client.create_room("withheld").id)
    for member in (bob, carol):
        member.client.join_room(room)
    arm(server, "strip", alice)
    sent = [alice.client.send_text(room, f"room {n}") for n in range(3)]
    for message in sent:
        alice.events.status(message.message_id, "sent")

    def opened(member: User) -> list[str]:
        return [m.text for m in member.client.history(room) if m.sender == "alice"]

    for member in (bob, carol):
        wait_until(
            lambda m=member: len(opened(m)) == 3,  # type: ignore[misc]
            timeout=20,
            what=f"the held room messages at {member.name}",
        )
        assert opened(member) == ["room 0", "room 1", "room 2"]


def test_a_message_pushed_again_after_a_lost_acknowledgement_is_not_called_a_replay(
    server: RunningServer, accounts: Accounts
) -> None:
    """The first envelope of a chain carries its state; pushed again (an honest server
    whose node died before it stored the acknowledgement), it is a repeat, not the
    server replaying a distribution: no warning, and the message is shown once."""
    alice = accounts.user(server, name="alice")
    bob = accounts.user(server, name="bob")
    befriend(alice, bob)
    arm(server, "forget_ack", bob)
    alice.client.send_text("bob", "first")
    bob.events.wait("message")
    accounts.reopen(bob, server)  # the first message is pushed again
    alice.client.send_text("bob", "second")
    bob.events.wait("message", where=lambda e: e.data["message"].text == "second")
    assert [m.text for m in bob.client.history("alice") if not m.outgoing] == [
        "first",
        "second",
    ]
    assert bob.events.matching("chain_warning") == []
