"""Which node holds a device-link code, in Redis: `P:link:<digest>` -> node id.

A link lives in its opener's node memory (`server/links.py`); another node needs only
to know where to send a join. The entry is written once, with NX (a digest held by
another node stays that node's, and the opener's node picks a new code) and with the
code's lifetime, and never deleted: an entry outliving its link points at a node that
answers "no such code", which is the right answer. Like presence, it is routing, not
truth: Redis losing it fails a join (`link_code_invalid`), and the users start again.
Only the bus sender thread uses this object (it blocks on Redis).
"""

from __future__ import annotations

import redis


class LinkDirectory:
    """Code digest -> node id, for one cluster prefix."""

    def __init__(self, client: redis.Redis, node_id: str, prefix: str = "uchat") -> None:
        self._client = client
        self._node_id = node_id
        self._prefix = prefix

    def _key(self, digest: str) -> str:
        return f"{self._prefix}:link:{digest}"

    def claim(self, digest: str, ttl_ms: int) -> bool:
        """Record this node as the holder of `digest`; False if another node holds it."""
        return bool(self._client.set(self._key(digest), self._node_id, nx=True, px=ttl_ms))

    def find(self, digest: str) -> str | None:
        """The node holding `digest`, or None (never claimed, or lapsed)."""
        value = self._client.get(self._key(digest))
        if value is None:
            return None
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
