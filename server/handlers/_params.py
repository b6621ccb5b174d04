"""Typed extraction of request parameters.

The codec guarantees a dict with str keys and nothing more; these helpers check each
value's exact type and bounds, and turn any mismatch into `bad_request` naming the
parameter, so handler bodies can work with plain, trusted Python values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from common.errors import RequestError

HEX_ID = re.compile(r"[0-9a-f]{32}")


def _bad(name: str, what: str) -> RequestError:
    return RequestError("bad_request", f"'{name}' must be {what}", name)


def _value(params: Mapping[str, Any], name: str) -> Any:
    if name not in params:
        raise RequestError("bad_request", f"'{name}' is missing", name)
    return params[name]


def get_str(params: Mapping[str, Any], name: str, *, max_len: int = 1024) -> str:
    value = _value(params, name)
    if type(value) is not str or len(value) > max_len:
        raise _bad(name, f"a string of at most {max_len} characters")
    return value


def get_int(
    params: Mapping[str, Any], name: str, *, minimum: int = 0, maximum: int = 2**63 - 1
) -> int:
    value = _value(params, name)
    if type(value) is not int or not minimum <= value <= maximum:
        raise _bad(name, f"an integer from {minimum} to {maximum}")
    return value


def get_bytes(params: Mapping[str, Any], name: str, *, max_len: int) -> bytes:
    value = _value(params, name)
    if type(value) is not bytes or len(value) > max_len:
        raise _bad(name, f"bytes, at most {max_len} of them")
    return value


def get_choice(params: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = _value(params, name)
    if type(value) is not str or value not in choices:
        raise _bad(name, "one of " + ", ".join(choices))
    return value


def get_hex_id(params: Mapping[str, Any], name: str) -> str:
    """A message or attachment id: exactly 32 lowercase hex digits."""
    value = _value(params, name)
    if type(value) is not str or HEX_ID.fullmatch(value) is None:
        raise _bad(name, "32 lowercase hex digits")
    return value


def get_hex_ids(
    params: Mapping[str, Any], name: str, *, max_items: int, default: list[str] | None = None
) -> list[str]:
    """A list of 32-hex ids; `default` (if given) when the parameter is absent."""
    if name not in params and default is not None:
        return list(default)
    value = _value(params, name)
    if type(value) is not list or len(value) > max_items:
        raise _bad(name, f"a list of at most {max_items} ids")
    if not all(type(item) is str and HEX_ID.fullmatch(item) for item in value):
        raise _bad(name, "a list of ids of 32 lowercase hex digits")
    return list(value)
