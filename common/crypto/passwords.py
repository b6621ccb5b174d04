"""Password hashing for the account table: scrypt, self-describing strings.

The stored form is `scrypt$n$r$p$salt_b64$hash_b64` so the cost can be raised later
(`needs_rehash`) without a schema change. Parameters read back from the database are
bounded before use: a corrupt or hostile row must not make a login allocate
gigabytes or spin for minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

SCHEME = "scrypt"
SALT_SIZE = 16
HASH_SIZE = 32
MAX_N = 2**20
MAX_R = 32
MAX_P = 16
MAX_COST = 2**28  # 128 * n * r * p: bounds memory (256 MiB) and time (about 1.5 s)
_OPENSSL_MAXMEM = 2**31 - 1  # headroom over MAX_COST; hashlib caps it at INT_MAX


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost; the defaults take tens of milliseconds and 32 MiB."""

    n: int = 2**15
    r: int = 8
    p: int = 1


def params_within_bounds(params: ScryptParams) -> bool:
    """The bounds `verify_password` enforces; configuration can check its cost against them."""
    power_of_two = params.n > 1 and params.n & (params.n - 1) == 0
    return (
        power_of_two
        and params.n <= MAX_N
        and 1 <= params.r <= MAX_R
        and 1 <= params.p <= MAX_P
        and 128 * params.n * params.r * params.p <= MAX_COST
    )


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=_OPENSSL_MAXMEM,
        dklen=HASH_SIZE,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, params: ScryptParams = ScryptParams()) -> str:
    """Hash with a fresh 16-byte salt; raises ValueError for out-of-bounds parameters."""
    if not params_within_bounds(params):
        raise ValueError("scrypt parameters out of bounds")
    salt = os.urandom(SALT_SIZE)
    digest = _scrypt(password, salt, params)
    return f"{SCHEME}${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[ScryptParams, bytes, bytes] | None:
    """Split a stored hash; None for anything malformed or out of bounds."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    numbers = parts[1:4]
    if not all(number.isascii() and number.isdigit() and len(number) <= 8 for number in numbers):
        return None
    params = ScryptParams(n=int(numbers[0]), r=int(numbers[1]), p=int(numbers[2]))
    if not params_within_bounds(params):
        return None
    try:
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(salt) != SALT_SIZE or len(digest) != HASH_SIZE:
        return None
    return params, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches `stored`; False for a mismatch or a malformed string."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    params, salt, expected = parsed
    return hmac.compare_digest(_scrypt(password, salt, params), expected)


def needs_rehash(stored: str, params: ScryptParams = ScryptParams()) -> bool:
    """True when `stored` was made with other parameters (or is unreadable)."""
    parsed = _parse(stored)
    return parsed is None or parsed[0] != params
