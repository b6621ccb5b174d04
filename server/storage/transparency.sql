-- Migration 3: the key transparency log (RFC 9162 Merkle tree), append only.
-- Entries are numbered from 0 in the order they were appended; existing users'
-- certificates are backfilled in account order. Node hashes (level 0 = leaf hashes)
-- are filled by the server at start for entries that have none yet (SQLite has no
-- SHA-256), so the backfill and every later append share one code path.
CREATE TABLE kt_entries (
    position   INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX kt_entries_by_username ON kt_entries (username COLLATE NOCASE, position);

CREATE TABLE kt_nodes (
    level    INTEGER NOT NULL,
    position INTEGER NOT NULL,
    hash     BLOB    NOT NULL,
    PRIMARY KEY (level, position)
) WITHOUT ROWID;

CREATE TABLE kt_heads (
    size      INTEGER PRIMARY KEY,
    root      BLOB    NOT NULL,
    timestamp INTEGER NOT NULL,
    signature BLOB    NOT NULL
);

INSERT INTO kt_entries (position, kind, username, payload, created_at)
SELECT row_number() OVER (ORDER BY id) - 1, 'certificate', username, certificate, created_at
FROM users;
