"""One encrypted connection to the server, driven by one socket thread.

The caller's thread connects and runs the handshake (with a timeout and the server pin
check), then a single socket thread reads: it feeds bytes of any split to the
`SecureChannel`, completes the request waiting for each reply, hands pushes to a
callback, sends a PING every `ping_interval` and declares the peer dead when nothing
arrived for two intervals. Writes from any thread are serialised by one lock, so each
request is one record on the wire and large transfers interleave with chat traffic.
Nothing blocks forever: every request has a timeout, and a lost connection fails every
pending request with `ConnectionLost`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.channel import SecureChannel
from common.errors import (
    ConnectionLost,
    HandshakeError,
    ProtocolError,
    RequestError,
    RequestTimeout,
    UchatError,
)
from common.protocol.message import Message, request
from common.protocol.opcodes import PUSHES, MessageType

log = logging.getLogger(__name__)
# What the client accepts from its server in one record. Larger than what the server
# accepts from a client: a login reply lists every group's members, and a user in many
# big groups must still be able to log in. Still a cap, so memory stays bounded.
#: Record MACs the client offers: HMAC-MD5 (the original design's) only when the
#: client's own configuration allows it (`client.allow_hmac_md5`); a server asking for
#: it otherwise fails the handshake with a readable reason.
SAFE_MACS: tuple[str, ...] = ("hmac-sha256",)
WITH_MD5: tuple[str, ...] = ("hmac-sha256", "hmac-md5")
MAX_INBOUND_FRAME = 16 * 1024 * 1024

RECV_SIZE = 256 * 1024
MAX_TICK = 1.0


class PinStore(Protocol):
    """Where trust-on-first-use server fingerprints live (`client.core.pins.ServerPins`)."""

    def get(self, host: str, port: int) -> str | None: ...

    def set(self, host: str, port: int, fingerprint: str) -> None: ...


PushHandler = Callable[["Connection", Message], None]
LostHandler = Callable[["Connection", BaseException | None], None]


@dataclass
class PendingRequest:
    """A request on the wire; `result()` waits for its reply."""

    connection: Connection
    request_id: int
    kind: MessageType
    done: threading.Event = field(default_factory=threading.Event)
    reply: Message | None = None
    error: BaseException | None = None

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The REPLY params; RequestError, RequestTimeout or ConnectionLost otherwise."""
        wait = self.connection.timeout if timeout is None else timeout
        if not self.done.wait(wait):
            self.connection.forget(self.request_id)
            raise RequestTimeout(f"no reply to {self.kind.name} within {wait:g} s")
        if self.error is not None:
            raise self.error
        if self.reply is None:
            raise ConnectionLost("the request ended without a reply")
        if self.reply.type is MessageType.ERROR:
            raise _request_error(self.reply.params)
        return self.reply.params


def _request_error(params: dict[str, Any]) -> RequestError:
    code = params.get("code")
    message = params.get("message")
    field_name = params.get("field")
    return RequestError(
        code if isinstance(code, str) else "internal_error",
        message if isinstance(message, str) else "the server refused the request",
        field_name if isinstance(field_name, str) else None,
    )


class Connection:
    """A TCP + SecureChannel session; `open()` once, then `request()` from any thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_push: PushHandler,
        on_lost: LostHandler,
        expected_fingerprint: str | None = None,
        pins: PinStore | None = None,
        timeout: float = 10.0,
        ping_interval: float = 30.0,
        accepted_macs: Sequence[str] = SAFE_MACS,
    ) -> None:
        self.host = host
        self._accepted_macs = tuple(accepted_macs)
        self.port = port
        self.timeout = timeout
        self.ping_interval = ping_interval
        self._on_push = on_push
        self._on_lost = on_lost
        self._expected_fingerprint = expected_fingerprint
        self._pins = pins
        self._sock: socket.socket | None = None
        self._channel: SecureChannel | None = None
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: dict[int, PendingRequest] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_received = time.monotonic()
        self._last_ping = time.monotonic()
        self.server_fingerprint: str | None = None
        self.server_certificate: bytes | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def alive(self) -> bool:
        return self._thread is not None and not self._closed

    def open(self) -> str:
        """Connect, run the handshake (pin checked), start the socket thread.

        Returns the server fingerprint. Raises `ConnectionLost` if the server cannot be
        reached or hangs up, `RequestTimeout` if the handshake is too slow, and
        `HandshakeError` if the server is not the one we pinned.
        """
        pinned = self._expected_fingerprint
        if pinned is None and self._pins is not None:
            pinned = self._pins.get(self.host, self.port)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError as exc:
            raise RequestTimeout(f"connecting to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = SecureChannel.client(
                expected_fingerprint=pinned,
                accepted_macs=self._accepted_macs,
                max_frame=MAX_INBOUND_FRAME,
            )
            early = self._handshake(sock, channel)
            if pinned is None and self._pins is not None and channel.peer_fingerprint:
                self._pins.set(self.host, self.port, channel.peer_fingerprint)  # first sight
        except BaseException:
            sock.close()
            raise
        self._sock, self._channel = sock, channel
        self.server_fingerprint = channel.peer_fingerprint
        self.server_certificate = channel.peer_certificate_der
        self._last_received = self._last_ping = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(early,), name=f"uchat-socket-{self.port}", daemon=True
        )
        self._thread.start()
        return channel.peer_fingerprint or ""

    def _handshake(self, sock: socket.socket, channel: SecureChannel) -> list[Message]:
        """Blocking handshake bounded by one overall deadline; returns early messages."""
        deadline = time.monotonic() + self.timeout
        try:
            sock.sendall(channel.initiate())
            early: list[Message] = []
            while not channel.established:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout("the server did not complete the handshake in time")
                sock.settimeout(remaining)
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise ConnectionLost("the server closed the connection during the handshake")
                early.extend(channel.receive_data(data))
                out = channel.data_to_send()
                if out:
                    sock.sendall(out)
            sock.settimeout(self.timeout)
            return early
        except TimeoutError as exc:
            raise RequestTimeout("the server did not complete the handshake in time") from exc
        except HandshakeError:
            raise
        except ProtocolError as exc:
            raise HandshakeError(f"the server sent a malformed handshake: {exc}") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection failed during the handshake: {exc}") from exc

    def close(self) -> None:
        """Close on purpose; pending requests fail with ConnectionLost."""
        self._shutdown(None, notify=True)

    # ------------------------------------------------------------------ requests

    def start_request(self, kind: MessageType, params: dict[str, Any]) -> PendingRequest:
        """Send one request now and return its handle (used to pipeline chunks)."""
        if self._closed or self._channel is None:
            raise ConnectionLost("not connected")
        request_id = next(self._ids)
        pending = PendingRequest(self, request_id, kind)
        message = request(kind, request_id, **params)
        with self._state_lock:
            self._pending[request_id] = pending
        self._write(message)
        return pending

    def request(
        self, kind: MessageType, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a request and wait for its REPLY params (RequestError on ERROR)."""
        return self.start_request(kind, params or {}).result(timeout)

    def forget(self, request_id: int) -> None:
        """Drop a timed-out waiter so a late reply is ignored."""
        with self._state_lock:
            self._pending.pop(request_id, None)

    def _write(self, message: Message) -> None:
        with self._write_lock:
            self._write_locked(message)

    def _write_locked(self, message: Message) -> None:
        channel, sock = self._channel, self._sock
        if self._closed or channel is None or sock is None:
            raise ConnectionLost("not connected")
        try:
            data = channel.send(message)
            sock.sendall(data)
        except (OSError, UchatError) as exc:
            # a partial write desynchronises the record stream: the connection is done
            self._shutdown(exc, notify=True)
            raise ConnectionLost(f"connection lost while sending: {exc}") from exc

    # ------------------------------------------------------------------ socket thread

    def _run(self, early: list[Message]) -> None:
        error: BaseException | None = None
        try:
            for message in early:
                self._dispatch(message)
            self._read_loop()
        except (OSError, ValueError, UchatError) as exc:
            # ValueError: selecting on a socket another thread has just closed
            error = exc
        except Exception as exc:  # a bug must not leave waiters hanging forever
            log.exception("socket thread crashed")
            error = exc
        if self._closed:
            return
        self._shutdown(error or ConnectionLost("the server closed the connection"), notify=True)

    def _read_loop(self) -> None:
        sock, channel = self._sock, self._channel
        if sock is None or channel is None:
            return
        tick = min(MAX_TICK, max(self.ping_interval / 4, 0.01))
        # a selector, not select.select(): no FD_SETSIZE limit when a benchmark opens
        # thousands of clients in one process
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while not self._closed:
                if selector.select(tick):
                    data = sock.recv(RECV_SIZE)
                    if not data:
                        return
                    self._last_received = time.monotonic()
                    for message in channel.receive_data(data):
                        self._dispatch(message)
                self._keep_alive()

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if now - self._last_received > 2 * self.ping_interval:
            raise ConnectionLost("the server stopped answering (dead peer)")
        if now - self._last_ping < self.ping_interval:
            return
        # never wait behind a long write: a busy writer proves the link is in use
        if not self._write_lock.acquire(blocking=False):
            return
        try:
            self._last_ping = now
            request_id = next(self._ids)
            self._write_locked(request(MessageType.PING, request_id))
        finally:
            self._write_lock.release()

    def _dispatch(self, message: Message) -> None:
        if message.request_id == 0:
            if message.type in PUSHES:
                self._on_push(self, message)
            return
        with self._state_lock:
            pending = self._pending.pop(message.request_id, None)
        if pending is None:
            return  # a PING reply, or the reply to a request that timed out
        if message.type in (MessageType.REPLY, MessageType.ERROR):
            pending.reply = message
        else:
            pending.error = ConnectionLost(f"unexpected {message.type.name} reply")
        pending.done.set()

    # ------------------------------------------------------------------ teardown

    def _shutdown(self, error: BaseException | None, *, notify: bool) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        reason = "connection closed" if error is None else f"connection lost: {error}"
        for waiter in pending:
            waiter.error = ConnectionLost(reason)
            waiter.done.set()
        if notify:
            self._on_lost(self, error)
