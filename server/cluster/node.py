"""A server node in cluster mode: what it tells the other nodes, what it does on theirs.

The database (PostgreSQL) is the truth; the bus only says where to look.
- After each turn's commit: news for users held on other nodes (`UserNews`), room news
  (`RoomNews`), presence changes of this node's users (`PresenceChanged`), and a
  membership change (`MembershipChanged`) when friendships or rooms changed.
- On a hint (always on the reactor thread, queued there by the bus): re-read the named
  users' unacknowledged deliveries past what this node pushed them (`catch_up`),
  update the presence mirror and tell local friends, or end a session whose account
  logged in on another node (`KickSession`, one login per account cluster-wide).
- Pushes that are not messages (friend requests and answers, contacts added or removed,
  room membership events and join requests) for users held by other nodes go as
  `Relay` hints after the commit; the receiving node writes them to its sessions.
- Device links whose two computers reach different nodes: `LinkRoutes`
  (server/cluster/link_routes.py), by `Link*` hints between the two nodes.
- On a bus reconnect and every `SWEEP_SECONDS`: catch up from the database anyway, so
  a lost hint delays a message by at most that long and never loses it.
Duplicates are possible (a row pushed live by this node and again by a catch-up before
it was acknowledged); message ids make them harmless, as after any reconnect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from common.config import ServerConfig
from common.crypto.certs import ServerIdentity
from common.errors import UchatError
from common.protocol.message import Message, decode_message, encode_message, push
from common.protocol.opcodes import MessageType
from server.broadcast import send_to_users
from server.cluster.bus import Bus, BusSettings
from server.cluster.hints import (
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
)
from server.cluster.identity import cluster_identity
from server.cluster.link_routes import LinkRoutes, digest_key
from server.dispatch import Context, Services
from server.handlers._backlog import frames_of, push_backlog
from server.handlers._wire import encode_new_messages
from server.logging_setup import log_failure
from server.net.connection import Connection
from server.sessions import KICK_REASON, Sessions
from server.storage import delivery_sweep, friends, messages, rooms, users
from server.storage.database import StorageUnavailable
from server.storage.postgres import PostgresDatabase

log = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0
#: The sweep looks this many rows below its last mark again: identity values can
#: commit out of order across nodes, and acknowledged rows cost nothing to skip.
SWEEP_OVERLAP = 10_000
#: Pushes another node may deliver for this one: state the database holds, announced.
#: Messages go by cursors (UserNews/RoomNews), presence by PresenceChanged, kicks by
#: KickSession: never relayed, so never delivered twice.
RELAYED = frozenset(
    {
        MessageType.FRIEND_REQUEST,
        MessageType.FRIEND_REQUEST_REFUSED,
        MessageType.CONTACT_ADDED,
        MessageType.CONTACT_REMOVED,
        MessageType.ROOM_MEMBER_EVENT,
        MessageType.ROOM_JOIN_REQUEST,
        MessageType.ROOM_JOIN_REFUSED,
    }
)
#: Encoded pushes above this are not relayed (the hint, in base64, must stay under
#: MAX_HINT_BYTES); the client reads that state at its next contact refresh.
RELAY_MAX_BYTES = 40 * 1024
#: Distinct node sets kept for sharing (see `NodeSets`); far more than a cluster has.
NODE_SETS_LIMIT = 1_024


def _nothing(user_id: int) -> None:
    del user_id


def _came(user_id: int, address: str) -> None:
    del user_id, address


def _no_relay(user_ids: tuple[int, ...], body: bytes) -> None:
    del user_ids, body


class NodeSets:
    """One shared frozenset per distinct set of node ids (and one string per node id).

    Every user held by the other node of a two-node cluster maps to the same set: a set
    of its own per user (and a node-id string decoded from each user's hint) cost a
    node about 300 bytes for every user of the other nodes. Bounded: past
    NODE_SETS_LIMIT distinct sets (node ids change at every restart) sharing starts
    again from empty, which only costs memory, never correctness.
    """

    def __init__(self) -> None:
        self._sets: dict[frozenset[str], frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def shared(self, nodes: Iterable[str]) -> frozenset[str]:
        found = frozenset(nodes)
        kept = self._sets.get(found)
        if kept is not None:
            return kept
        if len(self._sets) >= NODE_SETS_LIMIT:
            self._sets.clear()
        ids = frozenset(self._node_id(node) for node in found)
        self._sets[ids] = ids
        return ids

    def _node_id(self, node: str) -> str:
        """The id string already kept in some set, else `node` itself."""
        for kept in self._sets:
            for known in kept:
                if known == node:
                    return known
        return node

    def with_node(self, nodes: frozenset[str], node: str) -> frozenset[str]:
        return nodes if node in nodes else self.shared((*nodes, node))

    def without_node(self, nodes: frozenset[str], node: str) -> frozenset[str]:
        return self.shared(nodes - {node}) if node in nodes else nodes


class ClusterSessions(Sessions):
    """Local sessions, plus a mirror of who is online on the other nodes."""

    spans_nodes = True

    def __init__(self) -> None:
        super().__init__()
        #: user id -> other nodes holding the user (kept by `ClusterNode` from hints),
        #: never empty; the sets are shared (`NodeSets`).
        self.elsewhere: dict[int, frozenset[str]] = {}
        self.came_online: Callable[[int, str], None] = _came
        self.went_offline: Callable[[int], None] = _nothing
        self.relay_out: Callable[[tuple[int, ...], bytes], None] = _no_relay

    def bind(self, connection: Connection, user_id: int, username: str) -> Connection | None:
        new_here = self.connection_for(user_id) is None
        replaced = super().bind(connection, user_id, username)
        if new_here:
            self.came_online(user_id, connection.address)
        return replaced

    def unbind(self, connection: Connection) -> bool:
        user_id = connection.user_id
        gone = super().unbind(connection)
        if gone and user_id is not None:
            self.went_offline(user_id)
        return gone

    def is_online(self, user_id: int) -> bool:
        return super().is_online(user_id) or bool(self.elsewhere.get(user_id))

    def relay(self, user_ids: Sequence[int], message: Message) -> bool:
        """Queue the push for those of `user_ids` online on other nodes (see RELAYED)."""
        if message.type not in RELAYED:
            return False
        remote = tuple(user for user in user_ids if self.elsewhere.get(user))
        if not remote:
            return False
        body = encode_message(message)
        if len(body) > RELAY_MAX_BYTES:
            log.info("cluster: a %s push is too large to relay", message.type.name)
            return False
        self.relay_out(remote, body)
        return True


def open_cluster_storage(config: ServerConfig) -> tuple[PostgresDatabase, ServerIdentity]:
    """Connect to PostgreSQL (migrating it) and load the cluster's one identity."""
    import psycopg

    passphrase = read_passphrase(Path(config.ca_passphrase_file))
    try:
        db = PostgresDatabase.connect(config.database_url)
    except psycopg.Error as exc:
        raise UchatError(f"cannot use PostgreSQL: {exc}") from exc
    try:
        identity = cluster_identity(
            db,
            passphrase,
            Path(config.ca_key_file) if config.ca_key_file else None,
            Path(config.ca_cert_file) if config.ca_cert_file else None,
        )
    except BaseException:
        db.close()
        raise
    return db, identity


def read_passphrase(path: Path) -> bytes:
    """The CA passphrase from its file (the owner's only); a final newline is not part."""
    try:
        if path.stat().st_mode & 0o077:
            raise UchatError(f"passphrase file {path} is readable by others: chmod 600 it")
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise UchatError(f"cannot read the CA passphrase file {path}: {exc.strerror}") from exc


class ClusterNode:
    """This node's side of the cluster; everything but the bus threads is reactor-only."""

    def __init__(
        self,
        services: Services,
        call_soon: Callable[[Callable[[], None]], None],
        call_later: Callable[[float, Callable[[], None]], object],
        settings: BusSettings,
    ) -> None:
        sessions = services.sessions
        if not isinstance(sessions, ClusterSessions):
            raise TypeError("a cluster node needs ClusterSessions")
        self._services = services
        self._sessions = sessions
        self._call_soon = call_soon
        self._call_later = call_later
        self.bus = Bus(settings, on_hint=self._hint_arrived, on_reconnect=self._reconnected)
        self.node_id = self.bus.node_id
        self._after_commit: list[PresenceChanged] = []
        self._kicks: list[KickSession] = []
        self._relays: list[Relay] = []
        self._pushed_upto: dict[int, int] = {}
        self._node_sets = NodeSets()
        self._generation = services.db.membership_generation
        self._swept_to = 0
        # Hints from the bus thread waiting for the reactor, handled together: one
        # scheduled call, one step, one catch-up per user however many hints named it.
        self._hints_lock = threading.Lock()
        self._waiting_hints: list[Hint] = []
        sessions.came_online = self._came_online
        sessions.went_offline = self._went_offline
        sessions.relay_out = self._relay_after_commit
        self.links = LinkRoutes(
            services.links, self.bus, digest_key(services.identity), call_soon, services.clock
        )
        services.link_routes = self.links

    def start(self) -> None:
        """Join the bus (Redis must answer) and load who is online elsewhere."""
        import redis

        try:
            self.bus.start()
            self._sessions.elsewhere = self._others(self.bus.presence.snapshot())
        except redis.RedisError as exc:
            raise UchatError(f"cannot use Redis at {self.bus.settings.url}: {exc}") from exc
        self._swept_to = delivery_sweep.newest_row(self._services.db)
        self._call_later(SWEEP_SECONDS, self._sweep)
        log.info("cluster node %s joined", self.node_id)

    def stop(self) -> None:
        self.bus.stop()

    def _others(self, holders: dict[int, set[str]]) -> dict[int, frozenset[str]]:
        shared = self._node_sets.shared
        found = {user: nodes - {self.node_id} for user, nodes in holders.items()}
        return {user: shared(nodes) for user, nodes in found.items() if nodes}

    # -- this node's own events (reactor thread) ---------------------------------------

    def _came_online(self, user_id: int, address: str) -> None:
        self.bus.hold(user_id)
        if self._sessions.elsewhere.get(user_id):
            # One login per account across the cluster: the older session goes.
            self._kicks.append(KickSession(user_id, self.node_id, address))
        self._after_commit.append(PresenceChanged(user_id, self.node_id, True))

    def _went_offline(self, user_id: int) -> None:
        self.bus.release(user_id)
        self._pushed_upto.pop(user_id, None)
        self._after_commit.append(PresenceChanged(user_id, self.node_id, False))

    def _relay_after_commit(self, user_ids: tuple[int, ...], body: bytes) -> None:
        self._relays.append(Relay(user_ids, body))

    def rolled_back(self) -> None:
        """The turn's writes are gone: so are the pushes announcing them."""
        self._relays.clear()

    def committed(self, touched_keys: list[str]) -> None:
        """After the turn's commit: tell the other nodes what they may now read."""
        for key in touched_keys:
            kind, _, rest = key.partition(":")
            if kind == "u":
                for user_id in map(int, rest.split(":")):
                    if self._sessions.connection_for(user_id) is None:
                        self.bus.publish_to_user(UserNews(user_id))
            elif kind == "r":
                self.bus.publish_all(RoomNews(int(rest), self.node_id))
        kicks, self._kicks = self._kicks, []
        for kick in kicks:
            self.bus.publish_to_user(kick)
        changes, self._after_commit = self._after_commit, []
        for change in changes:
            self.bus.publish_all(change)
        generation = self._services.db.membership_generation
        if generation != self._generation:
            self._generation = generation
            self.bus.publish_all(MembershipChanged(()))
        relays, self._relays = self._relays, []
        for relay in relays:  # after MembershipChanged: caches there are fresh first
            self.bus.publish_to_users(relay)

    # -- hints from the other nodes ------------------------------------------------------

    def _hint_arrived(self, hint: Hint) -> None:
        """Bus listener thread: hand the hint to the reactor, with any others waiting."""
        with self._hints_lock:
            self._waiting_hints.append(hint)
            if len(self._waiting_hints) > 1:
                return  # a call is scheduled already and will take this one too
        self._call_soon(self._take_waiting)

    def _take_waiting(self) -> None:
        """Reactor: every hint that arrived meanwhile, in one step (a lost step loses
        only hints, which the sweep makes good)."""
        with self._hints_lock:
            hints, self._waiting_hints = self._waiting_hints, []
        self._guarded(lambda: self._handle_all(hints))

    def _handle_all(self, hints: list[Hint]) -> None:
        news: dict[int, None] = {}
        for hint in hints:
            self.handle(hint, news)
        self.catch_up_many(list(news))

    def _guarded(self, step: Callable[[], None]) -> None:
        """One hint's work in a savepoint of the turn, as a handler's would be."""
        db = self._services.db
        try:
            db.begin_step()
        except StorageUnavailable:
            return  # the sweep and the next hints catch up once the database is back
        keep = False
        try:
            step()
            keep = True
        except Exception as exc:
            log_failure(log, "cluster hint failed", exc)
        finally:
            db.end_step(keep)

    def handle(self, hint: Hint, news: dict[int, None]) -> None:
        """Act on one hint. Users with news are added to `news`, to be caught up
        together once every hint of the batch was looked at (what those hints announced
        was committed before they were sent, so one catch-up after all of them arrived
        reads it all)."""
        if isinstance(hint, UserNews):
            news[hint.user_id] = None
        elif isinstance(hint, UsersNews):
            news.update(dict.fromkeys(hint.user_ids))
        elif isinstance(hint, RoomNews):
            if hint.origin != self.node_id:
                news.update(dict.fromkeys(rooms.member_ids(self._services.db, hint.room_id)))
        elif isinstance(hint, PresenceChanged):
            if hint.node_id != self.node_id:
                self._presence(hint.user_id, hint.node_id, hint.online)
        elif isinstance(hint, NodeDown):
            for user_id in hint.user_ids:
                self._presence(user_id, hint.node_id, False)
        elif isinstance(hint, MembershipChanged):
            # Another node changed friendships or rooms: cached copies here are stale.
            self._services.db.membership_generation += 1
            self._generation = self._services.db.membership_generation
        elif isinstance(hint, KickSession) and hint.origin != self.node_id:
            self._kick(hint)
        elif isinstance(hint, Relay):
            self._deliver(hint)
        elif isinstance(hint, LinkJoin | LinkJoined | LinkData | LinkClosed):
            self.links.handle(hint)

    def _deliver(self, hint: Relay) -> None:
        """Write a relayed push to this node's sessions among its users."""
        try:
            message = decode_message(hint.body)
        except UchatError as exc:
            log.warning("cluster: dropped a relayed push that does not decode: %s", exc)
            return
        if message.type not in RELAYED or message.request_id != 0:
            log.warning("cluster: dropped a relayed %s", message.type.name)
            return
        for user_id in dict.fromkeys(hint.user_ids):
            connection = self._sessions.connection_for(user_id)
            if connection is not None and connection.is_open:
                connection.send_encoded(hint.body)

    def _kick(self, hint: KickSession) -> None:
        """The account logged in on another node: this node's session ends, as a local
        takeover would end it (KICKED, then closed), without an offline announcement."""
        connection = self._sessions.connection_for(hint.user_id)
        if connection is None:
            return
        username = connection.username
        connection.replaced = True
        connection.send(push(MessageType.KICKED, {"reason": KICK_REASON, "address": hint.address}))
        connection.close_after_flush(f"user {username} logged in on node {hint.origin}")
        self._sessions.unbind(connection)
        self._services.backlog.forget(hint.user_id)

    def _presence(self, user_id: int, node_id: str, online: bool) -> None:
        before = self._sessions.is_online(user_id)
        elsewhere = self._sessions.elsewhere
        nodes = elsewhere.get(user_id, frozenset())
        if online:
            nodes = self._node_sets.with_node(nodes, node_id)
        else:
            nodes = self._node_sets.without_node(nodes, node_id)
        if nodes:
            elsewhere[user_id] = nodes
        else:
            elsewhere.pop(user_id, None)
        after = self._sessions.is_online(user_id)
        if before != after:
            self._announce(user_id, after)

    def _announce(self, user_id: int, online: bool) -> None:
        """PRESENCE to this node's sessions of the user's friends (as `server.presence`)."""
        db = self._services.db
        user = users.by_id(db, user_id)
        if user is None:
            return
        params = {"username": user.username, "online": online, "ip": user.ip, "port": user.port}
        send_to_users(
            self._sessions, friends.friend_ids(db, user_id), push(MessageType.PRESENCE, params)
        )

    def catch_up(self, user_id: int) -> None:
        """Push this node's user what is stored for them past what it pushed already."""
        self.catch_up_many([user_id])

    def catch_up_many(self, user_ids: Sequence[int]) -> None:
        """`catch_up` for several of this node's users, with one query for all of them."""
        services = self._services
        live: dict[int, tuple[Connection, str]] = {}
        for user_id in dict.fromkeys(user_ids):
            connection = self._sessions.connection_for(user_id)
            if connection is None or not connection.is_open or connection.username is None:
                continue
            if services.backlog.draining(user_id):
                continue  # the backlog's next window carries it, in order
            live[user_id] = (connection, connection.username)
        if not live:
            return
        batch = max(1, services.config.offline_batch)
        wanted = [(user_id, self._pushed_upto.get(user_id, 0)) for user_id in live]
        found = messages.undelivered_many(services.db, wanted, batch)
        for user_id, after in wanted:
            rows = found.get(user_id)
            if not rows:
                continue
            connection, username = live[user_id]
            self._pushed_upto[user_id] = rows[-1].row_id
            if len(rows) >= batch:  # a real backlog: the windowed path, as after a login
                ctx = Context(services, connection, 0, MessageType.NEW_MESSAGE)
                push_backlog(ctx, user_id, username, after_row=after)
                continue
            for part in frames_of(rows):
                connection.send_encoded(encode_new_messages(part, username))

    # -- reconnects and the sweep --------------------------------------------------------

    def _reconnected(self) -> None:
        """Bus listener thread: reload presence, then catch every local user up."""
        import redis

        try:
            holders = self.bus.presence.snapshot()
        except redis.RedisError as exc:
            log.warning("cluster: presence reload failed (%s); the next reconnect retries", exc)
            return
        self._call_soon(lambda: self._guarded(lambda: self._resync(self._others(holders))))

    def _resync(self, elsewhere: dict[int, frozenset[str]]) -> None:
        changed = set(elsewhere) ^ set(self._sessions.elsewhere)
        before = {user_id: self._sessions.is_online(user_id) for user_id in changed}
        self._sessions.elsewhere = elsewhere
        for user_id, was in before.items():
            if self._sessions.is_online(user_id) != was:
                self._announce(user_id, not was)
        self.catch_up_many(list(self._sessions.online_user_ids()))

    def _sweep(self) -> None:
        """Every few seconds: catch up local recipients of rows no hint announced."""
        try:
            self._guarded(self._sweep_once)
        finally:
            self._call_later(SWEEP_SECONDS, self._sweep)

    def _sweep_once(self) -> None:
        db = self._services.db
        found = delivery_sweep.recipients_after(db, max(0, self._swept_to - SWEEP_OVERLAP))
        if found:
            self._swept_to = max(self._swept_to, *found.values())
        self.catch_up_many(list(found))
