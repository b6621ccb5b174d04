"""The server's link relay (server/links.py and the LINK_* handlers), without sockets'
traffic: real handlers and dispatcher, recorded output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from server.handlers import link_close, link_join, link_open, link_send
from server.links import CODE_TTL_MS, LINK_TTL_MS, MAX_LINKS_PER_ADDRESS, MAX_MESSAGES
from server.net.connection import Connection
from tests.unit.test_server_dispatch import World, ask, error_code, handler, login

NOW = 1_700_000_000_000
HANDLERS: list[ModuleType] = [
    link_open,
    link_join,
    link_send,
    link_close,
    handler(MessageType.LOGIN, False, login),
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, HANDLERS)
    yield w
    w.close()


def logged_in(world: World, user_id: int, username: str) -> Connection:
    connection = world.connection()
    ask(world, connection, MessageType.LOGIN, user_id=user_id, username=username)
    return connection


def pushes(world: World, connection: Connection, kind: MessageType) -> list[Message]:
    return [m for m in world.sent(connection) if m.type is kind]


def opened(world: World, username: str = "alice") -> tuple[Connection, str]:
    new = world.connection()
    answer = ask(world, new, MessageType.LINK_OPEN, username=username)
    assert answer.type is MessageType.REPLY, answer
    assert answer.params["expires_in"] == CODE_TTL_MS // 1000
    code = answer.params["code"]
    assert isinstance(code, str) and len(code) == 8 and code.isdigit()
    return new, code


def test_a_code_joins_the_two_computers_and_relays_both_ways(world: World) -> None:
    new, code = opened(world)
    assert world.host.held == [new]  # off the login deadline while the code lives
    old = logged_in(world, 1, "alice")
    answer = ask(world, old, MessageType.LINK_JOIN, code=f"{code[:4]} {code[4:]}")
    assert answer.params == {"address": new.address}
    assert pushes(world, new, MessageType.LINK_JOINED)[0].params == {"address": old.address}
    ask(world, new, MessageType.LINK_SEND, data=b"\x01commit")
    assert pushes(world, old, MessageType.LINK_DATA)[-1].params == {"data": b"\x01commit"}
    ask(world, old, MessageType.LINK_SEND, data=b"\x02key")
    assert pushes(world, new, MessageType.LINK_DATA)[-1].params == {"data": b"\x02key"}
    ask(world, new, MessageType.LINK_CLOSE, reason="done")
    assert pushes(world, old, MessageType.LINK_CLOSED)[-1].params == {"reason": "done"}
    assert error_code(ask(world, old, MessageType.LINK_SEND, data=b"x")) == "no_link"


def test_a_code_is_single_use(world: World) -> None:
    _, code = opened(world)
    ask(world, logged_in(world, 1, "alice"), MessageType.LINK_JOIN, code=code)
    again = ask(world, logged_in(world, 1, "alice"), MessageType.LINK_JOIN, code=code)
    assert error_code(again) == "link_code_invalid"


def test_a_code_asked_for_another_account_is_just_a_wrong_code(world: World) -> None:
    _, code = opened(world, "alice")
    answer = ask(world, logged_in(world, 2, "bob"), MessageType.LINK_JOIN, code=code)
    assert error_code(answer) == "link_code_invalid"
    assert "wrong" in answer.params["message"]
    # the account name is compared in its canonical form
    ok = ask(world, logged_in(world, 1, "ALICE"), MessageType.LINK_JOIN, code=code)
    assert ok.type is MessageType.REPLY


def test_codes_expire_and_both_ends_are_told(world: World) -> None:
    new, code = opened(world)
    world.services.clock = lambda: NOW + CODE_TTL_MS
    late = ask(world, logged_in(world, 1, "alice"), MessageType.LINK_JOIN, code=code)
    assert error_code(late) == "link_code_invalid"
    world.services.links.sweep(NOW + CODE_TTL_MS)
    assert pushes(world, new, MessageType.LINK_CLOSED)[-1].params == {"reason": "expired"}
    # the new computer then has the login grace to log in, else it is closed
    world.services.links.sweep(NOW + CODE_TTL_MS + 29_999)
    assert not new.closed
    world.services.links.sweep(NOW + CODE_TTL_MS + 30_000)
    assert world.host.released == [(new, "no login after linking")]


def test_a_joined_link_lives_longer_than_a_code_but_not_forever(world: World) -> None:
    new, code = opened(world)
    old = logged_in(world, 1, "alice")
    ask(world, old, MessageType.LINK_JOIN, code=code)
    world.services.links.sweep(NOW + CODE_TTL_MS)
    assert pushes(world, old, MessageType.LINK_CLOSED) == []
    world.services.links.sweep(NOW + LINK_TTL_MS)
    assert pushes(world, old, MessageType.LINK_CLOSED)[-1].params == {"reason": "expired"}
    assert pushes(world, new, MessageType.LINK_CLOSED)[-1].params == {"reason": "expired"}


def test_wrong_codes_are_rate_limited_per_account(world: World) -> None:
    old = logged_in(world, 1, "alice")
    codes = [error_code(ask(world, old, MessageType.LINK_JOIN, code="0000000" + str(i)))
             for i in range(7)]  # fmt: skip
    assert codes[:5] == ["link_code_invalid"] * 5
    assert codes[5:] == ["too_many_attempts"] * 2


def test_open_links_are_capped_per_address(world: World) -> None:
    for _ in range(MAX_LINKS_PER_ADDRESS):
        opened(world)
    refused = ask(world, world.connection(), MessageType.LINK_OPEN, username="alice")
    assert error_code(refused) == "too_many_links"


def test_relayed_messages_are_capped(world: World) -> None:
    new, code = opened(world)
    ask(world, logged_in(world, 1, "alice"), MessageType.LINK_JOIN, code=code)
    for _ in range(MAX_MESSAGES):
        assert ask(world, new, MessageType.LINK_SEND, data=b"x").type is MessageType.REPLY
    assert error_code(ask(world, new, MessageType.LINK_SEND, data=b"x")) == "bad_request"


def test_sending_before_the_join_or_without_a_link_is_refused(world: World) -> None:
    new, _ = opened(world)
    assert error_code(ask(world, new, MessageType.LINK_SEND, data=b"x")) == "no_link"
    stranger = world.connection()
    assert error_code(ask(world, stranger, MessageType.LINK_SEND, data=b"x")) == "no_link"
    assert ask(world, stranger, MessageType.LINK_CLOSE, reason="cancelled").params == {}


def test_a_closed_connection_ends_its_link_and_the_other_end_hears_it(world: World) -> None:
    new, code = opened(world)
    old = logged_in(world, 1, "alice")
    ask(world, old, MessageType.LINK_JOIN, code=code)
    world.dispatcher.connection_closed(new, "peer closed the connection")
    assert pushes(world, old, MessageType.LINK_CLOSED)[-1].params == {"reason": "peer_gone"}
    assert len(world.services.links) == 0


def test_a_second_open_on_one_connection_replaces_the_first(world: World) -> None:
    new, first = opened(world)
    second = ask(world, new, MessageType.LINK_OPEN, username="alice").params["code"]
    old = logged_in(world, 1, "alice")
    assert error_code(ask(world, old, MessageType.LINK_JOIN, code=first)) == "link_code_invalid"
    assert ask(world, old, MessageType.LINK_JOIN, code=second).type is MessageType.REPLY
