"""The `users` table: accounts, their certificates and last known addresses.

Usernames and emails are unique without regard to ASCII case, so "Alice" cannot
register beside "alice"; the stored spelling is the one shown on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.storage.database import Database, Row


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password_hash: str
    email: str
    ip: str
    port: int
    sex: str
    age: int
    certificate: bytes
    created_at: int
    last_seen: int


# Every column `_user` reads, in one place so each lookup returns whole users.
_SELECT_USERS = (
    "SELECT id, username, password, email, ip, port, sex, age, certificate, created_at,"
    " last_seen FROM users"
)


def _user(row: Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        password_hash=row["password"],
        email=row["email"],
        ip=row["ip"],
        port=row["port"],
        sex=row["sex"],
        age=row["age"],
        certificate=bytes(row["certificate"]),
        created_at=row["created_at"],
        last_seen=row["last_seen"],
    )


def create_user(
    db: Database,
    *,
    username: str,
    password_hash: str,
    email: str,
    sex: str,
    age: int,
    certificate: bytes,
    now: int,
) -> int:
    """Insert an account and return its id; sqlite3.IntegrityError if name/email taken."""
    return int(
        db.scalar(
            "INSERT INTO users (username, password, email, sex, age, certificate, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (username, password_hash, email, sex, age, certificate, now),
        )
    )


def by_username(db: Database, username: str) -> User | None:
    row = db.one(_SELECT_USERS + " WHERE username = ?", (username,))
    return None if row is None else _user(row)


def by_id(db: Database, user_id: int) -> User | None:
    row = db.one(_SELECT_USERS + " WHERE id = ?", (user_id,))
    return None if row is None else _user(row)


def username_taken(db: Database, username: str) -> bool:
    return db.one("SELECT 1 FROM users WHERE username = ?", (username,)) is not None


def email_taken(db: Database, email: str) -> bool:
    return db.one("SELECT 1 FROM users WHERE email = ?", (email,)) is not None


def record_login(db: Database, user_id: int, ip: str, port: int, now: int) -> None:
    """Remember where the user last logged in from (shown to friends)."""
    db.execute(
        "UPDATE users SET ip = ?, port = ?, last_seen = ? WHERE id = ?",
        (ip, port, now, user_id),
    )


def set_last_seen(db: Database, user_id: int, now: int) -> None:
    db.execute("UPDATE users SET last_seen = ? WHERE id = ?", (now, user_id))


def escape_like(text: str) -> str:
    r"""Escape LIKE wildcards so user input matches literally (ESCAPE '\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search(db: Database, query: str, exclude_user_id: int, limit: int = 50) -> list[User]:
    """Users whose name contains `query` (case-insensitive), never `exclude_user_id`."""
    pattern = f"%{escape_like(query)}%"
    rows = db.all(
        _SELECT_USERS + " WHERE username LIKE ? ESCAPE '\\' AND id <> ?"
        " ORDER BY length(username), username LIMIT ?",
        (pattern, exclude_user_id, limit),
    )
    return [_user(row) for row in rows]
