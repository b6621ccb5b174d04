-- Version 6 (SQLite: kem_keys_transparency.sql): signed KEM keys in the key transparency log.
--
-- From now on `server.kem_publication.accept_kem_key` appends every key it accepts.
-- Keys published before are appended here, after the entries already logged, in the
-- order they were published; the server hashes them into the tree at start, as it
-- did for the certificates of migration 3.
INSERT INTO kt_entries (position, kind, username, payload, created_at)
SELECT
    (SELECT COALESCE(MAX(position) + 1, 0) FROM kt_entries)
        + row_number() OVER (ORDER BY k.published, k.user_id, k.created) - 1,
    'kem_key', u.username, k.encoded, k.published
FROM kem_keys k JOIN users u ON u.id = k.user_id;
