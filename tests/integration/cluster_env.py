"""The environment of a test cluster's nodes: one fresh PostgreSQL database, a Redis
database number of its own (flushed), and the CA passphrase file the nodes share."""

from __future__ import annotations

import itertools
from pathlib import Path

import redis

from server.cluster.local_services import LocalRedis

_redis_databases = itertools.count(1)


def cluster_env(tmp_path: Path, dsn: str, local_redis: LocalRedis) -> dict[str, str]:
    """`UCHAT_SERVER_*` variables for `start_server`; add `UCHAT_SERVER_NODE_ID` per node."""
    url = f"redis://127.0.0.1:{local_redis.port}/{next(_redis_databases) % 16}"
    redis.Redis.from_url(url).flushdb()
    passphrase = tmp_path / "ca-passphrase"
    passphrase.write_text("a passphrase for the test cluster\n")
    passphrase.chmod(0o600)
    return {
        "UCHAT_SERVER_DATABASE_URL": dsn,
        "UCHAT_SERVER_REDIS_URL": url,
        "UCHAT_SERVER_CA_PASSPHRASE_FILE": str(passphrase),
    }
