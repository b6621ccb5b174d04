"""The `users` table: accounts, their certificates and last known addresses.

Usernames are unique by their canonical form (`common.names.canonical`, NFKC +
casefold: "Élise" cannot register beside "élise", nor a fullwidth "alice" beside "alice"), and
every lookup by name goes through that same form. `skeleton` (TR39) finds look-alike
names. Emails are unique without regard to ASCII case. The stored spelling is the one
shown on the wire.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.names import canonical, skeleton
from server.storage.database import Database, Row

log = logging.getLogger(__name__)


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
            "INSERT INTO users (username, canonical, skeleton, password, email, sex, age,"
            " certificate, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                username,
                canonical(username),
                skeleton(username),
                password_hash,
                email,
                sex,
                age,
                certificate,
                now,
            ),
        )
    )


def by_username(db: Database, username: str) -> User | None:
    """The account `username` names once folded (an exact legacy spelling wins)."""
    row = db.one(
        _SELECT_USERS + " WHERE canonical = ?1 OR username = ?2"
        " ORDER BY username = ?2 COLLATE BINARY DESC LIMIT 1",
        (canonical(username), username),
    )
    return None if row is None else _user(row)


def by_id(db: Database, user_id: int) -> User | None:
    row = db.one(_SELECT_USERS + " WHERE id = ?", (user_id,))
    return None if row is None else _user(row)


def username_taken(db: Database, username: str) -> bool:
    """True if an account has this name once folded (NFKC + casefold)."""
    query = "SELECT 1 FROM users WHERE canonical = ? OR username = ?"
    return db.one(query, (canonical(username), username)) is not None


def look_alike(db: Database, username: str) -> str | None:
    """An existing name that looks like `username` (same TR39 skeleton), or None."""
    row = db.one("SELECT username FROM users WHERE skeleton = ? LIMIT 1", (skeleton(username),))
    return None if row is None else str(row["username"])


def backfill_names(db: Database) -> int:
    """Fill `canonical` and `skeleton` where missing, then make `canonical` UNIQUE.

    Runs at every start (cheap once filled). Accounts whose names collide once folded
    (possible only in databases from before version 2): the oldest keeps the canonical
    form, each later one gets '<canonical>#<id>' and still logs in with its exact
    spelling; they are logged so an operator can rename them.
    """
    rows = db.all("SELECT id, username FROM users WHERE canonical IS NULL ORDER BY id")
    for row in rows:
        folded = canonical(row["username"])
        if db.one("SELECT 1 FROM users WHERE canonical = ?", (folded,)) is not None:
            log.warning("account %d collides with another once folded; kept apart", row["id"])
            folded = f"{folded}#{row['id']}"
        db.execute(
            "UPDATE users SET canonical = ?, skeleton = ? WHERE id = ?",
            (folded, skeleton(row["username"]), row["id"]),
        )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_canonical ON users (canonical)")
    db.execute("CREATE INDEX IF NOT EXISTS users_skeleton ON users (skeleton)")
    return len(rows)


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


#: Sorts after every character a canonical name can hold: the top of a prefix range.
_PREFIX_TOP = "\U0010ffff"


@dataclass(frozen=True)
class Found:
    """What a search shows of an account (no certificate, no address, no hash)."""

    id: int
    username: str
    sex: str
    age: int


@dataclass(frozen=True)
class SearchPage:
    users: list[Found]
    #: Pass back as `after` for the next page; None when this was the last one.
    next_after: str | None


def search(
    db: Database, query: str, exclude_user_id: int, limit: int = 20, after: str = ""
) -> SearchPage:
    """Users whose canonical name starts with the canonical `query`, in canonical order.

    A range scan on the `users_canonical` index: its cost is the page, not the table
    (a `LIKE '%q%'` scan read every row). `after` is the last canonical name of the
    previous page; never `exclude_user_id`.
    """
    prefix = canonical(query)
    rows = db.all(*_search_statement(prefix, after, exclude_user_id, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    next_after = str(rows[-1]["canonical"]) if more and rows else None
    return SearchPage([_found(row) for row in rows], next_after)


def _search_statement(
    prefix: str, after: str, exclude_user_id: int, limit: int
) -> tuple[str, tuple[str, str, int, int]]:
    """The page's statement with ONE lower bound on `canonical`.

    Given two (`> after AND >= prefix`), SQLite starts the index range at the first
    it sees and filters the other row by row: with an empty cursor that walked every
    name below the prefix (half the table, on average). Text compares in code
    point order in Python and in SQLite (UTF-8, BINARY), so the tighter bound is
    chosen here.
    """
    parameters = (max(prefix, after), prefix + _PREFIX_TOP, exclude_user_id, limit)
    return (_SEARCH_AFTER if after >= prefix else _SEARCH_FROM), parameters


_SEARCH = (
    "SELECT id, username, sex, age, canonical FROM users WHERE canonical {} ?"
    " AND canonical < ? AND id <> ? ORDER BY canonical LIMIT ?"
)
_SEARCH_FROM = _SEARCH.format(">=")  # first page: the prefix itself may be a name
_SEARCH_AFTER = _SEARCH.format(">")  # later pages: past the cursor


def _found(row: Row) -> Found:
    return Found(id=row["id"], username=row["username"], sex=row["sex"], age=row["age"])
