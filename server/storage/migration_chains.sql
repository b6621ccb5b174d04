-- End-to-end v2 storage (DESIGN.md section 3b): one stored envelope per message, one
-- delivery cursor per member and conversation, chain distributions per recipient.
--
-- `envelopes.id` is the server order. A version-2 envelope is one row for every member
-- of its conversation (`recipient_id` = 0). Envelopes from before (version 1, sealed to
-- one recipient each) keep their own row and recipient, so stored history still opens.
-- `conversation` is 'u:<low user id>:<high user id>' or 'r:<room id>', as in
-- `conversations`.
CREATE TABLE envelopes (
    id           INTEGER PRIMARY KEY,
    message_id   TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    sender_id    INTEGER NOT NULL REFERENCES users(id),
    target_type  TEXT    NOT NULL CHECK (target_type IN ('user', 'room')),
    target_id    INTEGER NOT NULL,
    recipient_id INTEGER NOT NULL DEFAULT 0,
    data         BLOB    NOT NULL,
    time         INTEGER NOT NULL,
    UNIQUE (message_id, recipient_id)
);
CREATE INDEX envelopes_by_conversation ON envelopes (conversation, id);
CREATE INDEX envelopes_by_time ON envelopes (time);

-- Everything in `conversation` up to envelope `delivered` was acknowledged by `user_id`.
CREATE TABLE delivery_cursors (
    conversation TEXT    NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    delivered    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation, user_id)
);
CREATE INDEX delivery_cursors_by_user ON delivery_cursors (user_id);

-- A sender chain's state sealed (HPKE) to one recipient, carried by the message that
-- first needs it; deleted when that recipient acknowledges the message.
CREATE TABLE chain_distributions (
    message_id   TEXT    NOT NULL,
    recipient_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    data         BLOB    NOT NULL,
    PRIMARY KEY (message_id, recipient_id)
);

INSERT INTO envelopes
    (id, message_id, conversation, sender_id, target_type, target_id, recipient_id, data, time)
SELECT
    id, message_id,
    CASE
        WHEN target_type = 'room' THEN 'r:' || CAST(target_id AS TEXT)
        WHEN user_id < target_id
            THEN 'u:' || CAST(user_id AS TEXT) || ':' || CAST(target_id AS TEXT)
        ELSE 'u:' || CAST(target_id AS TEXT) || ':' || CAST(user_id AS TEXT)
    END,
    user_id, target_type, target_id, recipient_id, data, time
FROM chat_history;

-- Each recipient's cursor stops just before its oldest unacknowledged envelope (or at
-- its newest, when it has acknowledged everything): nothing undelivered is skipped.
INSERT INTO delivery_cursors (conversation, user_id, delivered)
SELECT e.conversation, e.recipient_id,
    COALESCE(
        MIN(CASE WHEN h.sent = 0 THEN e.id END) - 1,
        MAX(e.id)
    )
FROM envelopes e JOIN chat_history h ON h.id = e.id
GROUP BY e.conversation, e.recipient_id;

DROP TABLE chat_history;
