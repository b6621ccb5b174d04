"""Which recipients have unacknowledged deliveries above a row id (cluster mode's sweep).

A node re-reads its users' cursors on a bus hint, on reconnect, and on this periodic
sweep, so a lost hint only delays a message. One range scan on the primary key finds
every recipient with something new since the last sweep, whoever stored it.
"""

from __future__ import annotations

from server.storage.database import Database


def newest_row(db: Database) -> int:
    return int(db.scalar("SELECT COALESCE(MAX(id), 0) FROM envelopes"))


def recipients_after(db: Database, after_row: int) -> dict[int, int]:
    """{recipient id: newest unacknowledged envelope} for envelopes above `after_row`
    (a recipient is every member whose delivery cursor is below it)."""
    rows = db.all(
        "SELECT c.user_id, MAX(e.id) FROM envelopes e JOIN delivery_cursors c"
        " ON c.conversation = e.conversation AND e.id > c.delivered"
        " WHERE e.id > ? AND c.user_id <> e.sender_id AND e.recipient_id IN (0, c.user_id)"
        " GROUP BY c.user_id",
        (after_row,),
    )
    return {int(row[0]): int(row[1]) for row in rows}
