-- Version 5 (SQLite: migration_room_log.sql): signed room membership (end-to-end v2).
ALTER TABLE rooms ADD COLUMN join_policy TEXT NOT NULL DEFAULT 'open'
    CHECK (join_policy IN ('open', 'approval'));
ALTER TABLE room_user ADD COLUMN admin SMALLINT NOT NULL DEFAULT 0 CHECK (admin IN (0, 1));

CREATE TABLE room_log (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL CHECK (seq >= 1),
    kind    TEXT   NOT NULL,
    actor   TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    entry   BYTEA  NOT NULL,
    hash    BYTEA  NOT NULL,
    stored  BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);

CREATE TABLE room_join_requests (
    room_id   BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id   BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    entry     BYTEA  NOT NULL,
    requested BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_join_requests_by_user ON room_join_requests (user_id);
