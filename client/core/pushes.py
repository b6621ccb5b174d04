"""What the server pushes, handled in order on one thread of its own.

Why it exists: the socket thread must keep reading (it completes the replies), but
handling a push may need a request of its own, such as fetching a sender's
certificate, whose reply only the socket thread can deliver. So the socket thread
only queues pushes (KICKED excepted: it is acted on at once, before the close it
precedes), and one push thread handles them in server order against the current
session: stores, acknowledges, updates contacts, then emits events.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from client.core.connection import Connection
from client.core.contacts import friend_contact, room_contact
from client.core.event_types import (
    ContactAdded,
    ContactRemoved,
    FriendRequest,
    FriendRequestRefused,
    Kicked,
    PresenceChanged,
    RoomMemberChanged,
)
from client.core.events import Emit
from client.core.models import Contact
from client.core.session import Session, SessionSlot
from common.errors import UchatError
from common.protocol.message import Message
from common.protocol.opcodes import MessageType

log = logging.getLogger(__name__)


class PushHandler:
    """Queues pushes from the socket thread and handles them on the push thread."""

    def __init__(self, *, slot: SessionSlot, emit: Emit, on_kicked: Callable[[], None]) -> None:
        self._slot = slot
        self._emit = emit
        self._on_kicked = on_kicked
        self._pushes: queue.Queue[tuple[Connection, Message] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="uchat-pushes", daemon=True)
        self._thread.start()

    def on_push(self, conn: Connection, message: Message) -> None:
        """Socket thread: KICKED is handled at once, before the close it precedes."""
        if message.type is MessageType.KICKED:
            self._on_kicked()
            reason, address = message.params.get("reason"), message.params.get("address")
            self._emit(
                Kicked(
                    reason if isinstance(reason, str) else "",
                    address if isinstance(address, str) else "",
                )
            )
            return
        self._pushes.put((conn, message))

    def stop(self) -> None:
        """End the push thread once what is queued before this is handled."""
        self._pushes.put(None)

    def _loop(self) -> None:
        while True:
            item = self._pushes.get()
            if item is None:
                return
            _, message = item
            try:
                with self._slot.lock:
                    session = self._slot.get()
                    if session is not None:
                        self._handle(session, message)
            except (UchatError, OSError) as exc:
                log.info("push %s not handled: %s", message.type.name, exc)
            except Exception:
                log.exception("push %s handling failed", message.type.name)

    def _handle(self, session: Session, message: Message) -> None:
        params = message.params
        kind = message.type
        if kind is MessageType.NEW_MESSAGE:
            if session.inbox is not None:  # without keys: leave them on the server
                session.inbox.receive(params.get("messages") or [])
        elif kind is MessageType.MESSAGE_DELIVERED:
            # The server's word only: "delivered" and "read" come from the receipts the
            # recipient's client seals (client/core/receipts.py); a server could forge this.
            log.debug("ignoring the server's MESSAGE_DELIVERED: receipts decide")
        elif kind is MessageType.PRESENCE:
            self._on_presence(session, params)
        elif kind is MessageType.CONTACT_ADDED:
            self._on_contact_added(session, params)
        elif kind is MessageType.CONTACT_REMOVED:
            self._on_contact_removed(session, params)
        elif kind is MessageType.FRIEND_REQUEST:
            sender = params.get("from")
            if isinstance(sender, str):
                session.contacts.add_request(sender)
                self._emit(FriendRequest(sender))
        elif kind is MessageType.FRIEND_REQUEST_REFUSED:
            refuser = params.get("username")
            if isinstance(refuser, str):
                self._emit(FriendRequestRefused(refuser))
        elif kind is MessageType.ROOM_MEMBER_EVENT:
            self._on_room_member(session, params)
        elif kind is MessageType.ROOM_JOIN_REQUEST:
            session.membership.on_join_request(params)
        elif kind is MessageType.ROOM_JOIN_REFUSED:
            session.membership.on_join_refused(params)

    def _on_presence(self, session: Session, params: dict[str, Any]) -> None:
        username, online = params.get("username"), params.get("online")
        ip, port = params.get("ip", ""), params.get("port", 0)
        if not isinstance(username, str) or not isinstance(online, bool):
            return
        ip = ip if isinstance(ip, str) else ""
        port = port if type(port) is int else 0
        session.contacts.set_presence(username, online, ip, port)
        self._emit(PresenceChanged(username, online, ip, port))

    def _on_contact_added(self, session: Session, params: dict[str, Any]) -> None:
        if "contact" in params:
            contact = friend_contact(params["contact"])
            session.certificates.forget_user(contact.id)
        else:
            contact = room_contact(params.get("room"))
        session.contacts.put(contact)
        self._emit(ContactAdded(contact))

    def _on_contact_removed(self, session: Session, params: dict[str, Any]) -> None:
        username, room_id = params.get("username"), params.get("room_id")
        if isinstance(username, str):
            contact = session.contacts.pop("user", username) or Contact("user", username, username)
        elif type(room_id) is int:
            key = str(room_id)
            contact = session.contacts.pop("room", key) or Contact("room", key, f"#{room_id}")
            session.certificates.forget_room(room_id)
        else:
            return
        self._emit(ContactRemoved(contact))

    def _on_room_member(self, session: Session, params: dict[str, Any]) -> None:
        room_id, username, event = (
            params.get("room_id"),
            params.get("username"),
            params.get("event"),
        )
        if type(room_id) is not int or not isinstance(username, str):
            return
        session.membership.on_member_event(room_id, params)
        if event not in ("joined", "left", "removed"):
            return
        session.contacts.room_member(str(room_id), username, event == "joined")
        session.certificates.forget_room(room_id)
        self._emit(RoomMemberChanged(room_id, username, "joined" if event == "joined" else "left"))
