"""Device links across cluster nodes: the opener's node and the joiner's node talk by hints.

A link lives on the opener's node, in memory (`server/links.py`), exactly as on one
node; the other node only forwards. So:
- LINK_OPEN (`open`): the opener's node records "code digest -> this node" in Redis
  (`LinkDirectory`, on the bus thread, with the code's lifetime) and answers the code
  once that is done: a code is never handed out before other nodes can find it, nor
  held by two nodes (a digest another node holds gets a new code). With Redis
  unreachable the code is answered anyway and works on this node only.
- LINK_JOIN of a code this node does not hold (`join`): the bus thread looks the
  digest up and sends `LinkJoin`, naming the account, to that node, which checks the
  code, its lifetime, its single use and its account itself. The request is answered
  when `LinkJoined` or `LinkClosed` comes back, or `link_code_invalid` after
  `JOIN_WAIT_MS`: the reactor never waits on Redis or on the other node.
- On the opener's node the joiner is a `RemoteJoiner`, a `LinkEnd` the relay treats as
  a connection; what the relay sends it (LINK_DATA, LINK_CLOSED) becomes a hint.
- On the joiner's node a `JoinedLink` stands for the link: the joiner's LINK_SEND
  (counted here too) and LINK_CLOSE, and its connection's loss, go to the opener's
  node as hints; the hints coming back are pushed as LINK_DATA and LINK_CLOSED.

Redis and the hints never see a code: the directory and `LinkJoin` carry an HMAC of it
under a key derived from the cluster's private key (eight digits are otherwise found
by trying them all). A lost hint fails its link, never hangs it: a pending join is
refused after `JOIN_WAIT_MS`, a joined link ends at its time limit on both nodes, and
a hint for a link a node does not know is answered with `LinkClosed`.
Reactor thread only, like the relay.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from common.crypto.certs import ServerIdentity
from common.crypto.device_link import normalise_code
from common.errors import RequestError
from common.protocol.message import Message, push
from common.protocol.opcodes import MessageType
from server.cluster.hints import LinkClosed, LinkData, LinkJoin, LinkJoined
from server.dispatch import run_guarded
from server.links import (
    CODE_TTL_MS,
    LINK_TTL_MS,
    MAX_MESSAGE_SIZE,
    MAX_MESSAGES,
    Link,
    LinkRelay,
    invalid_code,
)
from server.net.connection import Connection

if TYPE_CHECKING:
    from server.dispatch import Context

log = logging.getLogger(__name__)

#: How long a LINK_JOIN waits for the opener's node before it is refused.
JOIN_WAIT_MS = 5_000
#: Codes tried when the directory already holds a digest (another node's code).
OPEN_ATTEMPTS = 3
LinkHint = LinkJoin | LinkJoined | LinkData | LinkClosed


class LinkBus(Protocol):
    """What the routes need of `server.cluster.bus.Bus`."""

    node_id: str

    def publish_to_node(self, node_id: str, hint: LinkJoined | LinkData | LinkClosed) -> None: ...

    def claim_link(self, digest: str, ttl_ms: int, done: Callable[[bool | None], None]) -> None: ...

    def send_join(self, hint: LinkJoin, missing: Callable[[], None]) -> None: ...


def digest_key(identity: ServerIdentity) -> bytes:
    """The key code digests are made with: every node of the cluster derives the same."""
    return hmac.digest(identity.key.private_bytes_raw(), b"uchat device-link codes", "sha256")


def code_digest(key: bytes, code: str) -> str:
    return hmac.new(key, normalise_code(code).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(eq=False)
class RemoteJoiner:
    """On the opener's node: the old computer, held by node `node`, as the relay sees it."""

    ref: str
    node: str
    address: str
    bus: LinkBus
    is_open: bool = True

    def send(self, message: Message) -> None:
        if not self.is_open:
            return
        if message.type is MessageType.LINK_DATA:
            data = message.params["data"]
            self.bus.publish_to_node(self.node, LinkData(self.ref, self.bus.node_id, data))
        elif message.type is MessageType.LINK_CLOSED:
            self.is_open = False
            self.bus.publish_to_node(self.node, LinkClosed(self.ref, message.params["reason"]))


@dataclass(eq=False)
class JoinedLink:
    """On the joiner's node: a link held by node `node`, joined by `connection`."""

    ref: str
    connection: Connection
    node: str
    expires_ms: int
    sent: int = 0


@dataclass(frozen=True)
class PendingJoin:
    """On the joiner's node: a LINK_JOIN waiting for the opener's node, until
    `deadline_ms` (then `link_code_invalid`: the answer, or the join, was lost)."""

    ctx: Context
    deadline_ms: int


class LinkRoutes:
    """This node's share of cross-node links, on either side."""

    def __init__(
        self,
        relay: LinkRelay,
        bus: LinkBus,
        key: bytes,
        call_soon: Callable[[Callable[[], None]], None],
        clock: Callable[[], int],
    ) -> None:
        self._relay = relay
        self._bus = bus
        self._key = key
        self._call_soon = call_soon
        self._clock = clock
        #: Links opened here: digest -> code (a `LinkJoin` names the digest only).
        self._codes: dict[str, str] = {}
        #: Joiners held by other nodes, of links held here, by ref.
        self._remote: dict[str, RemoteJoiner] = {}
        #: LINK_JOINs of this node's connections waiting for another node, by ref.
        self._pending: dict[str, PendingJoin] = {}
        #: Links held by other nodes that this node's connections joined.
        self._joined: dict[str, JoinedLink] = {}
        self._joined_by_connection: dict[Connection, JoinedLink] = {}

    # -- LINK_OPEN (the opener's node) ---------------------------------------------------

    def open(self, ctx: Context, username: str) -> None:
        """Open a link here; the request is answered once its code is findable."""
        self._open(ctx, username, OPEN_ATTEMPTS)

    def _open(self, ctx: Context, username: str, attempts: int) -> None:
        link = self._relay.open(ctx.connection, username, ctx.now())
        digest = code_digest(self._key, link.code)
        self._codes[digest] = link.code

        def done(outcome: bool | None) -> None:  # on the bus thread
            self._call_soon(lambda: self._claimed(ctx, username, link, outcome, attempts))

        self._bus.claim_link(digest, CODE_TTL_MS, done)

    def _claimed(
        self, ctx: Context, username: str, link: Link, outcome: bool | None, attempts: int
    ) -> None:
        if not ctx.connection.is_open:
            return  # the relay ended the link with the connection
        current = self._relay.link_of(ctx.connection) is link
        if outcome is None and current:
            # Redis is unreachable: the code works for an old computer on this node, as
            # chat between this node's users does; other nodes answer link_code_invalid.
            log.warning("cluster: a link code could not be recorded; it works on this node only")
        if outcome is not False and current:
            ctx.reply({"code": link.code, "expires_in": CODE_TTL_MS // 1000})
            return
        if outcome is False and current and attempts > 1:
            run_guarded(ctx, lambda: self._open(ctx, username, attempts - 1))
            return
        if current:
            self._relay.close(ctx.connection, "cancelled", ctx.now())
        ctx.fail("server_busy", "linking a computer is not possible just now; try again shortly")

    # -- LINK_JOIN of a code held elsewhere (the joiner's node) ---------------------------

    def join(self, ctx: Context, username: str, code: str) -> None:
        """Ask the node holding `code`; the request is answered when it answers."""
        ref = secrets.token_hex(16)
        self._pending[ref] = PendingJoin(ctx, ctx.now() + JOIN_WAIT_MS)
        digest = code_digest(self._key, code)
        hint = LinkJoin(ref, self._bus.node_id, digest, username, ctx.connection.address)
        self._bus.send_join(hint, lambda: self._call_soon(lambda: self._refuse(ref)))

    def _refuse(self, ref: str) -> None:
        pending = self._pending.pop(ref, None)
        if pending is not None:
            refusal = invalid_code()
            pending.ctx.fail(refusal.code, refusal.message, refusal.field)

    # -- the joiner's requests, for links held elsewhere ----------------------------------

    def holds(self, connection: Connection) -> bool:
        """True if `connection` joined a link held by another node."""
        return connection in self._joined_by_connection

    def relay(self, connection: Connection, data: bytes) -> None:
        """LINK_SEND: count and size here, then to the opener's node."""
        joined = self._joined_by_connection.get(connection)
        if joined is None:
            raise RequestError("no_link", "no computer is linked on this connection")
        if len(data) > MAX_MESSAGE_SIZE:
            raise RequestError("bad_request", "link message too large", "data")
        if joined.sent >= MAX_MESSAGES:
            raise RequestError("bad_request", "too many link messages", "data")
        joined.sent += 1
        self._bus.publish_to_node(joined.node, LinkData(joined.ref, self._bus.node_id, data))

    def close(self, connection: Connection, reason: str) -> None:
        """LINK_CLOSE (or the connection's loss): the opener's node is told `reason`."""
        joined = self._joined_by_connection.pop(connection, None)
        if joined is not None:
            del self._joined[joined.ref]
            self._bus.publish_to_node(joined.node, LinkClosed(joined.ref, reason))

    def connection_closed(self, connection: Connection) -> None:
        self.close(connection, "peer_gone")
        for ref, pending in list(self._pending.items()):
            if pending.ctx.connection is connection:
                del self._pending[ref]  # an answer still coming is sent back closed

    # -- hints from the other nodes --------------------------------------------------------

    def handle(self, hint: LinkHint) -> None:
        if isinstance(hint, LinkJoin):
            self._remote_join(hint)
        elif isinstance(hint, LinkJoined):
            self._joined_there(hint)
        elif isinstance(hint, LinkData):
            self._data(hint)
        else:
            self._closed(hint)

    def _remote_join(self, hint: LinkJoin) -> None:
        """The opener's node: a join from another node, judged as a local one."""
        code = self._codes.get(hint.key)
        joiner = RemoteJoiner(hint.ref, hint.origin, hint.address, self._bus)
        try:
            if code is None:
                raise invalid_code()
            link = self._relay.join(joiner, hint.account, code, self._clock())
        except RequestError:
            self._bus.publish_to_node(hint.origin, LinkClosed(hint.ref, "expired"))
            return
        self._remote[hint.ref] = joiner
        answer = LinkJoined(hint.ref, self._bus.node_id, link.opener.address)
        self._bus.publish_to_node(hint.origin, answer)

    def _joined_there(self, hint: LinkJoined) -> None:
        """The joiner's node: the opener's node accepted; answer the LINK_JOIN."""
        pending = self._pending.pop(hint.ref, None)
        connection = pending.ctx.connection if pending is not None else None
        if pending is None or connection is None or not connection.is_open:
            self._bus.publish_to_node(hint.origin, LinkClosed(hint.ref, "peer_gone"))
            return
        now = self._clock()
        # The connection's earlier link ends, as a join on one node ends it.
        self.close(connection, "cancelled")
        self._relay.close(connection, "cancelled", now)
        joined = JoinedLink(hint.ref, connection, hint.origin, now + LINK_TTL_MS)
        self._joined[hint.ref] = joined
        self._joined_by_connection[connection] = joined
        pending.ctx.reply({"address": hint.address})

    def _data(self, hint: LinkData) -> None:
        remote = self._remote.get(hint.ref)
        joined = self._joined.get(hint.ref)
        end = remote or joined
        if end is None:
            # A link this node does not hold (ended, or its answer lost): say so.
            self._bus.publish_to_node(hint.origin, LinkClosed(hint.ref, "peer_gone"))
        elif end.node != hint.origin:
            log.warning("cluster: dropped link data from a node that is not the link's other end")
        elif remote is not None:
            try:  # the relay applies the count and size limits to this end too
                self._relay.relay(remote, hint.data)
            except RequestError as exc:
                log.info("cluster: a forwarded link message was refused (%s)", exc.code)
        elif joined is not None:
            joined.connection.send(push(MessageType.LINK_DATA, {"data": hint.data}))

    def _closed(self, hint: LinkClosed) -> None:
        if hint.ref in self._pending:
            self._refuse(hint.ref)
            return
        remote = self._remote.pop(hint.ref, None)
        if remote is not None:
            remote.is_open = False
            self._relay.close(remote, hint.reason, self._clock())
            return
        joined = self._joined.pop(hint.ref, None)
        if joined is not None:
            del self._joined_by_connection[joined.connection]
            if joined.connection.is_open:
                joined.connection.send(push(MessageType.LINK_CLOSED, {"reason": hint.reason}))

    # -- time --------------------------------------------------------------------------------

    def sweep(self, now_ms: int) -> None:
        """Refuse joins that waited too long, end joined links past their limit (the
        opener's node ends them first; this is for its lost hint), forget ended ones."""
        for ref, pending in list(self._pending.items()):
            if pending.deadline_ms <= now_ms:
                self._refuse(ref)
        for joined in [j for j in self._joined.values() if j.expires_ms <= now_ms]:
            self.close(joined.connection, "expired")
            if joined.connection.is_open:
                joined.connection.send(push(MessageType.LINK_CLOSED, {"reason": "expired"}))
        self._remote = {ref: end for ref, end in self._remote.items() if end.is_open}
        self._codes = {key: code for key, code in self._codes.items() if self._relay.holds(code)}
