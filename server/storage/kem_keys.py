"""The `kem_keys` table: every signed KEM key a user published (end-to-end v2).

Rows are written only by `server.kem_publication.accept_kem_key`, which has verified
the signature; here there is no policy, only storage.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.storage.database import Database


def store(
    db: Database, user_id: int, key_id: bytes, created: int, encoded: bytes, now: int
) -> None:
    db.execute(
        "INSERT OR IGNORE INTO kem_keys (user_id, key_id, created, published, encoded)"
        " VALUES (?, ?, ?, ?, ?)",
        (user_id, key_id, created, now, encoded),
    )


def current(db: Database, user_id: int) -> bytes | None:
    """The user's newest signed KEM key as published, or None before the first."""
    value = db.scalar(
        "SELECT encoded FROM kem_keys WHERE user_id = ? ORDER BY created DESC LIMIT 1",
        (user_id,),
    )
    return None if value is None else bytes(value)


def current_created(db: Database, user_id: int) -> int | None:
    value = db.scalar("SELECT MAX(created) FROM kem_keys WHERE user_id = ?", (user_id,))
    return None if value is None else int(value)


def current_for_names(db: Database, usernames: Sequence[str]) -> dict[str, bytes]:
    """username -> newest signed KEM key, for the users among `usernames` that have one."""
    rows = db.all_in(
        "SELECT u.username AS username, k.encoded AS encoded FROM users u"
        " JOIN kem_keys k ON k.user_id = u.id"
        " WHERE u.username IN ({marks})"
        " AND k.created = (SELECT MAX(created) FROM kem_keys WHERE user_id = u.id)",
        list(usernames),
    )
    return {row["username"]: bytes(row["encoded"]) for row in rows}
