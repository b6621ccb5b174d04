"""The TLV codec: exact bytes, round trips, and a strict, bounded decoder.

Every rejection rule of `docs/protocol.md` §2 has its own test, and Hypothesis checks
that no input at all (random, or a mutated valid encoding) makes `decode` raise anything
but `RemoteProtocolError`.
"""

from __future__ import annotations

import contextlib
import math
import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol.codec import DEFAULT_LIMITS, Encoded, Limits, decode, encode
from common.protocol.opcodes import MessageType

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SCALARS = st.none() | st.booleans() | INT64 | st.floats() | st.text() | st.binary()
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=24,
)


def tlv(tag: int, value: bytes) -> bytes:
    """Build one element by hand, independently of the encoder under test."""
    return bytes([tag]) + struct.pack(">I", len(value)) + value


def raw(tag: int, length: int, value: bytes = b"") -> bytes:
    """An element whose length field may lie about its value."""
    return bytes([tag]) + struct.pack(">I", length) + value


def nested_lists(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def same(a: Any, b: Any) -> bool:
    """Type-strict structural equality (True is not 1) where NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# --------------------------------------------------------------- known encodings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "00 00000000"),
        (False, "01 00000001 00"),
        (True, "01 00000001 01"),
        (0, "02 00000008 0000000000000000"),
        (1, "02 00000008 0000000000000001"),
        (-1, "02 00000008 ffffffffffffffff"),
        (2**63 - 1, "02 00000008 7fffffffffffffff"),
        (-(2**63), "02 00000008 8000000000000000"),
        (1.5, "03 00000008 3ff8000000000000"),
        (-0.0, "03 00000008 8000000000000000"),
        (math.inf, "03 00000008 7ff0000000000000"),
        ("", "04 00000000"),
        ("hé", "04 00000003 68c3a9"),
        ("你", "04 00000003 e4bda0"),
        (b"", "05 00000000"),
        (b"\x00\xff", "05 00000002 00ff"),
        ([], "06 00000000"),
        ([1, None], "06 00000012 02000000080000000000000001 0000000000"),
        ([[]], "06 00000005 0600000000"),
        ({}, "07 00000000"),
        ({"a": True}, "07 0000000c 040000000161 010000000101"),
        ({"k": [b"x"]}, "07 00000011 04000000016b 0600000006 050000000178"),
    ],
)
def test_known_encoding(value: Any, expected: str) -> None:
    assert encode(value) == bytes.fromhex(expected.replace(" ", ""))
    assert same(decode(encode(value)), value)


def test_nan_encodes_as_a_float_and_decodes_as_nan() -> None:
    encoded = encode(math.nan)
    assert encoded[:5] == bytes.fromhex("0300000008")
    assert math.isnan(decode(encoded))


def test_other_byte_types_and_tuples_encode_like_bytes_and_lists() -> None:
    assert encode(bytearray(b"ab")) == encode(b"ab") == encode(memoryview(b"ab"))
    assert encode((1, "x")) == encode([1, "x"])
    assert decode(encode((1, (2,)))) == [1, [2]]


def test_int_and_str_subclasses_encode_as_their_base_type() -> None:
    assert encode(MessageType.PING) == encode(3)
    assert type(decode(encode(MessageType.PING))) is int


def test_dict_keeps_key_order() -> None:
    value = {"z": 1, "a": 2, "m": 3}
    assert list(decode(encode(value))) == ["z", "a", "m"]


def test_decode_accepts_bytearray_and_memoryview_and_returns_bytes() -> None:
    encoded = encode([b"ab", "c"])
    assert decode(bytearray(encoded)) == [b"ab", "c"]
    result = decode(memoryview(encoded))
    assert result == [b"ab", "c"] and type(result[0]) is bytes


def test_decoded_bytes_do_not_alias_a_mutable_input() -> None:
    buffer = bytearray(encode(b"abc"))
    value = decode(buffer)
    buffer[-1] = ord("z")
    assert value == b"abc"


# --------------------------------------------------------------- encode errors


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        object(),
        1j,
        {1: "int key"},
        {b"k": "bytes key"},
        [1, {None: 2}],
        2**63,
        -(2**63) - 1,
        [2**64],
        "\ud800",  # lone surrogate: not encodable as UTF-8
    ],
)
def test_encode_rejects_what_the_protocol_cannot_carry(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)


def test_encode_accepts_32_levels_and_rejects_33() -> None:
    assert decode(encode(nested_lists(32))) == nested_lists(32)
    with pytest.raises(LocalProtocolError):
        encode(nested_lists(33))
    with pytest.raises(LocalProtocolError):
        encode({"a": nested_lists(32)})


def test_encode_rejects_a_cycle() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(LocalProtocolError):
        encode(cycle)


# --------------------------------------------------------------- decode: limits


def test_input_over_max_size_is_rejected() -> None:
    encoded = encode(b"x" * 100)
    assert decode(encoded, Limits(max_size=len(encoded))) == b"x" * 100
    with pytest.raises(RemoteProtocolError):
        decode(encoded, Limits(max_size=len(encoded) - 1))
    with pytest.raises(RemoteProtocolError):
        decode(bytearray(encoded), Limits(max_size=len(encoded) - 1))


def test_default_max_size_rejects_a_larger_input() -> None:
    big = encode(bytes(DEFAULT_LIMITS.max_size))
    with pytest.raises(RemoteProtocolError):
        decode(big)


def test_depth_over_max_depth_is_rejected() -> None:
    deepest_allowed = tlv(6, b"")
    for _ in range(31):
        deepest_allowed = tlv(6, deepest_allowed)
    assert decode(deepest_allowed) == nested_lists(32)
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, deepest_allowed))


def test_depth_counts_dicts_too() -> None:
    two_levels = encode({"a": {"b": 1}})
    assert decode(two_levels, Limits(max_depth=2)) == {"a": {"b": 1}}
    with pytest.raises(RemoteProtocolError):
        decode(two_levels, Limits(max_depth=1))


def test_huge_custom_depth_still_raises_only_remote_protocol_error() -> None:
    deep = tlv(6, b"")
    for _ in range(5000):
        deep = tlv(6, deep)
    with pytest.raises(RemoteProtocolError):
        decode(deep, Limits(max_depth=10**9))


def test_element_count_over_max_items_is_rejected() -> None:
    three = encode([1, 2])  # the list and its two elements
    assert decode(three, Limits(max_items=3)) == [1, 2]
    with pytest.raises(RemoteProtocolError):
        decode(three, Limits(max_items=2))


def test_element_count_includes_dict_keys_and_nested_values() -> None:
    value = {"a": [None, None]}  # dict, key, list, two Nones
    assert decode(encode(value), Limits(max_items=5)) == value
    with pytest.raises(RemoteProtocolError):
        decode(encode(value), Limits(max_items=4))


def test_default_max_items_is_100_000() -> None:
    assert len(decode(encode([None] * 99_999))) == 99_999
    with pytest.raises(RemoteProtocolError):
        decode(encode([None] * 100_000))


def test_limits_must_be_sane() -> None:
    with pytest.raises(ValueError):
        Limits(max_items=0)
    with pytest.raises(ValueError):
        Limits(max_size=-1)


def test_claimed_lengths_never_allocate() -> None:
    """A 20-byte input claiming 4 GiB is refused without allocating for the claim."""
    lies = [
        raw(5, 2**32 - 1, b"x" * 15),
        raw(6, 2**32 - 1, raw(5, 2**32 - 10)),
        raw(6, 15, raw(5, 2**31, b"abcdef")),
    ]
    tracemalloc.start()
    try:
        for data in lies:
            with pytest.raises(RemoteProtocolError):
                decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


# --------------------------------------------------------------- decode: structure


def test_empty_input_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(b"")


def test_truncated_header_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(b"\x06\x00\x00")


def test_truncated_value_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(encode("abc")[:-1])


def test_length_overrunning_its_container_is_rejected() -> None:
    inner = raw(4, 5, b"ab")  # claims 5 bytes, the list holds only 2 after the header
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, inner))


def test_dict_key_overrunning_its_container_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, raw(4, 50, b"k") + tlv(0, b"")))


def test_dict_value_overrunning_its_container_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, tlv(4, b"k") + raw(5, 9, b"ab")))


def test_trailing_bytes_at_top_level_are_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(encode(1) + b"\x00")


def test_partial_header_inside_a_list_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, tlv(0, b"") + b"\x00\x00"))


def test_trailing_bytes_inside_a_nested_container_are_rejected() -> None:
    inner = tlv(6, tlv(2, struct.pack(">q", 1)) + b"\x00")
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, inner))


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\xe4\xbd"],
    ids=["invalid-byte", "overlong", "surrogate", "above-max", "truncated"],
)
def test_invalid_utf8_is_rejected(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(4, data))
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, tlv(4, data)))


def test_invalid_utf8_in_a_dict_key_or_value_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, tlv(4, b"\xff") + tlv(0, b"")))
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, tlv(4, b"k") + tlv(4, b"\xff")))


@pytest.mark.parametrize("byte", [2, 0x80, 0xFF])
def test_bool_byte_other_than_0_or_1_is_rejected(byte: int) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(1, bytes([byte])))
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, tlv(1, bytes([byte]))))


@pytest.mark.parametrize(
    "data",
    [
        tlv(0, b"\x00"),
        tlv(1, b""),
        tlv(1, b"\x00\x00"),
        tlv(2, bytes(7)),
        tlv(2, bytes(9)),
        tlv(3, bytes(4)),
        tlv(3, bytes(9)),
    ],
    ids=["none-1", "bool-0", "bool-2", "int-7", "int-9", "float-4", "float-9"],
)
def test_wrong_fixed_length_is_rejected(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data)
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, data))
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, tlv(4, b"k") + data))


def test_duplicate_dict_keys_are_rejected() -> None:
    entry = tlv(4, b"k") + tlv(0, b"")
    assert decode(tlv(7, entry)) == {"k": None}
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, entry + entry))


@pytest.mark.parametrize(
    "key",
    [tlv(2, struct.pack(">q", 1)), tlv(5, b"k"), tlv(0, b""), tlv(6, b""), tlv(1, b"\x01")],
    ids=["int", "bytes", "none", "list", "bool"],
)
def test_non_str_dict_keys_are_rejected(key: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, key + tlv(0, b"")))


def test_dict_key_without_value_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, tlv(4, b"a") + tlv(0, b"") + tlv(4, b"b")))


@pytest.mark.parametrize("tag", [0x08, 0x7F, 0xFF])
def test_unknown_type_byte_is_rejected(tag: int) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(tlv(tag, b""))
    with pytest.raises(RemoteProtocolError):
        decode(tlv(6, tlv(tag, b"")))
    with pytest.raises(RemoteProtocolError):
        decode(tlv(7, tlv(4, b"k") + tlv(tag, b"")))


# --------------------------------------------------------------- properties


@settings(deadline=None, max_examples=200)
@given(VALUES)
def test_round_trip(value: Any) -> None:
    encoded = encode(value)
    decoded = decode(encoded)
    assert same(decoded, value)
    assert encode(decoded) == encoded


def assert_rejected_or_canonical(data: bytes) -> None:
    """Only RemoteProtocolError may escape; what is accepted re-encodes to the same bytes.

    The second half holds because every value has exactly one encoding, so the decoder
    cannot have accepted anything sloppy.
    """
    try:
        value = decode(data)
    except RemoteProtocolError:
        return
    assert encode(value) == data


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    assert_rejected_or_canonical(data)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bit flips, truncations, insertions or deletions."""
    data = bytearray(encode(draw(VALUES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if action == "flip" and where < len(data):
            data[where] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "truncate":
            del data[where:]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=6))
        elif action == "delete":
            del data[where : where + draw(st.integers(min_value=1, max_value=6))]
        elif action == "set" and where < len(data):
            data[where] = draw(st.integers(min_value=0, max_value=255))
    return bytes(data)


@settings(deadline=None, max_examples=200)
@given(mutated_encodings())
def test_mutated_encodings_raise_only_remote_protocol_error(data: bytes) -> None:
    assert_rejected_or_canonical(data)


@settings(deadline=None, max_examples=200)
@given(mutated_encodings(), st.integers(min_value=0, max_value=4))
def test_tight_limits_raise_only_remote_protocol_error(data: bytes, bound: int) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data, Limits(max_size=8 * bound, max_depth=bound, max_items=bound + 1))


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=8), VALUES, max_size=6), VALUES)
def test_an_encoded_dict_sends_exactly_what_the_dict_would(
    value: dict[str, Any], other: Any
) -> None:
    once = Encoded(value)
    assert encode(once) == encode(value)
    assert encode({"proof": once, "other": other}) == encode({"proof": value, "other": other})
    assert encode([once, Encoded({"inner": once})]) == encode([value, {"inner": value}])
    assert once == value and dict(once) == value and len(once) == len(value)


def test_an_encoded_dict_is_read_only_and_keeps_its_bytes() -> None:
    source = {"position": 3, "proof": b"\x01" * 32}
    once = Encoded(source)
    source["position"] = 4  # a copy was taken: the bytes still match what it reads
    assert once["position"] == 3 and decode(encode(once)) == {"position": 3, "proof": b"\x01" * 32}
    with pytest.raises(TypeError):
        once["position"] = 5  # type: ignore[index]
    with pytest.raises(LocalProtocolError):
        Encoded({"bad": object()})
