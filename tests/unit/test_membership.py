"""Signed room membership: a verifier that replays the log and refuses anything a
server could forge (ghost members, withheld or reordered events, unsigned changes)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.membership import (
    GENESIS,
    EventKind,
    MembershipEvent,
    Policy,
    RoomState,
    approve,
    member_list_hash,
    replay,
    sign_event,
)
from common.crypto.primitives import ed25519_private_from_bytes, ed25519_public_bytes
from common.errors import MembershipError

KEYS: dict[str, Ed25519PrivateKey] = {
    name: ed25519_private_from_bytes(bytes([index + 1]) * 32)
    for index, name in enumerate(["owner", "alice", "bob", "mallory", "carol"])
}
PINS = {name: ed25519_public_bytes(key) for name, key in KEYS.items()}
ROOM = "4242"
#: The head of `test_logs_without_transfers_replay_to_the_same_bytes`'s log, computed
#: before the ownership handover existed.
OLD_LOG_HEAD = "a6d1f1e832c2b1fed6b22ca071930a527a1e757221766f99f9f14da1bb1bac5e"


class Log:
    """Builds a correctly chained log, one signed event at a time."""

    def __init__(self, policy: Policy = Policy.OPEN) -> None:
        self.events: list[MembershipEvent] = []
        self.add(EventKind.CREATE, "owner", name="friends", policy=policy)

    def make(
        self, kind: EventKind, actor: str, subject: str | None = None, **extra: object
    ) -> MembershipEvent:
        prev = self.events[-1].hash() if self.events else GENESIS
        return sign_event(
            KEYS[actor],
            room=ROOM,
            kind=kind,
            actor=actor,
            subject=subject or actor,
            time_ms=1000 + len(self.events),
            prev=prev,
            **extra,  # type: ignore[arg-type]
        )

    def add(
        self, kind: EventKind, actor: str, subject: str | None = None, **extra: object
    ) -> MembershipEvent:
        event = self.make(kind, actor, subject, **extra)
        self.events.append(event)
        return event

    def state(self) -> RoomState:
        return replay(self.events, PINS.get)


def test_create_makes_the_owner_member_and_admin() -> None:
    state = Log().state()
    assert state.members == state.admins == {"owner"}
    assert (state.name, state.policy, state.owner, state.length) == (
        "friends",
        Policy.OPEN,
        "owner",
        1,
    )


def test_open_room_join_leave_remove_grant() -> None:
    log = Log()
    for name in ("alice", "bob", "carol"):
        log.add(EventKind.JOIN, name)
    log.add(EventKind.GRANT_ADMIN, "owner", "alice")
    log.add(EventKind.REMOVE, "alice", "bob")
    log.add(EventKind.LEAVE, "carol")
    state = log.state()
    assert state.members == {"owner", "alice"}
    assert state.admins == {"owner", "alice"}
    assert state.removed == {"bob"}
    assert state.member_hash == member_list_hash(ROOM, ["alice", "owner"])


def test_approval_room_needs_an_admin_countersignature() -> None:
    log = Log(Policy.APPROVAL)
    log.events.append(approve(log.make(EventKind.JOIN, "alice"), "owner", KEYS["owner"]))
    assert log.state().members == {"owner", "alice"}
    log.add(EventKind.JOIN, "bob")  # no approval
    with pytest.raises(MembershipError, match="event 3: the join of bob lacks an admin's approval"):
        log.state()


def test_approval_by_a_non_admin_is_refused() -> None:
    log = Log(Policy.APPROVAL)
    log.events.append(approve(log.make(EventKind.JOIN, "alice"), "owner", KEYS["owner"]))
    log.events.append(approve(log.make(EventKind.JOIN, "bob"), "alice", KEYS["alice"]))
    with pytest.raises(MembershipError, match="lacks an admin's approval"):
        log.state()


def test_forged_approval_signature_is_refused() -> None:
    log = Log(Policy.APPROVAL)
    join = log.make(EventKind.JOIN, "alice")
    log.events.append(approve(join, "owner", KEYS["mallory"]))  # claims owner, signed by mallory
    with pytest.raises(MembershipError, match="approval by owner is invalid"):
        log.state()


def test_ghost_member_added_by_the_server_is_refused() -> None:
    # The server signs a join "for" mallory with a key the readers did not pin.
    log = Log()
    server_key = ed25519_private_from_bytes(bytes([99]) * 32)
    forged = sign_event(
        server_key,
        room=ROOM,
        kind=EventKind.JOIN,
        actor="mallory",
        subject="mallory",
        time_ms=5,
        prev=log.events[-1].hash(),
    )
    log.events.append(forged)
    with pytest.raises(MembershipError, match="signature of mallory is invalid"):
        log.state()


def test_unknown_signer_is_refused() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    with pytest.raises(MembershipError, match="no verified identity key for alice"):
        replay(log.events, {"owner": PINS["owner"]}.get)


def test_withheld_event_breaks_the_chain() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.LEAVE, "alice")
    log.add(EventKind.JOIN, "bob")
    withheld = [log.events[0], log.events[1], log.events[3]]  # the leave is withheld
    with pytest.raises(MembershipError, match="event 3 does not follow"):
        replay(withheld, PINS.get)


def test_reordered_events_are_refused() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.JOIN, "bob")
    with pytest.raises(MembershipError, match="does not follow"):
        replay([log.events[0], log.events[2], log.events[1]], PINS.get)


def test_event_from_another_room_is_refused() -> None:
    log = Log()
    event = replace(log.make(EventKind.JOIN, "alice"), room="4243")
    log.events.append(event)
    with pytest.raises(MembershipError, match="another room"):
        log.state()


@pytest.mark.parametrize(
    "kind, actor, subject, message",
    [
        (EventKind.JOIN, "alice", "bob", "only bob can sign their own join"),
        (EventKind.JOIN, "owner", None, "already a member"),
        (EventKind.LEAVE, "bob", None, "cannot leave"),
        (EventKind.LEAVE, "alice", "owner", "cannot leave"),
        (EventKind.REMOVE, "alice", "owner", "not an admin"),
        (EventKind.REMOVE, "owner", "bob", "bob cannot be removed"),
        (EventKind.REMOVE, "owner", "owner", "owner cannot be removed"),
        (EventKind.GRANT_ADMIN, "alice", "alice", "not an admin"),
        (EventKind.GRANT_ADMIN, "owner", "bob", "cannot be made an admin"),
        (EventKind.GRANT_ADMIN, "owner", "owner", "cannot be made an admin"),
        (EventKind.CREATE, "alice", None, "created only once"),
    ],
)
def test_unauthorised_events_are_refused(
    kind: EventKind, actor: str, subject: str | None, message: str
) -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(kind, actor, subject, **({"policy": Policy.OPEN} if kind is EventKind.CREATE else {}))
    with pytest.raises(MembershipError, match=message):
        log.state()


def test_owner_cannot_leave_while_others_remain_but_can_when_alone() -> None:
    log = Log()
    log.add(EventKind.LEAVE, "owner")
    assert log.state().members == frozenset()


def test_removed_member_can_rejoin_an_open_room() -> None:
    log = Log()
    log.add(EventKind.JOIN, "bob")
    log.add(EventKind.REMOVE, "owner", "bob")
    log.add(EventKind.JOIN, "bob")
    state = log.state()
    assert "bob" in state.members and "bob" not in state.removed


def test_log_must_start_with_create() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    with pytest.raises(MembershipError, match="must start with its create"):
        replay(log.events[1:], PINS.get)
    with pytest.raises(MembershipError, match="no membership log"):
        replay([], PINS.get)


def test_create_with_a_prev_or_for_someone_else_is_refused() -> None:
    bad = sign_event(
        KEYS["owner"],
        room=ROOM,
        kind=EventKind.CREATE,
        actor="owner",
        subject="alice",
        time_ms=1,
        prev=GENESIS,
        policy=Policy.OPEN,
    )
    with pytest.raises(MembershipError, match="malformed create"):
        replay([bad], PINS.get)


FIELDS: dict[str, Any] = {
    "room": "4243",
    "actor": "alice",
    "subject": "carol",
    "time_ms": 999,
    "prev": bytes(32),
    "name": "renamed",
    "policy": Policy.APPROVAL,
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_every_signed_field_is_covered(field: str) -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.JOIN, "bob")
    log.events[2] = replace(log.events[2], **{field: FIELDS[field]})
    with pytest.raises(MembershipError):
        log.state()


def test_kind_is_covered() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.events.append(replace(log.make(EventKind.LEAVE, "alice"), kind=EventKind.JOIN))
    with pytest.raises(MembershipError):
        log.state()


def test_wire_round_trip_and_malformed_input() -> None:
    log = Log(Policy.APPROVAL)
    log.events.append(approve(log.make(EventKind.JOIN, "alice"), "owner", KEYS["owner"]))
    decoded = [MembershipEvent.from_wire(e.to_wire()) for e in log.events]
    assert decoded == log.events
    assert replay(decoded, PINS.get).members == {"owner", "alice"}
    for raw in (b"", b"\x07\x00\x00\x00\x01", b"\x06\x00\x00\x00\x00"):
        with pytest.raises(MembershipError, match="malformed"):
            MembershipEvent.from_wire(raw)


def test_member_list_hash_ignores_order_but_not_content() -> None:
    assert member_list_hash(ROOM, ["a", "b"]) == member_list_hash(ROOM, ["b", "a"])
    assert member_list_hash(ROOM, ["a", "b"]) != member_list_hash(ROOM, ["ab"])
    assert member_list_hash(ROOM, ["a"]) != member_list_hash("4243", ["a"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["alice", "bob", "carol"]), max_size=12))
def test_random_join_leave_sequences_match_a_simple_model(actions: list[str]) -> None:
    log, model = Log(), {"owner"}
    for name in actions:
        if name in model:
            log.add(EventKind.LEAVE, name)
            model.discard(name)
        else:
            log.add(EventKind.JOIN, name)
            model.add(name)
    assert log.state().members == model


def test_owner_hands_the_room_over_then_leaves_as_a_member() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.JOIN, "bob")
    log.add(EventKind.TRANSFER_OWNER, "owner", "alice")
    state = log.state()
    assert (state.owner, state.admins) == ("alice", frozenset({"owner", "alice"}))
    log.add(EventKind.LEAVE, "owner")
    state = log.state()
    assert (state.owner, state.members, state.admins) == (
        "alice",
        frozenset({"alice", "bob"}),
        frozenset({"alice"}),
    )
    log.add(EventKind.REMOVE, "alice", "bob")  # the new owner's admin rights are real
    assert log.state().members == {"alice"}


@pytest.mark.parametrize(
    "actor, subject, message",
    [
        ("alice", "alice", "alice is not the owner"),  # an admin, but not the owner
        ("bob", "bob", "bob is not the owner"),
        ("owner", "carol", "carol cannot be made the owner"),  # not a member
        ("owner", "owner", "owner cannot be made the owner"),
    ],
)
def test_unauthorised_transfers_are_refused(actor: str, subject: str, message: str) -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.JOIN, "bob")
    log.add(EventKind.GRANT_ADMIN, "owner", "alice")
    log.add(EventKind.TRANSFER_OWNER, actor, subject)
    with pytest.raises(MembershipError, match=message):
        log.state()


def test_former_owner_cannot_hand_the_room_over_again() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.JOIN, "bob")
    log.add(EventKind.TRANSFER_OWNER, "owner", "alice")
    log.add(EventKind.TRANSFER_OWNER, "owner", "bob")
    with pytest.raises(MembershipError, match="owner is not the owner"):
        log.state()


def test_transfer_to_someone_who_left_is_refused() -> None:
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.LEAVE, "alice")
    log.add(EventKind.TRANSFER_OWNER, "owner", "alice")
    with pytest.raises(MembershipError, match="alice cannot be made the owner"):
        log.state()


def test_logs_without_transfers_replay_to_the_same_bytes() -> None:
    """Adding the handover changed no existing event's signed bytes: a log built the
    way it was before the handover existed still leads to the head it always did."""
    log = Log()
    log.add(EventKind.JOIN, "alice")
    log.add(EventKind.GRANT_ADMIN, "owner", "alice")
    log.add(EventKind.JOIN, "bob")
    log.add(EventKind.REMOVE, "alice", "bob")
    log.add(EventKind.LEAVE, "alice")
    state = log.state()
    assert (state.owner, state.members) == ("owner", frozenset({"owner"}))
    assert state.head.hex() == OLD_LOG_HEAD
