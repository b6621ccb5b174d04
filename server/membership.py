"""Accepting a signed membership event: verify, enforce, store in order, relay.

Why it exists: every handler that changes who is in a room (CREATE_ROOM, JOIN_ROOM,
RESOLVE_JOIN, LEAVE_ROOM, ROOM_ADMIN, the owner's handover too) goes through `accept`,
so the server applies exactly the rules clients apply when they replay the log
(`common.crypto.membership` `RoomState.apply`): a signature that does not verify
against the certificate the server issued, a `prev` that is not the current head, or
an event the rules refuse never reaches the log. The server's own tables (`room_user`,
its `admin` flag) follow the log in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.crypto.certs import load_user_certificate
from common.crypto.membership import EventKind, MembershipEvent, Policy, RoomState
from common.crypto.primitives import ed25519_verify
from common.crypto.room_log import LegacyGenesis, is_legacy
from common.errors import CertificateError, MembershipError, RequestError
from common.protocol.opcodes import MessageType
from server.handlers._params import get_bytes
from server.storage import room_log, rooms, users

if TYPE_CHECKING:
    from server.dispatch import Context

MAX_EVENT = 4096
MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000  # an event's own time may differ this much from ours

#: What members are told, in ROOM_MEMBER_EVENT's `event` (older clients know the first two).
EVENT_WORDS = {
    EventKind.CREATE: "created",
    EventKind.JOIN: "joined",
    EventKind.LEAVE: "left",
    EventKind.REMOVE: "removed",
    EventKind.GRANT_ADMIN: "admin",
    EventKind.TRANSFER_OWNER: "owner",
}


def parse_event(params: dict[str, Any], name: str = "event") -> MembershipEvent:
    """The signed event in `params[name]`; `bad_event` if it is not one."""
    data = get_bytes(params, name, max_len=MAX_EVENT)
    try:
        return MembershipEvent.from_wire(data)
    except MembershipError as exc:
        raise RequestError("bad_event", str(exc), name) from None


def identity_lookup(ctx: Context) -> Callable[[str], bytes | None]:
    """Username -> identity key of the certificate this server issued (None if none)."""
    cache: dict[str, bytes | None] = {}

    def identity_of(username: str) -> bytes | None:
        if username not in cache:
            user = users.by_username(ctx.db, username)
            key: bytes | None = None
            if user is not None and user.username == username and user.certificate:
                try:
                    cert = load_user_certificate(user.certificate, ctx.identity.certificate)
                    key = cert.identity_public
                except CertificateError:
                    key = None
            cache[username] = key
        return cache[username]

    return identity_of


def check_signature(
    ctx: Context, event: MembershipEvent, lookup: Callable[[str], bytes | None] | None = None
) -> None:
    """The actor's signature, against the certificate the server issued them."""
    public = (lookup or identity_lookup(ctx))(event.actor)
    if public is None or not ed25519_verify(public, event.signature, event.signed_part()):
        raise RequestError(
            "bad_signature", f"the event is not signed by {event.actor}'s identity key", "event"
        )


def check_time(ctx: Context, event: MembershipEvent) -> None:
    if abs(event.time_ms - ctx.now()) > MAX_CLOCK_SKEW_MS:
        raise RequestError("bad_event_time", "the event's time is a day or more off", "event")


def room_state(ctx: Context, room_id: int) -> RoomState:
    """The state the stored log leads to, read from the tables that follow it."""
    length, head = room_log.head(ctx.db, room_id)
    first = room_log.entries(ctx.db, room_id, 0, 1)
    room = rooms.get_room(ctx.db, room_id)
    if length == 0 or not first or room is None:
        raise RequestError("room_not_found", f"there is no room {room_id}", "room_id")
    # The first entry gives policy and first owner (a handover in the log overrides it);
    # the tables give the members and admins now.
    if is_legacy(first[0].entry):
        start = LegacyGenesis.from_wire(first[0].entry).state()
    else:
        start = _create_state(first[0].entry)
    members, admins = rooms.member_names(ctx.db, room_id)
    return RoomState(
        room=str(room_id),
        name=start.name,
        policy=start.policy,
        owner=room_log.owner(ctx.db, room_id) or start.owner,
        members=frozenset(members),
        admins=frozenset(admins),
        head=head,
        length=length,
    )


def _create_state(data: bytes) -> RoomState:
    """Owner, name and policy of a stored create event (verified when it was stored)."""
    event = MembershipEvent.from_wire(data)
    owner = frozenset({event.actor})
    return RoomState(
        event.room, event.name, event.policy or Policy.OPEN, event.actor, owner, owner, b"", 1
    )


@dataclass(frozen=True)
class Accepted:
    seq: int
    event: MembershipEvent
    state: RoomState  # after the event


def accept(ctx: Context, room_id: int, event: MembershipEvent, kind: EventKind) -> Accepted:
    """Verify `event` against the stored log and apply it: store, update tables, relay."""
    if event.kind is not kind or event.room != str(room_id):
        raise RequestError(
            "bad_event", f"expected a {kind.value} event for room {room_id}", "event"
        )
    check_time(ctx, event)
    lookup = identity_lookup(ctx)  # one certificate check per signer, not one per use
    check_signature(ctx, event, lookup)
    state = room_state(ctx, room_id)
    if event.prev != state.head:
        raise RequestError(
            "log_moved", "the room's log has moved on; fetch its head and sign again", "event"
        )
    try:
        after = state.apply(event, lookup)
    except MembershipError as exc:
        raise RequestError("event_refused", str(exc), "event") from None
    seq = state.length + 1
    _follow(ctx, room_id, event)
    room_log.append(
        ctx.db,
        room_id,
        seq,
        kind=event.kind.value,
        actor=event.actor,
        subject=event.subject,
        entry=event.to_wire(),
        entry_hash=event.hash(),
        now=ctx.now(),
    )
    relay(ctx, room_id, seq, event, extra_user=_user_id(ctx, event.subject))
    return Accepted(seq, event, after)


def _user_id(ctx: Context, username: str) -> int | None:
    user = users.by_username(ctx.db, username)
    return None if user is None else user.id


def _follow(ctx: Context, room_id: int, event: MembershipEvent) -> None:
    """Make `room_user` say what the log now says."""
    subject = _user_id(ctx, event.subject)
    if subject is None:  # the rules checked the subject is a member: cannot happen
        raise RequestError("user_not_found", f"there is no user called {event.subject!r}")
    if event.kind is EventKind.JOIN:
        rooms.add_member(ctx.db, room_id, subject, ctx.now())
        room_log.drop_request(ctx.db, room_id, subject)
    elif event.kind in (EventKind.LEAVE, EventKind.REMOVE):
        rooms.remove_member(ctx.db, room_id, subject)
    elif event.kind in (EventKind.GRANT_ADMIN, EventKind.TRANSFER_OWNER):
        rooms.set_admin(ctx.db, room_id, subject)


def relay(
    ctx: Context, room_id: int, seq: int, event: MembershipEvent, extra_user: int | None
) -> None:
    """ROOM_MEMBER_EVENT to every member, and to whoever just left or was removed."""
    targets = rooms.member_ids(ctx.db, room_id)
    if extra_user is not None and extra_user not in targets:
        targets.append(extra_user)
    ctx.push_many(
        targets,
        MessageType.ROOM_MEMBER_EVENT,
        {
            "room_id": room_id,
            "username": event.subject,
            "event": EVENT_WORDS[event.kind],
            "actor": event.actor,
            "seq": seq,
            "entry": event.to_wire(),
        },
    )
