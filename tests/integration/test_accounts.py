"""Accounts end to end: registration errors, login errors and lock-out, kick, logout.

Registration is checked twice for every rule: through `ChatClient.register` (which
validates before sending) and with a raw REGISTER request, so the server is shown to
refuse on its own what a modified client might send. Login failures are counted per
address too, and every test runs on 127.0.0.1, so the lock-out test has its own server.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from common.crypto.certs import build_csr
from common.crypto.keys import generate_user_keys
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.helpers import (
    PASSWORD,
    QUIET,
    Accounts,
    EventLog,
    befriend,
    contact_of,
    make_accounts,
    raw_connection,
    refusal,
    restart_on_same_port,
    serve_one_module,
    unique_name,
)

shared_server = pytest.fixture(scope="module", name="shared_server")(serve_one_module)
accounts = pytest.fixture(name="accounts")(make_accounts)


def valid_form() -> dict[str, Any]:
    name = unique_name("reg")
    return {
        "username": name,
        "password": PASSWORD,
        "email": f"{name}@example.org",
        "sex": "male",
        "age": 30,
    }


# (changed field, bad value, expected code): each breaks exactly one rule.
BAD_FIELDS = [
    pytest.param("username", "x", "invalid_username", id="username-too-short"),
    pytest.param("username", "a" * 33, "invalid_username", id="username-too-long"),
    pytest.param("username", "bad name!", "invalid_username", id="username-bad-characters"),
    pytest.param("username", "", "invalid_username", id="username-empty"),
    pytest.param("password", "abc123", "invalid_password", id="password-too-short"),
    pytest.param("password", "onlyletters", "invalid_password", id="password-letters-only"),
    pytest.param("password", "", "invalid_password", id="password-empty"),
    pytest.param("email", "not-an-email", "invalid_email", id="email-malformed"),
    pytest.param("email", "a@b", "invalid_email", id="email-no-domain-dot"),
    pytest.param("email", "", "invalid_email", id="email-empty"),
    pytest.param("sex", "robot", "invalid_sex", id="sex-unknown"),
    pytest.param("sex", "", "invalid_sex", id="sex-empty"),
    pytest.param("age", 0, "invalid_age", id="age-zero"),
    pytest.param("age", 151, "invalid_age", id="age-too-old"),
    pytest.param("age", -3, "invalid_age", id="age-negative"),
    pytest.param("age", "", "invalid_age", id="age-empty"),
]


@pytest.mark.parametrize(("field", "value", "code"), BAD_FIELDS)
def test_the_client_refuses_each_bad_registration_field(
    shared_server: RunningServer, accounts: Accounts, field: str, value: Any, code: str
) -> None:
    form = valid_form()
    form[field] = value
    client = accounts.client(shared_server, accounts.root / "bad-form")
    with pytest.raises(RequestError) as refused:
        client.register(**form)
    assert (refused.value.code, refused.value.field) == (code, field)
    assert refused.value.message  # something to show next to the field


@pytest.mark.parametrize(("field", "value", "code"), BAD_FIELDS)
def test_the_server_refuses_each_bad_registration_field(
    shared_server: RunningServer, field: str, value: Any, code: str
) -> None:
    form = valid_form()
    csr = build_csr(form["username"], form["email"], generate_user_keys())
    form[field] = value
    with raw_connection(shared_server) as connection:
        error = refusal(connection, MessageType.REGISTER, {**form, "csr": csr})
    assert (error.code, error.field) == (code, field)


def test_taken_username_and_email_are_refused_whatever_their_case(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    first = accounts.user(shared_server, "张伟", login=False)
    assert first.client.login(first.name, PASSWORD).username == first.name
    email = first.client.profile.email if first.client.profile else ""

    again = accounts.client(shared_server, accounts.root / "again")
    for name in (first.name, first.name.upper()):
        with pytest.raises(RequestError) as taken:
            again.register(name, PASSWORD, f"{unique_name('x')}@example.org", "other", 40)
        assert (taken.value.code, taken.value.field) == ("username_taken", "username")
    for address in (email, email.upper()):
        with pytest.raises(RequestError) as taken:
            again.register(unique_name("other"), PASSWORD, address, "other", 40)
        assert (taken.value.code, taken.value.field) == ("email_taken", "email")


def test_login_failures_look_alike_then_lock_the_account_even_across_a_restart(
    server_factory: ServerFactory, accounts: Accounts
) -> None:
    env = {"UCHAT_SERVER_LOGIN_BACKOFF_BASE": "30"}  # a lock lasts a minute: outlives restart
    server = server_factory(env=env, name="lockout")
    victim = accounts.user(server, "victim", login=False)

    failures: list[RequestError] = []
    for username, password in [(victim.name, "wrong password 1"), (unique_name("ghost"), PASSWORD)]:
        with pytest.raises(RequestError) as refused:
            victim.client.login(username, password)
        failures.append(refused.value)
    wrong_password, unknown_user = failures
    assert wrong_password.code == unknown_user.code == "login_failed"
    assert wrong_password.message == unknown_user.message  # nothing tells which one it was
    assert wrong_password.field == unknown_user.field

    codes = []
    for attempt in range(10):
        with pytest.raises(RequestError) as refused:
            victim.client.login(victim.name, f"wrong password {attempt}")
        codes.append(refused.value.code)
        if refused.value.code == "too_many_attempts":
            break
    assert codes[-1] == "too_many_attempts", codes
    assert set(codes[:-1]) == {"login_failed"} and len(codes) <= 6, codes

    with pytest.raises(RequestError) as locked:  # even the right password is refused now
        victim.client.login(victim.name, PASSWORD)
    assert locked.value.code == "too_many_attempts"
    assert re.search(r"\d+ seconds", locked.value.message)

    victim.client.close()
    server.stop()
    restarted = restart_on_same_port(server_factory, server, env)
    after_restart = accounts.client(restarted, victim.data_dir)
    with pytest.raises(RequestError) as still_locked:
        after_restart.login(victim.name, PASSWORD)
    assert still_locked.value.code == "too_many_attempts"


def test_a_second_login_kicks_the_first_session_which_stays_out(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)

    second = accounts.client(shared_server, alice.data_dir)  # same machine: same keys
    second_events = EventLog(second)
    second.login(alice.name, PASSWORD)

    kicked = alice.events.wait_one("kicked")
    assert kicked.data["reason"] == "logged_in_elsewhere"
    online = bob.events.wait_one("presence", username=alice.name, online=True)
    assert kicked.data["address"] == f"{online.data['ip']}:{online.data['port']}"
    assert online.data["ip"] == "127.0.0.1" and online.data["port"] > 0
    alice.events.wait("connection", state="disconnected")

    # longer than the whole reconnect back-off: the kicked client must not come back
    alice.events.stays_quiet("connection", lambda e: e.data["state"] == "connected", 1.0)
    assert not alice.client.connected
    assert second.connected
    bob.events.stays_quiet("presence", lambda e: e.data["online"] is False, 0.2)
    assert contact_of(bob, alice.name).online

    sent = second.send_text(bob.name, "the new session works")
    assert bob.events.message(sent.message_id).text == "the new session works"
    assert second_events.matching("kicked") == []


def test_logout_shows_the_user_offline_to_friends(
    shared_server: RunningServer, accounts: Accounts
) -> None:
    alice = accounts.user(shared_server, "alice")
    bob = accounts.user(shared_server, "bob")
    befriend(alice, bob)
    assert contact_of(bob, alice.name).online

    alice.client.logout()
    offline = bob.events.wait_one("presence", username=alice.name, online=False)
    assert offline.data["ip"] == "127.0.0.1"
    assert not contact_of(bob, alice.name).online
    refreshed = {c.id: c for c in bob.client.refresh_contacts()}
    assert not refreshed[alice.name].online  # the server agrees
    # a logged-out client does not log itself in again
    bob.events.stays_quiet("presence", lambda e: e.data["online"] is True, QUIET + 0.5)
    assert not alice.client.connected
