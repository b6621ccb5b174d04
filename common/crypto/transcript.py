"""Unambiguous concatenation for everything that is signed, MACed or bound as HPKE info.

`bind(b"ab", b"c")` and `bind(b"a", b"bc")` must differ, or a signature over one
conversation name could be replayed as another: every part is length-prefixed.
"""

from __future__ import annotations

import struct

_LENGTH = struct.Struct(">I")


def bind(*parts: bytes) -> bytes:
    """Each part as 4-byte big-endian length then bytes."""
    return b"".join(_LENGTH.pack(len(part)) + part for part in parts)


def text(value: str) -> bytes:
    """A name (username, conversation) as bound bytes: UTF-8, no normalisation here."""
    return value.encode("utf-8")
