"""One client connection: its socket, its secure channel and its output queue.

A `Connection` never writes to its socket by itself. `send()` encodes and queues the
message; the reactor writes queued output at the end of its loop turn, after the
database commit, so nothing is acknowledged before it is durable (group commit).
Everything a turn queued for one connection is sealed into as few records as fit
(`MAX_BATCH_BYTES` each; docs/protocol.md §3): one record per connection per turn in
the common case, which saves a MAC, a cipher and a header per message. The connection
keeps no fixed buffer: an idle one holds two empty lists and a channel.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Protocol

from common.protocol.message import MAX_MESSAGES_PER_RECORD as MAX_PER_RECORD
from common.protocol.message import Message, encode_message

if TYPE_CHECKING:
    from server.session_cache import SessionCache

log = logging.getLogger(__name__)

#: At most this many buffers go to one sendmsg() call (Linux IOV_MAX is 1024).
MAX_IOV = 512
#: Messages queued in one turn share a record up to this many plaintext bytes; a
#: message bigger than that goes in a record of its own. Far below every frame cap.
MAX_BATCH_BYTES = 256 * 1024


class Channel(Protocol):
    """What a connection needs from `common.channel.SecureChannel` (sans-IO)."""

    @property
    def established(self) -> bool: ...

    def receive_data(self, data: bytes, max_records: int | None = None) -> list[Message]: ...

    @property
    def records_waiting(self) -> bool: ...

    def data_to_send(self) -> bytes: ...

    def send_batch(self, bodies: list[bytes]) -> bytes: ...

    @property
    def buffered_input(self) -> int: ...

    @property
    def max_frame(self) -> int: ...

    def limit_frames(self, max_frame: int) -> None: ...


class ConnectionHost(Protocol):
    """The reactor side of a connection: told when output waits and when it closes."""

    def output_queued(self, connection: Connection) -> None: ...

    def release(self, connection: Connection, reason: str) -> None: ...

    def stop_reading(self, connection: Connection) -> None: ...

    def authenticated(self, connection: Connection) -> None: ...

    def hold_anonymous(self, connection: Connection) -> None: ...


class Connection:
    """A socket, its `SecureChannel`, the bound user and a bounded write queue."""

    __slots__ = (
        "_bodies",
        "_bodies_size",
        "_host",
        "_out",
        "_out_size",
        "_user_id",
        "channel",
        "closed",
        "closing_reason",
        "events",
        "inbox",
        "input_held",
        "last_activity",
        "logged_in_once",
        "peer",
        "replaced",
        "session_cache",
        "sock",
        "username",
    )

    def __init__(
        self,
        sock: socket.socket,
        channel: Channel,
        peer: tuple[str, int],
        host: ConnectionHost,
        now: float,
    ) -> None:
        self.sock = sock
        self.channel = channel
        self.peer = peer
        self._user_id: int | None = None
        #: True from the first successful LOGIN on: the pre-login limits stop applying.
        self.logged_in_once = False
        #: Requests decoded but not yet dispatched (the per-turn budget leaves the rest).
        #: A list, not a deque: an empty deque costs 624 bytes, 10,000 of them 6 MB,
        #: and an inbox holds at most a turn's share of records.
        self.inbox: list[Message] = []
        #: Input bytes this connection holds (partial frame + undispatched read), as
        #: charged to the reactor's global input budget.
        self.input_held = 0
        self.username: str | None = None
        #: True once a newer login of the same user took over this session.
        self.replaced = False
        #: The send path's per-session lookups (`server.session_cache`).
        self.session_cache: SessionCache | None = None
        self.closed = False
        #: Set by close_after_flush(): no more input; close once output is written.
        self.closing_reason: str | None = None
        self.last_activity = now
        #: The selector events currently registered for this socket (0 = none).
        self.events = 0
        self._host = host
        self._out: list[bytes | memoryview] = []
        self._out_size = 0
        # Encoded messages queued this turn, sealed into records when output is written.
        self._bodies: list[bytes] = []
        self._bodies_size = 0

    def __repr__(self) -> str:
        return f"<Connection {self.address} user={self.username!r} closed={self.closed}>"

    @property
    def address(self) -> str:
        """`ip:port` of the peer, as shown in logs and KICKED pushes."""
        return f"{self.peer[0]}:{self.peer[1]}"

    @property
    def user_id(self) -> int | None:
        """The logged-in user, or None; the first login lifts the pre-login limits."""
        return self._user_id

    @user_id.setter
    def user_id(self, value: int | None) -> None:
        self._user_id = value
        if value is not None and not self.logged_in_once:
            self.logged_in_once = True
            self._host.authenticated(self)

    def hold_for_link(self) -> None:
        """A link code waits on this anonymous connection: no login deadline for it.

        The link relay bounds such connections and closes them when the link ends.
        """
        if not self.logged_in_once:
            self._host.hold_anonymous(self)

    @property
    def pending_output(self) -> int:
        """Bytes queued but not yet accepted by the kernel (messages not yet sealed too)."""
        return self._out_size + self._bodies_size

    @property
    def is_open(self) -> bool:
        """True while new output may still be queued (not closed, not closing)."""
        return not self.closed and self.closing_reason is None

    def send(self, message: Message) -> None:
        """Encode `message` and queue it; it goes out after this turn's commit.

        Raises LocalProtocolError at once for params the codec refuses.
        """
        if self.closed:
            return
        self.send_encoded(encode_message(message))

    def send_encoded(self, body: bytes) -> None:
        """Queue one already encoded message (fan-out encodes a push only once)."""
        if self.closed:
            return
        self._bodies.append(body)
        self._bodies_size += len(body)
        self._host.output_queued(self)

    def queue_bytes(self, data: bytes) -> None:
        """Queue bytes already framed for this connection (handshake or sealed record)."""
        if self.closed or not data:
            return
        self.seal_queued()  # keep the order in which things were queued
        self._out.append(data)
        self._out_size += len(data)
        self._host.output_queued(self)

    def seal_queued(self) -> None:
        """Seal the messages queued so far into records, `MAX_BATCH_BYTES` at most each."""
        bodies = self._bodies
        if not bodies:
            return
        self._bodies = []
        self._bodies_size = 0
        batch: list[bytes] = []
        size = 0
        for body in bodies:
            if batch and (size + len(body) > MAX_BATCH_BYTES or len(batch) == MAX_PER_RECORD):
                self._append_record(self.channel.send_batch(batch))
                batch, size = [], 0
            batch.append(body)
            size += len(body)
        self._append_record(self.channel.send_batch(batch))

    def _append_record(self, record: bytes) -> None:
        self._out.append(record)
        self._out_size += len(record)

    def close(self, reason: str) -> None:
        """Close now, dropping queued output; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._out = []
        self._out_size = 0
        self.inbox.clear()
        self._bodies = []
        self._bodies_size = 0
        self._host.release(self, reason)

    def close_after_flush(self, reason: str) -> None:
        """Stop reading and close once everything queued so far has been written."""
        if self.closed or self.closing_reason is not None:
            return
        self.closing_reason = reason
        self._host.stop_reading(self)
        self._host.output_queued(self)

    def write_pending(self) -> int:
        """Write as much queued output as the socket takes; return the bytes written.

        Raises OSError (other than would-block) for the reactor to close on.
        """
        self.seal_queued()
        written = 0
        while self._out:
            batch = self._out[:MAX_IOV]
            try:
                sent = self.sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                break
            written += sent
            self._consume(sent)
            if sent < sum(len(part) for part in batch):
                break  # the kernel buffer is full
        return written

    def _consume(self, count: int) -> None:
        """Drop `count` written bytes from the front of the queue."""
        self._out_size -= count
        index = 0
        while count:
            part = self._out[index]
            if len(part) <= count:
                count -= len(part)
                index += 1
            else:
                self._out[index] = memoryview(part)[count:]
                count = 0
        del self._out[:index]
