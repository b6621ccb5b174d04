-- Version 2 (SQLite: migration_002.sql): canonical usernames and skeletons, per-address
-- login memory, per-address rate windows. `canonical` compares and sorts by code point
-- (COLLATE "C"), as SQLite's BINARY does, so the search's prefix range scan is exact.
-- users.backfill_names fills both columns and creates their indexes, on both backends.
ALTER TABLE users ADD COLUMN canonical TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN skeleton TEXT COLLATE "C";

CREATE TABLE login_addresses (
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ip         TEXT   NOT NULL,
    last_login BIGINT NOT NULL,
    PRIMARY KEY (user_id, ip)
);

CREATE TABLE rate_windows (
    key          TEXT   PRIMARY KEY,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL
);

CREATE INDEX chat_history_delivered ON chat_history (time) WHERE sent = 1;
CREATE INDEX rooms_by_creator ON rooms (created_by);
CREATE INDEX attachments_by_uploader ON attachments (uploader_id);
