"""A stored membership log: legacy genesis (pre-upgrade rooms) and replay from bytes."""

from __future__ import annotations

import dataclasses

import pytest

from common.crypto.keys import generate_user_keys
from common.crypto.membership import GENESIS, EventKind, Policy, sign_event
from common.crypto.room_log import LegacyGenesis, entry_hash, is_legacy, replay_log
from common.errors import MembershipError
from common.protocol import codec

KEYS = {name: generate_user_keys() for name in ("alice", "bob", "carol")}


def identity_of(name: str) -> bytes | None:
    return KEYS[name].identity_public if name in KEYS else None


def signed(actor: str, kind: EventKind, prev: bytes, subject: str = "", **extra: object) -> bytes:
    return sign_event(
        KEYS[actor].identity,
        room="12345678",
        kind=kind,
        actor=actor,
        subject=subject or actor,
        time_ms=5,
        prev=prev,
        **extra,  # type: ignore[arg-type]
    ).to_wire()


LEGACY = LegacyGenesis("12345678", "Old", "alice", ("alice", "bob"), 7)


def test_a_legacy_genesis_starts_an_open_room_with_the_owner_as_admin() -> None:
    data = LEGACY.to_wire()
    assert is_legacy(data) and LegacyGenesis.from_wire(data) == LEGACY
    join = signed("carol", EventKind.JOIN, LEGACY.hash())
    verified = replay_log([data, join], identity_of)
    assert verified.legacy == LEGACY and len(verified.events) == 1
    state = verified.state
    assert state.policy is Policy.OPEN and state.members == {"alice", "bob", "carol"}
    assert state.admins == {"alice"} and state.length == 2 and state.head == entry_hash(join)
    gone = LegacyGenesis("12345678", "Old", "alice", ("bob",), 7)
    assert gone.state().admins == frozenset()  # the owner had left: nobody administers


def test_a_changed_legacy_genesis_breaks_the_chain() -> None:
    join = signed("carol", EventKind.JOIN, LEGACY.hash())
    forged = dataclasses.replace(LEGACY, members=("alice", "bob", "mallory"))
    with pytest.raises(MembershipError, match="does not follow"):
        replay_log([forged.to_wire(), join], identity_of)


def test_a_signed_log_replays_from_bytes() -> None:
    create = signed("alice", EventKind.CREATE, GENESIS, name="New", policy=Policy.APPROVAL)
    verified = replay_log([create], identity_of)
    assert verified.legacy is None and verified.state.policy is Policy.APPROVAL
    with pytest.raises(MembershipError):
        replay_log([], identity_of)
    with pytest.raises(MembershipError):
        replay_log([create, b"\x00garbage"], identity_of)


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "legacy"},
        {"kind": "legacy", "room": "1", "name": "n", "owner": "o", "members": [1], "time": 0},
        {"kind": "legacy", "room": "1", "name": "n", "owner": "o", "members": [], "time": "0"},
        {"kind": "other", "room": "1", "name": "n", "owner": "o", "members": [], "time": 0},
    ],
)
def test_malformed_legacy_entries_are_refused(value: dict[str, object]) -> None:
    with pytest.raises(MembershipError):
        LegacyGenesis.from_wire(codec.encode(value))
    assert not is_legacy(b"\xff\xff")
