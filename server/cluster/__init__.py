"""Cluster mode (DESIGN.md section 6): PostgreSQL storage, the Redis bus, one identity."""
