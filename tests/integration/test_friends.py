"""Friends end to end: search, requests (accept, reject, later), deletion, and the rule
that only friends can message each other."""

from __future__ import annotations

import os
import time

import pytest

from common.errors import RequestError
from common.protocol.opcodes import MessageType
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.helpers import (
    PASSWORD,
    Accounts,
    User,
    added_contact,
    befriend,
    contact_of,
    make_accounts,
    raw_connection,
    refusal,
    refused,
    serve_one_module,
    unique_name,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)


def friend_ids(user: User) -> set[str]:
    return {c.id for c in user.client.contacts() if c.kind == "user"}


def test_search_finds_users_by_the_start_of_their_name_chinese_included(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    tag = os.urandom(3).hex()
    chinese = accounts.user(shared_server, name=f"李小龙{tag}", login=False)
    latin = accounts.user(shared_server, name=f"zhang_{tag}_wei", login=False)
    me = accounts.user(shared_server, name=f"me_{tag}_searcher")

    found = me.client.search_users(f"李小龙{tag}")
    assert [u["username"] for u in found] == [chinese.name]
    assert found[0] == {
        "username": chinese.name,
        "sex": "female",
        "age": 21,
        "is_friend": False,
        "pending": False,
    }
    assert [u["username"] for u in me.client.search_users(f"zhang_{tag}_we")] == [latin.name]
    assert me.client.search_users(f"小龙{tag}") == []  # the start of a name, not any part
    assert me.client.search_users(f"me_{tag}_searcher") == []  # never yourself
    assert me.client.search_users(f"nobody{os.urandom(4).hex()}") == []
    assert [u["username"] for u in me.client.search_users(f"ZHANG_{tag}")] == [latin.name]

    me.client.add_friend(latin.name)
    [entry] = me.client.search_users(latin.name)
    assert (entry["is_friend"], entry["pending"]) == (False, True)


def test_search_pages_reach_every_match_and_floods_are_refused(
    server_factory: ServerFactory, accounts: Accounts
) -> None:
    server = server_factory(env={"UCHAT_SERVER_SEARCH_PAGE": "3"})
    tag = os.urandom(3).hex()
    names = sorted(f"page{tag}_{n}" for n in range(8))
    for name in names:
        accounts.user(server, name=name, login=False)
    me = accounts.user(server, name=f"me_{tag}")
    first, after = me.client.search_users_page(f"PAGE{tag}")
    assert len(first) == 3 and after is not None
    found = [u["username"] for u in first]
    while after is not None:
        page, after = me.client.search_users_page(f"page{tag}", after)
        found += [u["username"] for u in page]
    assert found == names
    refusal = None
    for _ in range(40):  # searches_per_minute is 30 by default
        try:
            me.client.search_users(f"page{tag}")
        except RequestError as exc:
            refusal = exc
            break
    assert refusal is not None and refusal.code == "too_many_searches"


def test_add_friend_errors(shared_server: RunningServer, accounts: Accounts) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    carol = accounts.user(shared_server, "carol")
    befriend(alice, bob)

    cases = [
        (unique_name("nobody"), "user_not_found"),
        (alice.name, "cannot_add_self"),
        (bob.name, "already_friends"),
    ]
    for username, code in cases:
        assert refused(alice.client.add_friend, username).code == code, username
    alice.client.add_friend(carol.name)
    assert refused(alice.client.add_friend, carol.name).code == "request_pending"
    carol.events.wait("friend_request", username=alice.name)
    assert len(carol.events.matching("friend_request", username=alice.name)) == 1
    assert friend_ids(alice) == {bob.name}


def test_an_accepted_request_makes_both_see_each_other_online_with_an_address(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    alice.client.add_friend(bob.name)
    bob.events.wait("friend_request", username=alice.name)
    assert bob.client.pending_friend_requests() == [alice.name]

    bob.client.answer_friend_request(alice.name, True)
    for me, other in ((alice, bob), (bob, alice)):
        added = me.events.wait_one("contact_added", added_contact(other.name)).data["contact"]
        assert (added.kind, added.online) == ("user", True)
        contact = contact_of(me, other.name)
        assert contact is not None and contact.online
        assert contact.ip == "127.0.0.1" and contact.port > 0
        refreshed = {c.id: c for c in me.client.refresh_contacts()}  # the server agrees
        assert refreshed[other.name].online and refreshed[other.name].port == contact.port
    assert bob.client.pending_friend_requests() == []
    assert contact_of(alice, bob.name).port != contact_of(bob, alice.name).port

    sent = alice.client.send_text(bob.name, "friends now")
    assert bob.events.message(sent.message_id).text == "friends now"


def test_asking_someone_who_already_asked_you_accepts_their_request(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    alice.client.add_friend(bob.name)
    bob.events.wait("friend_request", username=alice.name)
    bob.client.add_friend(alice.name)
    alice.events.wait("contact_added", added_contact(bob.name))
    bob.events.wait("contact_added", added_contact(alice.name))
    assert friend_ids(alice) == {bob.name} and friend_ids(bob) == {alice.name}
    assert bob.client.pending_friend_requests() == []


def test_a_rejected_request_is_gone_and_may_be_sent_again(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    alice.client.add_friend(bob.name)
    bob.events.wait("friend_request", username=alice.name)
    bob.client.answer_friend_request(alice.name, False)

    assert bob.client.pending_friend_requests() == []
    alice.events.stays_quiet("contact_added")
    assert friend_ids(alice) == set() and friend_ids(bob) == set()
    assert refused(bob.client.answer_friend_request, alice.name, True).code == "no_pending_request"

    accounts.reopen(bob, shared_server)  # it does not come back at the next login either
    assert bob.client.pending_friend_requests() == []
    alice.client.add_friend(bob.name)  # not request_pending: the old one was deleted
    bob.events.wait("friend_request", username=alice.name)


def test_a_request_answered_later_comes_back_at_the_next_login(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    carol = accounts.user(shared_server, "carol", login=False)  # offline when asked
    alice.client.add_friend(bob.name)
    alice.client.add_friend(carol.name)
    bob.events.wait("friend_request", username=alice.name)

    bob.client.answer_friend_request(alice.name, None)
    bob.client.logout()
    bob.client.login(bob.name, PASSWORD)
    assert bob.client.pending_friend_requests() == [alice.name]
    accounts.reopen(bob, shared_server)  # a fresh process on the same machine too
    assert bob.client.pending_friend_requests() == [alice.name]

    carol.client.login(carol.name, PASSWORD)
    assert carol.client.pending_friend_requests() == [alice.name]

    bob.client.answer_friend_request(alice.name, True)
    alice.events.wait("contact_added", added_contact(bob.name))
    bob.events.wait("contact_added", added_contact(alice.name))
    assert friend_ids(bob) == {alice.name}
    assert bob.client.pending_friend_requests() == []


def test_deleting_a_friend_updates_both_sides_and_stops_messages(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    alice.client.send_text(bob.name, "still friends")

    alice.client.delete_friend(bob.name)
    for me, other in ((alice, bob), (bob, alice)):
        me.events.wait("contact_removed", added_contact(other.name))
        assert friend_ids(me) == set()
        assert {c.id for c in me.client.refresh_contacts()} == set()
    assert refused(alice.client.delete_friend, bob.name).code == "not_friends"

    error = refused(alice.client.send_text, bob.name, "are we still friends?")
    assert error.code == "not_friends"
    assert alice.client.history(bob.name)[-1].status == "failed"
    error = refused(bob.client.send_text, alice.name, "hello?")
    assert error.code == "not_friends"
    bob.events.stays_quiet("message", lambda e: e.data["message"].text != "still friends")


def test_the_server_refuses_a_message_to_a_stranger(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    """Even a modified client that seals something cannot write to a non-friend."""
    alice = accounts.user(shared_server, "alice", login=False)
    stranger = accounts.user(shared_server, "stranger")
    alice.client.close()
    with raw_connection(shared_server) as connection:
        connection.request(MessageType.LOGIN, {"username": alice.name, "password": PASSWORD})
        error = refusal(
            connection,
            MessageType.SEND_MESSAGE,
            {
                "message_id": os.urandom(16).hex(),
                "target_type": "user",
                "target": stranger.name,
                "time": int(time.time() * 1000),
                "envelope": os.urandom(120),
                "attachments": [],
            },
        )
    assert error.code == "not_friends"
    stranger.events.stays_quiet("message")


def test_the_client_reports_not_friends_for_a_stranger(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    stranger = accounts.user(shared_server, "stranger")
    error = refused(alice.client.send_text, stranger.name, "hi, we never met")
    assert error.code == "not_friends", f"{error.code}: {error.message}"
    stranger.events.stays_quiet("message")
