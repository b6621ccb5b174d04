"""The TLV codec of `docs/protocol.md` section 2.

Every value is one byte of type, four bytes of big-endian length, then the value.
The decoder is strict and bounded because its input comes straight off the network:
any malformed, oversized or ambiguous input raises `RemoteProtocolError` and nothing
else, and it never allocates more than the input's own size (values are slices of the
input; no buffer is ever sized from a claimed length).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import LocalProtocolError, RemoteProtocolError

NONE = 0x00
BOOL = 0x01
INT = 0x02
FLOAT = 0x03
STR = 0x04
BYTES = 0x05
LIST = 0x06
DICT = 0x07

_HEADER = struct.Struct(">BI")
_HEADER_SIZE = _HEADER.size
_INT_TLV = struct.Struct(">BIq")  # a whole int element: header and value in one pack
_FLOAT_TLV = struct.Struct(">BId")
_INT = struct.Struct(">q")
_FLOAT = struct.Struct(">d")

_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_pack_int_tlv = _INT_TLV.pack
_pack_float_tlv = _FLOAT_TLV.pack
_unpack_int = _INT.unpack_from
_unpack_float = _FLOAT.unpack_from

_NONE_BYTES = _pack_header(NONE, 0)
_TRUE_BYTES = _pack_header(BOOL, 1) + b"\x01"
_FALSE_BYTES = _pack_header(BOOL, 1) + b"\x00"


@dataclass(frozen=True)
class Limits:
    """Bounds on what `decode` accepts; the defaults fit one maximal frame body.

    `max_depth` counts nested containers (a flat list is depth 1); `max_items` counts
    every encoded value in the input, containers, dict keys and the top value included,
    and is checked as each container completes (the work done before a rejection is
    bounded by the input size anyway: every element takes at least 5 bytes).
    """

    max_size: int = 1_179_648
    max_depth: int = 32
    max_items: int = 100_000

    def __post_init__(self) -> None:
        if self.max_size < 0 or self.max_depth < 0 or self.max_items < 1:
            raise ValueError("codec limits must be non-negative (max_items at least 1)")


DEFAULT_LIMITS = Limits()
_MAX_ENCODE_DEPTH = DEFAULT_LIMITS.max_depth  # never send what a default peer refuses


# --------------------------------------------------------------------------- encoding


def encode(value: Any) -> bytes:
    """Encode one value; raises LocalProtocolError for anything the protocol cannot carry."""
    parts: list[bytes] = []
    try:
        _encode_value(value, parts, 0)
    except struct.error as exc:  # every pack is of an int64 or a 4-byte length
        raise LocalProtocolError("int or length does not fit its fixed-size field") from exc
    except UnicodeEncodeError as exc:
        raise LocalProtocolError("str is not encodable as UTF-8 (lone surrogate)") from exc
    return b"".join(parts)


def encode_triple(first: int, second: int, third: dict[str, Any]) -> bytes:
    """`encode([first, second, third])` for two ints and a dict, without the generic walk.

    The shape of every protocol message (opcode, request id, params); the server
    encodes one per reply and push.
    """
    parts: list[bytes] = [b"", b"", b""]
    try:
        parts[1] = _pack_int_tlv(INT, 8, first)
        parts[2] = _pack_int_tlv(INT, 8, second)
        size = 2 * (_HEADER_SIZE + 8) + _encode_dict(third, parts, 1)
        parts[0] = _pack_header(LIST, size)
    except struct.error as exc:
        raise LocalProtocolError("int or length does not fit its fixed-size field") from exc
    except UnicodeEncodeError as exc:
        raise LocalProtocolError("str is not encodable as UTF-8 (lone surrogate)") from exc
    return b"".join(parts)


# Each encoder appends its bytes to `parts` and returns how many it appended, so a
# container writes its header once its children are encoded, without joining or
# measuring them again. Overflows surface as struct.error and bad text as
# UnicodeEncodeError; `encode` turns both into LocalProtocolError.


def _encode_value(value: Any, parts: list[bytes], depth: int) -> int:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for_subclass(value)
    return encoder(value, parts, depth)


def _encode_none(value: None, parts: list[bytes], depth: int) -> int:
    parts.append(_NONE_BYTES)
    return _HEADER_SIZE


def _encode_bool(value: bool, parts: list[bytes], depth: int) -> int:
    parts.append(_TRUE_BYTES if value else _FALSE_BYTES)
    return _HEADER_SIZE + 1


def _encode_int(value: int, parts: list[bytes], depth: int) -> int:
    parts.append(_pack_int_tlv(INT, 8, value))
    return _HEADER_SIZE + 8


def _encode_float(value: float, parts: list[bytes], depth: int) -> int:
    parts.append(_pack_float_tlv(FLOAT, 8, value))
    return _HEADER_SIZE + 8


def _encode_str(value: str, parts: list[bytes], depth: int) -> int:
    raw = value.encode()
    parts.append(_pack_header(STR, len(raw)))
    parts.append(raw)
    return _HEADER_SIZE + len(raw)


def _encode_bytes(value: bytes | bytearray | memoryview, parts: list[bytes], depth: int) -> int:
    raw = bytes(value)
    parts.append(_pack_header(BYTES, len(raw)))
    parts.append(raw)
    return _HEADER_SIZE + len(raw)


# The container loops encode str and int inline (no call per element): replies and
# pushes are encoded on the server's hot path.


def _encode_list(value: list[Any] | tuple[Any, ...], parts: list[bytes], depth: int) -> int:
    depth += 1
    if depth > _MAX_ENCODE_DEPTH:
        raise LocalProtocolError("value nested too deeply")
    slot = len(parts)
    append = parts.append
    append(b"")  # replaced by the header once the size is known
    size = 0
    for item in value:
        kind = type(item)
        if kind is str:
            raw = item.encode()
            append(_pack_header(STR, len(raw)))
            append(raw)
            size += _HEADER_SIZE + len(raw)
        elif kind is int:
            append(_pack_int_tlv(INT, 8, item))
            size += _HEADER_SIZE + 8
        else:
            size += _encode_value(item, parts, depth)
    parts[slot] = _pack_header(LIST, size)
    return _HEADER_SIZE + size


def _encode_dict(value: dict[Any, Any], parts: list[bytes], depth: int) -> int:
    depth += 1
    if depth > _MAX_ENCODE_DEPTH:
        raise LocalProtocolError("value nested too deeply")
    slot = len(parts)
    append = parts.append
    append(b"")
    size = 0
    for key, item in value.items():
        if type(key) is not str and not isinstance(key, str):
            raise LocalProtocolError("dict keys must be str")
        raw = key.encode()
        append(_pack_header(STR, len(raw)))
        append(raw)
        size += _HEADER_SIZE + len(raw)
        kind = type(item)
        if kind is str:
            raw = item.encode()
            append(_pack_header(STR, len(raw)))
            append(raw)
            size += _HEADER_SIZE + len(raw)
        elif kind is int:
            append(_pack_int_tlv(INT, 8, item))
            size += _HEADER_SIZE + 8
        else:
            size += _encode_value(item, parts, depth)
    parts[slot] = _pack_header(DICT, size)
    return _HEADER_SIZE + size


class Encoded(Mapping[str, Any]):
    """A dict sent many times unchanged (a signed tree head in every key reply), encoded
    once: `encode` copies its bytes instead of walking it again.

    It reads like the dict it was made from (the server's tests and hooks look inside)
    but is not one, and must be treated as read only: its bytes do not follow changes.
    For shallow values only (the nesting inside does not count towards the depth cap).
    """

    __slots__ = ("_value", "encoded")

    def __init__(self, value: Mapping[str, Any]) -> None:
        self._value = dict(value)
        self.encoded = encode(self._value)

    def __getitem__(self, key: str) -> Any:
        return self._value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Encoded({self._value!r})"


def _encode_encoded(value: Encoded, parts: list[bytes], depth: int) -> int:
    parts.append(value.encoded)
    return len(value.encoded)


_Encoder = Callable[[Any, list[bytes], int], int]

_ENCODERS: dict[type, _Encoder] = {
    type(None): _encode_none,
    bool: _encode_bool,
    int: _encode_int,
    float: _encode_float,
    str: _encode_str,
    bytes: _encode_bytes,
    bytearray: _encode_bytes,
    memoryview: _encode_bytes,
    list: _encode_list,
    tuple: _encode_list,
    dict: _encode_dict,
    Encoded: _encode_encoded,
}


def _encoder_for_subclass(value: Any) -> _Encoder:
    """Slow path for subclasses (IntEnum opcodes, str enums...); exact types hit the dict."""
    for base, encoder in _SUBCLASS_ORDER:
        if isinstance(value, base):
            return encoder
    raise LocalProtocolError(f"cannot encode a value of type {type(value).__name__}")


# bool before int: bool is an int subclass but has its own wire type.
_SUBCLASS_ORDER: tuple[tuple[type, _Encoder], ...] = (
    (bool, _encode_bool),
    (int, _encode_int),
    (float, _encode_float),
    (str, _encode_str),
    (bytes, _encode_bytes),
    (bytearray, _encode_bytes),
    (list, _encode_list),
    (tuple, _encode_list),
    (dict, _encode_dict),
)


# --------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode exactly one value filling all of `data`.

    Raises RemoteProtocolError, and only that, for anything not exactly as the protocol
    says (see `Limits` for the bounds).
    """
    if type(data) is not bytes:
        if memoryview(data).nbytes > limits.max_size:  # reject before copying
            raise RemoteProtocolError("encoded value exceeds the size limit")
        data = bytes(data)  # values are slices of it: they must not alias a mutable buffer
    if len(data) > limits.max_size:
        raise RemoteProtocolError("encoded value exceeds the size limit")
    if len(data) < _HEADER_SIZE:
        raise RemoteProtocolError("truncated value header")
    tag, length = _unpack_header(data, 0)
    if _HEADER_SIZE + length != len(data):
        raise RemoteProtocolError("value length does not match the input size")
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise RemoteProtocolError(f"unknown type byte 0x{tag:02x}")
    try:
        return decoder(_Reader(data, limits), _HEADER_SIZE, len(data), 0)
    except RecursionError as exc:  # only reachable with a custom, very large max_depth
        raise RemoteProtocolError("value nested too deeply") from exc


class _Reader:
    """One decoding pass over `data`, sharing the element budget across the recursion.

    Every value is described by the span [start, stop) of `data` its length claims;
    the span is checked against its container before the value is looked at. Container
    loops parse child headers inline: this is the server's hot path.
    """

    __slots__ = ("data", "items_left", "max_depth")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.items_left = limits.max_items - 1  # the top value counts too
        self.max_depth = limits.max_depth

    def read_none(self, start: int, stop: int, depth: int) -> None:
        if stop != start:
            raise RemoteProtocolError("none must have length 0")

    def read_bool(self, start: int, stop: int, depth: int) -> bool:
        if stop - start != 1:
            raise RemoteProtocolError("bool must have length 1")
        byte = self.data[start]
        if byte > 1:
            raise RemoteProtocolError("bool byte must be 0 or 1")
        return byte == 1

    def read_int(self, start: int, stop: int, depth: int) -> int:
        if stop - start != 8:
            raise RemoteProtocolError("int must have length 8")
        value: int = _unpack_int(self.data, start)[0]
        return value

    def read_float(self, start: int, stop: int, depth: int) -> float:
        if stop - start != 8:
            raise RemoteProtocolError("float must have length 8")
        value: float = _unpack_float(self.data, start)[0]
        return value

    def read_str(self, start: int, stop: int, depth: int) -> str:
        try:
            return self.data[start:stop].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("str is not valid UTF-8") from exc

    def read_bytes(self, start: int, stop: int, depth: int) -> bytes:
        return self.data[start:stop]

    # The container loops below parse child headers and the commonest scalars inline
    # (no call per element): this is the server's hot path.

    def read_list(self, start: int, stop: int, depth: int) -> list[Any]:
        depth += 1
        if depth > self.max_depth:
            raise RemoteProtocolError("value nested too deeply")
        data = self.data
        unpack_header = _unpack_header
        decoders = _DECODERS
        items: list[Any] = []
        append = items.append
        pos = start
        while pos < stop:
            if stop - pos < _HEADER_SIZE:
                raise RemoteProtocolError("truncated value header")
            tag, length = unpack_header(data, pos)
            pos += _HEADER_SIZE
            end = pos + length
            if end > stop:
                raise RemoteProtocolError("value length overruns its container")
            if tag == STR:
                try:
                    append(data[pos:end].decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise RemoteProtocolError("str is not valid UTF-8") from exc
            elif tag == INT and length == 8:
                append(_unpack_int(data, pos)[0])
            else:
                decoder = decoders.get(tag)
                if decoder is None:
                    raise RemoteProtocolError(f"unknown type byte 0x{tag:02x}")
                append(decoder(self, pos, end, depth))
            pos = end
        self.items_left -= len(items)
        if self.items_left < 0:
            raise RemoteProtocolError("too many elements")
        return items

    def read_dict(self, start: int, stop: int, depth: int) -> dict[str, Any]:
        depth += 1
        if depth > self.max_depth:
            raise RemoteProtocolError("value nested too deeply")
        data = self.data
        unpack_header = _unpack_header
        decoders = _DECODERS
        result: dict[str, Any] = {}
        pos = start
        while pos < stop:
            if stop - pos < 2 * _HEADER_SIZE:
                raise RemoteProtocolError("truncated dict entry")
            tag, length = unpack_header(data, pos)
            if tag != STR:
                raise RemoteProtocolError("dict key must be str")
            pos += _HEADER_SIZE
            end = pos + length
            if end > stop - _HEADER_SIZE:  # the value's header must fit after the key
                raise RemoteProtocolError("dict key length overruns its container")
            try:
                key = data[pos:end].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RemoteProtocolError("str is not valid UTF-8") from exc
            if key in result:
                raise RemoteProtocolError("duplicate dict key")
            tag, length = unpack_header(data, end)
            pos = end + _HEADER_SIZE
            end = pos + length
            if end > stop:
                raise RemoteProtocolError("value length overruns its container")
            if tag == STR:
                try:
                    result[key] = data[pos:end].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RemoteProtocolError("str is not valid UTF-8") from exc
            elif tag == INT and length == 8:
                result[key] = _unpack_int(data, pos)[0]
            elif tag == BYTES:
                result[key] = data[pos:end]
            else:
                decoder = decoders.get(tag)
                if decoder is None:
                    raise RemoteProtocolError(f"unknown type byte 0x{tag:02x}")
                result[key] = decoder(self, pos, end, depth)
            pos = end
        self.items_left -= 2 * len(result)
        if self.items_left < 0:
            raise RemoteProtocolError("too many elements")
        return result


_Decoder = Callable[[_Reader, int, int, int], Any]

_DECODERS: dict[int, _Decoder] = {
    NONE: _Reader.read_none,
    BOOL: _Reader.read_bool,
    INT: _Reader.read_int,
    FLOAT: _Reader.read_float,
    STR: _Reader.read_str,
    BYTES: _Reader.read_bytes,
    LIST: _Reader.read_list,
    DICT: _Reader.read_dict,
}
