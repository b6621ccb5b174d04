"""Faults of a two-node cluster, with real processes: SIGKILLed nodes and a Redis restart.

Every client lists both nodes (`client.servers`). Messages flow 1:1 (both ways) and in
a room whose members sit on both nodes, sent by threads that never stop while a node is
killed. After each kill the killed node's clients must be on the other node; the node
is restarted on its port and its clients go home before the next kill. At the end
every message is counted by id at every recipient: each one arrived exactly once.
"""

from __future__ import annotations

import itertools
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from client.core import ChatMessage, Event
from server.cluster.local_services import LocalPostgres, LocalRedis, private_root
from server.launcher import RunningServer, start_server
from tests.integration.helpers import (
    QUIET,
    Accounts,
    User,
    befriend,
    contact_of,
    make_accounts,
    wait_until,
)

accounts = pytest.fixture(name="accounts")(make_accounts)
#: Redis database numbers apart from test_cluster_nodes' (they share one redis-server).
_redis_dbs = itertools.count(9)
KILLS = 3
SEND_PAUSE = 0.01
ACKNOWLEDGED = ("sent", "delivered")


class Cluster:
    """Named nodes on one database and one Redis URL; kill and restart on the same port."""

    def __init__(self, root: Path, dsn: str, url: str) -> None:
        self.root = root
        self.passphrase = root / "ca-passphrase"
        self.passphrase.write_text("a passphrase for the fault drills\n")
        self.passphrase.chmod(0o600)
        self.env = {
            "UCHAT_SERVER_DATABASE_URL": dsn,
            "UCHAT_SERVER_REDIS_URL": url,
            "UCHAT_SERVER_CA_PASSPHRASE_FILE": str(self.passphrase),
        }
        self.nodes: dict[str, RunningServer] = {}
        self.retired: list[RunningServer] = []

    def start(self, name: str, port: int = 0) -> RunningServer:
        extra = ("--port", str(port)) if port else ()
        env = {**self.env, "UCHAT_SERVER_NODE_ID": name}
        running = start_server(self.root / name, env, extra)
        self.nodes[name] = running
        return running

    def kill(self, name: str) -> RunningServer:
        node = self.nodes[name]
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        self.retired.append(node)
        return node

    def restart(self, name: str) -> RunningServer:
        old = self.nodes[name]
        fresh = self.start(name, old.port)
        assert fresh.fingerprint == old.fingerprint
        return fresh

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.is_alive():
                node.stop()

    def errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """ERROR lines of every node's log (one log per name, appended across restarts)."""
        return [
            line
            for node in self.nodes.values()
            for line in node.log_text().splitlines()
            if " ERROR " in line and not any(text in line for text in allowed)
        ]


def _redis_url(server: LocalRedis) -> str:
    url = f"redis://127.0.0.1:{server.port}/{next(_redis_dbs) % 16}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def cluster(
    tmp_path: Path,
    local_postgres: LocalPostgres,
    local_redis: LocalRedis,
    fresh_pg_dsn: Callable[[], str],
) -> Iterator[Cluster]:
    del local_postgres
    made = Cluster(tmp_path, fresh_pg_dsn(), _redis_url(local_redis))
    yield made
    made.stop_all()
    assert made.errors() == []


@dataclass
class Member:
    """A user, the node it calls home, and every event its clients ever produced."""

    user: User
    home: str
    seen: list[Event] = field(default_factory=list)

    def listen(self) -> None:
        self.user.client.add_listener(self.seen.append)

    def drain(self) -> None:
        self.user.client.process_events(100_000)

    def stored(self, conversation: str | int) -> set[str]:
        """Ids of the messages of one conversation in this account's local store."""
        history = self.user.client.history(conversation, limit=1_000_000)
        return {message.message_id for message in history if not message.outgoing}

    def received(self) -> Counter[str]:
        self.drain()
        return Counter(
            event.data["message"].message_id for event in self.seen if event.kind == "message"
        )


class Sender(threading.Thread):
    """Sends to one target without stop; `lock` is held during each send."""

    def __init__(self, member: Member, target: str | int, label: str) -> None:
        super().__init__(name=f"test-traffic-{label}", daemon=True)
        self.member = member
        self.target = target
        self.label = label
        self.lock = threading.Lock()
        self.results: list[ChatMessage] = []
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        for number in itertools.count():
            if self.stopping.is_set():
                return
            with self.lock:
                try:
                    sent = self.member.user.client.send_text(self.target, f"{self.label} {number}")
                except Exception as exc:  # reported by the test's assertion
                    self.errors.append(exc)
                    return
                self.results.append(sent)
            time.sleep(SEND_PAUSE)

    def count(self) -> int:
        return len(self.results)

    def unacknowledged(self) -> list[str]:
        """Sent messages whose stored status is not yet `sent` (the outbox still has them).

        The `ChatMessage`s in `results` are snapshots: one queued while the node was
        gone says `sending` for ever; the store has the status the replay gave it.
        """
        history = self.member.user.client.history(self.target, limit=1_000_000)
        status = {message.message_id: message.status for message in history}
        return [m.message_id for m in self.results if status.get(m.message_id) not in ACKNOWLEDGED]


def _traffic_grows(senders: list[Sender], by: int, when: str) -> None:
    """Wait until every sender sent `by` more messages; say who did not, and why."""
    counts = [sender.count() for sender in senders]
    try:
        wait_until(
            lambda: all(s.count() >= n + by for s, n in zip(senders, counts, strict=True)),
            timeout=20,
        )
    except AssertionError:
        stuck = [(s.label, s.count() - n, s.errors) for s, n in zip(senders, counts, strict=True)]
        raise AssertionError(f"traffic {when}: (sender, sent, errors) {stuck}") from None


def _on(member: Member, node: RunningServer) -> bool:
    client = member.user.client
    return client.connected and (client.host, client.port) == (node.host, node.port)


def _go_home(accounts: Accounts, member: Member, cluster: Cluster) -> None:
    """Log the member in again on its home node, the other node listed as the fallback."""
    member.drain()
    home = cluster.nodes[member.home]
    other = cluster.nodes["b" if member.home == "a" else "a"]
    accounts.reopen(member.user, home, servers=[(other.host, other.port)])
    member.listen()


def test_sigkilled_nodes_under_traffic_lose_and_duplicate_nothing(
    cluster: Cluster, accounts: Accounts
) -> None:
    node_a = cluster.start("a")
    cluster.start("b")
    # Everyone starts on A (friend requests and room joins are simplest there).
    alice = Member(accounts.user(node_a, "alice"), "a")
    bob = Member(accounts.user(node_a, "bob"), "b")
    carol = Member(accounts.user(node_a, "carol"), "a")
    dave = Member(accounts.user(node_a, "dave"), "b")
    befriend(alice.user, bob.user)
    room = int(alice.user.client.create_room("fault drill").id)
    for member in (bob, carol, dave):
        member.user.client.join_room(room)
    members = [alice, bob, carol, dave]
    for member in members:
        _go_home(accounts, member, cluster)
    assert contact_of(bob.user, str(room)) is not None
    warm = alice.user.client.send_text(bob.user.name, "warm-up")  # pins certificates
    wait_until(lambda: warm.message_id in bob.received(), what="the warm-up at bob")

    senders = [
        Sender(alice, bob.user.name, "alice to bob"),
        Sender(bob, alice.user.name, "bob to alice"),
        Sender(carol, room, "carol to the room"),
        Sender(dave, room, "dave to the room"),
    ]
    recipients = {
        senders[0]: [bob],
        senders[1]: [alice],
        senders[2]: [alice, bob, dave],
        senders[3]: [alice, bob, carol],
    }
    marks: list[tuple[str, list[int]]] = []
    for sender in senders:
        sender.start()
    try:
        for kill in range(KILLS):
            victim, survivor = ("a", "b") if kill % 2 == 0 else ("b", "a")
            moved = [m for m in members if m.home == victim]
            assert all(_on(m, cluster.nodes[victim]) for m in moved)
            _traffic_grows(senders, 10, "before the kill")
            marks.append(("kill", [s.count() for s in senders]))
            cluster.kill(victim)
            target = cluster.nodes[survivor]

            def all_moved(t: RunningServer = target, ms: list[Member] = moved) -> bool:
                return all(_on(m, t) for m in ms)

            wait_until(
                all_moved,
                timeout=30,
                what=f"the clients of node {victim} on node {survivor}",
            )
            _traffic_grows(senders, 5, "after the move")
            marks.append(("moved", [s.count() for s in senders]))
            cluster.restart(victim)
            for sender in senders:
                sender.lock.acquire()
            try:
                for member in moved:
                    _go_home(accounts, member, cluster)
                marks.append(("home", [s.count() for s in senders]))
            finally:
                for sender in senders:
                    sender.lock.release()
    finally:
        for sender in senders:
            sender.stopping.set()
        for sender in senders:
            sender.join(30)
    assert [s.errors for s in senders] == [[]] * len(senders)
    wait_until(
        lambda: not any(s.unacknowledged() for s in senders),
        timeout=30,
        what="every message acknowledged by a node",
    )

    def conversation(sender: Sender, member: Member) -> str | int:
        return sender.member.user.name if isinstance(sender.target, str) else sender.target

    def missing() -> list[str]:
        """Not in the recipient's store: what its client took in (and acknowledged)
        may arrive just before a logout, its event then unseen; the store has it."""
        return [
            f"{sender.label}: {message.message_id} at {member.user.name}"
            for sender, at in recipients.items()
            for member in at
            for stored in [member.stored(conversation(sender, member))]
            for message in sender.results
            if message.message_id not in stored
        ]

    try:
        wait_until(lambda: not missing(), timeout=30)
    except AssertionError:
        lost = missing()
        where = {m.message_id: i for s in senders for i, m in enumerate(s.results)}
        at = [where[item.split(": ")[1].split(" ")[0]] for item in lost]
        raise AssertionError(
            f"{len(lost)} message(s) never arrived, e.g. {lost[:5]}; their positions {at};"
            f" sent {[s.count() for s in senders]}; counts at kill/moved/home {marks}"
        ) from None
    time.sleep(QUIET)  # a repeat still on its way would show up now
    duplicated = [
        (member.user.name, message_id)
        for member in members
        for message_id, times in member.received().items()
        if times > 1
    ]
    assert duplicated == []
    assert len(cluster.retired) == KILLS
    assert all(s.count() >= 15 * KILLS for s in senders)


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    """A redis-server this test may kill and start again (the suite's shared one stays)."""
    root = private_root("uchat-test-redis-fault-")
    server = LocalRedis(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_a_message_sent_while_redis_is_down_reaches_the_other_node_after_it(
    tmp_path: Path,
    local_postgres: LocalPostgres,
    fresh_pg_dsn: Callable[[], str],
    own_redis: LocalRedis,
    accounts: Accounts,
) -> None:
    del local_postgres
    cluster = Cluster(tmp_path, fresh_pg_dsn(), own_redis.url)
    try:
        node_a, node_b = cluster.start("a"), cluster.start("b")
        alice = accounts.user(node_a, "alice")
        bob = accounts.user(node_a, "bob")
        befriend(alice, bob)
        accounts.reopen(bob, node_b)
        alice.events.wait("presence", username=bob.name, online=True)

        own_redis.kill()  # pub/sub, presence: all gone
        during = alice.client.send_text(bob.name, "while the bus is down")
        alice.events.status(during.message_id, "sent")
        own_redis.start()  # the same port, empty

        assert bob.events.message(during.message_id, timeout=20).text == "while the bus is down"
        after = alice.client.send_text(bob.name, "after the bus came back")
        assert bob.events.message(after.message_id).text == "after the bus came back"
        back = bob.client.send_text(alice.name, "and back")
        assert alice.events.message(back.message_id).text == "and back"
        # B rewrote its presence at its next heartbeat: bob is still online for alice.
        wait_until(
            lambda: {c.id: c for c in alice.client.refresh_contacts()}[bob.name].online,
            what="bob online for alice after the restart",
        )
        counts = Counter(m.message_id for m in bob.events.messages())
        assert counts[during.message_id] == counts[after.message_id] == 1
    finally:
        cluster.stop_all()
    # Losing the bus is logged (warnings), never as an error.
    assert cluster.errors() == []
