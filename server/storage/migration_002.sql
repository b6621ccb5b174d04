-- Version 2: canonical usernames, look-alike skeletons, per-address login memory,
-- per-address rate windows.
--
-- `canonical` (NFKC + casefold, common/names.py) decides uniqueness and every lookup;
-- `skeleton` (Unicode TR39) finds look-alike names. Both are filled by Python right
-- after this script (server/storage/users.py `backfill_names`), which also settles
-- names that collide once folded: the oldest account keeps the canonical form, the
-- others get '<canonical>#<id>' (no valid name contains '#') and still log in with
-- their exact stored spelling. Then the UNIQUE index is created.
ALTER TABLE users ADD COLUMN canonical TEXT;
ALTER TABLE users ADD COLUMN skeleton TEXT;

-- Addresses an account has logged in from successfully: such an address keeps its own
-- failure allowance for that account, so a stranger's guesses cannot lock the owner out.
CREATE TABLE login_addresses (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ip         TEXT    NOT NULL,
    last_login INTEGER NOT NULL,
    PRIMARY KEY (user_id, ip)
) WITHOUT ROWID;

-- Fixed-window counters ('register:<ip>', ...): count within the window that started
-- at window_start.
CREATE TABLE rate_windows (
    key          TEXT    PRIMARY KEY,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL
) WITHOUT ROWID;

-- The retention sweep (server/storage/retention.py) finds delivered envelopes by age.
CREATE INDEX chat_history_delivered ON chat_history (time) WHERE sent = 1;

-- Quotas (server/quotas.py) count one account's rooms and uploads.
CREATE INDEX rooms_by_creator ON rooms (created_by);
CREATE INDEX attachments_by_uploader ON attachments (uploader_id);
