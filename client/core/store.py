"""The client's local history: one SQLite file per (server, user).

The socket thread stores incoming messages before acknowledging them and the caller's
thread reads history, so one connection is shared under a lock and every write is
committed (synchronous=FULL) before the method returns. History pages backwards by
keyset on (chat_kind, chat_id, time, rowid), never OFFSET, so the 1,000th page costs
what the first does; search uses an FTS5 trigram index kept in sync by triggers, which
finds substrings in any script (Chinese has no spaces to split words on). Queries under
three characters, or an SQLite without FTS5 trigram (< 3.34; `full_text` is then False),
use LIKE with escaped wildcards instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from client.core.models import (
    Attachment,
    ChatKind,
    ChatMessage,
    MessageKind,
    MessageStatus,
)
from common.errors import RequestError, UchatError
from common.fileio import make_private_dir

SCHEMA_VERSION = 8
FTS_MIN_QUERY = 3  # the trigram tokenizer cannot match anything shorter
LIKE_RECENT_ROWS = 5000  # how far short queries look before scanning everything
BUSY_TIMEOUT_MS = 5000

# SQL below interpolates only the module's own column-list constants (noqa: S608);
# every value is a bound parameter.

# Which current statuses each new status may replace: a message only moves forward
# (sending -> sent -> delivered); "failed" only replaces "sending", and a failed message
# may be retried or turn out to have been stored after all.
_STATUS_PREDECESSORS: dict[str, tuple[str, ...]] = {
    "sending": ("failed",),
    "sent": ("sending", "failed"),
    "delivered": ("sending", "sent", "failed"),
    "read": ("sending", "sent", "delivered", "failed"),
    "failed": ("sending",),
    "received": (),
}

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL UNIQUE,
            chat_kind TEXT NOT NULL CHECK (chat_kind IN ('user', 'room')),
            chat_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            time INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('text', 'image', 'file')),
            text TEXT NOT NULL,
            font_size INTEGER NOT NULL,
            color TEXT NOT NULL,
            attachment_id TEXT,
            attachment_name TEXT,
            attachment_size INTEGER,
            attachment_key BLOB,
            attachment_digest BLOB,
            attachment_chunk_size INTEGER,
            attachment_path TEXT,
            outgoing INTEGER NOT NULL,
            status TEXT NOT NULL,
            is_read INTEGER NOT NULL
        )""",
        "CREATE INDEX messages_by_chat ON messages (chat_kind, chat_id, time, id)",
        "CREATE INDEX messages_by_time ON messages (time, id)",
        "CREATE INDEX messages_unread ON messages (chat_kind, chat_id) WHERE is_read = 0",
        """CREATE TABLE chats (
            chat_kind TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            last_message TEXT NOT NULL,
            last_time INTEGER NOT NULL,
            unread INTEGER NOT NULL,
            PRIMARY KEY (chat_kind, chat_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL UNIQUE,
            params BLOB NOT NULL
        )""",
        """CREATE TABLE drafts (
            chat_kind TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (chat_kind, chat_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE pinned_certificates (
            username TEXT PRIMARY KEY,
            der BLOB NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE uploads (
            attachment_id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL,
            chat_kind TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            source_path TEXT NOT NULL,
            encrypted_path TEXT NOT NULL,
            size INTEGER NOT NULL,
            key BLOB NOT NULL,
            digest BLOB NOT NULL,
            chunk_size INTEGER NOT NULL,
            "offset" INTEGER NOT NULL,
            created INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    (  # 2: the contact list shows who wrote the last message and what it was
        "ALTER TABLE chats ADD COLUMN last_sender TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE chats ADD COLUMN last_kind TEXT NOT NULL DEFAULT 'text'",
        """CREATE TABLE chat_styles (
            chat_kind TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            font_size INTEGER NOT NULL,
            color TEXT NOT NULL,
            PRIMARY KEY (chat_kind, chat_id)
        ) WITHOUT ROWID""",
    ),
    (  # 3: the newest signed tree head of this server's key transparency log we verified
        """CREATE TABLE transparency_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            size INTEGER NOT NULL,
            root BLOB NOT NULL,
            timestamp INTEGER NOT NULL,
            signature BLOB NOT NULL
        )""",
    ),
    (  # 4: each room's signed membership log as verified (common/crypto/room_log.py)
        """CREATE TABLE room_log (
            room_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            entry BLOB NOT NULL,
            PRIMARY KEY (room_id, seq)
        ) WITHOUT ROWID""",
    ),
    (  # 5: friends' verified signed KEM keys, and the ids of every KEM key made here
        """CREATE TABLE peer_kem_keys (
            username TEXT PRIMARY KEY,
            identity BLOB NOT NULL,
            created INTEGER NOT NULL,
            encoded BLOB NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE own_kem_keys (
            key_id BLOB PRIMARY KEY,
            created INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    (  # 6: end-to-end v2: sender chains (sealed, see client/core/chains.py) and the
        # deliveries held back until a changed key is trusted (acknowledged meanwhile)
        """CREATE TABLE chains (
            role TEXT NOT NULL,
            conversation TEXT NOT NULL,
            sender TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (role, conversation, sender)
        ) WITHOUT ROWID""",
        """CREATE TABLE held_deliveries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL UNIQUE,
            sender TEXT NOT NULL,
            delivery BLOB NOT NULL
        )""",
    ),
    (  # 7: the server's time beside the sender's, and order/time findings
        "ALTER TABLE messages ADD COLUMN server_time INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN flags TEXT NOT NULL DEFAULT ''",
    ),
    (  # 8: sealed receipts waiting for a connection: they used keys of our chain and
        # may carry its state, so they outlive this run of the client
        """CREATE TABLE receipt_queue (
            message_id TEXT PRIMARY KEY,
            params BLOB NOT NULL
        ) WITHOUT ROWID""",
    ),
)

# External-content FTS5 over messages(text, attachment_name), so file names are found too.
_FTS_SCHEMA: tuple[str, ...] = (
    """CREATE VIRTUAL TABLE messages_fts USING fts5(
        text, attachment_name, content='messages', content_rowid='id', tokenize='trigram'
    )""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, text, attachment_name)
        VALUES (new.id, new.text, new.attachment_name);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, attachment_name)
        VALUES ('delete', old.id, old.text, old.attachment_name);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, attachment_name ON messages
    BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text, attachment_name)
        VALUES ('delete', old.id, old.text, old.attachment_name);
        INSERT INTO messages_fts (rowid, text, attachment_name)
        VALUES (new.id, new.text, new.attachment_name);
    END""",
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
)

_MESSAGE_FIELDS = (
    "message_id",
    "chat_kind",
    "chat_id",
    "sender",
    "time",
    "kind",
    "text",
    "font_size",
    "color",
    "attachment_id",
    "attachment_name",
    "attachment_size",
    "attachment_key",
    "attachment_digest",
    "attachment_chunk_size",
    "attachment_path",
    "outgoing",
    "status",
    "server_time",
    "flags",
)
_MESSAGE_COLUMNS = ", ".join(_MESSAGE_FIELDS)
_SELECT_MESSAGE = f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608

_SEARCH_FTS = (
    f"{_SELECT_MESSAGE} WHERE id IN (SELECT m.id FROM messages_fts AS f "  # noqa: S608
    "JOIN messages AS m ON m.id = f.rowid WHERE messages_fts MATCH ? "
    "ORDER BY m.time DESC, m.id DESC LIMIT ?) ORDER BY time DESC, id DESC"
)
_SEARCH_FTS_IN_CHAT = (
    f"{_SELECT_MESSAGE} WHERE id IN (SELECT m.id FROM messages_fts AS f "  # noqa: S608
    "JOIN messages AS m ON m.id = f.rowid WHERE messages_fts MATCH ? "
    "AND m.chat_kind = ? AND m.chat_id = ? "
    "ORDER BY m.time DESC, m.id DESC LIMIT ?) ORDER BY time DESC, id DESC"
)
_LIKE_MATCH = "(text LIKE ?1 ESCAPE '\\' OR attachment_name LIKE ?1 ESCAPE '\\')"
_SEARCH_LIKE_IN_CHAT = (
    f"{_SELECT_MESSAGE} WHERE chat_kind = ?2 AND chat_id = ?3 AND {_LIKE_MATCH} "
    "ORDER BY time DESC, id DESC LIMIT ?4"
)
_RECENT_BOUNDARY = "SELECT time, id FROM messages ORDER BY time DESC, id DESC LIMIT 1 OFFSET ?"
_SEARCH_LIKE_RECENT = (
    f"{_SELECT_MESSAGE} WHERE (time, id) >= (?2, ?3) AND {_LIKE_MATCH} "
    "ORDER BY time DESC, id DESC LIMIT ?4"
)
_SEARCH_LIKE_ALL = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages NOT INDEXED WHERE {_LIKE_MATCH} "  # noqa: S608
    "ORDER BY time DESC, id DESC LIMIT ?2"
)
_VALUE_MARKS = ", ".join("?" for _ in range(len(_MESSAGE_FIELDS) + 1))
_STAGE_MESSAGE = (
    f"INSERT INTO temp.incoming ({_MESSAGE_COLUMNS}, is_read) "  # noqa: S608
    f"VALUES ({_VALUE_MARKS})"
)
# "WHERE true" keeps ON CONFLICT from being parsed as part of the SELECT.
_INSERT_STAGED = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}, is_read) "  # noqa: S608
    f"SELECT {_MESSAGE_COLUMNS}, is_read FROM temp.incoming WHERE true ORDER BY seq "
    "ON CONFLICT (message_id) DO NOTHING"
)
_UPSERT_SUMMARY = (
    "INSERT INTO chats (chat_kind, chat_id, last_message, last_time, unread, last_sender, "
    "last_kind) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (chat_kind, chat_id) DO UPDATE SET "
    "unread = chats.unread + excluded.unread, "
    "last_message = CASE WHEN excluded.last_time >= chats.last_time "
    "THEN excluded.last_message ELSE chats.last_message END, "
    "last_sender = CASE WHEN excluded.last_time >= chats.last_time "
    "THEN excluded.last_sender ELSE chats.last_sender END, "
    "last_kind = CASE WHEN excluded.last_time >= chats.last_time "
    "THEN excluded.last_kind ELSE chats.last_kind END, "
    "last_time = max(chats.last_time, excluded.last_time)"
)
_CREATE_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS incoming (seq INTEGER PRIMARY KEY, "
    + ", ".join((*_MESSAGE_FIELDS, "is_read"))
    + ")"
)

_UPLOAD_COLUMNS = (
    "attachment_id, message_id, chat_kind, chat_id, kind, name, source_path, encrypted_path, "
    'size, key, digest, chunk_size, "offset"'
)


class StoreVersionError(UchatError):
    """The history file was written by a newer Uchat; we refuse to guess its schema."""


@dataclass(frozen=True, slots=True)
class ChatSummary:
    """What the contact list shows for one chat, kept up to date on every insert."""

    last_message: str
    last_time: int
    unread: int
    last_sender: str = ""
    last_kind: str = "text"


@dataclass(frozen=True, slots=True)
class UploadState:
    """An attachment upload to resume after a restart.

    The ciphertext is staged at `encrypted_path` because re-encrypting (fresh IV) would
    change the digest the server already holds; `offset` is what the server confirmed.
    `size`, `key`, `digest` and `chunk_size` mean what they mean in `Attachment`.
    """

    attachment_id: str
    message_id: str
    chat_kind: ChatKind
    chat_id: str
    kind: MessageKind
    name: str
    source_path: Path
    encrypted_path: Path
    size: int
    key: bytes
    digest: bytes
    chunk_size: int
    offset: int = 0


def like_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching `text` anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_phrase(text: str) -> str:
    """An FTS5 query matching `text` as one literal phrase: no operators, no columns."""
    return '"' + text.replace('"', '""') + '"'


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 up front; SQLite gives -wal/-shm the same mode."""
    make_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)  # a file left by an older version may be 0644


def _message_values(m: ChatMessage) -> tuple[Any, ...]:
    a = m.attachment
    return (
        m.message_id,
        m.chat_kind,
        m.chat_id,
        m.sender,
        m.time,
        m.kind,
        m.text,
        m.font_size,
        m.color,
        a.attachment_id if a else None,
        a.name if a else None,
        a.size if a else None,
        a.key if a else None,
        a.digest if a else None,
        a.chunk_size if a else None,
        str(a.local_path) if a and a.local_path is not None else None,
        int(m.outgoing),
        m.status,
        m.server_time,
        m.flags,
        int(m.outgoing),  # our own messages are read; incoming ones start unread
    )


def _summary_rows(new_messages: Sequence[ChatMessage]) -> list[tuple[Any, ...]]:
    """One summary upsert per chat: the unread increment and the newest message's preview."""
    latest: dict[tuple[str, str], ChatMessage] = {}
    unread: dict[tuple[str, str], int] = {}
    for m in new_messages:
        key = (m.chat_kind, m.chat_id)
        current = latest.get(key)
        if current is None or m.time >= current.time:  # ties: the later insert wins
            latest[key] = m
        unread[key] = unread.get(key, 0) + (0 if m.outgoing else 1)
    return [(*key, m.preview(), m.time, unread[key], m.sender, m.kind) for key, m in latest.items()]


def _row_to_message(row: Sequence[Any]) -> ChatMessage:
    attachment = None
    if row[9] is not None:
        attachment = Attachment(
            attachment_id=row[9],
            name=row[10],
            size=row[11],
            key=bytes(row[12]),
            digest=bytes(row[13]),
            chunk_size=row[14],
            local_path=Path(row[15]) if row[15] is not None else None,
        )
    return ChatMessage(
        message_id=row[0],
        chat_kind=cast(ChatKind, row[1]),
        chat_id=row[2],
        sender=row[3],
        time=row[4],
        kind=cast(MessageKind, row[5]),
        text=row[6],
        font_size=row[7],
        color=row[8],
        attachment=attachment,
        outgoing=bool(row[16]),
        status=cast(MessageStatus, row[17]),
        server_time=row[18],
        flags=row[19],
    )


def _row_to_upload(row: Sequence[Any]) -> UploadState:
    return UploadState(
        attachment_id=row[0],
        message_id=row[1],
        chat_kind=cast(ChatKind, row[2]),
        chat_id=row[3],
        kind=cast(MessageKind, row[4]),
        name=row[5],
        source_path=Path(row[6]),
        encrypted_path=Path(row[7]),
        size=row[8],
        key=bytes(row[9]),
        digest=bytes(row[10]),
        chunk_size=row[11],
        offset=row[12],
    )


class StoreClosed(RequestError):
    """The store was closed by logout while another thread still held the session."""


class LocalStore:
    """Messages, unread counts, outbox, drafts, pinned certificates and uploads."""

    def __init__(self, path: Path, *, full_text: bool = True) -> None:
        """Open (creating and migrating) the store; `full_text=False` forces LIKE search."""
        self.path = Path(path)
        _create_private_file(self.path)
        self._lock = threading.Lock()
        self._closed = False
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA temp_store=MEMORY")
            self._conn.execute(_CREATE_STAGING)
            self._migrate()
            fts_ready = self._ensure_fts()
        except BaseException:
            self._conn.close()
            raise
        self.full_text = full_text and fts_ready

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock on an open store; a closed one (after logout) says so clearly."""
        with self._lock:
            if self._closed:
                raise StoreClosed("not_authenticated", "logged out: the local history is closed")
            yield

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed before the caller's method returns."""
        with self._locked():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._locked():
            return self._conn.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self.path} has schema version {version}; this Uchat knows {SCHEMA_VERSION}"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[number]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _ensure_fts(self) -> bool:
        """Create the trigram index if missing; False when this SQLite cannot (< 3.34)."""
        exists = self._query("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'")
        if exists:
            return True
        try:
            with self._transaction() as conn:
                for statement in _FTS_SCHEMA:
                    conn.execute(statement)
        except sqlite3.OperationalError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ messages

    def add_message(self, m: ChatMessage) -> bool:
        """Store `m` unless its id is known; True when it was new."""
        return self.add_messages([m])[0]

    def add_messages(self, ms: Sequence[ChatMessage]) -> list[bool]:
        """Store a batch in one transaction; each flag says whether that message was new.

        The batch goes through a temp table and into `messages` with ONE statement: FTS5
        flushes its pending index data at every statement savepoint, so row-by-row
        inserts through the index trigger cost ten times more.
        """
        if not ms:
            return []
        with self._transaction() as conn:
            conn.executemany(_STAGE_MESSAGE, [_message_values(m) for m in ms])
            last_id = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
            conn.execute(_INSERT_STAGED)
            conn.execute("DELETE FROM temp.incoming")
            inserted = {
                row[0]
                for row in conn.execute("SELECT message_id FROM messages WHERE id > ?", (last_id,))
            }
            added: list[bool] = []
            fresh: list[ChatMessage] = []
            for m in ms:
                is_new = m.message_id in inserted
                inserted.discard(m.message_id)  # a repeat inside the batch is not new
                added.append(is_new)
                if is_new:
                    fresh.append(m)
            conn.executemany(_UPSERT_SUMMARY, _summary_rows(fresh))
        return added

    def set_status(self, message_id: str, status: MessageStatus) -> None:
        """Move a message's status forward; a stale or backward update is ignored."""
        predecessors = _STATUS_PREDECESSORS[status]
        if not predecessors:
            return
        padded = (*predecessors, None, None, None)[:4]  # NULL never matches in IN (...)
        with self._transaction() as conn:
            conn.execute(
                "UPDATE messages SET status = ? WHERE message_id = ? AND status IN (?, ?, ?, ?)",
                (status, message_id, *padded),
            )

    def set_attachment_path(self, message_id: str, path: Path) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE messages SET attachment_path = ? "
                "WHERE message_id = ? AND attachment_id IS NOT NULL",
                (str(path), message_id),
            )

    def get_message(self, message_id: str) -> ChatMessage | None:
        rows = self._query(f"{_SELECT_MESSAGE} WHERE message_id = ?", (message_id,))
        return _row_to_message(rows[0]) if rows else None

    def history(
        self,
        chat_kind: ChatKind,
        chat_id: str,
        limit: int = 50,
        before: tuple[int, int] | None = None,
    ) -> list[ChatMessage]:
        """Up to `limit` messages before the cursor (the newest when None), oldest first."""
        if limit <= 0:
            return []
        if before is None:
            rows = self._query(
                f"{_SELECT_MESSAGE} WHERE chat_kind = ? AND chat_id = ? "
                "ORDER BY time DESC, id DESC LIMIT ?",
                (chat_kind, chat_id, limit),
            )
        else:
            rows = self._query(
                f"{_SELECT_MESSAGE} WHERE chat_kind = ? AND chat_id = ? AND (time, id) < (?, ?) "
                "ORDER BY time DESC, id DESC LIMIT ?",
                (chat_kind, chat_id, before[0], before[1], limit),
            )
        return [_row_to_message(row) for row in reversed(rows)]

    def history_cursor(self, message_id: str) -> tuple[int, int] | None:
        """The (time, rowid) position of a message: pass it as `before` for older pages."""
        rows = self._query("SELECT time, id FROM messages WHERE message_id = ?", (message_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def search(
        self, text: str, limit: int = 100, chat: tuple[str, str] | None = None
    ) -> list[ChatMessage]:
        """Messages whose text or file name contains `text` (case-insensitive), newest first.

        `chat` (kind, id) limits the search to one conversation, so a chat window's
        search is not crowded out by newer hits in other chats.
        """
        query = text.strip()
        if not query or limit <= 0:
            return []
        if chat is not None:
            return [_row_to_message(row) for row in self._search_in_chat(query, limit, chat)]
        if self.full_text and len(query) >= FTS_MIN_QUERY:
            # Sort just (time, id) of every match, then fetch whole rows for the page:
            # three times faster than sorting whole rows when a word matches thousands.
            rows = self._query(_SEARCH_FTS, (fts_phrase(query), limit))
        else:
            rows = self._like_search(like_pattern(query), limit)
        return [_row_to_message(row) for row in rows]

    def _search_in_chat(self, query: str, limit: int, chat: tuple[str, str]) -> list[Any]:
        kind, chat_id = chat
        if self.full_text and len(query) >= FTS_MIN_QUERY:
            return self._query(_SEARCH_FTS_IN_CHAT, (fts_phrase(query), kind, chat_id, limit))
        return self._query(_SEARCH_LIKE_IN_CHAT, (like_pattern(query), kind, chat_id, limit))

    def _like_search(self, pattern: str, limit: int) -> list[Any]:
        """Scan the newest rows first; fall back to a full scan only for rare matches.

        Walking the time index finds a common pattern in the first few rows but costs a
        row lookup per message for a rare one, where a plain table scan is twice as fast.
        """
        with self._locked():
            boundary = self._conn.execute(_RECENT_BOUNDARY, (LIKE_RECENT_ROWS - 1,)).fetchone()
            if boundary is not None:
                recent = self._conn.execute(
                    _SEARCH_LIKE_RECENT, (pattern, boundary[0], boundary[1], limit)
                ).fetchall()
                if len(recent) == limit:
                    return recent
            return self._conn.execute(_SEARCH_LIKE_ALL, (pattern, limit)).fetchall()

    # ------------------------------------------------------------------ unread / summaries

    def unread(self, chat_kind: ChatKind, chat_id: str) -> int:
        rows = self._query(
            "SELECT unread FROM chats WHERE chat_kind = ? AND chat_id = ?", (chat_kind, chat_id)
        )
        return int(rows[0][0]) if rows else 0

    def unread_ids(self, chat_kind: ChatKind, chat_id: str, limit: int = 1000) -> list[str]:
        """Ids of incoming messages not read yet, oldest first (for read receipts)."""
        rows = self._query(
            "SELECT message_id FROM messages WHERE chat_kind = ? AND chat_id = ? AND is_read = 0"
            " AND outgoing = 0 ORDER BY time, id LIMIT ?",
            (chat_kind, chat_id, limit),
        )
        return [row[0] for row in rows]

    def mark_read(self, chat_kind: ChatKind, chat_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE messages SET is_read = 1 "
                "WHERE chat_kind = ? AND chat_id = ? AND is_read = 0",
                (chat_kind, chat_id),
            )
            conn.execute(
                "UPDATE chats SET unread = 0 WHERE chat_kind = ? AND chat_id = ?",
                (chat_kind, chat_id),
            )

    def chat_summaries(self) -> dict[tuple[str, str], ChatSummary]:
        rows = self._query(
            "SELECT chat_kind, chat_id, last_message, last_time, unread, last_sender, last_kind "
            "FROM chats"
        )
        return {
            (row[0], row[1]): ChatSummary(row[2], row[3], row[4], row[5], row[6]) for row in rows
        }

    # ------------------------------------------------------------------ per-chat style

    def save_style(self, chat_kind: str, chat_id: str, font_size: int, color: str) -> None:
        """The font size and colour last used in a chat, to start with next time."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO chat_styles (chat_kind, chat_id, font_size, color) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (chat_kind, chat_id) DO UPDATE SET "
                "font_size = excluded.font_size, color = excluded.color",
                (chat_kind, chat_id, font_size, color),
            )

    def style(self, chat_kind: str, chat_id: str) -> tuple[int, str] | None:
        rows = self._query(
            "SELECT font_size, color FROM chat_styles WHERE chat_kind = ? AND chat_id = ?",
            (chat_kind, chat_id),
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    # ------------------------------------------------------------------ outbox

    def outbox_add(self, message_id: str, params: bytes) -> None:
        """Queue encoded SEND_MESSAGE params; re-adding replaces them but keeps the place."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO outbox (message_id, params) VALUES (?, ?) "
                "ON CONFLICT (message_id) DO UPDATE SET params = excluded.params",
                (message_id, params),
            )

    def outbox_pending(self) -> list[tuple[str, bytes]]:
        rows = self._query("SELECT message_id, params FROM outbox ORDER BY seq")
        return [(row[0], bytes(row[1])) for row in rows]

    def outbox_remove(self, message_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))

    # ------------------------------------------------------------------ sender chains

    def load_chain(self, role: str, conversation: str, sender: str) -> bytes | None:
        rows = self._query(
            "SELECT data FROM chains WHERE role = ? AND conversation = ? AND sender = ?",
            (role, conversation, sender),
        )
        return bytes(rows[0][0]) if rows else None

    def save_chain(self, role: str, conversation: str, sender: str, sealed: bytes) -> None:
        """Replace a sealed chain record (committed before returning: keys are used once)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO chains (role, conversation, sender, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (role, conversation, sender) DO UPDATE SET data = excluded.data",
                (role, conversation, sender, sealed),
            )

    # ------------------------------------------------------------------ held deliveries

    def hold_delivery(self, message_id: str, sender: str, delivery: bytes) -> None:
        """Keep a delivery we cannot open yet (the sender's key changed, or its chain's
        state has not reached us), then acknowledge it."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO held_deliveries (message_id, sender, delivery) VALUES (?, ?, ?) "
                "ON CONFLICT (message_id) DO NOTHING",
                (message_id, sender, delivery),
            )

    def held_deliveries(self, sender: str) -> list[bytes]:
        rows = self._query(
            "SELECT delivery FROM held_deliveries WHERE sender = ? ORDER BY seq", (sender,)
        )
        return [bytes(row[0]) for row in rows]

    def drop_held(self, sender: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM held_deliveries WHERE sender = ?", (sender,))

    def held_senders(self) -> list[str]:
        """Senders with deliveries held, in the order their first one was held."""
        rows = self._query(
            "SELECT sender FROM held_deliveries GROUP BY sender ORDER BY MIN(seq)", ()
        )
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------------ receipt queue

    def queue_receipt(self, message_id: str, params: bytes) -> None:
        """Keep a sealed receipt until the server took it (`client.core.receipts`)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO receipt_queue (message_id, params) VALUES (?, ?)"
                " ON CONFLICT (message_id) DO NOTHING",
                (message_id, params),
            )

    def queued_receipts(self) -> list[tuple[str, bytes]]:
        rows = self._query("SELECT message_id, params FROM receipt_queue ORDER BY message_id")
        return [(str(row[0]), bytes(row[1])) for row in rows]

    def drop_receipt(self, message_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM receipt_queue WHERE message_id = ?", (message_id,))

    # ------------------------------------------------------------------ drafts

    def save_draft(self, chat_kind: ChatKind, chat_id: str, text: str) -> None:
        """Remember unsent text; saving an empty draft deletes it."""
        with self._transaction() as conn:
            if text:
                conn.execute(
                    "INSERT INTO drafts (chat_kind, chat_id, text) VALUES (?, ?, ?) "
                    "ON CONFLICT (chat_kind, chat_id) DO UPDATE SET text = excluded.text",
                    (chat_kind, chat_id, text),
                )
            else:
                conn.execute(
                    "DELETE FROM drafts WHERE chat_kind = ? AND chat_id = ?", (chat_kind, chat_id)
                )

    def drafted_chats(self) -> set[tuple[str, str]]:
        """The chats with a draft waiting (the contact list marks them)."""
        return {(row[0], row[1]) for row in self._query("SELECT chat_kind, chat_id FROM drafts")}

    def draft(self, chat_kind: ChatKind, chat_id: str) -> str:
        rows = self._query(
            "SELECT text FROM drafts WHERE chat_kind = ? AND chat_id = ?", (chat_kind, chat_id)
        )
        return str(rows[0][0]) if rows else ""

    # ------------------------------------------------------------------ pinned certificates

    def pinned_certificate(self, username: str) -> bytes | None:
        rows = self._query("SELECT der FROM pinned_certificates WHERE username = ?", (username,))
        return bytes(rows[0][0]) if rows else None

    def pin_certificate(self, username: str, der: bytes) -> None:
        """Pin (or, after the user accepted a key change, re-pin) a peer's certificate."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO pinned_certificates (username, der) VALUES (?, ?) "
                "ON CONFLICT (username) DO UPDATE SET der = excluded.der",
                (username, der),
            )

    # ------------------------------------------------------------------ key transparency

    def transparency_head(self) -> tuple[int, bytes, int, bytes] | None:
        """(size, root, timestamp, signature) of the newest verified tree head."""
        rows = self._query("SELECT size, root, timestamp, signature FROM transparency_head")
        if not rows:
            return None
        size, root, timestamp, signature = rows[0]
        return int(size), bytes(root), int(timestamp), bytes(signature)

    def save_transparency_head(self, size: int, root: bytes, timestamp: int, sig: bytes) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO transparency_head (id, size, root, timestamp, signature)"
                " VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET size = excluded.size,"
                " root = excluded.root, timestamp = excluded.timestamp,"
                " signature = excluded.signature",
                (size, root, timestamp, sig),
            )

    # ------------------------------------------------------------------ KEM keys

    def peer_kem_key(self, username: str) -> tuple[bytes, bytes] | None:
        """(identity key it was verified against, signed KEM key) of a friend, if any."""
        rows = self._query(
            "SELECT identity, encoded FROM peer_kem_keys WHERE username = ?", (username,)
        )
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    def save_peer_kem_key(
        self, username: str, identity: bytes, created: int, encoded: bytes
    ) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO peer_kem_keys (username, identity, created, encoded)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET"
                " identity = excluded.identity, created = excluded.created,"
                " encoded = excluded.encoded",
                (username, identity, created, encoded),
            )

    def own_kem_key_ids(self) -> set[bytes]:
        """Ids of every KEM key this computer made for the account (current, retired, pruned)."""
        return {bytes(row[0]) for row in self._query("SELECT key_id FROM own_kem_keys")}

    def add_own_kem_keys(self, keys: Sequence[tuple[bytes, int]]) -> None:
        """Remember (key id, created) of KEM keys made here; already known ones are kept."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO own_kem_keys (key_id, created) VALUES (?, ?)"
                " ON CONFLICT (key_id) DO NOTHING",
                keys,
            )

    # ------------------------------------------------------------------ room membership logs

    def room_log(self, room_id: int) -> list[bytes]:
        """The room's verified membership log entries, in order from seq 1."""
        rows = self._query("SELECT entry FROM room_log WHERE room_id = ? ORDER BY seq", (room_id,))
        return [bytes(row[0]) for row in rows]

    def add_room_log(self, room_id: int, first_seq: int, entries: Sequence[bytes]) -> None:
        """Append verified entries starting at `first_seq` (the next after what is stored)."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO room_log (room_id, seq, entry) VALUES (?, ?, ?)"
                " ON CONFLICT (room_id, seq) DO NOTHING",
                [(room_id, first_seq + i, entry) for i, entry in enumerate(entries)],
            )

    # ------------------------------------------------------------------ uploads

    def save_upload(self, state: UploadState) -> None:
        """Insert or replace the resumable state of one upload."""
        with self._transaction() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO uploads ({_UPLOAD_COLUMNS}, created) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "coalesce((SELECT created FROM uploads WHERE attachment_id = ?), "
                "(SELECT coalesce(max(created), 0) + 1 FROM uploads)))",
                (
                    state.attachment_id,
                    state.message_id,
                    state.chat_kind,
                    state.chat_id,
                    state.kind,
                    state.name,
                    str(state.source_path),
                    str(state.encrypted_path),
                    state.size,
                    state.key,
                    state.digest,
                    state.chunk_size,
                    state.offset,
                    state.attachment_id,
                ),
            )

    def set_upload_offset(self, attachment_id: str, offset: int) -> None:
        """Record how many bytes the server confirmed (its word wins, even if lower)."""
        with self._transaction() as conn:
            conn.execute(
                'UPDATE uploads SET "offset" = ? WHERE attachment_id = ?',
                (offset, attachment_id),
            )

    def upload_state(self, attachment_id: str) -> UploadState | None:
        rows = self._query(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE attachment_id = ?",  # noqa: S608
            (attachment_id,),
        )
        return _row_to_upload(rows[0]) if rows else None

    def pending_uploads(self) -> list[UploadState]:
        """Uploads to resume, oldest first."""
        rows = self._query(f"SELECT {_UPLOAD_COLUMNS} FROM uploads ORDER BY created")  # noqa: S608
        return [_row_to_upload(row) for row in rows]

    def remove_upload(self, attachment_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM uploads WHERE attachment_id = ?", (attachment_id,))
