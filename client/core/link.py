"""The client's current connection to its server, replaced whole when it drops.

Why it exists: `Connection` is one TCP session and dies with it; the client outlives
many of them. This module owns which connection is current (opening a new one is
serialised by one lock, so a user's `connect()` and the reconnect thread never open two),
routes requests to it, and reports only the loss of the *current* one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from client.core.connection import SAFE_MACS, WITH_MD5, Connection, PendingRequest, PinStore
from client.core.connection import PushHandler as ConnectionPushHandler
from client.core.event_types import ConnectionChanged
from client.core.events import Emit
from common.errors import ConnectionLost, HandshakeError, UchatError
from common.protocol.opcodes import MessageType


class LinkSettings(Protocol):
    """Where and how to connect: read at every open, so a change applies to the next one."""

    host: str
    port: int
    timeout: float
    ping_interval: float
    allow_hmac_md5: bool


class ServerLink:
    """Opens, remembers and closes the connection to one server (host, port, pin)."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        pins: PinStore,
        expected_fingerprint: str | None,
        emit: Emit,
        on_push: ConnectionPushHandler,
        on_lost: Callable[[], None],
        cluster: Callable[[], Sequence[tuple[str, int]]] = tuple,
    ) -> None:
        self._settings = settings
        #: Every address of the server's cluster (one identity): a pin taken at one
        #: of them is required at the others.
        self._cluster = cluster
        self._pins = pins
        self._expected_fingerprint = expected_fingerprint
        self._emit = emit
        self._on_push = on_push
        self._on_lost_current = on_lost
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()
        self._server_fingerprint = ""
        self.closed = False

    @property
    def server_fingerprint(self) -> str:
        """SHA-256 of the server certificate we are (or were last) connected to."""
        return self._server_fingerprint

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.alive

    def connect(self) -> bool:
        """Open a connection unless one is alive; True if this call opened it.

        Emits `connection` `connecting`, then `disconnected` (and re-raises) on failure;
        the caller emits `connected`, once whatever else it does on success is done.
        """
        if self.closed:
            raise ConnectionLost("the client is closed")
        with self._conn_lock:
            if self.connected:
                return False
            self._emit(ConnectionChanged("connecting"))
            try:
                self._open()
            except UchatError as exc:
                self._emit(ConnectionChanged("disconnected", str(exc)))
                raise
        return True

    def ensure_open(self) -> None:
        """Open a connection if none is alive, without events (the reconnect thread)."""
        with self._conn_lock:
            if not self.connected:
                self._open()

    def _cluster_pin(self, host: str, port: int) -> str | None:
        """The pin another address of this cluster has, when `host:port` has none."""
        if self._pins.get(host, port) is not None:
            return None
        for other in self._cluster():
            pinned = self._pins.get(*other)
            if pinned is not None:
                return pinned
        return None

    def _open(self) -> Connection:
        settings = self._settings
        expected = self._expected_fingerprint or self._cluster_pin(settings.host, settings.port)
        conn = Connection(
            settings.host,
            settings.port,
            on_push=self._on_push,
            on_lost=self._on_lost,
            expected_fingerprint=expected,
            pins=self._pins,
            timeout=settings.timeout,
            ping_interval=settings.ping_interval,
            accepted_macs=WITH_MD5 if settings.allow_hmac_md5 else SAFE_MACS,
        )
        self._server_fingerprint = conn.open()
        if self._expected_fingerprint is None and expected is not None:
            # Verified against the cluster's pin: this address now has it too.
            self._pins.set(settings.host, settings.port, self._server_fingerprint)
        self._conn = conn
        return conn

    def current(self) -> Connection:
        """The live connection; ConnectionLost if there is none."""
        conn = self._conn
        if conn is None or not conn.alive:
            raise ConnectionLost("not connected to the server")
        return conn

    def live_or_none(self) -> Connection | None:
        """The live connection, or None: for a best-effort goodbye."""
        conn = self._conn
        return conn if conn is not None and conn.alive else None

    def request(self, kind: MessageType, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.current().request(kind, params or {})

    def start_request(self, kind: MessageType, params: dict[str, Any]) -> PendingRequest:
        return self.current().start_request(kind, params)

    def _on_lost(self, conn: Connection, error: BaseException | None) -> None:
        """Socket thread: a superseded connection's death is nobody's business."""
        if conn is not self._conn:
            return
        self._emit(ConnectionChanged("disconnected", str(error) if error else ""))
        self._on_lost_current()

    def close(self) -> None:
        """For good: no new connection opens after this."""
        self.closed = True
        conn = self._conn
        if conn is not None:
            conn.close()


def server_ca(conn: Connection) -> bytes:
    """The CA that certifies users: the server certificate the handshake authenticated."""
    if conn.server_certificate is None:
        raise HandshakeError("the server presented no certificate")
    return conn.server_certificate
