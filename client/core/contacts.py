"""Friends, rooms and friend requests as the server last described them.

Why it exists: the server's lists arrive at login, by CONTACT_LIST and piecemeal by
pushes on the push thread, while the caller's thread reads them; this module checks
their shape once, keeps them behind one lock, and merges them with the local store's
unread counts into the order the contact list shows (docs/api.md, `contacts()`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from client.core.models import ChatKind, Contact, MessageKind
from client.core.store import ChatSummary
from common.errors import RemoteProtocolError

Target = str | int | Contact  # a username, a room id, or either as a Contact
RoomRef = int | Contact  # a room id is an int everywhere in the API (or the room's Contact)


def room_number(room: RoomRef) -> int:
    """The room id of `room`; TypeError for anything that is not a room."""
    if isinstance(room, Contact):
        return room.room_id
    if isinstance(room, bool) or not isinstance(room, int):
        raise TypeError(f"a room id is an int (or the room's Contact), not {type(room).__name__}")
    return room


def misused_room_id(book: ContactBook, target: Target) -> bool:
    """A room number passed as a str: `history("123")` must fail, not show nothing."""
    return (
        isinstance(target, str)
        and target.isdigit()
        and book.get("user", target) is None
        and book.get("room", target) is not None
    )


def chat_of(target: Target) -> tuple[ChatKind, str]:
    """The conversation a target names: a username, a room id, or a `Contact`."""
    if isinstance(target, Contact):
        return target.kind, target.id
    if isinstance(target, bool):
        raise TypeError("a target is a username, a room id or a Contact")
    if isinstance(target, int):
        return "room", str(target)
    if isinstance(target, str) and target:
        return "user", target
    raise TypeError("a target is a username, a room id or a Contact")


def friend_contact(raw: Any) -> Contact:
    """A protocol `Contact` dict as a `Contact`; RemoteProtocolError if malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("username"), str):
        raise RemoteProtocolError("malformed contact")
    ip, port, last = raw.get("ip", ""), raw.get("port", 0), raw.get("last_message_time", 0)
    return Contact(
        "user",
        raw["username"],
        raw["username"],
        online=raw.get("online") is True,
        ip=ip if isinstance(ip, str) else "",
        port=port if type(port) is int else 0,
        last_message_time=last if type(last) is int else 0,
    )


def room_contact(raw: Any) -> Contact:
    """A protocol `Room` dict as a `Contact`; RemoteProtocolError if malformed."""
    if not isinstance(raw, dict) or type(raw.get("room_id")) is not int:
        raise RemoteProtocolError("malformed room")
    name, members, last = raw.get("name"), raw.get("members", []), raw.get("last_message_time", 0)
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise RemoteProtocolError("malformed room members")
    room_id = raw["room_id"]
    return Contact(
        "room",
        str(room_id),
        name if isinstance(name, str) else f"#{room_id}",
        members=tuple(members),
        last_message_time=last if type(last) is int else 0,
    )


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RemoteProtocolError("expected a list of names")
    return list(value)


def with_summaries(
    known: Iterable[Contact],
    summaries: Mapping[tuple[str, str], ChatSummary],
    drafts: Collection[tuple[str, str]] = (),
) -> list[Contact]:
    """Contacts with unread counts, last messages and draft marks, newest activity first.

    Only activity orders the list (our own sends count): online state is shown, not
    sorted on, so a group with the newest message is never below an older chat.
    """
    merged: list[Contact] = []
    for known_contact in known:
        key = (known_contact.kind, known_contact.id)
        summary = summaries.get(key)
        contact = dataclasses.replace(known_contact, draft=key in drafts)
        if summary is not None:
            contact = dataclasses.replace(
                contact,
                unread=summary.unread,
                last_message=summary.last_message,
                last_message_time=max(known_contact.last_message_time, summary.last_time),
                last_sender=summary.last_sender,
                last_kind=_message_kind(summary.last_kind),
            )
        merged.append(contact)
    merged.sort(key=lambda c: (-c.last_message_time, c.name.casefold(), c.kind))
    return merged


def _message_kind(value: str) -> MessageKind:
    return "image" if value == "image" else "file" if value == "file" else "text"


class ContactBook:
    """Friends, rooms and friend requests as the server last described them; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._friends: dict[str, Contact] = {}
        self._rooms: dict[str, Contact] = {}
        self._requests: list[str] = []
        self._requests_next = ""

    def replace(self, lists: Mapping[str, Any]) -> None:
        """Take the `friends`, `rooms` and `friend_requests` of LOGIN or CONTACT_LIST.

        The server sends the requests a page at a time; `requests_cursor` says where
        the next page starts ("" when none is left) and `extend_requests` adds it.
        """
        friends = [friend_contact(raw) for raw in lists.get("friends", [])]
        rooms = [room_contact(raw) for raw in lists.get("rooms", [])]
        requests = _str_list(lists.get("friend_requests", []))
        cursor = lists.get("friend_requests_next", "")
        with self._lock:
            self._friends = {c.id: c for c in friends}
            self._rooms = {c.id: c for c in rooms}
            self._requests = requests
            self._requests_next = cursor if isinstance(cursor, str) else ""

    def requests_cursor(self) -> str:
        with self._lock:
            return self._requests_next

    def extend_requests(self, page: Mapping[str, Any]) -> str:
        """Add one CONTACT_LIST {requests_after} page; returns the next cursor."""
        names = _str_list(page.get("friend_requests", []))
        cursor = page.get("friend_requests_next", "")
        with self._lock:
            self._requests.extend(name for name in names if name not in self._requests)
            self._requests_next = cursor if isinstance(cursor, str) else ""
            return self._requests_next

    def put(self, contact: Contact) -> None:
        with self._lock:
            (self._friends if contact.kind == "user" else self._rooms)[contact.id] = contact
            if contact.kind == "user" and contact.id in self._requests:
                self._requests.remove(contact.id)

    def pop(self, kind: ChatKind, contact_id: str) -> Contact | None:
        with self._lock:
            return (self._friends if kind == "user" else self._rooms).pop(contact_id, None)

    def get(self, kind: ChatKind, contact_id: str) -> Contact | None:
        with self._lock:
            return (self._friends if kind == "user" else self._rooms).get(contact_id)

    def friend_named(self, name: str) -> str | None:
        """The friend's exact username for `name` (the server ignores case in names)."""
        with self._lock:
            if name in self._friends:
                return name
            folded = name.casefold()
            return next((n for n in self._friends if n.casefold() == folded), None)

    def set_presence(self, username: str, online: bool, ip: str, port: int) -> None:
        with self._lock:
            friend = self._friends.get(username)
            if friend is not None:
                self._friends[username] = dataclasses.replace(
                    friend, online=online, ip=ip or friend.ip, port=port or friend.port
                )

    def room_member(self, room_id: str, username: str, joined: bool) -> None:
        with self._lock:
            room = self._rooms.get(room_id)
            if room is None:
                return
            members = [m for m in room.members if m != username]
            if joined:
                members.append(username)
            self._rooms[room_id] = dataclasses.replace(room, members=tuple(members))

    def add_request(self, username: str) -> None:
        with self._lock:
            if username not in self._requests:
                self._requests.append(username)

    def remove_request(self, username: str) -> None:
        with self._lock:
            if username in self._requests:
                self._requests.remove(username)

    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def all(self) -> list[Contact]:
        with self._lock:
            return [*self._friends.values(), *self._rooms.values()]
