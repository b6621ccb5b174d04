"""The bus between nodes (Redis pub/sub, redis-py): hints out, hints in, presence kept.

Nothing here ever blocks the reactor: `publish_*`, `hold` and `release` only queue
work; one sender thread drains the queue in batches (one pipeline per batch) and
heartbeats; one listener thread reads the subscription and hands each hint to
`on_hint` (the server passes a function that queues it onto the reactor).

Channels: `P:all` (every node: room news, membership changes, dead nodes) and
`P:node:<id>` (this node only: news for a user it holds, kicks, device-link hints).
Device links also use a directory of code digests (`LinkDirectory`): a claim or a join
lookup is one round trip on the sender thread whose outcome goes back through a
callback (called exactly once, also when Redis fails or the queue is full; the node
hands it to the reactor). When Redis goes away
both threads retry with backoff; redis-py resubscribes on reconnect, and then
`on_reconnect` runs so the node re-reads its users' cursors (hints sent meanwhile are
lost, which only delays: the database is the truth). Dead nodes are found by every
node's sender thread; the one that claims a dead node broadcasts `NodeDown`.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from server.cluster.hints import (
    MAX_USERS_PER_HINT,
    BadHint,
    Hint,
    KickSession,
    LinkClosed,
    LinkData,
    LinkJoin,
    LinkJoined,
    MembershipChanged,
    NodeDown,
    PresenceChanged,
    Relay,
    RoomNews,
    UserNews,
    UsersNews,
    decode,
    encode,
)
from server.cluster.link_directory import LinkDirectory
from server.cluster.node_presence import DEFAULT_TTL, NodePresence

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 100_000  # queued operations; beyond it hints are dropped (they only delay)
BATCH = 512
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
SOCKET_TIMEOUT = 5.0


def new_node_id() -> str:
    """Unique per process start, readable in logs: host, pid, random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class BusSettings:
    url: str
    prefix: str = "uchat"
    node_id: str = ""
    ttl: float = DEFAULT_TTL
    #: Heartbeat and dead-node check period; a few per TTL.
    beat: float = 1.0


class _Stop:
    """Wakes the sender thread to end."""


@dataclass(frozen=True)
class _Claim:
    """Record this node as the holder of a link code digest, then `done(outcome)`:
    True recorded, False held by another node, None Redis failed."""

    digest: str
    ttl_ms: int
    done: Callable[[bool | None], None]


@dataclass(frozen=True)
class _Join:
    """Send `hint` to the node holding its code digest; `missing()` if there is none
    (or Redis failed)."""

    hint: LinkJoin
    missing: Callable[[], None]


PeerHint = LinkJoined | LinkData | LinkClosed


class Bus:
    """One node's connection to the cluster bus."""

    def __init__(
        self,
        settings: BusSettings,
        on_hint: Callable[[Hint], None],
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.node_id = settings.node_id or new_node_id()
        self._on_hint = on_hint
        self._on_reconnect = on_reconnect
        self._client = redis.Redis.from_url(
            settings.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
        )
        self.presence = NodePresence(self._client, self.node_id, settings.prefix, settings.ttl)
        self._directory = LinkDirectory(self._client, self.node_id, settings.prefix)
        self._outbox: queue.Queue[tuple[str, object] | _Stop] = queue.Queue(OUTBOX_LIMIT)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.dropped = 0  # hints dropped because the outbox was full

    # -- channels --------------------------------------------------------------------

    @property
    def all_channel(self) -> str:
        return f"{self.settings.prefix}:all"

    def node_channel(self, node_id: str) -> str:
        return f"{self.settings.prefix}:node:{node_id}"

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        """Register, subscribe, and start the threads (Redis must answer now)."""
        self.presence.heartbeat()
        pubsub = self._client.pubsub(ignore_subscribe_messages=False)
        pubsub.subscribe(self.all_channel, self.node_channel(self.node_id))
        for name, target in (("bus-listen", self._listen), ("bus-send", self._send_loop)):
            args = (pubsub,) if target == self._listen else ()
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, leave: bool = True) -> None:
        """End the threads; `leave` removes this node's presence at once (graceful)."""
        self._stopping.set()
        self._outbox.put(_Stop())
        for thread in self._threads:
            thread.join(SOCKET_TIMEOUT * 2)
        self._threads.clear()
        if leave:
            try:
                self.presence.leave()
            except redis.RedisError as exc:
                log.warning("bus: could not leave cleanly: %s", exc)
        self._client.close()

    # -- what the reactor calls (never blocks) ----------------------------------------

    def publish_all(self, hint: RoomNews | MembershipChanged | PresenceChanged | NodeDown) -> None:
        self._queue("all", hint)

    def publish_to_user(self, hint: UserNews | KickSession) -> None:
        """To every node holding the user (looked up on the sender thread; the news of
        one batch go as one `UsersNews` a node)."""
        self._queue("user", hint)

    def publish_to_users(self, hint: Relay) -> None:
        """Once to each node holding any of the hint's users."""
        self._queue("users", hint)

    def publish_to_node(self, node_id: str, hint: PeerHint) -> None:
        """To node `node_id` only (a device link's other end)."""
        self._queue("node", (node_id, hint))

    def claim_link(self, digest: str, ttl_ms: int, done: Callable[[bool | None], None]) -> None:
        """Record this node as the holder of a link code digest (`_Claim`)."""
        if not self._queue("claim", _Claim(digest, ttl_ms, done)):
            done(None)

    def send_join(self, hint: LinkJoin, missing: Callable[[], None]) -> None:
        """To the node holding the hint's code digest, looked up on the sender thread."""
        if not self._queue("join", _Join(hint, missing)):
            missing()

    def hold(self, user_id: int) -> None:
        self._queue("hold", user_id)

    def release(self, user_id: int) -> None:
        self._queue("release", user_id)

    def _queue(self, kind: str, item: object) -> bool:
        try:
            self._outbox.put_nowait((kind, item))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    # -- sender thread -----------------------------------------------------------------

    def _send_loop(self) -> None:
        backoff = BACKOFF_FIRST
        next_beat = 0.0
        pending: list[tuple[str, object]] = []
        while not self._stopping.is_set():
            timeout = max(0.0, next_beat - time.monotonic())
            if not pending:
                pending = self._directory_work(self._take(timeout))
            try:
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self.settings.beat
                self._send(pending)
                pending = []
                backoff = BACKOFF_FIRST
            except redis.RedisError as exc:
                log.warning("bus: redis unavailable (%s); retrying", exc)
                # Holdings are rewritten on the first heartbeat after Redis is back;
                # queued hints are dropped: they only delay, the cursors catch up.
                pending = [item for item in pending if item[0] in ("hold", "release")]
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                next_beat = 0.0

    def _take(self, timeout: float) -> list[tuple[str, object]]:
        items: list[tuple[str, object]] = []
        try:
            first = self._outbox.get(timeout=timeout) if timeout > 0 else self._outbox.get_nowait()
        except queue.Empty:
            return items
        while True:
            if isinstance(first, _Stop):
                return items
            items.append(first)
            if len(items) >= BATCH:
                return items
            try:
                first = self._outbox.get_nowait()
            except queue.Empty:
                return items

    def _directory_work(self, items: list[tuple[str, object]]) -> list[tuple[str, object]]:
        """Do the batch's link claims and join lookups (each answers its callback once,
        also when Redis fails); return the rest of the batch."""
        rest: list[tuple[str, object]] = []
        for kind, item in items:
            if isinstance(item, _Claim):
                try:
                    outcome: bool | None = self._directory.claim(item.digest, item.ttl_ms)
                except redis.RedisError as exc:
                    log.warning("bus: a link code could not be recorded: %s", exc)
                    outcome = None
                self._call(item.done, outcome)
            elif isinstance(item, _Join):
                try:
                    node = self._directory.find(item.hint.key)
                    if node is not None:
                        self._client.publish(self.node_channel(node), encode(item.hint))
                except redis.RedisError as exc:
                    log.warning("bus: a link join could not be forwarded: %s", exc)
                    node = None
                if node is None:
                    self._call(item.missing)
            else:
                rest.append((kind, item))
        return rest

    def _beat(self) -> None:
        if self.presence.heartbeat():
            log.info("bus: presence rewritten (Redis had lost it)")
            # Another node that resubscribed and read presence before this rewrite
            # thinks these users went offline: say again that they are here.
            pipe = self._client.pipeline(transaction=False)
            for user_id in self.presence.held:
                pipe.publish(self.all_channel, encode(PresenceChanged(user_id, self.node_id, True)))
            pipe.execute()
        for node in self.presence.dead_nodes():
            users = self.presence.reap(node)
            if users:  # a node caught leaving gracefully (or idle) has nobody to announce
                log.info("bus: node %s stopped heartbeating; %d users offline", node, len(users))
                self._client.publish(self.all_channel, encode(NodeDown(node, users)))

    def _send(self, items: list[tuple[str, object]]) -> None:
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        news = [item.user_id for kind, item in items if isinstance(item, UserNews)]
        for node, user_ids in self._holders(news).items():
            for start in range(0, len(user_ids), MAX_USERS_PER_HINT):
                chunk = tuple(user_ids[start : start + MAX_USERS_PER_HINT])
                pipe.publish(self.node_channel(node), encode(UsersNews(chunk)))
        for kind, item in items:
            if isinstance(item, UserNews):
                continue  # sent above, one message a node
            if kind == "all" and isinstance(
                item, RoomNews | MembershipChanged | PresenceChanged | NodeDown
            ):
                pipe.publish(self.all_channel, encode(item))
            elif kind == "user" and isinstance(item, KickSession):
                for node in self.presence.nodes_of(item.user_id):
                    pipe.publish(self.node_channel(node), encode(item))
            elif kind == "node" and isinstance(item, tuple):
                node, hint = item
                pipe.publish(self.node_channel(node), encode(hint))
            elif kind == "users" and isinstance(item, Relay):
                holders = self.presence.online(item.user_ids)
                for node in sorted(set().union(*holders.values())) if holders else ():
                    pipe.publish(self.node_channel(node), encode(item))
            elif kind == "hold" and isinstance(item, int):
                self.presence.hold(item)
            elif kind == "release" and isinstance(item, int):
                self.presence.release(item)
        pipe.execute()

    def _holders(self, user_ids: list[int]) -> dict[str, list[int]]:
        """{node: the users of `user_ids` it holds}: two Redis round trips for all."""
        if not user_ids:
            return {}
        by_node: dict[str, list[int]] = {}
        for user_id, nodes in self.presence.online(user_ids).items():
            for node in nodes:
                by_node.setdefault(node, []).append(user_id)
        return by_node

    # -- listener thread ---------------------------------------------------------------

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        backoff = BACKOFF_FIRST
        channels = 2
        confirmed = channels  # subscribed in start()
        while not self._stopping.is_set():
            try:
                message = pubsub.get_message(timeout=0.2)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if confirmed:
                    log.warning("bus: subscription lost (%s); resubscribing", exc)
                confirmed = 0
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            if message is None:
                continue
            if message["type"] == "subscribe":
                if confirmed < channels:
                    confirmed += 1
                    if confirmed == channels:
                        log.info("bus: resubscribed; catching up from the database")
                        self._call(self._on_reconnect)
                continue
            if message["type"] != "message":
                continue
            try:
                hint = decode(message["data"])
            except BadHint as exc:
                log.warning("bus: dropped a hint: %s", exc)
                continue
            self._call(self._on_hint, hint)
        pubsub.close()

    @staticmethod
    def _call(function: Callable[..., None], *args: object) -> None:
        try:
            function(*args)
        except Exception:
            log.exception("bus: a hint callback failed")
