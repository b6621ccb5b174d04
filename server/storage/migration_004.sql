-- Version 4: signed KEM keys (end-to-end v2, DESIGN.md section 3b).
--
-- One row per key a user ever published. `encoded` is the SignedKemKey exactly as the
-- client sent it (key id, creation time, X-Wing public key, Ed25519 signature by the
-- user's identity key); the server verified the signature when it accepted the key,
-- and every client verifies it again against its own pin. The newest by `created` is
-- the current key; older rows stay so a late distribution can still be explained.
CREATE TABLE kem_keys (
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id    BLOB    NOT NULL,
    created   INTEGER NOT NULL,
    published INTEGER NOT NULL,
    encoded   BLOB    NOT NULL,
    PRIMARY KEY (user_id, key_id)
) WITHOUT ROWID;

CREATE INDEX kem_keys_current ON kem_keys (user_id, created);
