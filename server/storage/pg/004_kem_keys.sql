-- Version 4 (SQLite: migration_004.sql): signed KEM keys (end-to-end v2).
CREATE TABLE kem_keys (
    user_id   BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id    BYTEA  NOT NULL,
    created   BIGINT NOT NULL,
    published BIGINT NOT NULL,
    encoded   BYTEA  NOT NULL,
    PRIMARY KEY (user_id, key_id)
);

CREATE INDEX kem_keys_current ON kem_keys (user_id, created);
