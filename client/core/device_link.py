"""Linking a new computer, driven over the server's relay (one link at a time).

Why it exists: `common/crypto/device_link.py` is the exchange without I/O; this module
feeds it the relay's pushes (LINK_JOINED, LINK_DATA, LINK_CLOSED), sends what it
answers (LINK_SEND), and turns its stages into events (`LinkJoined`, `LinkCompare`,
`LinkFinished`, `LinkFailed`). Pushes arrive on the socket thread, which must never
wait for a reply, so they are handled on a small thread of their own; the user's
decision (`confirm`) and `cancel` come from the caller, under the same lock.

The new computer keeps the received identity in memory until a login with the
account password succeeds (`identity_for`, `forget_identity`): a mistyped password
must not lose it, and the key file is sealed under the password that really works.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from client.core.event_types import LinkCompare, LinkFailed, LinkFinished, LinkJoined, LinkRole
from client.core.events import Emit
from client.core.link import ServerLink
from client.core.session import SessionSlot
from common.crypto.device_link import (
    LinkError,
    NewComputer,
    OldComputer,
    Stage,
    normalise_code,
    pack_identity,
    unpack_identity,
)
from common.crypto.keys import UserKeys
from common.errors import RequestError, UchatError
from common.names import canonical
from common.protocol.message import Message
from common.protocol.opcodes import MessageType

log = logging.getLogger(__name__)

LINK_PUSHES = frozenset({MessageType.LINK_JOINED, MessageType.LINK_DATA, MessageType.LINK_CLOSED})


@dataclass
class _Run:
    role: LinkRole
    username: str
    machine: NewComputer | OldComputer
    identity: bytes = b""  # old computer: what to seal once the user confirms


class DeviceLinking:
    """Start (new computer) or join (old computer) a link; confirm, cancel."""

    def __init__(
        self,
        *,
        link: ServerLink,
        slot: SessionSlot,
        emit: Emit,
        connect: Callable[[], None],
    ) -> None:
        self._link = link
        self._slot = slot
        self._emit = emit
        self._connect = connect
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._received: tuple[str, UserKeys] | None = None
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="uchat-link", daemon=True)
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------

    def start(self, username: str) -> tuple[str, int]:
        """New computer: ask for a code for `username`; returns (code, seconds valid)."""
        if not username.strip():
            raise RequestError("invalid_username", "type your username first", "username")
        self._connect()
        self.cancel()
        with self._lock:
            reply = self._link.request(MessageType.LINK_OPEN, {"username": username})
            code, expires_in = reply.get("code"), reply.get("expires_in")
            if not isinstance(code, str) or type(expires_in) is not int:
                raise RequestError("internal_error", "the server's link reply is malformed")
            self._run = _Run("new", username, NewComputer(username, code))
        return code, expires_in

    def join(self, code: str) -> str:
        """Old computer (logged in): enter the new one's code; returns its address."""
        session, identity = self._slot.require_sender()
        digits = normalise_code(code)
        self.cancel()
        with self._lock:
            reply = self._link.request(MessageType.LINK_JOIN, {"code": digits})
            self._run = _Run(
                "old",
                session.username,
                OldComputer(session.username, digits),
                pack_identity(session.username, identity.keys),
            )
        address = reply.get("address")
        return address if isinstance(address, str) else ""

    def confirm(self, match: bool) -> None:
        """The user compared the six digits: True sends (old) or accepts (new)."""
        with self._lock:
            run = self._run
            if run is None or run.machine.stage is not Stage.COMPARE:
                raise RequestError("no_link", "there is no code to confirm")
            try:
                if isinstance(run.machine, OldComputer):
                    self._send(run.machine.confirm(match, run.identity))
                    self._finish(run)
                else:
                    run.machine.confirm(match)
                    if run.machine.identity is not None:  # it had already arrived
                        self._finish(run)
            except LinkError as exc:
                self._fail(run, exc.code, close="refused" if exc.code == "refused" else "failed")

    def cancel(self) -> None:
        """End the current link, if any (the other computer is told)."""
        with self._lock:
            run = self._run
            if run is not None and run.machine.stage not in (Stage.DONE, Stage.FAILED):
                self._fail(run, "cancelled", close="cancelled")
            self._run = None

    @property
    def active(self) -> bool:
        run = self._run
        return run is not None and run.machine.stage not in (Stage.DONE, Stage.FAILED)

    def identity_for(self, username: str) -> UserKeys | None:
        """The identity a link brought for `username`, kept until a login succeeds."""
        received = self._received
        if received is not None and canonical(received[0]) == canonical(username):
            return received[1]
        return None

    def forget_identity(self) -> None:
        self._received = None

    # -- the socket thread's side -----------------------------------------------------

    def on_push(self, message: Message) -> None:
        """Socket thread: queue it; the link thread does the work (it may send)."""
        self._inbox.put(message)

    def connection_lost(self) -> None:
        """The relay is gone with the connection: an unfinished link has failed."""
        self._inbox.put(Message(MessageType.LINK_CLOSED, 0, {"reason": "connection_lost"}))

    def stop(self) -> None:
        self._inbox.put(None)

    def _loop(self) -> None:
        while True:
            message = self._inbox.get()
            if message is None:
                return
            try:
                with self._lock:
                    self._handle(message)
            except Exception:  # a background thread: report, never die
                log.exception("link push %s handling failed", message.type.name)

    def _handle(self, message: Message) -> None:
        run = self._run
        if run is None or run.machine.stage in (Stage.DONE, Stage.FAILED):
            return
        params = message.params
        machine = run.machine
        try:
            if message.type is MessageType.LINK_JOINED and isinstance(machine, NewComputer):
                address = params.get("address")
                self._emit(LinkJoined(address if isinstance(address, str) else ""))
                self._send(machine.joined())
            elif message.type is MessageType.LINK_DATA:
                data = params.get("data")
                if not isinstance(data, bytes):
                    raise LinkError("bad_message", "a link message that is not bytes")
                before = machine.stage
                answer = machine.receive(data)
                if answer is not None:
                    self._send(answer)
                if machine.stage is Stage.COMPARE and before is not Stage.COMPARE and machine.sas:
                    self._emit(LinkCompare(machine.sas))
                elif machine.stage is Stage.DONE:
                    self._finish(run)
            elif message.type is MessageType.LINK_CLOSED:
                if isinstance(machine, NewComputer) and machine.has_sealed:
                    return  # the identity is here; the user's confirmation opens it
                reason = params.get("reason")
                self._fail(run, reason if isinstance(reason, str) else "cancelled", close=None)
        except LinkError as exc:
            self._fail(run, exc.code, close="failed")
        except RequestError as exc:
            if exc.code != "no_link":
                self._fail(run, exc.code, close="failed")
            # no_link: the other end closed first; its LINK_CLOSED (queued) says why
        except UchatError as exc:
            log.info("link step failed: %s", exc)
            self._fail(run, "connection_lost", close=None)

    # -- shared -------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._link.request(MessageType.LINK_SEND, {"data": data})

    def _finish(self, run: _Run) -> None:
        if isinstance(run.machine, NewComputer):
            identity = run.machine.identity
            if identity is None:
                return
            try:
                username, keys = unpack_identity(identity)
            except LinkError as exc:
                self._fail(run, exc.code, close="failed")
                return
            if canonical(username) != canonical(run.username):
                self._fail(run, "wrong_account", close="failed")
                return
            self._received = (run.username, keys)
            self._close_quietly("done")
        self._emit(LinkFinished(run.role, run.username))

    def _fail(self, run: _Run, reason: str, close: str | None) -> None:
        if run.machine.stage is not Stage.FAILED:
            run.machine.stage = Stage.FAILED
        if close is not None:
            self._close_quietly(close)
        self._emit(LinkFailed(reason))

    def _close_quietly(self, reason: str) -> None:
        conn = self._link.live_or_none()
        if conn is None:
            return
        try:
            conn.start_request(MessageType.LINK_CLOSE, {"reason": reason})
        except UchatError as exc:
            log.info("could not close the link: %s", exc)
