-- Signed room membership (end-to-end v2, DESIGN.md section 3b).
--
-- `room_log` is each room's membership log in order: `seq` counts from 1, `entry` is
-- exactly what a client signed (MembershipEvent.to_wire()) or, for a room made before
-- this version, the server's legacy genesis at seq 1 (written by the server at start,
-- common/crypto/room_log.py). `hash` is what the next entry names as `prev`.
-- `room_user` and `rooms` keep the state the log leads to, so requests need not replay.
ALTER TABLE rooms ADD COLUMN join_policy TEXT NOT NULL DEFAULT 'open'
    CHECK (join_policy IN ('open', 'approval'));
ALTER TABLE room_user ADD COLUMN admin INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1));

CREATE TABLE room_log (
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    kind    TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    entry   BLOB    NOT NULL,
    hash    BLOB    NOT NULL,
    stored  INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq)
);

-- A join signed by its joiner, waiting for an admin's countersignature (approval rooms).
CREATE TABLE room_join_requests (
    room_id   INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    entry     BLOB    NOT NULL,
    requested INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_join_requests_by_user ON room_join_requests (user_id);
