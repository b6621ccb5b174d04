"""Time-ordered message ids (UUIDv7-like, RFC 9562 §5.7), as 32 lowercase hex digits.

Why: the server keeps a unique index on message ids. Random ids (UUIDv4) land all over
that B-tree, so every insert touches a cold page; ids that start with the time land
at its end, like the row ids. The wire format is unchanged (32 hex digits), and the
74 random bits keep ids unguessable and collision-free across clients.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_VERSION = 0x7
_VARIANT = 0b10


def time_ordered_id(
    now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> str:
    """48 bits of Unix milliseconds, version 7, 12 random bits, variant, 62 random bits."""
    millis = now_ms() & ((1 << 48) - 1)
    rand = int.from_bytes(random_bytes(10), "big")  # 80 bits; 74 are used
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (millis << 80) | (_VERSION << 76) | (rand_a << 64) | (_VARIANT << 62) | rand_b
    return f"{value:032x}"
