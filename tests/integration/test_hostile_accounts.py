"""Accounts under hostile load, against a real server: guessing, flooding, look-alikes.

The server sees each client's address, so the stranger here connects from another
loopback address (127.0.0.2, 127.0.0.3: all of 127/8 is this machine) while the owner
stays on 127.0.0.1, the address it logged in from before.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from common.channel import SecureChannel
from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from tests.integration.conftest import RunningServer, ServerFactory
from tests.integration.helpers import PASSWORD, Accounts, make_accounts, raw_connection

accounts = pytest.fixture(name="accounts")(make_accounts)
REPLIES = (MessageType.REPLY, MessageType.ERROR)


class SourceClient:
    """A blocking client whose socket is bound to a chosen source address."""

    def __init__(self, server: RunningServer, source: str) -> None:
        self.sock = socket.create_connection(server.address, timeout=10, source_address=(source, 0))
        self.channel = SecureChannel.client(server.fingerprint)
        self.sock.sendall(self.channel.initiate())
        self.next_id = 1
        self.answers: dict[int, Message] = {}
        while not self.channel.established:
            self._read()
        self.sock.sendall(self.channel.data_to_send())

    def _read(self) -> None:
        data = self.sock.recv(256 * 1024)
        if not data:
            raise ConnectionError("server closed the connection")
        for message in self.channel.receive_data(data):
            if message.type in REPLIES:
                self.answers[message.request_id] = message

    def send(self, kind: MessageType, params: dict[str, Any]) -> int:
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.sock.sendall(self.channel.send(Message(kind, request_id, params)))
        return request_id

    def answer(self, request_id: int) -> Message:
        while request_id not in self.answers:
            self._read()
        return self.answers.pop(request_id)

    def code(self, kind: MessageType, params: dict[str, Any]) -> str:
        """'ok' for a REPLY, else the ERROR's code."""
        message = self.answer(self.send(kind, params))
        return "ok" if message.type is MessageType.REPLY else str(message.params["code"])


@contextmanager
def client_from(server: RunningServer, source: str) -> Iterator[SourceClient]:
    client = SourceClient(server, source)
    try:
        yield client
    finally:
        client.sock.close()


def login_code(server: RunningServer, name: str, password: str) -> str:
    with raw_connection(server) as connection:
        try:
            connection.request(MessageType.LOGIN, {"username": name, "password": password})
        except Exception as exc:  # RequestError carries the code
            return str(getattr(exc, "code", exc))
    return "ok"


@pytest.fixture
def locking_server(server_factory: ServerFactory) -> RunningServer:
    """Locks that outlast the test: 30 s after the sixth failure, doubling."""
    return server_factory(env={"UCHAT_SERVER_LOGIN_BACKOFF_BASE": "30"})


def test_a_stranger_guessing_cannot_lock_the_owner_out(
    locking_server: RunningServer, accounts: Accounts
) -> None:
    owner = accounts.user(locking_server, "owner")  # logs in from 127.0.0.1
    owner.client.logout()
    with client_from(locking_server, "127.0.0.2") as stranger:
        codes = [
            stranger.code(MessageType.LOGIN, {"username": owner.name.upper(), "password": f"g{i}x"})
            for i in range(30)
        ]
    assert codes[:6] == ["login_failed"] * 6 and set(codes[6:]) == {"too_many_attempts"}
    for _ in range(3):  # the owner, from the usual address, again and again
        assert login_code(locking_server, owner.name, PASSWORD) == "ok"
    with client_from(locking_server, "127.0.0.3") as elsewhere:  # a new address is locked
        code = elsewhere.code(MessageType.LOGIN, {"username": owner.name, "password": PASSWORD})
    assert code == "too_many_attempts"


def test_pipelined_guesses_cannot_outrun_the_lock(
    locking_server: RunningServer, accounts: Accounts
) -> None:
    owner = accounts.user(locking_server, "victim", login=False)
    with client_from(locking_server, "127.0.0.2") as stranger:
        guesses = [f"wrong-{i}-x" for i in range(60)] + [PASSWORD]
        ids = [
            stranger.send(MessageType.LOGIN, {"username": owner.name, "password": guess})
            for guess in guesses
        ]
        answers = [stranger.answer(request_id) for request_id in ids]
    codes = [str(a.params.get("code", "ok")) for a in answers]
    assert codes.count("login_failed") <= 6  # five allowed; the sixth sets the lock
    assert codes[-1] != "ok"  # the right password, sent after the flood, is refused too
    assert "internal_error" not in codes


def test_many_honest_first_logins_from_one_address_are_not_locked_out(
    server_factory: ServerFactory, accounts: Accounts
) -> None:
    """An office behind one NAT address: thirty colleagues log in at the same moment,
    each for the first time from there. Their hashes queue one after another; each is
    counted only when its turn comes and forgiven when it succeeds, so none of them is
    refused, although thirty pre-counted failures would pass the address's limit."""
    server = server_factory(env={"UCHAT_SERVER_REGISTER_PER_ADDRESS": "100"})
    colleagues = [accounts.user(server, "office", login=False) for _ in range(30)]
    clients = [SourceClient(server, "127.0.0.4") for _ in colleagues]
    try:
        ids = [
            client.send(MessageType.LOGIN, {"username": user.name, "password": PASSWORD})
            for client, user in zip(clients, colleagues, strict=True)
        ]
        answers = [client.answer(i) for client, i in zip(clients, ids, strict=True)]
    finally:
        for client in clients:
            client.sock.close()
    codes = [str(answer.params.get("code", "ok")) for answer in answers]
    assert codes == ["ok"] * len(colleagues)


def test_a_registration_flood_from_one_address_is_cut_short(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"UCHAT_SERVER_REGISTER_PER_ADDRESS": "3"})
    from common.crypto.certs import build_csr
    from common.crypto.keys import generate_user_keys

    keys = generate_user_keys()
    with client_from(server, "127.0.0.2") as flooder:
        ids = []
        for index in range(12):
            name = f"flood{index}"
            form: dict[str, Any] = {"username": name, "password": PASSWORD}
            form["email"] = f"{name}@example.org"
            form |= {"sex": "other", "age": 30, "csr": build_csr(name, form["email"], keys)}
            ids.append(flooder.send(MessageType.REGISTER, form))
        codes = [str(flooder.answer(i).params.get("code", "ok")) for i in ids]
    assert codes.count("ok") == 3
    assert set(codes) <= {"ok", "too_many_registrations", "server_busy"}
    with client_from(server, "127.0.0.3") as honest:
        name = "honest1"
        form = {"username": name, "password": PASSWORD}
        form["email"] = f"{name}@example.org"
        form |= {"sex": "other", "age": 30, "csr": build_csr(name, form["email"], keys)}
        assert honest.code(MessageType.REGISTER, form) == "ok"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("\u0430lice", "username_confusable"),
        ("\uff41\uff4c\uff49\uff43\uff45", "username_taken"),
        ("alice\u034f", "username_invisible"),
        ("alice\ufe0f", "username_invisible"),
        ("alice\u3164", "username_invisible"),
        ("ALICE", "username_taken"),
    ],
)
def test_look_alikes_of_alice_are_refused_by_the_server(
    server: RunningServer, name: str, code: str
) -> None:
    from common.crypto.certs import build_csr
    from common.crypto.keys import generate_user_keys

    keys = generate_user_keys()

    def form(username: str, email: str) -> dict[str, Any]:
        values: dict[str, Any] = {"username": username, "password": PASSWORD, "email": email}
        return values | {"sex": "other", "age": 30, "csr": build_csr(username, email, keys)}

    with client_from(server, "127.0.0.1") as client:
        assert client.code(MessageType.REGISTER, form("alice", "alice@example.org")) in (
            "ok",
            "username_taken",
        )
        assert client.code(MessageType.REGISTER, form(name, "other@example.org")) == code
        search = client.code(MessageType.SEARCH_USERS, {"query": "lice"})
        assert search == "not_authenticated"  # and nothing else was created


def test_the_client_fetches_every_page_of_friend_requests(
    server_factory: ServerFactory, accounts: Accounts
) -> None:
    from tests.integration.helpers import wait_until

    server = server_factory(env={"UCHAT_SERVER_FRIEND_REQUESTS_PAGE": "2"})
    alice = accounts.user(server, "alice", login=False)
    askers = [accounts.user(server, "asker") for _ in range(5)]
    for asker in askers:
        asker.client.add_friend(alice.name)
    alice.client.login(alice.name, PASSWORD)
    expected = sorted(asker.name for asker in askers)
    wait_until(
        lambda: sorted(alice.client.pending_friend_requests()) == expected,
        what="all five requests, two per page",
    )
