"""The events the headless client hands to its listeners: one frozen dataclass per kind.

Why typed: a listener matches with `isinstance` and mypy checks every field it reads,
where `Event(kind: str, data: dict)` let a misspelt key or a wrong type through to the
screen. `kind` stays as a class constant (the name docs/api.md and logs use) and `data`
gives the fields as a dict for generic code such as test matchers; typed code reads the
attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from client.core.models import ChatMessage, Contact, MessageStatus

ConnectionState = Literal["connecting", "connected", "disconnected", "reconnecting"]
TransferDirection = Literal["upload", "download"]
MemberChange = Literal["joined", "left"]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; see docs/api.md for the list."""

    kind: ClassVar[str] = "event"

    @property
    def data(self) -> dict[str, Any]:
        """The fields by name (for logging and generic matchers)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class ConnectionChanged(Event):
    kind: ClassVar[str] = "connection"
    state: ConnectionState
    error: str = ""


@dataclass(frozen=True, slots=True)
class Kicked(Event):
    """Another login took the account; `address` is where it came from."""

    kind: ClassVar[str] = "kicked"
    reason: str
    address: str


@dataclass(frozen=True, slots=True)
class PresenceChanged(Event):
    kind: ClassVar[str] = "presence"
    username: str
    online: bool
    ip: str = ""
    port: int = 0


@dataclass(frozen=True, slots=True)
class ContactAdded(Event):
    kind: ClassVar[str] = "contact_added"
    contact: Contact


@dataclass(frozen=True, slots=True)
class ContactRemoved(Event):
    kind: ClassVar[str] = "contact_removed"
    contact: Contact


@dataclass(frozen=True, slots=True)
class FriendRequest(Event):
    kind: ClassVar[str] = "friend_request"
    username: str


@dataclass(frozen=True, slots=True)
class FriendRequestRefused(Event):
    """`username` declined the request we sent."""

    kind: ClassVar[str] = "friend_refused"
    username: str


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """An incoming message, already stored locally and acknowledged."""

    kind: ClassVar[str] = "message"
    message: ChatMessage


@dataclass(frozen=True, slots=True)
class MessageSent(Event):
    """One of our own messages was stored locally (status `sending` or later).

    Emitted by every send, from whichever window or thread made it, so the contact list
    and every window showing that chat see it at once (an attachment before its upload).
    """

    kind: ClassVar[str] = "message_sent"
    message: ChatMessage


@dataclass(frozen=True, slots=True)
class MessageStatusChanged(Event):
    kind: ClassVar[str] = "message_status"
    message_id: str
    status: MessageStatus


@dataclass(frozen=True, slots=True)
class RoomMemberChanged(Event):
    kind: ClassVar[str] = "room_member"
    room_id: int
    username: str
    event: MemberChange


@dataclass(frozen=True, slots=True)
class KeyChanged(Event):
    """A friend's key changed; nothing to or from them moves until `trust_new_key`."""

    kind: ClassVar[str] = "key_changed"
    username: str
    old_fingerprint: str
    new_fingerprint: str


@dataclass(frozen=True, slots=True)
class KeyTrusted(Event):
    """`trust_new_key(username)` accepted the changed key: warnings about it can go."""

    kind: ClassVar[str] = "key_trusted"
    username: str


@dataclass(frozen=True, slots=True)
class KeyMissing(Event):
    """This computer has no private keys for the account: it can read nothing new."""

    kind: ClassVar[str] = "key_missing"
    username: str
    reason: str


@dataclass(frozen=True, slots=True)
class KemKeyVerified(Event):
    """A friend's signed KEM key verified against their pinned identity key.

    `first`: a verified key addition (their client upgraded to end-to-end v2), shown
    in the conversation; otherwise a scheduled rotation. Neither is a key change: the
    identity key, and so the safety number, did not move.
    """

    kind: ClassVar[str] = "kem_key_verified"
    username: str
    key_id: bytes
    first: bool


@dataclass(frozen=True, slots=True)
class KemKeyRejected(Event):
    """The server served a KEM key for `username` that their pinned identity key did
    not sign: refused and never used; shown as loudly as a key change."""

    kind: ClassVar[str] = "kem_key_refused"
    username: str


@dataclass(frozen=True, slots=True)
class TransparencyAlarm(Event):
    """The key transparency check failed: chat is blocked (`reason` says why).

    `reason`: `not_logged` (a key for `username` the log does not hold),
    `rolled_back` (an older tree head than one we hold), `not_extension` (a head that
    does not extend ours), `split_view` (`username` reported a head from another log),
    `foreign_key` (a certificate or signed KEM key under our own name, `username`,
    that none of our computers made: not for our identity key, not signed by it, or
    an old key of ours served again; chat is not blocked for this one).
    """

    kind: ClassVar[str] = "transparency_alarm"
    reason: str
    username: str = ""


MembershipAlarmReason = Literal["invalid_log", "gap", "rollback", "server_list_differs"]


@dataclass(frozen=True, slots=True)
class MembershipChanged(Event):
    """A verified change of a room's signed membership log: one line in the conversation.

    `change` is the log's event kind ("create", "join", "leave", "remove",
    "grant_admin") or "legacy" for a pre-upgrade room's unsigned member list;
    `approver` names the admin who countersigned a join, if any.
    """

    kind: ClassVar[str] = "membership"
    room_id: int
    change: str
    actor: str
    subject: str
    time: int
    seq: int
    approver: str = ""


@dataclass(frozen=True, slots=True)
class MembershipAlarm(Event):
    """The server showed a room's membership that does not verify; shown in that room.

    `reason`: "invalid_log" (a signature or rule fails), "gap" (an event is missing
    from the chain), "rollback" (the log is shorter than one we verified),
    "server_list_differs" (the server's member list is not the verified one; `names`
    says who differs).
    """

    kind: ClassVar[str] = "membership_alarm"
    room_id: int
    reason: MembershipAlarmReason
    detail: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JoinRequested(Event):
    """Someone asks to join a room we administer (approval policy)."""

    kind: ClassVar[str] = "join_requested"
    room_id: int
    username: str


@dataclass(frozen=True, slots=True)
class JoinRefused(Event):
    """Our request to join was refused, or must be signed again ("log_moved")."""

    kind: ClassVar[str] = "join_refused"
    room_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChainWarning(Event):
    """Something end-to-end v2 caught the server doing, shown in the conversation.

    `reason`: "replayed_distribution" (a chain's key sent again, ignored),
    "bad_distribution" (one that does not verify), "relabelled" (an envelope not
    signed for the conversation it was delivered as).
    """

    kind: ClassVar[str] = "chain_warning"
    username: str
    chat_kind: str
    chat_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TransferProgress(Event):
    """Bytes moved of one attachment (of its encrypted size), in either direction."""

    kind: ClassVar[str] = "transfer"
    attachment_id: str
    done: int
    total: int
    direction: TransferDirection


@dataclass(frozen=True, slots=True)
class ExportProgress(Event):
    """`export_history` wrote `done` of `total` messages."""

    kind: ClassVar[str] = "export_progress"
    done: int
    total: int


LinkRole = Literal["new", "old"]


@dataclass(frozen=True, slots=True)
class LinkJoined(Event):
    """New computer: the logged-in computer at `address` entered our code."""

    kind: ClassVar[str] = "link_joined"
    address: str


@dataclass(frozen=True, slots=True)
class LinkCompare(Event):
    """Both computers: show `sas` and ask the user whether the other screen shows it too;
    answer with `confirm_link(match)`."""

    kind: ClassVar[str] = "link_compare"
    sas: str


@dataclass(frozen=True, slots=True)
class LinkFinished(Event):
    """`new`: the identity arrived and will be stored at the next `login`; `old`: it was
    sent, and this computer is signed out when the new one logs in."""

    kind: ClassVar[str] = "link_finished"
    role: LinkRole
    username: str


@dataclass(frozen=True, slots=True)
class LinkFailed(Event):
    """The link ended without an identity moving; `reason` says why (docs/api.md)."""

    kind: ClassVar[str] = "link_failed"
    reason: str


@dataclass(frozen=True, slots=True)
class AsyncResult(Event):
    """Internal: carries a `run_async` callback to the draining thread."""

    kind: ClassVar[str] = "async_result"
    callback: Callable[[Any], object] | None
    value: Any


__all__ = [
    "AsyncResult",
    "ConnectionChanged",
    "ConnectionState",
    "ContactAdded",
    "ContactRemoved",
    "Event",
    "ExportProgress",
    "FriendRequest",
    "FriendRequestRefused",
    "JoinRefused",
    "JoinRequested",
    "KemKeyRejected",
    "KemKeyVerified",
    "KeyChanged",
    "KeyMissing",
    "KeyTrusted",
    "Kicked",
    "LinkCompare",
    "LinkFailed",
    "LinkFinished",
    "LinkJoined",
    "LinkRole",
    "MemberChange",
    "MembershipAlarm",
    "MembershipAlarmReason",
    "MembershipChanged",
    "MessageReceived",
    "MessageSent",
    "MessageStatusChanged",
    "PresenceChanged",
    "RoomMemberChanged",
    "TransferDirection",
    "TransferProgress",
    "TransparencyAlarm",
]
