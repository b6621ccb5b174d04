"""Device links across two nodes (server/cluster/link_routes.py), without Redis: two sets
of real services, handlers and dispatchers, and a bus in memory that can lose hints.

Every hint crosses in its wire form (encode, then decode). What needs the clock (a join
answered too late, a link whose closing hint was lost) is checked here; the same flows
over real processes and Redis are in tests/integration/test_cluster_links.py.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.protocol.message import Message
from common.protocol.opcodes import MessageType
from server.cluster.hints import Hint, LinkClosed, LinkData, LinkJoin, LinkJoined, decode, encode
from server.cluster.link_routes import JOIN_WAIT_MS, LinkRoutes, code_digest, digest_key
from server.handlers import link_close, link_join, link_open, link_send
from server.links import CODE_TTL_MS, LINK_TTL_MS, MAX_MESSAGES, LinkRelay
from server.net.connection import Connection
from tests.unit.test_server_dispatch import IDENTITY, World, error_code, handler, login

NOW = 1_700_000_000_000
KEY = digest_key(IDENTITY)
HANDLERS = [
    link_open,
    link_join,
    link_send,
    link_close,
    handler(MessageType.LOGIN, False, login),
]


@dataclass
class Net:
    """The directory and the per-node channels of a two-node cluster, in memory."""

    directory: dict[str, str] = field(default_factory=dict)
    routes: dict[str, LinkRoutes] = field(default_factory=dict)
    queued: list[tuple[str, bytes]] = field(default_factory=list)
    #: Hint classes that are lost on the way (Redis dropped them).
    lost: set[type] = field(default_factory=set)
    #: Claims fail as if Redis were down.
    down: bool = False
    seen: list[Hint] = field(default_factory=list)

    def publish(self, node: str, hint: Hint) -> None:
        if type(hint) not in self.lost:
            self.queued.append((node, encode(hint)))

    def deliver(self) -> None:
        while self.queued:
            node, data = self.queued.pop(0)
            hint = decode(data)
            self.seen.append(hint)
            assert isinstance(hint, LinkJoin | LinkJoined | LinkData | LinkClosed)
            self.routes[node].handle(hint)


@dataclass
class MemoryBus:
    net: Net
    node_id: str

    def publish_to_node(self, node_id: str, hint: LinkJoined | LinkData | LinkClosed) -> None:
        self.net.publish(node_id, hint)

    def claim_link(self, digest: str, ttl_ms: int, done: Callable[[bool | None], None]) -> None:
        if self.net.down:
            done(None)
        elif self.net.directory.setdefault(digest, self.node_id) != self.node_id:
            done(False)
        else:
            done(True)

    def send_join(self, hint: LinkJoin, missing: Callable[[], None]) -> None:
        node = self.net.directory.get(hint.key)
        if node is None:
            missing()
        else:
            self.net.publish(node, hint)


class Node:
    """One node: a `World` (services, dispatcher) with its routes on the memory bus."""

    def __init__(self, tmp_path: Path, name: str, net: Net, codes: Iterator[str]) -> None:
        (tmp_path / name).mkdir()
        self.world = World(tmp_path / name, HANDLERS)
        self.net = net
        self._soon_calls: list[Callable[[], None]] = []
        self.clock = [NOW]
        self.world.services.clock = lambda: self.clock[0]
        self.world.services.links = LinkRelay(code_source=lambda: next(codes))
        self.routes = LinkRoutes(
            self.world.services.links,
            MemoryBus(net, name),
            KEY,
            self._soon,
            self.world.services.clock,
        )
        self.world.services.link_routes = self.routes
        net.routes[name] = self.routes

    def _soon(self, callback: Callable[[], None]) -> None:
        self._soon_calls.append(callback)

    def settle(self) -> None:
        """Run what the bus handed to the reactor and deliver hints until all is quiet."""
        while self._soon_calls or self.net.queued:
            calls, self._soon_calls = self._soon_calls, []
            for call in calls:
                call()
            self.net.deliver()

    def ask(self, connection: Connection, kind: MessageType, **params: object) -> Message:
        self.world.dispatcher.dispatch(connection, Message(kind, 5, dict(params)))
        self.settle()
        return self.world.sent(connection)[-1]

    def logged_in(self, user_id: int, username: str) -> Connection:
        connection = self.world.connection()
        self.ask(connection, MessageType.LOGIN, user_id=user_id, username=username)
        return connection

    def pushes(self, connection: Connection, kind: MessageType) -> list[Message]:
        return [m for m in self.world.sent(connection) if m.type is kind]

    def tick(self, ms: int) -> None:
        self.clock[0] += ms
        self.world.services.links.sweep(self.clock[0])
        self.routes.sweep(self.clock[0])


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def nodes(tmp_path: Path, net: Net) -> Iterator[tuple[Node, Node]]:
    codes = iter(f"{n:08d}" for n in range(10_000_000, 10_000_100))
    a, b = Node(tmp_path, "a", net, codes), Node(tmp_path, "b", net, codes)
    yield a, b
    a.world.close()
    b.world.close()


def linked(a: Node, b: Node, username: str = "alice") -> tuple[Connection, Connection]:
    """A new computer on A and the old one on B, joined."""
    new = a.world.connection()
    code = a.ask(new, MessageType.LINK_OPEN, username=username).params["code"]
    old = b.logged_in(1, username)
    answer = b.ask(old, MessageType.LINK_JOIN, code=code)
    assert answer.params == {"address": new.address}, answer
    assert a.pushes(new, MessageType.LINK_JOINED)[-1].params == {"address": old.address}
    return new, old


def test_a_link_joined_from_the_other_node_relays_both_ways_and_closes(
    nodes: tuple[Node, Node], net: Net
) -> None:
    a, b = nodes
    new, old = linked(a, b)
    a.ask(new, MessageType.LINK_SEND, data=b"\x01commit")
    assert b.pushes(old, MessageType.LINK_DATA)[-1].params == {"data": b"\x01commit"}
    b.ask(old, MessageType.LINK_SEND, data=b"\x02key")
    assert a.pushes(new, MessageType.LINK_DATA)[-1].params == {"data": b"\x02key"}
    b.ask(old, MessageType.LINK_CLOSE, reason="done")
    assert a.pushes(new, MessageType.LINK_CLOSED)[-1].params == {"reason": "done"}
    assert error_code(a.ask(new, MessageType.LINK_SEND, data=b"x")) == "no_link"
    assert error_code(b.ask(old, MessageType.LINK_SEND, data=b"x")) == "no_link"
    # Redis saw an HMAC of the code under the cluster's key, never the code itself
    expected = hmac.new(KEY, b"10000000", hashlib.sha256).hexdigest()
    join = net.seen[0]
    assert isinstance(join, LinkJoin) and join.key == expected
    assert list(net.directory) == [expected]
    assert "10000000" not in str(net.seen)


def test_the_opener_node_judges_the_account_and_single_use(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    new = a.world.connection()
    code = a.ask(new, MessageType.LINK_OPEN, username="alice").params["code"]
    bob = b.logged_in(2, "bob")
    assert error_code(b.ask(bob, MessageType.LINK_JOIN, code=code)) == "link_code_invalid"
    old = b.logged_in(1, "ALICE")  # compared in canonical form, on node A
    assert b.ask(old, MessageType.LINK_JOIN, code=code).type is MessageType.REPLY
    again = b.logged_in(1, "alice")
    assert error_code(b.ask(again, MessageType.LINK_JOIN, code=code)) == "link_code_invalid"
    assert error_code(b.ask(again, MessageType.LINK_JOIN, code="99999999")) == "link_code_invalid"


def test_an_opener_gone_or_closing_is_heard_on_the_joiners_node(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    new, old = linked(a, b)
    a.world.dispatcher.connection_closed(new, "peer closed the connection")
    a.settle()
    assert b.pushes(old, MessageType.LINK_CLOSED)[-1].params == {"reason": "peer_gone"}
    new, old = linked(a, b)
    a.ask(new, MessageType.LINK_CLOSE, reason="refused")
    assert b.pushes(old, MessageType.LINK_CLOSED)[-1].params == {"reason": "refused"}


def test_a_joiner_gone_is_heard_on_the_openers_node(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    new, old = linked(a, b)
    b.world.dispatcher.connection_closed(old, "peer closed the connection")
    b.settle()
    assert a.pushes(new, MessageType.LINK_CLOSED)[-1].params == {"reason": "peer_gone"}


def test_the_joiners_messages_are_counted_on_both_nodes(nodes: tuple[Node, Node], net: Net) -> None:
    a, b = nodes
    new, old = linked(a, b)
    ref = next(h.ref for h in net.seen if isinstance(h, LinkJoined))
    # data claiming to come from a node that is not the joiner's is not relayed
    net.publish("a", LinkData(ref, "c", b"forged"))
    a.settle()
    assert a.pushes(new, MessageType.LINK_DATA) == []
    for _ in range(MAX_MESSAGES):
        assert b.ask(old, MessageType.LINK_SEND, data=b"x").type is MessageType.REPLY
    assert error_code(b.ask(old, MessageType.LINK_SEND, data=b"x")) == "bad_request"
    # a node that forwarded more anyway: the opener's node drops what is past the count
    net.publish("a", LinkData(ref, "b", b"one too many"))
    a.settle()
    assert len(a.pushes(new, MessageType.LINK_DATA)) == MAX_MESSAGES


def test_a_join_answered_too_late_is_refused_and_the_link_ended(
    nodes: tuple[Node, Node], net: Net
) -> None:
    a, b = nodes
    new = a.world.connection()
    code = a.ask(new, MessageType.LINK_OPEN, username="alice").params["code"]
    old = b.logged_in(1, "alice")
    net.lost.add(LinkJoined)
    b.world.dispatcher.dispatch(old, Message(MessageType.LINK_JOIN, 9, {"code": code}))
    b.settle()
    assert b.world.sent(old)[-1].request_id != 9  # waiting for node A
    b.tick(JOIN_WAIT_MS)
    assert error_code(b.world.sent(old)[-1]) == "link_code_invalid"
    # node A joined it meanwhile; the next message from there finds no link on B
    net.lost.clear()
    a.ask(new, MessageType.LINK_SEND, data=b"\x01commit")
    assert a.pushes(new, MessageType.LINK_CLOSED)[-1].params == {"reason": "peer_gone"}
    assert b.pushes(old, MessageType.LINK_DATA) == []


def test_time_limits_are_the_opener_nodes_and_heard_on_the_other(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    new = a.world.connection()
    code = a.ask(new, MessageType.LINK_OPEN, username="alice").params["code"]
    a.tick(CODE_TTL_MS)
    old = b.logged_in(1, "alice")
    assert error_code(b.ask(old, MessageType.LINK_JOIN, code=code)) == "link_code_invalid"
    new, old = linked(a, b)
    a.tick(LINK_TTL_MS - 1)
    a.settle()
    assert b.pushes(old, MessageType.LINK_CLOSED) == []
    a.tick(1)
    a.settle()
    assert b.pushes(old, MessageType.LINK_CLOSED)[-1].params == {"reason": "expired"}
    assert a.pushes(new, MessageType.LINK_CLOSED)[-1].params == {"reason": "expired"}


def test_a_lost_close_still_ends_the_link_at_its_time_limit(
    nodes: tuple[Node, Node], net: Net
) -> None:
    a, b = nodes
    new, old = linked(a, b)
    net.lost.add(LinkClosed)
    a.tick(LINK_TTL_MS)
    assert a.pushes(new, MessageType.LINK_CLOSED)[-1].params == {"reason": "expired"}
    assert b.pushes(old, MessageType.LINK_CLOSED) == []
    b.tick(LINK_TTL_MS)
    assert b.pushes(old, MessageType.LINK_CLOSED)[-1].params == {"reason": "expired"}
    assert error_code(b.ask(old, MessageType.LINK_SEND, data=b"x")) == "no_link"


def test_a_code_another_node_holds_is_replaced(nodes: tuple[Node, Node], net: Net) -> None:
    a, _ = nodes
    net.directory[code_digest(KEY, "10000000")] = "b"  # the next code is node B's already
    new = a.world.connection()
    assert a.ask(new, MessageType.LINK_OPEN, username="alice").params["code"] == "10000001"
    # OPEN_ATTEMPTS taken codes in a row: the node gives up for now, and no link is left
    for code in ("10000002", "10000003", "10000004"):
        net.directory[code_digest(KEY, code)] = "b"
    assert error_code(a.ask(new, MessageType.LINK_OPEN, username="alice")) == "server_busy"
    assert a.world.services.links.link_of(new) is None
    assert a.ask(new, MessageType.LINK_OPEN, username="alice").params["code"] == "10000005"


def test_with_redis_down_a_code_works_on_its_own_node_only(
    nodes: tuple[Node, Node], net: Net
) -> None:
    a, b = nodes
    net.down = True
    new = a.world.connection()
    code = a.ask(new, MessageType.LINK_OPEN, username="alice").params["code"]
    there = b.logged_in(1, "alice")
    assert error_code(b.ask(there, MessageType.LINK_JOIN, code=code)) == "link_code_invalid"
    here = a.logged_in(1, "alice")
    assert a.ask(here, MessageType.LINK_JOIN, code=code).params == {"address": new.address}
