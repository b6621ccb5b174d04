"""The device-link exchange (common/crypto/device_link.py) between two sans-IO sides."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import i18n
from client.forms.device_link import check_code, failure_text, format_code
from common.crypto.device_link import (
    LinkError,
    NewComputer,
    OldComputer,
    Stage,
    Tag,
    pack_identity,
    unpack_identity,
)
from common.crypto.keys import generate_user_keys, keys_to_bytes


def counter_random(seed: str) -> Callable[[int], bytes]:
    """Deterministic randomness: SHA-256 of a seed and a counter, as many bytes as asked."""
    counter = itertools.count()

    def random(size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha256(f"{seed}/{next(counter)}".encode()).digest()
        return out[:size]

    return random


def exchange(new: NewComputer, old: OldComputer) -> None:
    """Run the relay part: commit, key, reveal; both sides reach COMPARE."""
    key = old.receive(new.joined())
    assert key is not None
    reveal = new.receive(key)
    assert reveal is not None
    assert old.receive(reveal) is None


def stage(side: NewComputer | OldComputer) -> Stage:
    """The side's stage, read afresh (mypy would keep an earlier narrowing)."""
    return side.stage


def pair(username: str = "alice", code: str = "12345678") -> tuple[NewComputer, OldComputer]:
    return (
        NewComputer(username, code, counter_random("new")),
        OldComputer(username, code, counter_random("old")),
    )


def test_both_sides_show_the_same_code_and_the_identity_arrives() -> None:
    new, old = pair()
    exchange(new, old)
    assert stage(new) is stage(old) is Stage.COMPARE
    assert new.sas == old.sas
    assert new.sas is not None and len(new.sas) == 7 and new.sas[3] == " "
    keys = generate_user_keys()
    sealed = old.confirm(True, pack_identity("alice", keys))
    assert stage(old) is Stage.DONE
    new.confirm(True)
    assert stage(new) is Stage.WAIT_SEALED
    assert new.receive(sealed) is None
    assert stage(new) is Stage.DONE and new.identity is not None
    username, received = unpack_identity(new.identity)
    assert username == "alice"
    assert keys_to_bytes(received) == keys_to_bytes(keys)


def test_outputs_are_exact_with_injected_randomness() -> None:
    first, second = pair(), pair()
    exchange(*first)
    exchange(*second)
    assert first[0].sas == second[0].sas
    assert first[1].confirm(True, b"x") == second[1].confirm(True, b"x")


def test_the_identity_may_arrive_before_the_new_computers_user_confirms() -> None:
    new, old = pair()
    exchange(new, old)
    new.receive(old.confirm(True, b"secret identity"))
    assert stage(new) is Stage.COMPARE and new.identity is None  # kept sealed until "match"
    new.confirm(True)
    assert new.identity == b"secret identity"


def test_refusing_on_the_old_computer_seals_nothing() -> None:
    new, old = pair()
    exchange(new, old)
    with pytest.raises(LinkError) as caught:
        old.confirm(False, b"secret identity")
    assert caught.value.code == "refused"
    assert stage(old) is Stage.FAILED and old.sas is None


def test_refusing_on_the_new_computer_keeps_nothing() -> None:
    new, old = pair()
    exchange(new, old)
    new.receive(old.confirm(True, b"secret identity"))
    with pytest.raises(LinkError):
        new.confirm(False)
    assert new.identity is None and stage(new) is Stage.FAILED


@pytest.mark.parametrize(
    ("new_args", "old_args"),
    [(("alice", "12345678"), ("alice", "12345679")), (("alice", "1"), ("bob", "1"))],
)
def test_a_different_code_or_account_gives_different_short_codes(
    new_args: tuple[str, str], old_args: tuple[str, str]
) -> None:
    new = NewComputer(*new_args, counter_random("n"))
    old = OldComputer(*old_args, counter_random("o"))
    exchange(new, old)
    assert new.sas != old.sas
    # and a seal made under the other transcript does not open
    new.confirm(True)
    with pytest.raises(LinkError) as caught:
        new.receive(old.confirm(True, b"identity"))
    assert caught.value.code == "bad_seal"
    assert new.identity is None


def test_a_reveal_that_does_not_match_the_commitment_fails() -> None:
    new, old = pair()
    old.receive(new.joined())
    other = NewComputer("alice", "12345678", counter_random("other"))
    with pytest.raises(LinkError) as caught:
        old.receive(Tag.REVEAL.value + other.public)
    assert caught.value.code == "bad_commitment"
    assert stage(old) is Stage.FAILED


def test_a_tampered_seal_fails_and_nothing_is_kept() -> None:
    new, old = pair()
    exchange(new, old)
    sealed = bytearray(old.confirm(True, b"identity"))
    sealed[-1] ^= 1
    new.confirm(True)
    with pytest.raises(LinkError) as caught:
        new.receive(bytes(sealed))
    assert caught.value.code == "bad_seal"
    assert stage(new) is Stage.FAILED and new.identity is None


def test_messages_out_of_order_end_the_link() -> None:
    new, old = pair()
    with pytest.raises(LinkError) as caught:
        new.receive(Tag.KEY.value + bytes(32))  # before anyone joined
    assert caught.value.code == "out_of_order"
    new, old = pair()
    commit = new.joined()
    with pytest.raises(LinkError):
        old.receive(Tag.REVEAL.value + new.public)  # reveal before the commitment
    _, old2 = pair()
    old2.receive(commit)
    with pytest.raises(LinkError):
        old2.receive(commit)  # a second commitment
    new3, old3 = pair()
    exchange(new3, old3)
    sealed = old3.confirm(True, b"x")
    new3.receive(sealed)
    with pytest.raises(LinkError):
        new3.receive(sealed)  # a second identity
    assert stage(new3) is Stage.FAILED


def test_a_low_order_key_is_refused() -> None:
    new, _ = pair()
    new.joined()
    with pytest.raises(LinkError) as caught:
        new.receive(Tag.KEY.value + bytes(32))
    assert caught.value.code == "bad_message"
    assert stage(new) is Stage.FAILED


def test_confirming_before_the_codes_exist_is_refused() -> None:
    new, old = pair()
    with pytest.raises(LinkError):
        new.confirm(True)
    with pytest.raises(LinkError):
        old.confirm(True, b"x")


@given(st.binary(max_size=200), st.integers(0, 3))
def test_any_bytes_at_any_stage_give_a_link_error_or_progress(data: bytes, steps: int) -> None:
    new, old = pair()
    sides: list[NewComputer | OldComputer] = [new, old]
    if steps >= 1:
        old.receive(new.joined())
    if steps >= 2:
        exchange(*pair())
    for side in sides:
        try:
            side.receive(data)
        except LinkError:
            assert stage(side) is Stage.FAILED


def test_unreadable_identities_are_a_link_error() -> None:
    for data in (b"", b"\x00\x05abc", b"\x00\x01a" + b"\x00" * 10, b"\xff\xff" + b"x" * 80):
        with pytest.raises(LinkError):
            unpack_identity(data)


def test_the_code_check_and_texts_need_no_window() -> None:
    i18n.use_language("en")
    assert check_code(" 1234-5678 ") == "12345678"
    for bad in ("1234567", "123456789", "1234abcd", "١٢٣٤٥٦٧٨"):
        with pytest.raises(ValueError, match="eight digits"):
            check_code(bad)
    with pytest.raises(ValueError):
        check_code("   ")
    assert format_code("12345678") == "1234 5678"
    assert failure_text("refused") == i18n.t("link.failed.refused")
    assert failure_text("something new") == i18n.t("link.failed.failed")
    i18n.use_language("zh_CN")
    try:
        with pytest.raises(ValueError, match="八位数字"):
            check_code("12")
        assert failure_text("expired") == i18n.ZH_CN["link.failed.expired"]
    finally:
        i18n.use_language("en")
