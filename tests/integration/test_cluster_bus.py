"""The Redis bus and cluster presence against a real private redis-server."""

from __future__ import annotations

import itertools
import queue
import shutil
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from server.cluster.bus import Bus, BusSettings
from server.cluster.hints import (
    Hint,
    KickSession,
    MembershipChanged,
    NodeDown,
    PresenceChanged,
    RoomNews,
    UserNews,
    UsersNews,
)
from server.cluster.local_services import LocalRedis, private_root
from server.cluster.node_presence import NodePresence

TTL = 1.0
BEAT = 0.2
WAIT = 10.0
_prefixes = itertools.count(1)


class Node:
    """A bus plus what it received, as a server node would see it."""

    def __init__(self, url: str, prefix: str, name: str) -> None:
        self.hints: queue.Queue[Hint] = queue.Queue()
        self.reconnects: queue.Queue[float] = queue.Queue()
        self.bus = Bus(
            BusSettings(url=url, prefix=prefix, node_id=name, ttl=TTL, beat=BEAT),
            on_hint=self.hints.put,
            on_reconnect=lambda: self.reconnects.put(time.monotonic()),
        )

    def next_hint(self, timeout: float = WAIT) -> Hint:
        return self.hints.get(timeout=timeout)

    def next_hint_but_presence(self, timeout: float = WAIT) -> Hint:
        """The next hint that is not a PresenceChanged (those come after any rewrite)."""
        while isinstance(hint := self.next_hint(timeout), PresenceChanged):
            pass
        return hint

    def no_hint(self, within: float = 0.5) -> bool:
        try:
            self.hints.get(timeout=within)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def nodes(local_redis: LocalRedis) -> Iterator[Callable[[str], Node]]:
    prefix = f"t{next(_prefixes)}"
    made: list[Node] = []

    def make(name: str) -> Node:
        node = Node(local_redis.url, prefix, name)
        node.bus.start()
        made.append(node)
        return node

    yield make
    for node in made:
        node.bus.stop()


def eventually(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_user_news_reaches_only_the_node_holding_the_user(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("a"), nodes("b")
    b.bus.hold(42)
    eventually(lambda: a.bus.presence.nodes_of(42) == {"b"})
    a.bus.publish_to_user(UserNews(42))
    a.bus.publish_to_user(KickSession(42, "a", "10.0.0.1:4000"))
    assert b.next_hint() == UsersNews((42,))  # the news of a batch: one message a node
    assert b.next_hint() == KickSession(42, "a", "10.0.0.1:4000")
    assert a.no_hint()
    a.bus.publish_to_user(UserNews(7))  # held nowhere: goes nowhere
    assert b.no_hint() and a.no_hint(0.1)


def test_the_news_of_many_users_go_to_each_node_for_its_own_users(
    nodes: Callable[[str], Node],
) -> None:
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    for user_id in range(1, 41):
        (b if user_id % 2 else c).bus.hold(user_id)
    eventually(lambda: a.bus.presence.online(range(1, 41)).keys() == set(range(1, 41)))
    for user_id in [*range(1, 41), 99]:  # 99 is held nowhere
        a.bus.publish_to_user(UserNews(user_id))

    def got(node: Node, expected: set[int]) -> set[int]:
        seen: set[int] = set()
        while seen != expected:
            hint = node.next_hint_but_presence()
            assert isinstance(hint, UsersNews), hint
            seen |= set(hint.user_ids)
        return seen

    assert got(b, set(range(1, 41, 2))) == set(range(1, 41, 2))
    assert got(c, set(range(2, 41, 2))) == set(range(2, 41, 2))
    assert a.no_hint(0.1) and b.no_hint(0.1) and c.no_hint(0.1)


def test_room_news_and_membership_changes_reach_every_node(nodes: Callable[[str], Node]) -> None:
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    a.bus.publish_all(RoomNews(10_000_001, "a"))
    a.bus.publish_all(MembershipChanged((1, 2)))
    for node in (a, b, c):
        assert node.next_hint() == RoomNews(10_000_001, "a")
        assert node.next_hint() == MembershipChanged((1, 2))


def test_presence_across_nodes_and_release(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("a"), nodes("b")
    a.bus.hold(1)
    b.bus.hold(2)
    b.bus.hold(1)  # a second login during a takeover
    eventually(lambda: a.bus.presence.online([1, 2, 3]) == {1: {"a", "b"}, 2: {"b"}})
    assert a.bus.presence.snapshot() == {1: {"a", "b"}, 2: {"b"}}
    b.bus.release(1)
    eventually(lambda: a.bus.presence.online([1, 2, 3]) == {1: {"a"}, 2: {"b"}})


def test_a_dead_nodes_users_go_offline_within_seconds(
    nodes: Callable[[str], Node], local_redis: LocalRedis
) -> None:
    a = nodes("a")
    prefix = a.bus.settings.prefix
    # A node that held two users and then stopped heartbeating (as if SIGKILLed).
    client = redis.Redis.from_url(local_redis.url)
    dead = NodePresence(client, "dead", prefix, ttl=TTL)
    dead.heartbeat()
    dead.hold(5)
    dead.hold(6)
    assert a.bus.presence.online([5, 6]) == {5: {"dead"}, 6: {"dead"}}
    started = time.monotonic()
    assert a.next_hint() == NodeDown("dead", (5, 6))
    # Within seconds: the TTL, a few heartbeats, and slack for a loaded 2-core machine.
    assert time.monotonic() - started < TTL + 4.0
    assert a.bus.presence.online([5, 6]) == {}
    assert client.smembers(f"{prefix}:nodes") == {b"a"}
    client.close()


def test_a_graceful_stop_leaves_no_presence(nodes: Callable[[str], Node]) -> None:
    a, b = nodes("a"), nodes("b")
    b.bus.hold(9)
    eventually(lambda: a.bus.presence.online([9]) == {9: {"b"}})
    b.bus.stop()
    assert a.bus.presence.online([9]) == {}
    assert a.no_hint(TTL + 3 * BEAT)  # nothing to reap: no NodeDown


@pytest.fixture
def restartable_redis() -> Iterator[LocalRedis]:
    root = private_root("uchat-test-redis-restart-")
    server = LocalRedis(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_redis_restart_resubscribes_rewrites_presence_and_hints_flow_again(
    restartable_redis: LocalRedis,
) -> None:
    a = Node(restartable_redis.url, "r", "a")
    b = Node(restartable_redis.url, "r", "b")
    a.bus.start()
    b.bus.start()
    try:
        b.bus.hold(3)
        eventually(lambda: a.bus.presence.nodes_of(3) == {"b"})

        restartable_redis.kill()  # everything in Redis is gone
        time.sleep(0.5)
        restartable_redis.start()  # same port, empty

        # Both listeners resubscribe and ask their node to catch up from the database.
        assert a.reconnects.get(timeout=WAIT) and b.reconnects.get(timeout=WAIT)
        # b's next heartbeat writes its holdings back from memory and says so again
        # (a PresenceChanged each: a node that read presence before the rewrite would
        # think user 3 offline; test_cluster_faults checks that end to end).
        eventually(lambda: a.bus.presence.nodes_of(3) == {"b"})
        a.bus.publish_to_user(UserNews(3))
        assert b.next_hint_but_presence() == UsersNews((3,))
        b.bus.publish_all(RoomNews(1, "b"))
        assert a.next_hint_but_presence() == RoomNews(1, "b")
    finally:
        a.bus.stop()
        b.bus.stop()
