"""Room numbers: random eight-digit numbers, the one thing joining a room needs.

Random rather than counted, so nobody can walk through every group (docs/architecture.md,
decisions). The creator's client draws one, since its signed create event names it.
"""

from __future__ import annotations

import secrets

ROOM_NUMBER_MIN = 10_000_000
ROOM_NUMBER_SPAN = 90_000_000


def random_room_number() -> int:
    return ROOM_NUMBER_MIN + secrets.randbelow(ROOM_NUMBER_SPAN)


def valid_room_number(number: int) -> bool:
    return ROOM_NUMBER_MIN <= number < ROOM_NUMBER_MIN + ROOM_NUMBER_SPAN
