"""The inbox quota's held bounds when several nodes admit messages for one recipient.

Two `InboxBounds` over one database stand for two cluster nodes: each admits messages
for bob (offline, so nothing is delivered) and stores what it admitted, as a turn does.
Per-node bounds alone would let each node fill bob's inbox to the limit; the bounds
must also count what the other node stored (envelope ids it has not seen).
"""

from __future__ import annotations

import itertools
import types

import pytest

from common.protocol.ids import time_ordered_id
from server.quotas import NEWEST_REFRESH_MS, InboxBounds
from server.storage import messages
from server.storage.database import Database
from tests.unit.test_storage import add_user

LIMIT = 10


class Node:
    """One node's bounds and clock over the shared database."""

    def __init__(self, db: Database, clock: list[int], cluster: bool) -> None:
        self.bounds = InboxBounds()
        self.context = types.SimpleNamespace(
            db=db, now=lambda: clock[0], sessions=types.SimpleNamespace(spans_nodes=cluster)
        )
        self.db = db

    def send(self, sender: int, recipient: int) -> bool:
        """Admit and store one message, as SEND_MESSAGE and its turn do."""
        if not self.bounds.has_room(self.context, recipient, LIMIT):  # type: ignore[arg-type]
            return False
        stored = messages.store_many(
            self.db,
            [
                messages.NewEnvelope(
                    time_ordered_id(), sender, messages.USER, recipient, 1, b"e", {}
                )
            ],
        )
        self.bounds.stored(list(stored.values()))
        return True


@pytest.fixture
def people(any_db: Database) -> tuple[Database, int, int, int]:
    alice, carol, bob = (add_user(any_db, name) for name in ("alice", "carol", "bob"))
    messages.ensure_pair_cursors(any_db, alice, bob)
    messages.ensure_pair_cursors(any_db, carol, bob)
    return any_db, alice, carol, bob


def waiting(db: Database, bob: int) -> int:
    return len(messages.undelivered(db, bob, limit=10 * LIMIT))


def test_two_nodes_together_fill_an_inbox_only_to_its_limit(
    people: tuple[Database, int, int, int],
) -> None:
    db, alice, carol, bob = people
    clock = [0]
    node_a, node_b = Node(db, clock, cluster=True), Node(db, clock, cluster=True)
    admitted = 0
    for turn in range(3 * LIMIT):
        clock[0] += NEWEST_REFRESH_MS  # each node reads the newest id again
        sender, node = (alice, node_a) if turn % 2 == 0 else (carol, node_b)
        admitted += node.send(sender, bob)
    assert admitted == LIMIT
    assert waiting(db, bob) == LIMIT


def test_a_node_learns_the_other_nodes_stores_from_its_own_next_one(
    people: tuple[Database, int, int, int],
) -> None:
    """Within one refresh interval, node A's next stored id (above B's) still counts
    B's envelopes."""
    db, alice, carol, bob = people
    clock = [0]
    node_a, node_b = Node(db, clock, cluster=True), Node(db, clock, cluster=True)
    assert node_a.send(alice, bob)  # A counts (0 waiting), reads the newest id, stores
    assert sum(node_b.send(carol, bob) for _ in range(4)) == 4  # 5 waiting
    assert node_a.send(alice, bob)  # A's view is stale here (1 + 1), then it stores
    assert sum(node_a.send(alice, bob) for _ in range(LIMIT)) == LIMIT - 6
    assert waiting(db, bob) == LIMIT


def test_within_one_turn_a_stale_view_passes_the_limit_by_at_most_what_it_missed(
    people: tuple[Database, int, int, int],
) -> None:
    """Messages admitted in one turn are stored at its end: until then (and within the
    refresh interval) node A does not see what B stored meanwhile. The quota is passed
    by at most that, and the next check refuses. (One node alone can also pass it by
    one turn's messages: a count does not see the turn's own, not stored yet.)"""
    db, alice, carol, bob = people
    clock = [0]
    node_a, node_b = Node(db, clock, cluster=True), Node(db, clock, cluster=True)
    assert node_a.send(alice, bob)
    missed = sum(node_b.send(carol, bob) for _ in range(4))
    one_turn = LIMIT - 1  # what A's view (1 waiting) still has room for
    admitted = [
        node_a.bounds.has_room(node_a.context, bob, LIMIT)  # type: ignore[arg-type]
        for _ in range(one_turn)
    ]
    assert admitted == [True] * one_turn
    for _ in range(one_turn):  # the turn's end stores them
        node_a.bounds.stored(
            list(
                messages.store_many(
                    db,
                    [
                        messages.NewEnvelope(
                            time_ordered_id(), alice, messages.USER, bob, 1, b"e", {}
                        )
                    ],
                ).values()
            )
        )
    assert waiting(db, bob) == LIMIT + missed
    assert not node_a.send(alice, bob)
    clock[0] += NEWEST_REFRESH_MS  # B reads the newest id again: A's stores count
    assert not node_b.send(carol, bob)


def test_one_node_counts_exactly_once_until_the_limit(
    people: tuple[Database, int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone (no other writer) the bound is tight: one exact count, then one at the limit."""
    from server import quotas

    db, alice, _, bob = people
    counts = itertools.count()
    exact = quotas._count_and_newest

    def counting(ctx: object, owner: int, most: int) -> tuple[int, int]:
        next(counts)
        return exact(ctx, owner, most)  # type: ignore[arg-type]

    monkeypatch.setattr(quotas, "_count_and_newest", counting)
    node = Node(db, [0], cluster=False)
    assert [node.send(alice, bob) for _ in range(LIMIT + 1)] == [True] * LIMIT + [False]
    assert next(counts) == 2
