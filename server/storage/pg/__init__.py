"""PostgreSQL versions of the numbered schema migrations (see server/storage/postgres.py)."""
