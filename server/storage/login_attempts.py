"""The `login_attempts` table: failed logins per account and per address.

Kept in the database, not in memory, so restarting the server does not hand an
attacker a fresh set of guesses. Names in keys are folded by `common.names.canonical`,
exactly as the `users` table folds them, so 'ÉLISE' and 'élise' share one counter.
Keys:
- `user:<canonical>@<ip>`: one account from one address (every login counts here);
- `user:<canonical>`: one account from addresses it never logged in from (strangers);
- `ip:<address>`: one address against accounts it never logged in to.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.names import canonical
from server.storage.database import Database

#: A failure older than this no longer counts: occasional typos never add up to a lock.
FAILURE_MEMORY_MS = 24 * 60 * 60 * 1000
_MAX_DOUBLINGS = 62


@dataclass(frozen=True)
class BackoffPolicy:
    """Failures beyond `max_failures` lock for min(base * 2**(n - max), cap) seconds."""

    max_failures: int
    base_seconds: float
    max_seconds: float

    def lock_ms(self, failures: int) -> int:
        excess = failures - self.max_failures
        if excess <= 0:
            return 0
        seconds = min(self.base_seconds * 2 ** min(excess, _MAX_DOUBLINGS), self.max_seconds)
        return max(0, int(seconds * 1000))


@dataclass(frozen=True)
class Attempts:
    key: str
    failures: int
    last_failure: int
    locked_until: int


def user_key(username: str) -> str:
    return f"user:{canonical(username)}"


def pair_key(username: str, ip: str) -> str:
    return f"user:{canonical(username)}@{ip}"


def address_key(ip: str) -> str:
    return f"ip:{ip}"


def get(db: Database, key: str) -> Attempts | None:
    row = db.one(
        "SELECT key, failures, last_failure, locked_until FROM login_attempts WHERE key = ?",
        (key,),
    )
    if row is None:
        return None
    return Attempts(row["key"], row["failures"], row["last_failure"], row["locked_until"])


def locked_until(db: Database, keys: list[str], now: int) -> int:
    """The latest lock still running for any of `keys`, or 0 if none is locked."""
    rows = db.all_in("SELECT max(locked_until) FROM login_attempts WHERE key IN ({marks})", keys)
    latest = max((row[0] or 0 for row in rows), default=0)
    return latest if latest > now else 0


def record_failure(db: Database, key: str, now: int, policy: BackoffPolicy) -> Attempts:
    """Count one more failure for `key` and lock it if it went beyond the limit."""
    previous = get(db, key)
    failures = 1
    if previous is not None and now - previous.last_failure < FAILURE_MEMORY_MS:
        failures = previous.failures + 1
    lock = policy.lock_ms(failures)
    until = now + lock if lock else 0
    db.execute(
        "INSERT INTO login_attempts (key, failures, last_failure, locked_until)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
        " failures = excluded.failures, last_failure = excluded.last_failure,"
        " locked_until = excluded.locked_until",
        (key, failures, now, until),
    )
    return Attempts(key, failures, now, until)


def forgive(db: Database, keys: list[str], count: int) -> None:
    """Take back `count` failures from `keys` (an address's own, once it logged in)."""
    db.executemany(
        "UPDATE login_attempts SET failures = max(failures - ?, 0) WHERE key = ?",
        [(count, key) for key in keys],
    )


def reset(db: Database, keys: list[str]) -> None:
    """Forget the failures of `keys` (after a successful login)."""
    db.executemany("DELETE FROM login_attempts WHERE key = ?", [(key,) for key in keys])
