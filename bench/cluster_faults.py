"""SIGKILLs of one cluster node under traffic: lost, duplicated, time to reconnect.

Two nodes on a private PostgreSQL and redis-server. Four real `ChatClient`s (sealing,
outbox, local stores), every one listing both nodes (`client.servers`): two at home
on each node. Four threads send without stop: alice <-> bob 1:1 (they sit on different
nodes) and carol and dave into a room of all four. `--kills` times, one node (A and B
in turn) is SIGKILLed; the time until each of its clients is logged in on the other
node is measured; the node is restarted on its port and its clients go home (a normal
logout/login) before the next kill. At the end, after every outbox drained, each
message is counted by id at each recipient (`message` events of its clients):

- lost: a message its sender's store says the cluster acknowledged (`sent` or
  `delivered`) that a recipient never got;
- duplicated: a message a recipient was shown more than once.

    python -m bench cluster_faults [--kills 10]
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cluster_common import PrivateCluster
from bench.common import (
    PASSWORD,
    BenchError,
    ServerProcess,
    base_parser,
    check,
    emit,
    run,
    summarize,
)
from client.core import ChatClient, ChatMessage
from client.core.event_types import Event, FriendRequest, MessageReceived
from common.crypto.keys import KdfParams
from common.errors import UchatError

SCENARIO = "cluster_faults"
FAST_KEYS = KdfParams(n=2**10)
WAIT_S = 30.0
ACKNOWLEDGED = ("sent", "delivered")


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> float:
    """Poll `condition` every 10 ms; returns the seconds it took."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)
    return time.perf_counter() - started


@dataclass
class Member:
    """One account: its home node, its current client, what all its clients were shown."""

    name: str
    home: str
    folder: Path
    client: ChatClient | None = None
    shown: Counter[str] = field(default_factory=Counter)
    requests_from: set[str] = field(default_factory=set)

    @property
    def live(self) -> ChatClient:
        assert self.client is not None
        return self.client

    def on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self.shown[event.message.message_id] += 1
        elif isinstance(event, FriendRequest):
            self.requests_from.add(event.username)

    def pump(self) -> None:
        if self.client is not None:
            self.client.process_events(100_000)

    def open(self, home: ServerProcess, other: ServerProcess, register: bool = False) -> None:
        """A new client on this member's folder, `home` first and `other` as fallback."""
        if self.client is not None:
            self.pump()
            self.client.close()
        self.client = ChatClient(
            home.host,
            home.port,
            self.folder,
            home.fingerprint,
            timeout=10.0,
            key_kdf=FAST_KEYS,
            reconnect_min=0.1,
            reconnect_max=0.5,
            servers=[(other.host, other.port)],
        )
        self.client.add_listener(self.on_event)
        if register:
            self.client.register(self.name, PASSWORD, f"{self.name}@bench.example.org", "other", 30)
        self.client.login(self.name, PASSWORD)

    def on(self, node: ServerProcess) -> bool:
        client = self.client
        return client is not None and client.connected and client.port == node.port


class Sender(threading.Thread):
    """Sends text to one target without stop; `lock` is held for each send."""

    def __init__(self, member: Member, target: str | int, label: str, pause: float) -> None:
        super().__init__(name=f"bench-{label}", daemon=True)
        self.member, self.target, self.label, self.pause = member, target, label, pause
        self.lock = threading.Lock()
        self.sent: list[str] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        for number in itertools.count():
            if self.stopping.is_set():
                return
            with self.lock:
                try:
                    message = self.member.live.send_text(self.target, f"{self.label} {number}")
                except UchatError as exc:
                    self.errors.append(str(exc))
                    return
                self.sent.append(message.message_id)
            time.sleep(self.pause)

    def statuses(self) -> dict[str, str]:
        history: list[ChatMessage] = self.member.live.history(self.target, limit=10_000_000)
        return {message.message_id: message.status for message in history}


class Drill:
    """The nodes, the members and the senders of one run."""

    def __init__(self, cluster: PrivateCluster, root: Path, args: Any) -> None:
        self.cluster = cluster
        self.args = args
        self.nodes = {
            "a": cluster.start_node("a", args.log_level),
            "b": cluster.start_node("b", args.log_level),
        }
        self.members = [
            Member(name, home, root / name)
            for name, home in (("alice", "a"), ("bob", "b"), ("carol", "a"), ("dave", "b"))
        ]
        self.senders: list[Sender] = []
        self.recipients: dict[str, list[Member]] = {}
        self.reconnect_s: list[float] = []
        self.kills_done = 0

    def other(self, name: str) -> str:
        return "b" if name == "a" else "a"

    def set_up(self) -> None:
        """Everyone registers on A (friends and the room made there), then goes home."""
        alice, bob, carol, dave = self.members
        a, b = self.nodes["a"], self.nodes["b"]
        for member in self.members:
            member.open(a, b, register=True)
        alice.live.add_friend(bob.name)
        wait_for(lambda: self._request_seen(bob, alice.name), "the friend request")
        bob.live.answer_friend_request(alice.name, True)
        wait_for(lambda: self._is_friend(alice, bob.name), "the friendship")
        room = int(alice.live.create_room("fault drill").id)
        for member in (bob, carol, dave):
            member.live.join_room(room)
        for member in self.members:
            self.go_home(member)
        pause = self.args.pause
        self.senders = [
            Sender(alice, bob.name, "alice to bob", pause),
            Sender(bob, alice.name, "bob to alice", pause),
            Sender(carol, room, "carol to the room", pause),
            Sender(dave, room, "dave to the room", pause),
        ]
        self.recipients = {
            "alice to bob": [bob],
            "bob to alice": [alice],
            "carol to the room": [alice, bob, dave],
            "dave to the room": [alice, bob, carol],
        }

    @staticmethod
    def _request_seen(member: Member, name: str) -> bool:
        member.pump()
        return name in member.requests_from

    @staticmethod
    def _is_friend(member: Member, name: str) -> bool:
        return any(c.id == name for c in member.live.refresh_contacts())

    def go_home(self, member: Member) -> None:
        member.open(self.nodes[member.home], self.nodes[self.other(member.home)])

    def traffic(self, more: int) -> None:
        counts = [len(s.sent) for s in self.senders]
        wait_for(
            lambda: (
                self._failed()
                or all(len(s.sent) >= n + more for s, n in zip(self.senders, counts, strict=True))
            ),
            "traffic from every sender",
        )
        if self._failed():
            raise BenchError(f"a sender stopped: {[s.errors for s in self.senders]}")

    def _failed(self) -> bool:
        return any(s.errors for s in self.senders)

    def kill_once(self, victim: str) -> None:
        survivor = self.nodes[self.other(victim)]
        moved = [m for m in self.members if m.home == victim]
        self.traffic(10)
        node = self.nodes[victim]
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        killed_at = time.perf_counter()
        for member in moved:
            wait_for(lambda m=member: m.on(survivor), f"{member.name} on the other node")
            self.reconnect_s.append(time.perf_counter() - killed_at)
        self.traffic(5)
        self.nodes[victim] = self.cluster.restart_node(node, victim, self.args.log_level)
        for sender in self.senders:
            sender.lock.acquire()
        try:
            for member in moved:
                self.go_home(member)
        finally:
            for sender in self.senders:
                sender.lock.release()
        self.kills_done += 1

    def count(self) -> dict[str, Any]:
        for sender in self.senders:
            sender.stopping.set()
        for sender in self.senders:
            sender.join(WAIT_S)

        def unacknowledged() -> int:
            return sum(
                1
                for s in self.senders
                for message_id, status in s.statuses().items()
                if message_id in set(s.sent) and status not in ACKNOWLEDGED
            )

        wait_for(lambda: unacknowledged() == 0, "every outbox drained", timeout=60)

        def missing() -> int:
            """Not in the recipient's store (a client may take a message in just before a
            logout, its event then unseen: the store is what it acknowledged)."""
            lost = 0
            for s in self.senders:
                for member in self.recipients[s.label]:
                    chat = s.member.name if isinstance(s.target, str) else s.target
                    history = member.live.history(chat, limit=10_000_000)
                    stored = {m.message_id for m in history if not m.outgoing}
                    lost += sum(1 for message_id in s.sent if message_id not in stored)
            return lost

        with_grace = 0.0
        with contextlib.suppress(BenchError):  # what is missing is counted just below
            with_grace = wait_for(lambda: missing() == 0, "every message at every recipient", 60)
        time.sleep(1.0)  # anything shown twice would show up now
        lost = missing()
        duplicated = sum(
            1 for member in self.members for shown in member.shown.values() if shown > 1
        )
        acknowledged = sum(len(s.sent) for s in self.senders)
        deliveries = sum(len(s.sent) * len(self.recipients[s.label]) for s in self.senders)
        return {
            "kills": self.kills_done,
            "messages_acknowledged": acknowledged,
            "deliveries_expected": deliveries,
            "lost": lost,
            "duplicated": duplicated,
            "last_delivery_after_traffic_s": round(with_grace, 3),
            "reconnect_s": summarize(self.reconnect_s, scale=1.0),
            "sender_errors": [s.errors for s in self.senders if s.errors],
        }

    def close(self) -> None:
        for member in self.members:
            if member.client is not None:
                member.client.close()


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=900.0)
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs (A and B in turn)")
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between sends")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)


def scenario(args: Any) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="uchat-bench-faults-"))
    try:
        with PrivateCluster() as cluster:
            cluster.start_services()
            drill = Drill(cluster, root, args)
            try:
                drill.set_up()
                for sender in drill.senders:
                    sender.start()
                for kill in range(args.kills):
                    drill.kill_once("a" if kill % 2 == 0 else "b")
                counted = drill.count()
            finally:
                for sender in drill.senders:
                    sender.stopping.set()
                drill.close()
            tracebacks = sum(node.log_count("Traceback") for node in drill.nodes.values())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    counted["server_tracebacks"] = tracebacks
    checks = [
        check("acknowledged messages lost", counted["lost"], 0, "msgs", False),
        check("messages shown twice", counted["duplicated"], 0, "msgs", False),
        check("kills done", counted["kills"], args.kills, "kills", True),
    ]
    params = {k: v for k, v in vars(args).items() if k not in ("log_level", "json")}
    notes = [
        "reconnect_s: from the SIGKILL to the moment each client of the killed node was"
        " logged in on the other node (seconds; clients retry every 0.1-0.5 s)",
        "counted by message id at every recipient, from the client's own message events",
        f"pid {os.getpid()}: four ChatClients in this process, two nodes, PostgreSQL, Redis",
    ]
    return emit(SCENARIO, params, {"cluster_faults": counted}, checks, notes)
