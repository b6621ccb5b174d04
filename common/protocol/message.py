"""Messages: `[opcode, request_id, params]` on top of the codec (`docs/protocol.md` §3).

Decoding checks the shape completely, so code above this layer can trust that it has
a known `MessageType`, a request id in range and a params dict with str keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol.codec import DEFAULT_LIMITS, Limits, decode, encode_triple
from common.protocol.opcodes import PUSHES, MessageType

MAX_REQUEST_ID = 2**63 - 1
PUSH_REQUEST_ID = 0
#: At most this many messages in one record body (docs/protocol.md §3).
MAX_MESSAGES_PER_RECORD = 4096

_LIST_TAG = 0x06
_TLV_HEADER = 5  # type byte + 4-byte length

_TYPES_BY_NUMBER: Mapping[int, MessageType] = {int(kind): kind for kind in MessageType}
_NOT_REQUESTS = PUSHES | {MessageType.REPLY, MessageType.ERROR}


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol message; pushes carry request id 0."""

    type: MessageType
    request_id: int
    params: dict[str, Any]


def encode_message(message: Message) -> bytes:
    """Serialise a message; LocalProtocolError if it could not be decoded by the peer."""
    _check_request_id(message.request_id)
    if not isinstance(message.params, dict):
        raise LocalProtocolError("message params must be a dict")
    if int(message.type) not in _TYPES_BY_NUMBER:
        raise LocalProtocolError("unknown message type")
    return encode_triple(int(message.type), message.request_id, message.params)


def decode_message(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> Message:
    """Parse one record body; RemoteProtocolError (only) for any bad shape."""
    value = decode(data, limits)
    if type(value) is not list or len(value) != 3:
        raise RemoteProtocolError("a message is a list of exactly 3 values")
    number, request_id, params = value
    if type(number) is not int:
        raise RemoteProtocolError("message type must be an int")
    kind = _TYPES_BY_NUMBER.get(number)
    if kind is None:
        raise RemoteProtocolError(f"unknown message type {number}")
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise RemoteProtocolError("request id must be an int in [0, 2**63)")
    if type(params) is not dict:
        raise RemoteProtocolError("message params must be a dict")
    return Message(kind, request_id, params)


def encode_batch(bodies: list[bytes]) -> bytes:
    """One record body carrying several encoded messages, in order (§3)."""
    if not bodies or len(bodies) > MAX_MESSAGES_PER_RECORD:
        raise LocalProtocolError(f"a record carries 1..{MAX_MESSAGES_PER_RECORD} messages")
    return bodies[0] if len(bodies) == 1 else b"".join(bodies)


def decode_messages(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> list[Message]:
    """Parse one record body: one or more encoded messages back to back.

    Each message is checked as `decode_message` checks it, against the same limits;
    the body must hold whole messages only and at most `MAX_MESSAGES_PER_RECORD`.
    RemoteProtocolError (only) for any bad shape.
    """
    if type(data) is not bytes:
        if memoryview(data).nbytes > limits.max_size:
            raise RemoteProtocolError("record body exceeds the size limit")
        data = bytes(data)
    end = len(data)
    if end > limits.max_size:
        raise RemoteProtocolError("record body exceeds the size limit")
    if end < _TLV_HEADER:
        raise RemoteProtocolError("truncated value header")
    first_stop = _TLV_HEADER + int.from_bytes(data[1:_TLV_HEADER], "big")
    if first_stop == end:  # the common case: one message, no copy
        return [decode_message(data, limits)]
    found: list[Message] = []
    offset = 0
    while offset < end:
        if len(found) == MAX_MESSAGES_PER_RECORD:
            raise RemoteProtocolError("too many messages in one record")
        if end - offset < _TLV_HEADER or data[offset] != _LIST_TAG:
            raise RemoteProtocolError("a record holds whole messages only")
        stop = offset + _TLV_HEADER + int.from_bytes(data[offset + 1 : offset + 5], "big")
        if stop > end:
            raise RemoteProtocolError("message length runs past the record")
        found.append(decode_message(data[offset:stop], limits))
        offset = stop
    return found


def request(kind: MessageType, request_id: int, /, **params: Any) -> Message:
    """A request; its id must be non-zero because id 0 marks pushes."""
    if kind in _NOT_REQUESTS:
        raise LocalProtocolError(f"{kind.name} is not a request")
    _check_request_id(request_id)
    if request_id == PUSH_REQUEST_ID:
        raise LocalProtocolError("request id 0 is reserved for pushes")
    return Message(kind, request_id, params)


def reply(request_id: int, params: Mapping[str, Any] | None = None) -> Message:
    """The success reply to request `request_id`."""
    _check_request_id(request_id)
    return Message(MessageType.REPLY, request_id, dict(params or {}))


def error(request_id: int, code: str, message: str, field: str | None = None) -> Message:
    """The error reply to request `request_id`; `field` names the offending form field."""
    _check_request_id(request_id)
    params: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        params["field"] = field
    return Message(MessageType.ERROR, request_id, params)


def push(kind: MessageType, params: Mapping[str, Any] | None = None) -> Message:
    """A message the server sends on its own; only `PUSHES` types qualify."""
    if kind not in PUSHES:
        raise LocalProtocolError(f"{kind.name} is not a push")
    return Message(kind, PUSH_REQUEST_ID, dict(params or {}))


def _check_request_id(request_id: int) -> None:
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise LocalProtocolError("request id must be an int in [0, 2**63)")
