"""What the server may forget: delivered envelopes past retention, unused uploads.

A delivered envelope is in the recipient's own store; the server keeps it only for
`delivered_retention_days` (so a stolen server database holds less, and an account's
data does not grow without end). An attachment goes when no stored message lists it
any more and it is older than the same retention, or when its upload was abandoned
(unfinished for `abandoned_upload_hours`). Each pass deletes at most `batch` rows of
each kind so the reactor turn that runs it stays short; `Sweep.more` asks for
another pass soon.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.storage.database import Database

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000


@dataclass(frozen=True)
class Sweep:
    envelopes: int
    attachments: list[str]  # ids whose files the caller removes
    more: bool


def sweep(
    db: Database,
    now: int,
    *,
    retention_days: float,
    abandoned_hours: float,
    batch: int = 5000,
) -> Sweep:
    """Delete one batch of expired rows; returns what went and whether more is left."""
    delivered_before = now - int(retention_days * DAY_MS)
    # An envelope is delivered once every recipient's cursor has passed it.
    deleted = db.execute(
        "DELETE FROM envelopes WHERE id IN (SELECT e.id FROM envelopes e"
        " WHERE e.time < ? AND NOT EXISTS (SELECT 1 FROM delivery_cursors c"
        " WHERE c.conversation = e.conversation AND c.delivered < e.id"
        " AND c.user_id <> e.sender_id AND e.recipient_id IN (0, c.user_id)) LIMIT ?)",
        (delivered_before, batch),
    ).rowcount
    db.execute(
        "DELETE FROM chain_distributions WHERE NOT EXISTS"
        " (SELECT 1 FROM envelopes e WHERE e.message_id = chain_distributions.message_id)"
    )
    _drop_orphan_links(db, batch)
    rows = db.all(
        "SELECT id FROM attachments AS a WHERE (a.complete = 0 AND a.created_at < ?)"
        " OR (a.created_at < ? AND NOT EXISTS (SELECT 1 FROM message_attachments AS m"
        " WHERE m.attachment_id = a.id)) LIMIT ?",
        (now - int(abandoned_hours * HOUR_MS), delivered_before, batch),
    )
    gone = [row["id"] for row in rows]
    db.executemany("DELETE FROM attachments WHERE id = ?", [(item,) for item in gone])
    return Sweep(deleted, gone, deleted >= batch or len(gone) >= batch)


def _drop_orphan_links(db: Database, batch: int) -> int:
    """Links from messages none of whose deliveries are left (WITHOUT ROWID table)."""
    rows = db.all(
        "SELECT message_id, attachment_id FROM message_attachments AS ma WHERE NOT EXISTS"
        " (SELECT 1 FROM envelopes AS e WHERE e.message_id = ma.message_id) LIMIT ?",
        (batch,),
    )
    db.executemany(
        "DELETE FROM message_attachments WHERE message_id = ? AND attachment_id = ?",
        [(row["message_id"], row["attachment_id"]) for row in rows],
    )
    return len(rows)
