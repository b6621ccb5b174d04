"""The event loop: one thread, one selector, every socket of the server.

Each loop turn: wait for readiness (or the next deadline), accept, read and
dispatch (a bounded number of records opened and requests dispatched per
connection: the rest wait, still sealed, in its channel or in its inbox for the next
turn, and the connection is not read again until both are empty; a connection whose
output is over its pause limit is neither read nor dispatched until that output
drains), run callbacks posted by other
threads, expire timeouts, then call
`before_flush` (the database commit) and only after it write queued output. That
order is the group-commit invariant: nothing a turn produced reaches a socket
before the turn's writes are durable. If the commit fails, the connections holding
the turn's output are closed instead of being told something that was not stored.

`before_flush` may hand the commit to another thread (a cluster node's database
thread, `server.database_thread`) and return it as a `PendingCommit`. Until it is
ready the reactor overlaps it with work that needs no database: it reads connections
that have nothing queued this turn and opens their records (a bounded share each)
for the next turn to dispatch. It dispatches nothing, runs no callback or timer and
closes nothing meanwhile (a close runs hooks that use the database: a read that finds
the peer gone, or a record that fails, is closed once the commit is in).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import selectors
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from common.errors import UchatError
from common.protocol.framing import HEADER_SIZE
from common.protocol.message import Message
from server.logging_setup import log_failure
from server.net.admission import Admission, AdmissionLimits
from server.net.connection import Channel, Connection

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096
READ_SIZE = 256 * 1024
ACCEPTS_PER_TURN = 256
HANDSHAKES_PER_TURN = 16
MAX_WAIT = 1.0  # seconds; bounds how late a timer can fire
ACCEPT_PAUSE = 0.1  # seconds to stop accepting after running out of file descriptors

_LISTENER = "listener"
_WAKER = "waker"


@dataclass(frozen=True)
class ReactorSettings:
    """The limits the reactor enforces (taken from `ServerConfig`)."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_connections: int = 20_000
    write_buffer_limit: int = 8 * 1024 * 1024
    #: Above this much queued output a connection is not read or dispatched.
    output_pause_limit: int = 1024 * 1024
    #: Requests one connection may have dispatched per loop turn...
    requests_per_turn: int = 16
    #: ...and the reactor time (seconds) they may take, whichever runs out first.
    time_per_turn: float = 0.002
    #: A connection must log in within this many seconds of connecting.
    login_timeout: float = 30.0
    #: Record cap from Finished until LOGIN succeeds, and after it.
    prelogin_max_frame: int = 16 * 1024
    max_frame: int = 1_179_648
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)


class PendingCommit(Protocol):
    """A turn's commit running elsewhere (`server.database_thread.DatabaseJob`)."""

    @property
    def ready(self) -> bool: ...

    def finish(self) -> None:
        """On the reactor thread once ready: deliver the results, or raise if it failed."""


@dataclass(order=True)
class TimerHandle:
    deadline: float
    sequence: int
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    """Owns the selector, the listening socket, the wake-up socket and all connections.

    `on_message(connection, message)` is called for every decoded message and
    returns the share of the connection's per-turn budget it used (1 for most
    requests; more for a refusal or a costly request type, see `server.dispatch`),
    `on_closed(connection, reason)` once per closed connection, and `before_flush()`
    at the end of every turn before any output is written (it returns None once the
    commit is done, or a `PendingCommit` to overlap).
    """

    def __init__(
        self,
        settings: ReactorSettings,
        channel_factory: Callable[[], Channel],
        on_message: Callable[[Connection, Message], int],
        on_closed: Callable[[Connection, str], None],
        before_flush: Callable[[], PendingCommit | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._channel_factory = channel_factory
        self._on_message = on_message
        self._on_closed = on_closed
        self._before_flush = before_flush
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, _WAKER)
        self._read_buffer = bytearray(READ_SIZE)
        self._read_view = memoryview(self._read_buffer)
        self._connections: set[Connection] = set()
        self._admission = Admission(settings.admission)
        #: Connections not logged in yet, oldest first, with the time they connected.
        self._anonymous: OrderedDict[Connection, float] = OrderedDict()
        #: Connections with requests left in their inbox after their turn's budget.
        self._ready: dict[Connection, None] = {}
        #: Connections not read or dispatched until their output drains.
        self._paused: set[Connection] = set()
        self._handshaking: OrderedDict[Connection, float] = OrderedDict()
        self._by_activity: OrderedDict[Connection, None] = OrderedDict()
        self._closing: OrderedDict[Connection, float] = OrderedDict()
        self._to_flush: dict[Connection, None] = {}
        self._callbacks: deque[Callable[[], None]] = deque()
        self._timers: list[TimerHandle] = []
        self._timer_sequence = itertools.count()
        self._stopping = False
        #: Closes found while a commit ran elsewhere, done once it is in (`_overlap`).
        self._closes_after_commit: dict[Connection, str] = {}

    # -- public API -------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def connections(self) -> frozenset[Connection]:
        return frozenset(self._connections)

    @property
    def admission(self) -> Admission:
        """Per-address counts and the input budget (read-only use: stats, tests)."""
        return self._admission

    def listen(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Bind and start accepting; return the address actually bound.

        `reuse_port`: share the port with sibling processes (SO_REUSEPORT; the kernel
        spreads new connections over them), as `run_server.py --workers N` does.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((host, port))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)
        bound = listener.getsockname()
        return str(bound[0]), int(bound[1])

    def stop_listening(self) -> None:
        """Close the listening socket: no new connections from now on."""
        if self._listener is None:
            return
        if self._selector.get_map().get(self._listener) is not None:
            self._selector.unregister(self._listener)
        self._listener.close()
        self._listener = None

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the reactor thread at its next turn (from any thread)."""
        self._callbacks.append(callback)
        self.wake()

    def wake(self) -> None:
        """Make the selector return now (from any thread): a callback waits, or a
        pending commit is ready."""
        # A full socket means a wake-up is already pending; a closed one means the
        # loop has shut down. Either way there is nothing more to do.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` on the reactor thread after `delay` seconds (reactor thread only)."""
        timer = TimerHandle(self._clock() + delay, next(self._timer_sequence), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def run(self) -> None:
        """Loop until `stop()`; the calling thread becomes the reactor thread."""
        while not self._stopping:
            self.run_once()

    def stop(self) -> None:
        """Ask the loop to return after the current turn (from any thread)."""

        def _stop() -> None:
            self._stopping = True

        self.call_soon_threadsafe(_stop)

    def run_once(self, timeout: float | None = None) -> None:
        """One loop turn; see the module docstring for its order."""
        wait = self._wait_time() if timeout is None else timeout
        handshakes = HANDSHAKES_PER_TURN
        ready, self._ready = self._ready, {}
        for waiting in ready:  # last turn's leftovers first: they waited longest
            self._serve(waiting)
        for key, mask in self._selector.select(wait):
            if key.data is _LISTENER:
                self._accept()
            elif key.data is _WAKER:
                self._drain_waker()
            else:
                connection: Connection = key.data
                if mask & selectors.EVENT_READ:
                    if connection in self._handshaking:
                        # Handshake crypto is the costly part of a login storm; a
                        # bounded share per turn keeps chat traffic moving. The
                        # selector is level-triggered: the rest come next turn.
                        handshakes -= 1
                    # A connection with requests or records still waiting is served
                    # above or next turn; it is read again only once both are empty,
                    # so the rest of a pipelined flood waits in the kernel's buffer.
                    may_handshake = handshakes >= 0 or connection not in self._handshaking
                    if may_handshake and not (
                        connection.inbox or connection.channel.records_waiting
                    ):
                        self._read(connection)
                if mask & selectors.EVENT_WRITE and not connection.closed:
                    self._to_flush[connection] = None
        self._run_callbacks()
        self._expire()
        self._commit_then_flush()

    def shutdown(self, flush_timeout: float = 2.0) -> None:
        """Graceful end: stop accepting, commit and flush (bounded), close everything."""
        self.stop_listening()
        self._run_callbacks()
        for connection in list(self._connections):
            connection.close_after_flush("server shutting down")
        self._commit_then_flush()
        deadline = time.monotonic() + flush_timeout
        while self._connections and time.monotonic() < deadline:
            self.run_once(timeout=0.05)
        for connection in list(self._connections):
            connection.close("server shutting down")
        self._commit_then_flush()
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()

    # -- ConnectionHost ---------------------------------------------------------

    def output_queued(self, connection: Connection) -> None:
        self._to_flush[connection] = None

    def stop_reading(self, connection: Connection) -> None:
        """Called by close_after_flush(): no more input; the flush gets a deadline."""
        self._handshaking.pop(connection, None)
        self._by_activity.pop(connection, None)
        self._closing[connection] = self._clock()
        self._set_events(connection, connection.events & ~selectors.EVENT_READ)

    def authenticated(self, connection: Connection) -> None:
        """First LOGIN on `connection`: lift the deadline, the anonymous count, the cap."""
        if self._anonymous.pop(connection, None) is not None:
            self._admission.logged_in(connection.peer[0])
        connection.channel.limit_frames(self._settings.max_frame)

    def hold_anonymous(self, connection: Connection) -> None:
        """A link session holds this anonymous connection: off the login deadline and
        the anonymous count (the link relay caps and ends these itself)."""
        if self._anonymous.pop(connection, None) is not None:
            self._admission.logged_in(connection.peer[0])

    def release(self, connection: Connection, reason: str) -> None:
        """Forget a connection that closed itself; runs `on_closed` once."""
        if connection in self._connections:
            anonymous = self._anonymous.pop(connection, None) is not None
            self._admission.forget(connection.peer[0], anonymous)
            self._admission.charge(-connection.input_held)
            connection.input_held = 0
        self._ready.pop(connection, None)
        self._paused.discard(connection)
        self._connections.discard(connection)
        self._handshaking.pop(connection, None)
        self._by_activity.pop(connection, None)
        self._closing.pop(connection, None)
        self._to_flush.pop(connection, None)
        self._set_events(connection, 0)
        with contextlib.suppress(OSError):
            connection.sock.close()
        log.info("closed %s: %s", connection.address, reason)
        try:
            self._on_closed(connection, reason)
        except Exception as exc:
            log_failure(log, f"close hook failed for {connection.address}", exc)

    # -- internals --------------------------------------------------------------

    def _wait_time(self) -> float:
        if self._callbacks or self._stopping or self._ready:
            return 0.0
        deadline = self._clock() + MAX_WAIT
        if self._handshaking:
            started = next(iter(self._handshaking.values()))
            deadline = min(deadline, started + self._settings.handshake_timeout)
        if self._by_activity:
            oldest = next(iter(self._by_activity))
            deadline = min(deadline, oldest.last_activity + self._settings.idle_timeout)
        if self._anonymous:
            connected = next(iter(self._anonymous.values()))
            deadline = min(deadline, connected + self._settings.login_timeout)
        if self._closing:
            began = next(iter(self._closing.values()))
            deadline = min(deadline, began + self._settings.handshake_timeout)
        if self._timers:
            deadline = min(deadline, self._timers[0].deadline)
        return max(0.0, deadline - self._clock())

    def _set_events(self, connection: Connection, events: int) -> None:
        if events == connection.events:
            return
        if connection.events == 0:
            self._selector.register(connection.sock, events, connection)
        elif events == 0:
            self._selector.unregister(connection.sock)
        else:
            self._selector.modify(connection.sock, events, connection)
        connection.events = events

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept: %s; pausing accepts", exc.strerror)
                    self._pause_accepting()
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if len(self._connections) >= self._settings.max_connections:
                log.warning("refused %s:%s: max_connections reached", address[0], address[1])
                sock.close()
                continue
            refused = self._admission.admit(str(address[0]))
            if refused is not None:
                log.warning("refused %s:%s: %s", address[0], address[1], refused)
                sock.close()
                continue
            self._adopt(sock, (str(address[0]), int(address[1])))

    def _pause_accepting(self) -> None:
        listener = self._listener
        if listener is None:
            return
        self._selector.unregister(listener)

        def resume() -> None:
            if self._listener is listener:
                self._selector.register(listener, selectors.EVENT_READ, _LISTENER)

        self.call_later(ACCEPT_PAUSE, resume)

    def _adopt(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = self._channel_factory()
            channel.limit_frames(self._settings.prelogin_max_frame)
        except Exception as exc:
            log_failure(log, f"could not set up connection from {peer[0]}:{peer[1]}", exc)
            self._admission.forget(peer[0], anonymous=True)
            sock.close()
            return
        now = self._clock()
        connection = Connection(sock, channel, peer, self, now)
        self._connections.add(connection)
        self._anonymous[connection] = now
        self._handshaking[connection] = now
        self._by_activity[connection] = None
        self._set_events(connection, selectors.EVENT_READ)
        log.info("connection from %s", connection.address)

    def _drain_waker(self) -> None:
        """Empty the wake-up socket; the callbacks themselves are in `_callbacks`."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_reader.recv(4096):
                continue

    def _read(self, connection: Connection) -> None:
        if connection.closed or connection.closing_reason is not None:
            return
        if connection in self._paused:
            return
        size = READ_SIZE
        if not connection.logged_in_once:
            if self._admission.input_exhausted:
                connection.close("server input budget exhausted")
                return
            # An anonymous peer gets no more than one largest allowed frame per read.
            size = min(READ_SIZE, connection.channel.max_frame + HEADER_SIZE)
        try:
            count = connection.sock.recv_into(self._read_view, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            connection.close(f"read failed: {exc.strerror or type(exc).__name__}")
            return
        if count == 0:
            connection.close("peer closed the connection")
            return
        self._receive(connection, bytes(self._read_view[:count]))

    def _receive(self, connection: Connection, data: bytes) -> None:
        """Take a read: open this turn's share of its records, then serve them."""
        if not self._open(connection, data, self._settings.requests_per_turn):
            return
        if connection in self._handshaking and connection.channel.established:
            del self._handshaking[connection]
        if connection.inbox:
            connection.last_activity = self._clock()
            self._by_activity.move_to_end(connection)
        self._serve(connection)

    def _open(self, connection: Connection, data: bytes, records: int) -> bool:
        """Feed `data` and open at most `records` whole records into the inbox.

        Records past the share stay sealed in the channel's buffer: opening a 256 KiB
        pipelined read at once (hundreds of MACs and decryptions) would hold every
        other connection up by all of it. False if the channel failed (closed).
        """
        try:
            messages = connection.channel.receive_data(data, records)
            connection.queue_bytes(connection.channel.data_to_send())
        except UchatError as exc:
            connection.close(f"{type(exc).__name__}: {exc}")
            return False
        except Exception as exc:
            log_failure(log, f"channel failure on {connection.address}", exc)
            connection.close("internal error in the channel")
            return False
        connection.inbox.extend(messages)
        self._hold_input(
            connection, connection.channel.buffered_input + (len(data) if messages else 0)
        )
        return True

    def _serve(self, connection: Connection) -> None:
        """Dispatch this turn's share of the inbox, opening waiting records as it runs
        dry; stop early while output is over its pause limit (backpressure before
        dispatch, not at flush)."""
        budget = self._settings.requests_per_turn
        ends = time.perf_counter() + self._settings.time_per_turn
        inbox = connection.inbox
        channel = connection.channel
        while connection.is_open and (inbox or channel.records_waiting):
            if connection.pending_output > self._settings.output_pause_limit:
                self._pause(connection)
                return
            if budget <= 0 or (
                budget < self._settings.requests_per_turn and time.perf_counter() > ends
            ):
                self._ready[connection] = None
                return
            if not inbox:
                if not self._open(connection, b"", budget):
                    return
                if not inbox:  # a record holding no request still spends a share
                    budget -= 1
                continue
            message = inbox.pop(0)
            try:
                budget -= max(1, self._on_message(connection, message))
            except Exception as exc:
                log_failure(log, f"dispatch failed on {connection.address}", exc)
                connection.close("internal error in dispatch")
                return
        if connection.closed:
            return
        self._hold_input(connection, connection.channel.buffered_input)
        if connection.pending_output > self._settings.output_pause_limit:
            self._pause(connection)

    def _hold_input(self, connection: Connection, held: int) -> None:
        """Charge what `connection` now holds to the global input budget."""
        self._admission.charge(held - connection.input_held)
        connection.input_held = held

    def _pause(self, connection: Connection) -> None:
        """Neither read nor dispatch `connection` until its output drains (`_flush`)."""
        if connection in self._paused or connection.closed:
            return
        self._paused.add(connection)
        self._to_flush[connection] = None
        self._set_events(connection, connection.events & ~selectors.EVENT_READ)

    def _resume(self, connection: Connection) -> int:
        """Lift a pause; return the READ event to register unless the peer is closing."""
        self._paused.discard(connection)
        if connection.inbox or connection.channel.records_waiting:
            self._ready[connection] = None
        return selectors.EVENT_READ if connection.closing_reason is None else 0

    def _run_callbacks(self) -> None:
        for _ in range(len(self._callbacks)):
            callback = self._callbacks.popleft()
            try:
                callback()
            except Exception as exc:
                log_failure(log, "reactor callback failed", exc)

    def _expire(self) -> None:
        now = self._clock()
        handshake_cutoff = now - self._settings.handshake_timeout
        login_cutoff = now - self._settings.login_timeout
        while self._anonymous:
            connection, connected = next(iter(self._anonymous.items()))
            if connected > login_cutoff:
                break
            connection.close("login timeout")
        while self._handshaking:
            connection, started = next(iter(self._handshaking.items()))
            if started > handshake_cutoff:
                break
            connection.close("handshake timeout")
        idle_cutoff = now - self._settings.idle_timeout
        while self._by_activity:
            connection = next(iter(self._by_activity))
            if connection.last_activity > idle_cutoff:
                break
            connection.close("idle timeout")
        while self._closing:  # a peer that will not take its last output
            connection, began = next(iter(self._closing.items()))
            if began > handshake_cutoff:
                break
            connection.close(f"{connection.closing_reason} (flush timed out)")
        while self._timers and self._timers[0].deadline <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception as exc:
                log_failure(log, "reactor timer failed", exc)

    def _commit_then_flush(self) -> None:
        """Make the turn durable, then write; never write what was not committed.

        The commit hook may queue output of its own (the turn's gathered pushes), so
        what to write is looked at only after it ran.
        """
        committed = self._commit()
        if not self._to_flush:
            return
        if not committed:
            for connection in list(self._to_flush):
                connection.close("storage failure: output withheld")
            self._to_flush.clear()
            return
        pending, self._to_flush = self._to_flush, {}
        for connection in pending:
            if not connection.closed:
                self._flush(connection)

    def _commit(self) -> bool:
        try:
            pending = self._before_flush()
            if pending is not None:
                self._overlap(pending)
                pending.finish()
        except Exception as exc:
            log_failure(log, "commit failed; withholding this turn's output", exc)
            return False
        finally:
            self._close_deferred()
        return True

    def _overlap(self, pending: PendingCommit) -> None:
        """Until `pending` is ready: read and open records for the next turn.

        Only connections with nothing queued this turn are read (what a turn queued
        must not be sealed, or its order disturbed, before the commit), and none that
        is still handshaking, paused, closing or holding undispatched input, so each
        gets at most the share `_serve` would open. Nothing is dispatched or written.
        The selector is level-triggered, so a socket left for later (and the listener)
        is taken out of it until the commit is in, or it would spin this loop.
        """
        muted: list[tuple[Connection, int]] = []
        listener_muted = False
        try:
            while not pending.ready:
                for key, mask in self._selector.select(MAX_WAIT):
                    if key.data is _WAKER:
                        self._drain_waker()
                    elif key.data is _LISTENER:  # accepted next turn
                        self._selector.unregister(key.fileobj)
                        listener_muted = True
                    else:
                        connection: Connection = key.data
                        if mask & selectors.EVENT_READ and self._may_read_ahead(connection):
                            self._read_ahead(connection)
                        events = connection.events
                        if events and not (
                            events == selectors.EVENT_READ and self._may_read_ahead(connection)
                        ):  # left ready (level-triggered), it would spin this loop
                            muted.append((connection, events))
                            self._set_events(connection, 0)
        finally:
            for connection, events in muted:
                if not connection.closed:
                    self._set_events(connection, events)
            if listener_muted and self._listener is not None:
                self._selector.register(self._listener, selectors.EVENT_READ, _LISTENER)

    def _may_read_ahead(self, connection: Connection) -> bool:
        """Logged in (no pre-login budget to charge), idle this turn, nothing held."""
        return connection.logged_in_once and not (
            connection.closed
            or connection.closing_reason is not None
            or connection in self._to_flush
            or connection in self._handshaking
            or connection in self._paused
            or connection in self._closes_after_commit
            or connection.inbox
            or connection.channel.records_waiting
        )

    def _read_ahead(self, connection: Connection) -> None:
        """`_read` and `_open` without a close (deferred) and without a dispatch."""
        try:
            count = connection.sock.recv_into(self._read_view, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close_after_commit(
                connection, f"read failed: {exc.strerror or type(exc).__name__}"
            )
            return
        if count == 0:
            self._close_after_commit(connection, "peer closed the connection")
            return
        data = bytes(self._read_view[:count])
        try:
            messages = connection.channel.receive_data(data, self._settings.requests_per_turn)
        except UchatError as exc:
            self._close_after_commit(connection, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:
            log_failure(log, f"channel failure on {connection.address}", exc)
            self._close_after_commit(connection, "internal error in the channel")
            return
        connection.inbox.extend(messages)
        self._hold_input(
            connection, connection.channel.buffered_input + (len(data) if messages else 0)
        )
        if connection.inbox or connection.channel.records_waiting:
            connection.last_activity = self._clock()
            self._by_activity.move_to_end(connection)
            self._ready[connection] = None

    def _close_after_commit(self, connection: Connection, reason: str) -> None:
        """Stop reading it now; close it (which runs the close hooks) after the commit."""
        self._closes_after_commit[connection] = reason
        self._set_events(connection, connection.events & ~selectors.EVENT_READ)

    def _close_deferred(self) -> None:
        if not self._closes_after_commit:
            return
        closes, self._closes_after_commit = self._closes_after_commit, {}
        for connection, reason in closes.items():
            connection.close(reason)

    def _flush(self, connection: Connection) -> None:
        try:
            connection.write_pending()  # seals the turn's messages into records first
        except OSError as exc:
            connection.close(f"write failed: {exc.strerror or type(exc).__name__}")
            return
        except UchatError as exc:  # sealing refused (sequence numbers exhausted, say)
            connection.close(f"{type(exc).__name__}: {exc}")
            return
        queued = connection.pending_output
        if queued > self._settings.write_buffer_limit:
            log.warning("dropping slow reader %s: %d bytes queued", connection.address, queued)
            connection.close(f"slow reader ({queued} bytes queued)")
            return
        if queued == 0 and connection.closing_reason is not None:
            connection.close(connection.closing_reason)
            return
        wanted = connection.events & ~selectors.EVENT_WRITE
        if connection in self._paused and queued <= self._settings.output_pause_limit:
            wanted |= self._resume(connection)
        if queued:
            wanted |= selectors.EVENT_WRITE
        self._set_events(connection, wanted)
