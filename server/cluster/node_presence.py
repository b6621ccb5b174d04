"""Which node holds which user, in Redis: heartbeats and a TTL, so a dead node's users
go offline within seconds.

Keys under the cluster prefix P:
- `P:nodes`          every node that registered (a set of node ids);
- `P:alive:<node>`   exists while the node heartbeats (expires after `ttl` seconds);
- `P:held:<node>`    user ids the node holds (a set);
- `P:user:<id>`      node ids holding the user (a set; two during a takeover);
- `P:reap:<node>`    taken (SET NX) by the one node that cleans up after a dead one.
A node whose alive key is gone does not count, whatever the sets still say, so a dead
node's users are offline after `ttl` even before anyone reaps it. Redis is not the
truth for anything durable: if it restarts empty, each node's next heartbeat notices
(its alive key was gone) and writes its holdings back from memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis

DEFAULT_TTL = 5.0
REAP_CLAIM_SECONDS = 60


class NodePresence:
    """One node's view and share of cluster presence (not thread-safe: one owner)."""

    def __init__(
        self, client: redis.Redis, node_id: str, prefix: str = "uchat", ttl: float = DEFAULT_TTL
    ) -> None:
        self._client = client
        self.node_id = node_id
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl * 1000))
        self._held: set[int] = set()

    # -- keys ------------------------------------------------------------------------

    def _nodes(self) -> str:
        return f"{self._prefix}:nodes"

    def _alive(self, node: str) -> str:
        return f"{self._prefix}:alive:{node}"

    def _held_key(self, node: str) -> str:
        return f"{self._prefix}:held:{node}"

    def _user(self, user_id: int) -> str:
        return f"{self._prefix}:user:{user_id}"

    # -- this node -------------------------------------------------------------------

    def heartbeat(self) -> bool:
        """Renew this node's TTL; True if Redis had lost it (then holdings are rewritten)."""
        previous = self._client.set(
            self._alive(self.node_id), str(time.time()), px=self._ttl_ms, get=True
        )
        self._client.sadd(self._nodes(), self.node_id)
        if previous is not None:
            return False
        self._write_holdings(self._held)
        return True

    def hold(self, user_id: int) -> None:
        self._held.add(user_id)
        self._write_holdings([user_id])

    def release(self, user_id: int) -> None:
        self._held.discard(user_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.srem(self._held_key(self.node_id), user_id)
        pipe.srem(self._user(user_id), self.node_id)
        pipe.execute()

    def _write_holdings(self, user_ids: Iterable[int]) -> None:
        ids = list(user_ids)
        if not ids:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.sadd(self._held_key(self.node_id), *ids)
        for user_id in ids:
            pipe.sadd(self._user(user_id), self.node_id)
        pipe.execute()

    def leave(self) -> None:
        """A graceful stop: this node and everything it held disappear at once."""
        held = list(self._held)
        self._held.clear()
        pipe = self._client.pipeline(transaction=False)
        for user_id in held:
            pipe.srem(self._user(user_id), self.node_id)
        pipe.delete(self._held_key(self.node_id), self._alive(self.node_id))
        pipe.srem(self._nodes(), self.node_id)
        pipe.execute()

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    # -- the cluster -----------------------------------------------------------------

    def _live(self, nodes: set[str]) -> set[str]:
        if not nodes:
            return set()
        ordered = sorted(nodes)
        pipe = self._client.pipeline(transaction=False)
        for node in ordered:
            pipe.exists(self._alive(node))
        return {node for node, alive in zip(ordered, pipe.execute(), strict=True) if alive}

    def nodes_of(self, user_id: int) -> set[str]:
        """Live nodes holding `user_id` (empty: offline everywhere)."""
        members = self._client.smembers(self._user(user_id))
        return self._live({_text(member) for member in members})

    def online(self, user_ids: Iterable[int]) -> dict[int, set[str]]:
        """{user id: live nodes} for those of `user_ids` that are online somewhere."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for user_id in ids:
            pipe.smembers(self._user(user_id))
        holders = {
            user_id: {_text(member) for member in members}
            for user_id, members in zip(ids, pipe.execute(), strict=True)
        }
        live = self._live(set().union(*holders.values()))
        found = {user_id: nodes & live for user_id, nodes in holders.items()}
        return {user_id: nodes for user_id, nodes in found.items() if nodes}

    def snapshot(self) -> dict[int, set[str]]:
        """{user id: live nodes} for everyone online on any node (after a reconnect)."""
        nodes = {_text(member) for member in self._client.smembers(self._nodes())}
        live = sorted(self._live(nodes))
        pipe = self._client.pipeline(transaction=False)
        for node in live:
            pipe.smembers(self._held_key(node))
        found: dict[int, set[str]] = {}
        for node, members in zip(live, pipe.execute(), strict=True):
            for member in members:
                found.setdefault(int(_text(member)), set()).add(node)
        return found

    def dead_nodes(self) -> list[str]:
        """Registered nodes (not this one) whose heartbeat has expired."""
        nodes = {_text(member) for member in self._client.smembers(self._nodes())}
        nodes.discard(self.node_id)
        return sorted(nodes - self._live(nodes))

    def reap(self, node: str) -> tuple[int, ...] | None:
        """Clear a dead node's holdings; its users, or None if another node claimed it."""
        claim = f"{self._prefix}:reap:{node}"
        if not self._client.set(claim, self.node_id, nx=True, ex=REAP_CLAIM_SECONDS):
            return None
        if self._client.exists(self._alive(node)):  # it came back meanwhile
            self._client.delete(claim)
            return None
        users = sorted(int(_text(member)) for member in self._client.smembers(self._held_key(node)))
        pipe = self._client.pipeline(transaction=False)
        for user_id in users:
            pipe.srem(self._user(user_id), node)
        pipe.delete(self._held_key(node))
        pipe.srem(self._nodes(), node)
        pipe.execute()
        return tuple(users)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
