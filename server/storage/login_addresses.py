"""The `login_addresses` table: where each account has logged in successfully before.

Such an address keeps its own failure allowance for that account (see
server/handlers/login.py), so a stranger guessing from elsewhere cannot lock the owner
out of their usual place.
"""

from __future__ import annotations

from server.storage.database import Database


def is_known(db: Database, user_id: int, ip: str) -> bool:
    query = "SELECT 1 FROM login_addresses WHERE user_id = ? AND ip = ?"
    return db.one(query, (user_id, ip)) is not None


def remember(db: Database, user_id: int, ip: str, now: int) -> None:
    db.execute(
        "INSERT INTO login_addresses (user_id, ip, last_login) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, ip) DO UPDATE SET last_login = excluded.last_login",
        (user_id, ip, now),
    )
