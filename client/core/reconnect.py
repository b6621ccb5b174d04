"""Getting back online by itself after the connection drops.

Why it exists: a dropped connection should heal without the user (or the GUI) doing
anything, yet some drops must stay dropped: the user logged out or closed the client,
another login kicked this one, or the server refused the account or its identity. This
module holds that policy, the credentials it needs (memory only), and the one thread
that retries with jittered exponential back-off.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import Protocol

from client.core.event_types import ConnectionChanged
from client.core.events import Emit
from client.core.link import ServerLink
from common.errors import CertificateError, HandshakeError, RequestError, UchatError

log = logging.getLogger(__name__)

#: Login refusals that say "try again later" rather than "never".
TRANSIENT_LOGIN_ERRORS = frozenset({"server_busy", "too_many_attempts", "internal_error"})

Relogin = Callable[[str, str], object]


class BackOff(Protocol):
    """The back-off bounds in seconds, read at every attempt (callers may tune them)."""

    reconnect_min: float
    reconnect_max: float


class Reconnector:
    """Decides whether to reconnect, and runs the reconnect thread when it should."""

    def __init__(
        self,
        link: ServerLink,
        *,
        back_off: BackOff,
        relogin: Relogin,
        emit: Emit,
        auto_reconnect: bool,
        failover: Callable[[], bool] | None = None,
    ) -> None:
        self._link = link
        #: Moves the link to the next cluster address; True once every address failed
        #: in this round (only then does the wait grow).
        self._failover = failover
        self._back_off = back_off
        self._relogin = relogin
        self._emit = emit
        self._auto_reconnect = auto_reconnect
        self._allowed = auto_reconnect
        self._credentials: tuple[str, str] | None = None  # memory only, for re-login
        self._kicked = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running = False

    # ---------------------------------------------------------------- policy inputs

    def allow(self) -> None:
        """A user-initiated connect or login succeeded: reconnect again if configured to."""
        self._allowed = self._auto_reconnect

    def remember(self, username: str, password: str) -> None:
        """A login succeeded: these credentials log in again after a drop."""
        self._credentials = (username, password)
        self._kicked = False

    def forget(self) -> None:
        """Logged out: never log in again by ourselves."""
        self._credentials = None

    def kicked(self) -> None:
        """Socket thread: another login of this account took over; stay offline."""
        self._kicked = True

    def stop(self) -> None:
        """The client is closing: end any back-off wait at once."""
        self._stop.set()

    def _should_reconnect(self) -> bool:
        return (
            not self._link.closed
            and not self._stop.is_set()
            and self._allowed
            and not self._kicked
            and self._credentials is not None
        )

    # ---------------------------------------------------------------- the thread

    def schedule(self) -> None:
        """Socket thread (connection lost): start the reconnect thread unless it runs."""
        with self._lock:
            if self._running or not self._should_reconnect():
                return
            self._running = True
        threading.Thread(target=self._run, name="uchat-reconnect", daemon=True).start()

    def _run(self) -> None:
        try:
            self._reconnect_until_done()
        finally:
            with self._lock:
                self._running = False
        if not self._link.connected:
            self.schedule()  # lost again while we were finishing

    def _reconnect_until_done(self) -> None:
        delay = self._back_off.reconnect_min
        self._emit(ConnectionChanged("reconnecting"))
        while self._should_reconnect():
            pause = secrets.SystemRandom().uniform(delay / 2, delay)
            if self._stop.wait(pause):
                return
            credentials = self._credentials
            if credentials is None:
                return
            try:
                self._link.ensure_open()
                self._relogin(*credentials)
            except (HandshakeError, CertificateError) as exc:
                self._give_up(exc)
                return
            except RequestError as exc:
                if exc.code not in TRANSIENT_LOGIN_ERRORS:
                    self._give_up(exc)
                    return
            except (UchatError, OSError) as exc:  # unreachable, timed out, garbled: retry
                log.info("reconnect attempt failed: %s", exc)
            else:
                self._emit(ConnectionChanged("connected"))
                return
            if self._failover is None or self._failover():
                delay = min(delay * 2, self._back_off.reconnect_max)

    def _give_up(self, error: BaseException) -> None:
        self._allowed = False
        self._emit(ConnectionChanged("disconnected", str(error)))
