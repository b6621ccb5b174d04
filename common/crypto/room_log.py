"""A room's stored membership log: signed events, after an optional legacy genesis.

Why it exists: rooms made before signed membership have no create event. Their log
starts with a *legacy genesis* the server wrote once, at its upgrade: the member
list, owner and name it held then. Nobody signed it, so a client shows such a room's
first members as "stated by the server, not verified by members"; every change after
it is a signed event as for any other room (`common.crypto.membership`). A room made
by this version never has a legacy genesis, and a client that already holds a room's
signed create event refuses a log that starts otherwise.

`replay_log` is pure: entries as stored (bytes), the reader's pinned identity keys,
and the verified state or one `MembershipError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.crypto.membership import (
    IdentityLookup,
    MembershipEvent,
    Policy,
    RoomState,
    genesis,
)
from common.crypto.primitives import sha256
from common.crypto.transcript import bind
from common.errors import MembershipError, ProtocolError
from common.protocol import codec

LEGACY_LABEL = b"uchat-v2 legacy room genesis"
LEGACY_KIND = "legacy"
MAX_LEGACY_MEMBERS = 10_000
LEGACY_LIMITS = codec.Limits(max_size=1024 * 1024, max_depth=3, max_items=MAX_LEGACY_MEMBERS + 16)


@dataclass(frozen=True)
class LegacyGenesis:
    """The server's statement of a pre-upgrade room: who was in it, unsigned."""

    room: str
    name: str
    owner: str
    members: tuple[str, ...]
    time_ms: int

    def to_wire(self) -> bytes:
        return codec.encode(
            {
                "kind": LEGACY_KIND,
                "room": self.room,
                "name": self.name,
                "owner": self.owner,
                "members": list(self.members),
                "time": self.time_ms,
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> LegacyGenesis:
        message = _decode(data, LEGACY_LIMITS)
        members = message.get("members")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise MembershipError("malformed legacy genesis")
        room, name, owner, time_ms = (message.get(k) for k in ("room", "name", "owner", "time"))
        if not (isinstance(room, str) and isinstance(name, str) and isinstance(owner, str)):
            raise MembershipError("malformed legacy genesis")
        if type(time_ms) is not int or message.get("kind") != LEGACY_KIND:
            raise MembershipError("malformed legacy genesis")
        return cls(room, name, owner, tuple(members), time_ms)

    def hash(self) -> bytes:
        return sha256(LEGACY_LABEL + bind(self.to_wire()))

    def state(self) -> RoomState:
        """Open policy; the owner is the one admin if still a member (no admins existed)."""
        members = frozenset(self.members)
        admins = frozenset({self.owner}) & members
        return RoomState(
            self.room, self.name, Policy.OPEN, self.owner, members, admins, self.hash(), 1
        )


def _decode(data: bytes, limits: codec.Limits) -> dict[str, Any]:
    try:
        message = codec.decode(data, limits)
    except ProtocolError:
        raise MembershipError("malformed membership log entry") from None
    if not isinstance(message, dict):
        raise MembershipError("malformed membership log entry")
    return message


def is_legacy(data: bytes) -> bool:
    """True for a legacy genesis (its `kind`), False for anything else."""
    try:
        message = codec.decode(data, LEGACY_LIMITS)
    except ProtocolError:
        return False
    return isinstance(message, dict) and message.get("kind") == LEGACY_KIND


@dataclass(frozen=True)
class VerifiedLog:
    """The state after the whole log, and the legacy genesis it started from, if any."""

    state: RoomState
    legacy: LegacyGenesis | None
    events: tuple[MembershipEvent, ...]  # the signed events, in order (not the genesis)


def first_state(data: bytes, identity_of: IdentityLookup) -> tuple[RoomState, LegacyGenesis | None]:
    """The state the first entry establishes: a signed create, or a legacy genesis."""
    if is_legacy(data):
        legacy = LegacyGenesis.from_wire(data)
        return legacy.state(), legacy
    return genesis(MembershipEvent.from_wire(data), identity_of), None


def replay_log(entries: Sequence[bytes], identity_of: IdentityLookup) -> VerifiedLog:
    """Verify a stored log from its first entry; the first refused entry raises."""
    if not entries:
        raise MembershipError("the room has no membership log")
    state, legacy = first_state(entries[0], identity_of)
    events: list[MembershipEvent] = []
    if legacy is None:
        events.append(MembershipEvent.from_wire(entries[0]))
    for data in entries[1:]:
        event = MembershipEvent.from_wire(data)
        state = state.apply(event, identity_of)
        events.append(event)
    return VerifiedLog(state, legacy, tuple(events))


def entry_hash(data: bytes) -> bytes:
    """What the entry after `data` names as `prev`."""
    if is_legacy(data):
        return LegacyGenesis.from_wire(data).hash()
    return MembershipEvent.from_wire(data).hash()
