"""A room's membership as a log of signed events, verified by every member (DESIGN.md 3b).

The server stores, orders and relays the log, but cannot forge it: each event is
signed by a user's identity key and names the hash of the event before it, so the
server can withhold events (detectably: the next one names a head the reader lacks)
but cannot add a member, remove one, or reorder. `replay` is pure: it applies the log
from the create event and returns the member list and admins, or raises
`MembershipError` naming the first event it refuses and why.

Rules (join policy set at create: "open" = anyone with the room number, the original's
feature; "approval" = an admin countersigns each join):
- create: first event only, by the owner, who becomes member and admin.
- join: signed by the joiner; under "approval" also countersigned by a current admin.
- leave: signed by the leaving member; the owner cannot leave while others remain, so an
  owner who leaves first hands the room over (transfer_owner), then leaves as a member.
- remove: signed by an admin; the owner cannot be removed.
- grant_admin: signed by an admin, for a member who is not an admin yet.
- transfer_owner: signed by the owner, naming another current member, who becomes owner
  and admin; the former owner stays a member and an admin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.crypto.primitives import ed25519_sign, ed25519_verify, sha256
from common.crypto.transcript import bind, text
from common.errors import MembershipError, ProtocolError
from common.protocol import codec

EVENT_LABEL = b"uchat-v2 membership event"
APPROVAL_LABEL = b"uchat-v2 membership approval"
MEMBER_LIST_LABEL = b"uchat-v2 member list"
GENESIS = bytes(32)
EVENT_LIMITS = codec.Limits(max_size=4096, max_depth=2, max_items=32)  # 11 keys + 11 values + dict

IdentityLookup = Callable[[str], bytes | None]
"""Username -> pinned Ed25519 identity public key, or None if the reader has no pin."""


class Policy(Enum):
    OPEN = "open"
    APPROVAL = "approval"


class EventKind(Enum):
    CREATE = "create"
    JOIN = "join"
    LEAVE = "leave"
    REMOVE = "remove"
    GRANT_ADMIN = "grant_admin"
    TRANSFER_OWNER = "transfer_owner"


@dataclass(frozen=True)
class MembershipEvent:
    room: str
    kind: EventKind
    actor: str  # who signs
    subject: str  # whom it is about (the actor itself for create, join, leave)
    time_ms: int
    prev: bytes  # hash of the previous event; GENESIS for create
    signature: bytes
    name: str = ""  # create only
    policy: Policy | None = None  # create only
    approver: str = ""  # join under approval only
    approval: bytes = b""

    def signed_part(self) -> bytes:
        return _signed_part(
            self.room,
            self.kind,
            self.actor,
            self.subject,
            self.time_ms,
            self.prev,
            self.name,
            self.policy,
        )

    def approval_part(self) -> bytes:
        return APPROVAL_LABEL + sha256(self.signed_part() + self.signature)

    def hash(self) -> bytes:
        """What the next event names as `prev`: covers signatures and approval too."""
        return sha256(bind(self.signed_part(), self.signature, text(self.approver), self.approval))

    def to_wire(self) -> bytes:
        return codec.encode(
            {
                "room": self.room,
                "kind": self.kind.value,
                "actor": self.actor,
                "subject": self.subject,
                "time": self.time_ms,
                "prev": self.prev,
                "signature": self.signature,
                "name": self.name,
                "policy": self.policy.value if self.policy else "",
                "approver": self.approver,
                "approval": self.approval,
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> MembershipEvent:
        try:
            message = codec.decode(data, EVENT_LIMITS)
        except ProtocolError:
            raise MembershipError("malformed membership event") from None
        if not isinstance(message, dict):
            raise MembershipError("malformed membership event")
        try:
            return cls(
                room=_typed(message, "room", str),
                kind=EventKind(_typed(message, "kind", str)),
                actor=_typed(message, "actor", str),
                subject=_typed(message, "subject", str),
                time_ms=_typed(message, "time", int),
                prev=_typed(message, "prev", bytes),
                signature=_typed(message, "signature", bytes),
                name=_typed(message, "name", str),
                policy=Policy(message["policy"]) if message.get("policy") else None,
                approver=_typed(message, "approver", str),
                approval=_typed(message, "approval", bytes),
            )
        except ValueError:
            raise MembershipError("malformed membership event") from None


def _typed(message: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(name)
    return value


def _signed_part(
    room: str,
    kind: EventKind,
    actor: str,
    subject: str,
    time_ms: int,
    prev: bytes,
    name: str,
    policy: Policy | None,
) -> bytes:
    if not 0 <= time_ms < 2**63:
        raise MembershipError("event time out of range")
    return EVENT_LABEL + bind(
        text(room),
        text(kind.value),
        text(actor),
        text(subject),
        time_ms.to_bytes(8, "big"),
        prev,
        text(name),
        text(policy.value if policy else ""),
    )


def sign_event(
    identity: Ed25519PrivateKey,
    *,
    room: str,
    kind: EventKind,
    actor: str,
    subject: str,
    time_ms: int,
    prev: bytes,
    name: str = "",
    policy: Policy | None = None,
) -> MembershipEvent:
    part = _signed_part(room, kind, actor, subject, time_ms, prev, name, policy)
    signature = ed25519_sign(identity, part)
    return MembershipEvent(room, kind, actor, subject, time_ms, prev, signature, name, policy)


def approve(
    event: MembershipEvent, admin: str, admin_identity: Ed25519PrivateKey
) -> MembershipEvent:
    """An admin's countersignature on a join (approval policy)."""
    return replace(
        event, approver=admin, approval=ed25519_sign(admin_identity, event.approval_part())
    )


def member_list_hash(room: str, members: Iterable[str]) -> bytes:
    """What a room envelope's sealed body carries: the member list the sender sealed for."""
    return sha256(MEMBER_LIST_LABEL + bind(text(room), *(text(m) for m in sorted(members))))


@dataclass(frozen=True)
class RoomState:
    """The verified state after some prefix of the log."""

    room: str
    name: str
    policy: Policy
    owner: str
    members: frozenset[str]
    admins: frozenset[str]
    head: bytes  # hash of the last applied event
    length: int  # events applied
    removed: frozenset[str] = field(default=frozenset())

    @property
    def member_hash(self) -> bytes:
        return member_list_hash(self.room, self.members)

    def apply(self, event: MembershipEvent, identity_of: IdentityLookup) -> RoomState:
        where = f"event {self.length + 1}"
        if event.room != self.room:
            raise MembershipError(f"{where} belongs to another room")
        if event.prev != self.head:
            raise MembershipError(
                f"{where} does not follow the previous event (missing or reordered)"
            )
        _check_signature(event, event.actor, identity_of, where)
        rule = _RULES.get(event.kind)
        if rule is None:
            raise MembershipError(f"{where}: a room is created only once")
        state = rule(self, event, identity_of, where)
        return replace(state, head=event.hash(), length=self.length + 1)


def _check_signature(
    event: MembershipEvent, signer: str, identity_of: IdentityLookup, where: str
) -> None:
    public = identity_of(signer)
    if public is None:
        raise MembershipError(f"{where}: no verified identity key for {signer}")
    if not ed25519_verify(public, event.signature, event.signed_part()):
        raise MembershipError(f"{where}: the signature of {signer} is invalid")


def _join(
    state: RoomState, event: MembershipEvent, identity_of: IdentityLookup, where: str
) -> RoomState:
    if event.actor != event.subject:
        raise MembershipError(f"{where}: only {event.subject} can sign their own join")
    if event.subject in state.members:
        raise MembershipError(f"{where}: {event.subject} is already a member")
    if state.policy is Policy.APPROVAL or event.approver:
        if event.approver not in state.admins:
            raise MembershipError(f"{where}: the join of {event.subject} lacks an admin's approval")
        public = identity_of(event.approver)
        if public is None or not ed25519_verify(public, event.approval, event.approval_part()):
            raise MembershipError(f"{where}: the approval by {event.approver} is invalid")
    return replace(
        state, members=state.members | {event.subject}, removed=state.removed - {event.subject}
    )


def _leave(
    state: RoomState, event: MembershipEvent, identity_of: IdentityLookup, where: str
) -> RoomState:
    if event.actor != event.subject or event.subject not in state.members:
        raise MembershipError(f"{where}: {event.actor} cannot leave for {event.subject}")
    if event.subject == state.owner and len(state.members) > 1:
        raise MembershipError(f"{where}: the owner cannot leave while others remain")
    return replace(
        state, members=state.members - {event.subject}, admins=state.admins - {event.subject}
    )


def _remove(
    state: RoomState, event: MembershipEvent, identity_of: IdentityLookup, where: str
) -> RoomState:
    if event.actor not in state.admins:
        raise MembershipError(f"{where}: {event.actor} is not an admin and cannot remove")
    if event.subject not in state.members or event.subject in (state.owner, event.actor):
        raise MembershipError(f"{where}: {event.subject} cannot be removed")
    return replace(
        state,
        members=state.members - {event.subject},
        admins=state.admins - {event.subject},
        removed=state.removed | {event.subject},
    )


def _grant_admin(
    state: RoomState, event: MembershipEvent, identity_of: IdentityLookup, where: str
) -> RoomState:
    if event.actor not in state.admins:
        raise MembershipError(f"{where}: {event.actor} is not an admin and cannot grant")
    if event.subject not in state.members or event.subject in state.admins:
        raise MembershipError(f"{where}: {event.subject} cannot be made an admin")
    return replace(state, admins=state.admins | {event.subject})


def _transfer_owner(
    state: RoomState, event: MembershipEvent, identity_of: IdentityLookup, where: str
) -> RoomState:
    if event.actor != state.owner:
        raise MembershipError(f"{where}: {event.actor} is not the owner and cannot hand it over")
    if event.subject not in state.members or event.subject == state.owner:
        raise MembershipError(f"{where}: {event.subject} cannot be made the owner")
    return replace(state, owner=event.subject, admins=state.admins | {event.subject})


_Rule = Callable[[RoomState, MembershipEvent, IdentityLookup, str], RoomState]
_RULES: dict[EventKind, _Rule] = {
    EventKind.JOIN: _join,
    EventKind.LEAVE: _leave,
    EventKind.REMOVE: _remove,
    EventKind.GRANT_ADMIN: _grant_admin,
    EventKind.TRANSFER_OWNER: _transfer_owner,
}


def genesis(event: MembershipEvent, identity_of: IdentityLookup) -> RoomState:
    """The state a create event establishes."""
    where = "event 1"
    if event.kind is not EventKind.CREATE or event.policy is None:
        raise MembershipError(f"{where}: a room log must start with its create event")
    if event.prev != GENESIS or event.actor != event.subject or event.approver:
        raise MembershipError(f"{where}: malformed create event")
    _check_signature(event, event.actor, identity_of, where)
    owner = frozenset({event.actor})
    return RoomState(
        event.room, event.name, event.policy, event.actor, owner, owner, event.hash(), 1
    )


def replay(events: Sequence[MembershipEvent], identity_of: IdentityLookup) -> RoomState:
    """Verify the whole log from its create event; the first refused event raises."""
    if not events:
        raise MembershipError("the room has no membership log")
    state = genesis(events[0], identity_of)
    for event in events[1:]:
        state = state.apply(event, identity_of)
    return state
