"""Opcode -> handler, the authentication guard and the error replies.

Every request gets exactly one answer carrying its request id: the handler's
returned dict (REPLY), or an ERROR for a refused opcode, a missing login, a
`RequestError`/`ValidationError` the handler raised, or `internal_error` for
anything else (logged with its traceback, never with the request's params). A
failing handler never closes the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from common.config import ServerConfig
from common.crypto.certs import ServerIdentity
from common.errors import LocalProtocolError, RequestError, ValidationError
from common.protocol.message import Message, error, push, reply
from common.protocol.opcodes import PUSHES, MessageType
from server.broadcast import send_to_users
from server.hash_queue import HashQueue
from server.links import LinkRelay
from server.logging_setup import log_failure
from server.net.connection import Connection
from server.quotas import InboxBounds
from server.sessions import Sessions
from server.storage.database import Database, StorageUnavailable
from server.transparency import TransparencyLog
from server.turn import TurnBatch
from server.workers import WorkerPool, WorkerPoolFull

if TYPE_CHECKING:
    from server.cluster.link_routes import LinkRoutes
    from server.handlers._backlog import BacklogCursors

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_REQUESTS = PUSHES | {MessageType.REPLY, MessageType.ERROR}
INTERNAL_ERROR_TEXT = "the server failed to handle this request"
STORAGE_BUSY_TEXT = "the server cannot reach its database just now; try again shortly"
#: Shares of a connection's per-turn budget (`requests_per_turn`) one request uses.
#: An ordinary request uses one; a handler module may declare `TURN_SHARE` for a
#: type no honest client sends in bursts (a directory search). A refused request
#: uses `REFUSED_SHARE`: a flood of refusals (rate limits, bad requests) gets a small
#: share of each turn, so a bystander waits for a few of them, not for sixteen.
REFUSED_SHARE = 4


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: the protocol's time unit."""
    return time.time_ns() // 1_000_000


@dataclass
class Services:
    """Everything a handler may use; built once by `server.app`."""

    db: Database
    sessions: Sessions
    workers: WorkerPool
    config: ServerConfig
    identity: ServerIdentity
    data_dir: Path
    #: Called once when a user's live session ends (logout or close, not a takeover):
    #: `server.app` wires presence and the backlog cursors to it.
    on_offline: Callable[[int, str], None]
    #: Offline backlog cursors of online users (`server.handlers._backlog`).
    backlog: BacklogCursors
    #: Hash jobs of an address that already has a line (`server.hash_queue`) run here,
    #: at a lower priority than `workers`; None: on `workers` too.
    demoted_workers: WorkerPool | None = None
    clock: Callable[[], int] = wall_clock_ms
    hashes: HashQueue = field(default_factory=HashQueue)
    turn: TurnBatch = field(default_factory=TurnBatch)
    inbox_bounds: InboxBounds = field(default_factory=InboxBounds)
    #: Link sessions for moving an identity to a new computer (`server.links`).
    links: LinkRelay = field(default_factory=LinkRelay)
    #: Cluster mode only: links whose two computers reach different nodes.
    link_routes: LinkRoutes | None = None
    transparency: TransparencyLog = field(init=False)

    def __post_init__(self) -> None:
        self.transparency = TransparencyLog(self.db, self.identity, self.clock)


class Context:
    """One request: who asked, on which connection, and how to answer it."""

    __slots__ = (
        "_answered",
        "_close_after",
        "_refused",
        "connection",
        "opcode",
        "request_id",
        "services",
    )

    def __init__(
        self, services: Services, connection: Connection, request_id: int, opcode: MessageType
    ) -> None:
        self.services = services
        self.connection = connection
        self.request_id = request_id
        self.opcode = opcode
        self._answered = False
        self._close_after = False
        self._refused = False

    # -- shortcuts ----------------------------------------------------------------

    @property
    def db(self) -> Database:
        return self.services.db

    @property
    def sessions(self) -> Sessions:
        return self.services.sessions

    @property
    def config(self) -> ServerConfig:
        return self.services.config

    @property
    def identity(self) -> ServerIdentity:
        return self.services.identity

    @property
    def transparency(self) -> TransparencyLog:
        return self.services.transparency

    @property
    def turn(self) -> TurnBatch:
        """Work gathered for the end of this reactor turn (`server.turn`)."""
        return self.services.turn

    @property
    def user_id(self) -> int | None:
        return self.connection.user_id

    @property
    def username(self) -> str | None:
        return self.connection.username

    @property
    def peer(self) -> tuple[str, int]:
        return self.connection.peer

    @property
    def answered(self) -> bool:
        return self._answered

    @property
    def refused(self) -> bool:
        """True once the request was answered with an ERROR."""
        return self._refused

    def now(self) -> int:
        return self.services.clock()

    # -- answering ----------------------------------------------------------------

    def reply(self, params: dict[str, Any]) -> None:
        """Answer the request with REPLY `params` (once; later answers are dropped)."""
        self._answer(reply(self.request_id, params))

    def fail(self, code: str, message: str, field: str | None = None) -> None:
        """Answer the request with ERROR {code, message, field?}."""
        self._refused = True
        self._answer(error(self.request_id, code, message, field))

    def close_after_reply(self) -> None:
        """Close the connection once the answer to this request has been written."""
        self._close_after = True
        if self._answered:
            self.connection.close_after_flush(f"closed after {self.opcode.name}")

    def _answer(self, message: Message) -> None:
        if self._answered:
            log.warning("second answer to %s dropped", self.opcode.name)
            return
        self._answered = True
        try:
            self.connection.send(message)
        except LocalProtocolError as exc:  # the handler built params the codec refuses
            log_failure(log, f"answer to {self.opcode.name} cannot be encoded", exc)
            self.connection.send(error(self.request_id, "internal_error", INTERNAL_ERROR_TEXT))
        if self._close_after:
            self.connection.close_after_flush(f"closed after {self.opcode.name}")

    # -- other users ----------------------------------------------------------------

    def push(self, user_id: int, type: MessageType, params: dict[str, Any]) -> bool:
        """Push to that user's live session (here, or on another node in cluster mode,
        once the turn commits); False if the user is offline."""
        connection = self.sessions.connection_for(user_id)
        if connection is None or not connection.is_open:
            return self.sessions.relay((user_id,), push(type, params))
        connection.send(push(type, params))
        return True

    def push_encoded(self, user_id: int, body: bytes) -> bool:
        """Push an already encoded message (fan-out encodes shared parts once)."""
        connection = self.sessions.connection_for(user_id)
        if connection is None or not connection.is_open:
            return False
        connection.send_encoded(body)
        return True

    def push_many(self, user_ids: Iterable[int], type: MessageType, params: dict[str, Any]) -> int:
        """Push one message to many users; return how many were online on this node.

        Those held by other nodes get it through the bus in cluster mode.
        """
        message = push(type, params)
        if not self.sessions.spans_nodes:
            return send_to_users(self.sessions, user_ids, message)
        targets = list(dict.fromkeys(user_ids))
        sent = send_to_users(self.sessions, targets, message)
        if sent < len(targets):
            self.sessions.relay(
                [user for user in targets if self.sessions.connection_for(user) is None], message
            )
        return sent

    # -- sessions -------------------------------------------------------------------

    def bind_user(self, user_id: int, username: str) -> None:
        """Make this connection the user's session, kicking an older one.

        A user previously bound to this same connection (a second LOGIN without
        LOGOUT) goes offline first.
        """
        previous_id = self.connection.user_id
        if previous_id is not None and previous_id != user_id:
            self.unbind_user()
        self.sessions.bind(self.connection, user_id, username)

    def unbind_user(self) -> None:
        """Logout: the user goes offline; the connection stays open, unauthenticated."""
        user_id, username = self.connection.user_id, self.connection.username
        if self.sessions.unbind(self.connection) and user_id is not None and username:
            log.info("user %s went offline", username)
            self.services.on_offline(user_id, username)

    # -- slow work ------------------------------------------------------------------

    def run_in_worker(
        self,
        fn: Callable[[], T],
        then: Callable[[T], None],
        always: Callable[[], None] | None = None,
        demoted: bool = False,
    ) -> None:
        """Run `fn` on the worker pool, then `then(result)` back on the reactor thread.

        `demoted` runs it on the lower-priority pool (`Services.demoted_workers`).
        A full pool answers `server_busy` at once, and so does `fn` raising
        `StorageUnavailable`; `fn` raising anything else answers `internal_error`. If
        the connection closed (or began closing) meanwhile, `then` is skipped: the
        caller is gone and must not be logged in or told anything.
        `always` runs on the reactor thread when the job is over (after `then`),
        whatever happened: it releases a slot such as `server.hash_queue`'s.
        """

        def on_done(future: Future[T]) -> None:
            try:
                finish(future)
            finally:
                if always is not None:  # after `then`: it may have counted something
                    always()

        def finish(future: Future[T]) -> None:
            if not self.connection.is_open:
                log.debug("%s result dropped: connection closed", self.opcode.name)
                return
            try:
                result = future.result()
            except StorageUnavailable as exc:  # a job with its own database connection
                log.warning("worker job for %s: %s", self.opcode.name, exc)
                self.fail("server_busy", STORAGE_BUSY_TEXT)
                return
            except Exception as exc:
                log_failure(log, f"worker job for {self.opcode.name} failed", exc)
                self.fail("internal_error", INTERNAL_ERROR_TEXT)
                return
            run_guarded(self, lambda: then(result))

        pool = self.services.workers
        if demoted and self.services.demoted_workers is not None:
            pool = self.services.demoted_workers
        try:
            pool.submit(fn, on_done)
        except WorkerPoolFull:
            if always is not None:
                always()
            self.fail("server_busy", "the server is busy; try again shortly")


def run_guarded(ctx: Context, step: Callable[[], Any]) -> Any:
    """Run handler code, turning its errors into ERROR answers; None on error.

    Each step runs in a savepoint: a refusal (`RequestError`) keeps what the handler
    wrote on purpose (a counted login failure, say), while an unexpected exception
    rolls the step back so a half-done request never reaches the turn's commit.
    """
    db = ctx.db
    try:
        db.begin_step()
    except StorageUnavailable:
        ctx.fail("server_busy", STORAGE_BUSY_TEXT)
        return None
    keep = True
    try:
        return step()
    except (RequestError, ValidationError) as exc:
        ctx.fail(exc.code, exc.message, exc.field)
    except StorageUnavailable as exc:
        keep = False
        log.warning("handler for %s: %s", ctx.opcode.name, exc)
        ctx.fail("server_busy", STORAGE_BUSY_TEXT)
    except Exception as exc:
        keep = False
        log_failure(log, f"handler for {ctx.opcode.name} failed", exc)
        ctx.fail("internal_error", INTERNAL_ERROR_TEXT)
    finally:
        db.end_step(keep)
    return None


class Dispatcher:
    """Routes each decoded message to its handler module."""

    def __init__(self, services: Services, handlers: Iterable[ModuleType]) -> None:
        self._services = services
        self._handlers: dict[MessageType, ModuleType] = {}
        for module in handlers:
            opcode = MessageType(module.OPCODE)
            if opcode in self._handlers:
                raise ValueError(f"two handlers for {opcode.name}")
            if opcode in NOT_REQUESTS:
                raise ValueError(f"{opcode.name} is not a request and cannot have a handler")
            self._handlers[opcode] = module

    def replace(self, module: ModuleType) -> None:
        """Swap the handler of one opcode (security tests build malicious servers)."""
        opcode = MessageType(module.OPCODE)
        if opcode not in self._handlers:
            raise ValueError(f"no handler for {opcode.name} to replace")
        self._handlers[opcode] = module

    @property
    def opcodes(self) -> frozenset[MessageType]:
        return frozenset(self._handlers)

    def dispatch(self, connection: Connection, message: Message) -> int:
        """Answer one request from `connection` (called on the reactor thread); return
        the share of the connection's turn budget it used (`REFUSED_SHARE`)."""
        ctx = Context(self._services, connection, message.request_id, message.type)
        module = self._handlers.get(message.type)
        if message.type in NOT_REQUESTS:
            ctx.fail("bad_request", f"{message.type.name} cannot be sent by a client")
        elif message.request_id == 0:
            ctx.fail("bad_request", "request id 0 is reserved for pushes")
        elif module is None:
            ctx.fail("bad_request", f"unknown request {message.type.name}")
        elif module.REQUIRES_AUTH and connection.user_id is None:
            ctx.fail("not_authenticated", "log in first")
        else:
            result = run_guarded(ctx, lambda: module.handle(ctx, message.params))
            if isinstance(result, dict):
                ctx.reply(result)
            elif result is not None:
                log.error("handler for %s returned %s", message.type.name, type(result).__name__)
                ctx.fail("internal_error", INTERNAL_ERROR_TEXT)
        if ctx.refused:
            return REFUSED_SHARE
        share: int = getattr(module, "TURN_SHARE", 1)
        return share

    def connection_closed(self, connection: Connection, reason: str) -> None:
        """Reactor hook: a closed session's user goes offline unless a new login took over."""
        self._services.links.connection_closed(connection, self._services.clock())
        if self._services.link_routes is not None:
            self._services.link_routes.connection_closed(connection)
        user_id, username = connection.user_id, connection.username
        if connection.replaced or user_id is None:
            return
        if self._services.sessions.unbind(connection) and username:
            log.info("user %s went offline", username)
            self._services.on_offline(user_id, username)
