"""The requests that change who you talk to: friends, friend requests, rooms.

Why it exists: each of these is a server request followed by keeping the session's
contact book (and its cached room certificates) in step with what the server now
says, without waiting for the push that may or may not follow. `ChatClient` forwards
to it.
"""

from __future__ import annotations

from typing import Any

from client.core.contacts import ContactBook, room_contact, with_summaries
from client.core.models import Contact
from client.core.session import Request, SessionSlot
from common.crypto.membership import Policy
from common.errors import RemoteProtocolError, RequestError
from common.protocol.opcodes import MessageType


def _dict_list(reply: dict[str, Any], field: str, request: str) -> list[dict[str, Any]]:
    items = reply.get(field)
    if not isinstance(items, list):
        raise RemoteProtocolError(f"{request} reply lacks {field}")
    return [item for item in items if isinstance(item, dict)]


class JoinPending(RequestError):
    """The join request waits for an admin of the room (its policy is "approval")."""

    def __init__(self, room_id: int) -> None:
        super().__init__(
            "join_pending", "your request to join was sent to the group's admins", "room_id"
        )
        self.room_id = room_id


MAX_REQUEST_PAGES = 10_000  # a server that never says "done" cannot keep us looping


def fetch_remaining_requests(contacts: ContactBook, request: Request) -> int:
    """Fetch the friend requests beyond the first page (LOGIN pages them); returns pages."""
    cursor, pages = contacts.requests_cursor(), 0
    while cursor and pages < MAX_REQUEST_PAGES:
        page = request(MessageType.CONTACT_LIST, {"requests_after": cursor})
        cursor, pages = contacts.extend_requests(page), pages + 1
    return pages


class Directory:
    """Friends and rooms, as server requests on behalf of the current session."""

    def __init__(self, *, slot: SessionSlot, request: Request) -> None:
        self._slot = slot
        self._request = request

    def search_users(self, query: str) -> list[dict[str, Any]]:
        """The first page of users whose name starts with `query` (case-folded)."""
        return self.search_users_page(query)[0]

    def search_users_page(
        self, query: str, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of matches and the cursor for the next (None after the last)."""
        params: dict[str, Any] = {"query": query}
        if after is not None:
            params["after"] = after
        reply = self._request(MessageType.SEARCH_USERS, params)
        cursor = reply.get("next")
        if cursor is not None and not isinstance(cursor, str):
            raise RemoteProtocolError("SEARCH_USERS reply has a bad 'next' cursor")
        return _dict_list(reply, "users", "SEARCH_USERS"), cursor

    def add_friend(self, username: str) -> bool:
        """True when `username` had asked us first: the server accepted that request."""
        session = self._slot.require()
        folded = username.casefold()
        asker = next((n for n in session.contacts.requests() if n.casefold() == folded), None)
        self._request(MessageType.ADD_FRIEND, {"username": username})
        if asker is not None:
            session.contacts.remove_request(asker)
        return asker is not None

    def answer_friend_request(self, username: str, accept: bool | None) -> None:
        session = self._slot.require()
        decision = "later" if accept is None else ("accept" if accept else "reject")
        self._request(
            MessageType.RESOLVE_FRIEND_REQUEST, {"username": username, "decision": decision}
        )
        if accept is not None:
            session.contacts.remove_request(username)

    def delete_friend(self, username: str) -> None:
        self._slot.require()
        self._request(MessageType.DELETE_FRIEND, {"username": username})

    def refresh(self) -> None:
        session = self._slot.require()
        session.contacts.replace(self._request(MessageType.CONTACT_LIST, None))
        fetch_remaining_requests(session.contacts, self._request)

    def contacts(self) -> list[Contact]:
        session = self._slot.require()
        store = session.store
        return with_summaries(session.contacts.all(), store.chat_summaries(), store.drafted_chats())

    def create_room(self, name: str, policy: Policy = Policy.OPEN) -> Contact:
        session = self._slot.require()
        contact = room_contact(session.membership.create(name, policy))
        session.contacts.put(contact)
        return contact

    def join_room(self, room_id: int) -> Contact:
        """Join with a signed join; `JoinPending` when the room's admins must approve."""
        session = self._slot.require()
        reply = session.membership.join(room_id)
        if reply.get("pending"):
            raise JoinPending(room_id)
        contact = room_contact(reply)
        session.contacts.put(contact)
        return contact

    def leave_room(self, room_id: int, successor: str | None = None) -> None:
        session = self._slot.require()
        session.membership.leave_handing_over(room_id, successor)
        session.contacts.pop("room", str(room_id))
        session.certificates.forget_room(room_id)

    def room_members(self, room_id: int) -> list[dict[str, Any]]:
        """The verified members (the signed log's), with presence and role.

        [{username, online, admin, owner}]; the server's own list only lends presence, and a
        difference raises `MembershipAlarm`.
        """
        session = self._slot.require()
        served = session.membership.check_server_list(room_id)
        online = {m["username"]: m.get("online") is True for m in served}
        verified = session.membership.verified(room_id)
        if verified is None:
            raise RequestError("membership_unverified", "this group's membership does not verify")
        return [
            {
                "username": name,
                "online": online.get(name, False),
                "admin": name in verified.admins,
                "owner": name == verified.owner,
            }
            for name in sorted(verified.members)
        ]
