"""Server persistence: SQLite tables (one module per family) and attachment files."""
