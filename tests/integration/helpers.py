"""Shared pieces of the client-vs-real-server integration suite.

Fixture bodies live here as plain generator functions; a test module turns the ones it
needs into fixtures with one line each (`accounts = pytest.fixture(name="accounts")(
make_accounts)`), which keeps this module importable as an ordinary helper:

- `serve_one_module`: one real server process per test module (tests that do not
  interfere share it; every test makes users with unique names);
- `make_accounts`: makes `ChatClient`s in the test's tmp folder, registers and logs in
  fresh users, and closes every client at the end;
- `make_proxies`: `TcpProxy` factory, every proxy closed at the end.

Every client gets an `EventLog`: a listener that keeps every event it has seen, so a
test can wait for one kind of event without throwing the others away (plain
`wait_for_event` discards what does not match). `TcpProxy` sits between a client and
the server so a test can cut, refuse or black-hole the connection at a chosen moment.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from client.core import ChatClient, ChatMessage, Event
from client.core.connection import Connection
from common.crypto.keys import KdfParams
from common.errors import RequestError
from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from tests.integration.conftest import RunningServer, start_server

#: How long a test waits for something that should happen "at once" on loopback.
WAIT = 10.0
#: How long a test watches for something that must NOT happen.
QUIET = 0.6
PASSWORD = "correct horse 7"
FAST_KEYS = KdfParams(n=2**10)


class Endpoint(Protocol):
    """Anything a client can connect to: a `RunningServer` or a `TcpProxy`."""

    host: str
    port: int


def unique_name(prefix: str) -> str:
    """A fresh valid username (letters, digits, underscore; at most 32 characters)."""
    return f"{prefix}_{secrets.token_hex(4)}"


def wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a condition'}")
        time.sleep(0.01)


# ---------------------------------------------------------------- events


class EventLog:
    """Every event a client produced, kept in order; draining is done on the test thread."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.events: list[Event] = []
        client.add_listener(self.events.append)

    def pump(self) -> None:
        self.client.process_events()

    def mark(self) -> int:
        """A position in the log: pass it as `since` to look only at later events."""
        self.pump()
        return len(self.events)

    def matching(
        self,
        kind: str,
        where: Callable[[Event], bool] | None = None,
        *,
        since: int = 0,
        **match: Any,
    ) -> list[Event]:
        """Events seen so far of `kind` whose data has `match` (and pass `where`)."""
        self.pump()
        return [
            event
            for event in self.events[since:]
            if event.kind == kind
            and all(event.data.get(key) == value for key, value in match.items())
            and (where is None or where(event))
        ]

    def wait(
        self,
        kind: str,
        where: Callable[[Event], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = WAIT,
        since: int = 0,
        **match: Any,
    ) -> list[Event]:
        """Wait until `count` matching events were seen; returns them all (oldest first)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(kind, where, since=since, **match)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(e.kind, _short(e.data)) for e in self.events[-15:]]
                raise AssertionError(
                    f"expected {count} {kind!r} event(s) {match or ''}, got {len(found)}; "
                    f"last events: {seen}"
                )
            time.sleep(0.01)

    def wait_one(
        self,
        kind: str,
        where: Callable[[Event], bool] | None = None,
        *,
        since: int = 0,
        **match: Any,
    ) -> Event:
        return self.wait(kind, where, since=since, **match)[0]

    def wait_reconnected(self, since: int, timeout: float = 15.0) -> None:
        """Wait for the connection to drop and come back, both after position `since`."""
        lost = self.wait_one("connection", since=since, state="disconnected", timeout=timeout)
        self.wait("connection", since=self.events.index(lost), state="connected", timeout=timeout)

    def messages(self) -> list[ChatMessage]:
        """Every received message (the `message` events), in arrival order."""
        return [event.data["message"] for event in self.matching("message")]

    def wait_messages(self, count: int, timeout: float = WAIT) -> list[ChatMessage]:
        """Wait until `count` messages arrived in all; returns every message so far."""
        self.wait("message", count=count, timeout=timeout)
        return self.messages()

    def message(self, message_id: str, timeout: float = WAIT) -> ChatMessage:
        """Wait for the message with this id."""
        found = self.wait(
            "message", lambda e: e.data["message"].message_id == message_id, timeout=timeout
        )
        return found[0].data["message"]

    def status(self, message_id: str, status: str, timeout: float = WAIT) -> None:
        self.wait("message_status", message_id=message_id, status=status, timeout=timeout)

    def stays_quiet(
        self, kind: str, where: Callable[[Event], bool] | None = None, within: float = QUIET
    ) -> None:
        """Assert that no new matching event shows up for `within` seconds."""
        before = len(self.matching(kind, where))
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.matching(kind, where)
            assert len(now) == before, f"unexpected {kind!r} event: {_short(now[-1].data)}"


def _short(data: dict[str, Any]) -> str:
    text = repr(data)
    return text if len(text) < 160 else text[:157] + "..."


def added_contact(contact_id: str) -> Callable[[Event], bool]:
    """`contact_added` / `contact_removed` predicate for a friend name or a room id."""
    return lambda event: event.data["contact"].id == contact_id


# ---------------------------------------------------------------- users and clients


@dataclass
class User:
    """One registered account and the client currently logged in with it."""

    name: str
    password: str
    data_dir: Path
    client: ChatClient
    events: EventLog


@dataclass
class Accounts:
    """Makes clients in `root`, registers and logs in users; closes everything at the end."""

    root: Path
    made: list[ChatClient] = field(default_factory=list)

    def client(self, endpoint: Endpoint, data_dir: Path, **kwargs: Any) -> ChatClient:
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("reconnect_min", 0.1)
        kwargs.setdefault("reconnect_max", 0.5)
        kwargs.setdefault("key_kdf", FAST_KEYS)
        made = ChatClient(endpoint.host, endpoint.port, data_dir, **kwargs)
        self.made.append(made)
        return made

    def user(
        self,
        endpoint: Endpoint,
        prefix: str = "u",
        *,
        name: str | None = None,
        login: bool = True,
        **kwargs: Any,
    ) -> User:
        """A freshly registered user (logged in unless `login=False`), in its own folder."""
        username = name or unique_name(prefix)
        data_dir = self.root / f"client-{username}"
        made = self.client(endpoint, data_dir, **kwargs)
        user = User(username, PASSWORD, data_dir, made, EventLog(made))
        made.register(username, PASSWORD, f"{secrets.token_hex(6)}@example.org", "female", 21)
        if login:
            made.login(username, PASSWORD)
        return user

    def reopen(self, user: User, endpoint: Endpoint, *, login: bool = True, **kwargs: Any) -> User:
        """Close the user's client and start a new one on the same data folder."""
        user.client.close()
        user.client = self.client(endpoint, user.data_dir, **kwargs)
        user.events = EventLog(user.client)
        if login:
            user.client.login(user.name, user.password)
        return user

    def close_all(self) -> None:
        for made in self.made:
            made.close()


def befriend(a: User, b: User) -> None:
    """`a` asks, `b` accepts; returns once both clients were told."""
    a.client.add_friend(b.name)
    b.events.wait("friend_request", username=a.name)
    b.client.answer_friend_request(a.name, True)
    a.events.wait("contact_added", added_contact(b.name))
    b.events.wait("contact_added", added_contact(a.name))


def contact_of(user: User, contact_id: str) -> Any:
    """The user's `Contact` with this id (a friend's name or a room id), or None."""
    return next((c for c in user.client.contacts() if c.id == contact_id), None)


# ---------------------------------------------------------------- raw wire access


@contextlib.contextmanager
def raw_connection(
    endpoint: RunningServer, pushes: list[Message] | None = None
) -> Iterator[Connection]:
    """The product's `Connection` without a `ChatClient`: to send what a client would not,
    and to see exactly what the server pushes (appended to `pushes`), before any
    client-side de-duplication."""
    collected = pushes if pushes is not None else []
    connection = Connection(
        endpoint.host,
        endpoint.port,
        on_push=lambda _c, message: collected.append(message),
        on_lost=lambda _c, _e: None,
        expected_fingerprint=endpoint.fingerprint,
        timeout=5.0,
    )
    connection.open()
    try:
        yield connection
    finally:
        connection.close()


def refused(action: Callable[..., object], *args: Any) -> RequestError:
    """Call a `ChatClient` method that must be refused; returns the error."""
    with pytest.raises(RequestError) as error:
        action(*args)
    return error.value


def befriended_pair(endpoint: Endpoint, accounts: Accounts) -> tuple[User, User]:
    """alice and bob, logged in and friends."""
    alice = accounts.user(endpoint, "alice")
    bob = accounts.user(endpoint, "bob")
    befriend(alice, bob)
    return alice, bob


def refusal(connection: Connection, kind: MessageType, params: dict[str, Any]) -> RequestError:
    """Send a request that must be refused; returns the error."""
    with pytest.raises(RequestError) as refused:
        connection.request(kind, params)
    return refused.value


# ---------------------------------------------------------------- servers


def serve_one_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for a whole test module (fast password hashing, default limits)."""
    running = start_server(tmp_path_factory.mktemp("shared") / "server")
    yield running
    if running.is_alive():
        running.stop()


def make_accounts(tmp_path: Path) -> Iterator[Accounts]:
    made = Accounts(tmp_path)
    yield made
    made.close_all()


def restart_on_same_port(
    start: Callable[..., RunningServer], old: RunningServer, env: dict[str, str] | None = None
) -> RunningServer:
    """Start the server again on the same data folder and port (`server_factory` style)."""
    restarted = start(env=env, name=old.data_dir.name, extra_args=("--port", str(old.port)))
    assert restarted.fingerprint == old.fingerprint
    return restarted


# ---------------------------------------------------------------- a cuttable TCP link


class TcpProxy:
    """Forwards loopback connections to a server; the test decides when the link fails.

    Modes: `forward` (normal); `blackhole` keeps forwarding client -> server but
    swallows everything the server sends back (a reply that never arrives); `refuse`
    accepts and closes new connections at once. `cut()` closes every live link.
    `upstream_bytes` counts, per link, the bytes the client sent.
    """

    def __init__(self, target: Endpoint) -> None:
        self.target = (target.host, target.port)
        self.host = "127.0.0.1"
        self._listener = socket.create_server((self.host, 0))
        self.port: int = self._listener.getsockname()[1]
        self.mode = "forward"
        self.upstream_bytes: list[int] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept_loop, name="test-proxy", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                downstream.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [downstream, upstream]
                link = len(self.upstream_bytes)
                self.upstream_bytes.append(0)
            threading.Thread(
                target=self._pump, args=(downstream, upstream, link), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, None), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, link: int | None) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if link is not None:
                    with self._lock:
                        self.upstream_bytes[link] += len(data)
                elif self.mode == "blackhole":
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every live connection (both ends), as a dropped network would."""
        with self._lock:
            live, self._sockets = self._sockets, []
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()


def make_proxies() -> Iterator[Callable[[Endpoint], TcpProxy]]:
    """`proxies(server)` -> a TcpProxy to it; all closed after the test."""
    made: list[TcpProxy] = []

    def make(target: Endpoint) -> TcpProxy:
        proxy = TcpProxy(target)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


# ---------------------------------------------------------------- a sender to SIGKILL

SENDER_READY = "READY"
SENDER_SENDING = "SENDING"


def sender_command(host: str, port: int, data_dir: Path, username: str, peer: str) -> list[str]:
    """Command line of `sender_process_main`, run from the repository root."""
    code = (
        "import sys; from tests.integration.helpers import sender_process_main; "
        "sender_process_main(sys.argv[1:])"
    )
    return [sys.executable, "-c", code, host, str(port), str(data_dir), username, peer]


def sender_process_main(argv: list[str]) -> None:
    """A sender to be killed: logs in, pins the peer's key, prints READY, and on one
    line of stdin sends one text (printing SENDING first) and waits for the reply."""
    host, port, data_dir, username, peer = argv
    client = ChatClient(host, int(port), Path(data_dir), timeout=60.0, key_kdf=FAST_KEYS)
    client.login(username, PASSWORD)
    client.safety_number(peer)  # fetch and pin the peer's certificate now
    print(SENDER_READY, flush=True)
    text = sys.stdin.readline().strip()
    print(SENDER_SENDING, flush=True)
    client.send_text(peer, text)
    print("ACKNOWLEDGED", flush=True)  # only if the reply got through: the test fails then
    time.sleep(60)
