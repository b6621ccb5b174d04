"""The `rate_windows` table: "at most N per window" counters that survive a restart."""

from __future__ import annotations

from server.storage.database import Database


def take(db: Database, key: str, now: int, limit: int, window_ms: int) -> int:
    """Count one event for `key`; returns 0 if allowed, else ms until the window ends."""
    row = db.one("SELECT window_start, count FROM rate_windows WHERE key = ?", (key,))
    if row is None or now - row["window_start"] >= window_ms:
        start, count = now, 0
    else:
        start, count = row["window_start"], row["count"]
    if count >= limit:
        return max(1, start + window_ms - now)
    db.execute(
        "INSERT INTO rate_windows (key, window_start, count) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start,"
        " count = excluded.count",
        (key, start, count + 1),
    )
    return 0


def wait_ms(db: Database, key: str, now: int, limit: int, window_ms: int) -> int:
    """What `take` would answer, without counting (to refuse before costly checks)."""
    row = db.one("SELECT window_start, count FROM rate_windows WHERE key = ?", (key,))
    if row is None or now - row["window_start"] >= window_ms or row["count"] < limit:
        return 0
    return max(1, int(row["window_start"]) + window_ms - now)


def give_back(db: Database, key: str) -> None:
    """Undo one `take` (the event was refused for another reason before costing much)."""
    db.execute("UPDATE rate_windows SET count = max(count - 1, 0) WHERE key = ?", (key,))
