"""Messages: `[opcode, request_id, params]` on top of the codec (`docs/protocol.md` §3).

Decoding checks the shape completely, so code above this layer can trust that it has
a known `MessageType`, a request id in range and a params dict with str keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol.codec import DEFAULT_LIMITS, Limits, decode, encode
from common.protocol.opcodes import PUSHES, MessageType

MAX_REQUEST_ID = 2**63 - 1
PUSH_REQUEST_ID = 0

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
    return encode([int(message.type), message.request_id, message.params])


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
