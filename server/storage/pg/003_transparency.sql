-- Version 3 (SQLite: transparency.sql): the key transparency log, append only.
CREATE TABLE kt_entries (
    position   BIGINT PRIMARY KEY,
    kind       TEXT   NOT NULL,
    username   TEXT   NOT NULL,
    payload    BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX kt_entries_by_username ON kt_entries (username COLLATE nocase, position);

CREATE TABLE kt_nodes (
    level    BIGINT NOT NULL,
    position BIGINT NOT NULL,
    hash     BYTEA  NOT NULL,
    PRIMARY KEY (level, position)
);

CREATE TABLE kt_heads (
    size      BIGINT PRIMARY KEY,
    root      BYTEA  NOT NULL,
    timestamp BIGINT NOT NULL,
    signature BYTEA  NOT NULL
);

INSERT INTO kt_entries (position, kind, username, payload, created_at)
SELECT row_number() OVER (ORDER BY id) - 1, 'certificate', username, certificate, created_at
FROM users;
