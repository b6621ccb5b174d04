"""Which recipients have unacknowledged deliveries above a row id (cluster mode's sweep).

A node re-reads its users' cursors on a bus hint, on reconnect, and on this periodic
sweep, so a lost hint only delays a message. One range scan on the primary key finds
every recipient with something new since the last sweep, whoever stored it.
"""

from __future__ import annotations

from server.storage.database import Database


def newest_row(db: Database) -> int:
    return int(db.scalar("SELECT COALESCE(MAX(id), 0) FROM chat_history"))


def recipients_after(db: Database, after_row: int) -> dict[int, int]:
    """{recipient id: newest unacknowledged row} for rows above `after_row`."""
    rows = db.all(
        "SELECT recipient_id, MAX(id) FROM chat_history WHERE id > ? AND sent = 0"
        " GROUP BY recipient_id",
        (after_row,),
    )
    return {int(row[0]): int(row[1]) for row in rows}
