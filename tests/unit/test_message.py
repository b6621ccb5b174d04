"""Messages: exact encoding, shape checks on decode, and the helper constructors."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol.codec import Limits, encode
from common.protocol.message import (
    MAX_MESSAGES_PER_RECORD,
    MAX_REQUEST_ID,
    Message,
    decode_message,
    decode_messages,
    encode_batch,
    encode_message,
    error,
    push,
    reply,
    request,
)
from common.protocol.opcodes import PUSHES, MessageType

REQUEST_IDS = st.integers(min_value=0, max_value=MAX_REQUEST_ID)
PARAM_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
MESSAGES = st.builds(
    Message,
    st.sampled_from(list(MessageType)),
    REQUEST_IDS,
    st.dictionaries(st.text(max_size=10), PARAM_VALUES, max_size=6),
)


def int_tlv(value: int) -> bytes:
    return b"\x02\x00\x00\x00\x08" + struct.pack(">q", value)


def test_known_encoding_of_a_ping() -> None:
    expected = (
        b"\x06\x00\x00\x00\x1f"  # list of 31 bytes
        + int_tlv(3)  # PING
        + int_tlv(7)  # request id
        + b"\x07\x00\x00\x00\x00"  # {}
    )
    assert encode_message(Message(MessageType.PING, 7, {})) == expected
    assert decode_message(expected) == Message(MessageType.PING, 7, {})


def test_decoded_type_is_the_enum_member() -> None:
    message = decode_message(encode([40, 1, {"a": 1}]))
    assert message.type is MessageType.SEND_MESSAGE
    assert message.params == {"a": 1}


def test_message_is_frozen_and_slotted() -> None:
    message = Message(MessageType.PING, 1, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.request_id = 2  # type: ignore[misc]
    assert not hasattr(message, "__dict__")


@settings(deadline=None, max_examples=200)
@given(MESSAGES)
def test_round_trip(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


def test_largest_request_id_round_trips() -> None:
    message = Message(MessageType.REPLY, MAX_REQUEST_ID, {})
    assert decode_message(encode_message(message)) == message


def test_decode_message_applies_the_codec_limits() -> None:
    data = encode_message(Message(MessageType.PING, 1, {"x": [1, 2, 3]}))
    with pytest.raises(RemoteProtocolError):
        decode_message(data, Limits(max_items=5))


# --------------------------------------------------------------- decode rejections


@pytest.mark.parametrize(
    "value",
    [
        {"type": 3, "request_id": 1, "params": {}},
        3,
        None,
        [],
        [3, 1],
        [3, 1, {}, None],
    ],
    ids=["dict", "int", "none", "empty", "two", "four"],
)
def test_not_a_list_of_three_is_rejected(value: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(encode(value))


@pytest.mark.parametrize(
    "opcode",
    [True, 3.0, "3", b"\x03", None, [3]],
    ids=["bool", "float", "str", "bytes", "none", "list"],
)
def test_opcode_that_is_not_an_int_is_rejected(opcode: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(encode([opcode, 1, {}]))


@pytest.mark.parametrize("opcode", [0, -1, 4, 9, 999, 2**63 - 1, -(2**63)])
def test_unknown_opcode_is_rejected(opcode: int) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(encode([opcode, 1, {}]))


@pytest.mark.parametrize(
    "request_id",
    [-1, -(2**63), True, 1.0, "1", None],
    ids=["negative", "min", "bool", "float", "str", "none"],
)
def test_bad_request_id_is_rejected(request_id: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(encode([3, request_id, {}]))


@pytest.mark.parametrize("params", [[], None, "x", 0, b""], ids=str)
def test_params_that_are_not_a_dict_are_rejected(params: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(encode([3, 1, params]))


def test_undecodable_bytes_are_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(encode_message(Message(MessageType.PING, 1, {}))[:-1])


@settings(deadline=None, max_examples=200)
@given(MESSAGES, st.data())
def test_mutated_messages_raise_only_remote_protocol_error(
    message: Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode_message(message))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        where = data.draw(st.integers(min_value=0, max_value=len(encoded)))
        choice = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        if choice == "flip" and where < len(encoded):
            encoded[where] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif choice == "truncate":
            del encoded[where:]
        elif choice == "insert":
            encoded[where:where] = data.draw(st.binary(min_size=1, max_size=4))
    with contextlib.suppress(RemoteProtocolError):
        decoded = decode_message(bytes(encoded))
        assert isinstance(decoded.type, MessageType)
        assert 0 <= decoded.request_id <= MAX_REQUEST_ID
        assert isinstance(decoded.params, dict)


# --------------------------------------------------------------- encoding and helpers


@pytest.mark.parametrize("request_id", [-1, 2**63, True], ids=["negative", "too-big", "bool"])
def test_encode_message_rejects_a_bad_request_id(request_id: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(Message(MessageType.PING, request_id, {}))


def test_encode_message_rejects_params_that_are_not_a_dict() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(Message(MessageType.PING, 1, [1]))  # type: ignore[arg-type]


def test_encode_message_rejects_an_unknown_type() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(Message(999, 1, {}))  # type: ignore[arg-type]


def test_encode_message_rejects_unencodable_params() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(Message(MessageType.PING, 1, {"x": object()}))


def test_request_builds_params_from_keywords() -> None:
    message = request(MessageType.ADD_FRIEND, 5, username="bob", type="kw named like arg")
    assert message == Message(
        MessageType.ADD_FRIEND, 5, {"username": "bob", "type": "kw named like arg"}
    )


@pytest.mark.parametrize("request_id", [0, -1, 2**63])
def test_request_rejects_a_bad_id(request_id: int) -> None:
    with pytest.raises(LocalProtocolError):
        request(MessageType.PING, request_id)


@pytest.mark.parametrize("kind", [MessageType.REPLY, MessageType.ERROR, *sorted(PUSHES)])
def test_request_rejects_replies_and_pushes(kind: MessageType) -> None:
    with pytest.raises(LocalProtocolError):
        request(kind, 1)


def test_reply_copies_its_params() -> None:
    params = {"time": 5}
    message = reply(9, params)
    params["time"] = 6
    assert message == Message(MessageType.REPLY, 9, {"time": 5})
    assert reply(9) == Message(MessageType.REPLY, 9, {})


def test_error_includes_field_only_when_given() -> None:
    assert error(4, "login_failed", "Wrong username or password") == Message(
        MessageType.ERROR, 4, {"code": "login_failed", "message": "Wrong username or password"}
    )
    assert error(4, "invalid_age", "Too young", field="age").params == {
        "code": "invalid_age",
        "message": "Too young",
        "field": "age",
    }


def test_push_uses_request_id_zero() -> None:
    message = push(MessageType.KICKED, {"reason": "logged_in_elsewhere"})
    assert message == Message(MessageType.KICKED, 0, {"reason": "logged_in_elsewhere"})
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize("kind", [MessageType.PING, MessageType.REPLY, MessageType.LOGIN])
def test_push_rejects_types_that_are_not_pushes(kind: MessageType) -> None:
    with pytest.raises(LocalProtocolError):
        push(kind, {})


@pytest.mark.parametrize("request_id", [-1, 2**63])
def test_reply_and_error_reject_a_bad_id(request_id: int) -> None:
    with pytest.raises(LocalProtocolError):
        reply(request_id, {})
    with pytest.raises(LocalProtocolError):
        error(request_id, "bad_request", "no")


# -- several messages in one record body (docs/protocol.md §3) ---------------------------


@given(st.lists(MESSAGES, min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_a_batch_decodes_to_the_same_messages_in_order(batch: list[Message]) -> None:
    body = encode_batch([encode_message(message) for message in batch])
    assert decode_messages(body) == batch


def test_a_batch_of_one_is_the_plain_encoding() -> None:
    ping = encode_message(Message(MessageType.PING, 7, {}))
    assert encode_batch([ping]) == ping
    assert decode_messages(ping) == [Message(MessageType.PING, 7, {})]


@pytest.mark.parametrize(
    "tail",
    [
        b"\x06",  # a header cut short
        b"\x06\x00\x00\x00\x1f",  # a list header whose body is missing
        b"\x07\x00\x00\x00\x00",  # a dict where a message list belongs
        b"\x00\x00\x00\x00\x00",  # a none
    ],
)
def test_a_batch_with_anything_but_whole_messages_is_rejected(tail: bytes) -> None:
    ping = encode_message(Message(MessageType.PING, 7, {}))
    with pytest.raises(RemoteProtocolError):
        decode_messages(ping + tail)


def test_a_batch_holds_at_most_the_record_limit() -> None:
    ping = encode_message(Message(MessageType.PING, 7, {}))
    assert len(decode_messages(ping * MAX_MESSAGES_PER_RECORD)) == MAX_MESSAGES_PER_RECORD
    with pytest.raises(RemoteProtocolError):
        decode_messages(ping * (MAX_MESSAGES_PER_RECORD + 1))
    with pytest.raises(LocalProtocolError):
        encode_batch([ping] * (MAX_MESSAGES_PER_RECORD + 1))
    with pytest.raises(LocalProtocolError):
        encode_batch([])


def test_a_batch_is_bounded_by_the_size_limit_as_a_whole() -> None:
    ping = encode_message(Message(MessageType.PING, 7, {}))
    limits = Limits(max_size=len(ping) * 3)
    assert len(decode_messages(ping * 3, limits)) == 3
    with pytest.raises(RemoteProtocolError):
        decode_messages(ping * 4, limits)


@given(st.lists(MESSAGES, min_size=2, max_size=4), st.data())
@settings(max_examples=60, deadline=None)
def test_mutated_batches_raise_only_remote_protocol_error(
    batch: list[Message], data: st.DataObject
) -> None:
    body = bytearray(encode_batch([encode_message(message) for message in batch]))
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    body[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with contextlib.suppress(RemoteProtocolError):
        decode_messages(bytes(body))


@given(MESSAGES)
@settings(max_examples=200, deadline=None)
def test_encode_message_equals_the_generic_encoding(message: Message) -> None:
    generic = encode([int(message.type), message.request_id, message.params])
    assert encode_message(message) == generic
