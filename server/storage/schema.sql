-- Uchat server schema, version 1 (applied when PRAGMA user_version = 0).
-- Times are integer milliseconds since the Unix epoch (UTC).
-- Later changes go in new numbered migrations in database.py; never edit this in place
-- once released.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    username    TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password    TEXT    NOT NULL,                -- scrypt$n$r$p$salt$hash, never plain
    email       TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    ip          TEXT    NOT NULL DEFAULT '',     -- last login address
    port        INTEGER NOT NULL DEFAULT 0,
    sex         TEXT    NOT NULL,
    age         INTEGER NOT NULL,
    certificate BLOB    NOT NULL,                -- DER issued by the server CA
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL DEFAULT 0
);

-- Pending request: one row (requester -> target, accepted = 0).
-- Friendship: two rows, one each way, accepted = 1.
CREATE TABLE friends (
    from_user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    to_user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    accepted     INTEGER NOT NULL DEFAULT 0 CHECK (accepted IN (0, 1)),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (from_user_id, to_user_id),
    CHECK (from_user_id <> to_user_id)
) WITHOUT ROWID;
CREATE INDEX friends_by_target ON friends (to_user_id, accepted);

CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY,
    room_name  TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    created_by INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
);

CREATE TABLE room_user (
    id        INTEGER PRIMARY KEY,
    room_id   INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at INTEGER NOT NULL,
    UNIQUE (room_id, user_id)
);
CREATE INDEX room_user_by_user ON room_user (user_id);

-- One delivery row per recipient: `id` is the server order, `data` the envelope sealed
-- for that recipient, `sent` whether the recipient acknowledged it.
CREATE TABLE chat_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users(id),   -- sender
    target_id    INTEGER NOT NULL,                        -- users.id or rooms.id
    target_type  TEXT    NOT NULL CHECK (target_type IN ('user', 'room')),
    recipient_id INTEGER NOT NULL REFERENCES users(id),
    data         BLOB    NOT NULL,
    time         INTEGER NOT NULL,
    sent         INTEGER NOT NULL DEFAULT 0 CHECK (sent IN (0, 1)),
    UNIQUE (message_id, recipient_id)
);
CREATE INDEX chat_history_undelivered ON chat_history (recipient_id, sent, id);

CREATE TABLE message_attachments (
    message_id    TEXT NOT NULL,
    attachment_id TEXT NOT NULL REFERENCES attachments(id),
    PRIMARY KEY (message_id, attachment_id)
) WITHOUT ROWID;
CREATE INDEX message_attachments_by_attachment ON message_attachments (attachment_id);

CREATE TABLE attachments (
    id          TEXT    PRIMARY KEY,                 -- 32 lowercase hex, also the file name
    uploader_id INTEGER NOT NULL REFERENCES users(id),
    size        INTEGER NOT NULL CHECK (size >= 0),
    digest      BLOB    NOT NULL,                    -- SHA-256 of the whole ciphertext
    received    INTEGER NOT NULL DEFAULT 0,
    complete    INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Backoff state for logins, keyed 'user:<name>' or 'ip:<address>', so it survives a
-- restart.
CREATE TABLE login_attempts (
    key          TEXT    PRIMARY KEY,
    failures     INTEGER NOT NULL DEFAULT 0,
    last_failure INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Time of the newest message per conversation, so contact lists need no scan of
-- chat_history. Key: 'u:<low user id>:<high user id>' or 'r:<room id>'.
CREATE TABLE conversations (
    key               TEXT    PRIMARY KEY,
    last_message_time INTEGER NOT NULL
) WITHOUT ROWID;
