"""One client connection: its socket, its secure channel and its output queue.

A `Connection` never writes to its socket by itself. `send()` encrypts and queues;
the reactor writes queued output at the end of its loop turn, after the database
commit, so nothing is acknowledged before it is durable (group commit). The
connection keeps no fixed buffer: an idle one holds an empty list and a channel.
"""

from __future__ import annotations

import logging
import socket
from typing import Protocol

from common.protocol.message import Message

log = logging.getLogger(__name__)

#: At most this many buffers go to one sendmsg() call (Linux IOV_MAX is 1024).
MAX_IOV = 512


class Channel(Protocol):
    """What a connection needs from `common.channel.SecureChannel` (sans-IO)."""

    @property
    def established(self) -> bool: ...

    def receive_data(self, data: bytes) -> list[Message]: ...

    def data_to_send(self) -> bytes: ...

    def send(self, message: Message) -> bytes: ...


class ConnectionHost(Protocol):
    """The reactor side of a connection: told when output waits and when it closes."""

    def output_queued(self, connection: Connection) -> None: ...

    def release(self, connection: Connection, reason: str) -> None: ...

    def stop_reading(self, connection: Connection) -> None: ...


class Connection:
    """A socket, its `SecureChannel`, the bound user and a bounded write queue."""

    __slots__ = (
        "_host",
        "_out",
        "_out_size",
        "backlog_cursor",
        "channel",
        "closed",
        "closing_reason",
        "events",
        "last_activity",
        "peer",
        "replaced",
        "sock",
        "user_id",
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
        self.user_id: int | None = None
        # Offline backlog flow control: the last delivery row pushed while more may
        # remain; the next window goes out when the client acknowledges (ACK_DELIVERY).
        self.backlog_cursor: int | None = None
        self.username: str | None = None
        #: True once a newer login of the same user took over this session.
        self.replaced = False
        self.closed = False
        #: Set by close_after_flush(): no more input; close once output is written.
        self.closing_reason: str | None = None
        self.last_activity = now
        #: The selector events currently registered for this socket (0 = none).
        self.events = 0
        self._host = host
        self._out: list[bytes | memoryview] = []
        self._out_size = 0

    def __repr__(self) -> str:
        return f"<Connection {self.address} user={self.username!r} closed={self.closed}>"

    @property
    def address(self) -> str:
        """`ip:port` of the peer, as shown in logs and KICKED pushes."""
        return f"{self.peer[0]}:{self.peer[1]}"

    @property
    def pending_output(self) -> int:
        """Bytes queued but not yet accepted by the kernel."""
        return self._out_size

    @property
    def is_open(self) -> bool:
        """True while new output may still be queued (not closed, not closing)."""
        return not self.closed and self.closing_reason is None

    def send(self, message: Message) -> None:
        """Encrypt `message` and queue it; it goes out after this turn's commit."""
        if self.closed:
            return
        self.queue_bytes(self.channel.send(message))

    def queue_bytes(self, data: bytes) -> None:
        """Queue bytes already framed for this connection (handshake or sealed record)."""
        if self.closed or not data:
            return
        self._out.append(data)
        self._out_size += len(data)
        self._host.output_queued(self)

    def close(self, reason: str) -> None:
        """Close now, dropping queued output; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._out = []
        self._out_size = 0
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
