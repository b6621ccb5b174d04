"""A cluster node's mirror of who is online on the other nodes: shared, bounded sets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from common.crypto.certs import ServerIdentity
from server.cluster import node as node_module
from server.cluster.bus import BusSettings
from server.cluster.hints import NodeDown, PresenceChanged
from server.cluster.node import ClusterNode, ClusterSessions, NodeSets
from server.links import LinkRelay


def fresh(text: str) -> str:
    """An equal string that is another object, as each decoded hint carries."""
    return "".join(list(text))


def test_equal_node_sets_are_one_object_and_node_ids_one_string() -> None:
    sets = NodeSets()
    first = sets.shared([fresh("node-b")])
    again = sets.shared({fresh("node-b")})
    assert again is first and first == frozenset({"node-b"})
    both = sets.with_node(first, fresh("node-c"))
    assert both == {"node-b", "node-c"}
    assert sets.with_node(first, "node-c") is both
    assert sets.with_node(both, "node-b") is both
    back = sets.without_node(both, fresh("node-c"))
    assert back is first
    assert sets.without_node(first, "node-x") is first
    assert sets.without_node(first, "node-b") == frozenset()
    kept_b = next(iter(first))
    assert all(node is kept_b for node in both if node == "node-b")
    assert len(sets) == 3


def test_node_sets_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "NODE_SETS_LIMIT", 4)
    sets = NodeSets()
    for index in range(20):
        assert sets.shared([f"node-{index}"]) == {f"node-{index}"}
        assert len(sets) <= 4


def cluster_node(monkeypatch: pytest.MonkeyPatch) -> tuple[ClusterNode, list[tuple[int, bool]]]:
    services: Any = SimpleNamespace(
        sessions=ClusterSessions(),
        db=SimpleNamespace(membership_generation=0),
        links=LinkRelay(),
        identity=ServerIdentity.create(),
        clock=lambda: 0,
    )
    node = ClusterNode(
        cast(Any, services),
        call_soon=lambda step: None,
        call_later=lambda delay, step: None,
        settings=BusSettings(url="redis://127.0.0.1:1/0", node_id="node-a"),
    )
    announced: list[tuple[int, bool]] = []
    monkeypatch.setattr(node, "_announce", lambda user, online: announced.append((user, online)))
    return node, announced


def test_the_users_of_another_node_share_one_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of users held by node B cost node A a dict entry each, not a set and
    a node-id string each; presence still comes and goes per user and per node."""
    node, announced = cluster_node(monkeypatch)
    sessions = node._sessions
    for user in range(1000, 1100):
        node.handle(PresenceChanged(user, fresh("node-b"), True), {})
    node.handle(PresenceChanged(1000, fresh("node-c"), True), {})  # a takeover under way
    node.handle(PresenceChanged(1001, "node-a", True), {})  # this node's own: ignored
    values = list(sessions.elsewhere.values())
    assert len(values) == 100 and len({id(nodes) for nodes in values}) == 2
    assert sessions.elsewhere[1000] == {"node-b", "node-c"}
    assert all(sessions.elsewhere[user] == {"node-b"} for user in range(1001, 1100))
    assert len({id(name) for nodes in values for name in nodes if name == "node-b"}) == 1
    assert announced == [(user, True) for user in range(1000, 1100)]
    assert all(sessions.is_online(user) for user in range(1000, 1100))

    announced.clear()
    node.handle(PresenceChanged(1000, "node-b", False), {})
    assert sessions.elsewhere[1000] == {"node-c"} and announced == []
    node.handle(NodeDown("node-b", tuple(range(1000, 1050))), {})
    assert 1000 in sessions.elsewhere and 1001 not in sessions.elsewhere
    assert announced == [(user, False) for user in range(1001, 1050)]
    assert not sessions.is_online(1001) and sessions.is_online(1050)
    assert len({id(nodes) for nodes in sessions.elsewhere.values()}) == 2


def test_a_presence_snapshot_is_mirrored_with_shared_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    node, _ = cluster_node(monkeypatch)
    holders = {user: {fresh("node-b")} for user in range(50)}
    holders[7] = {"node-a"}  # only here: not elsewhere
    holders[8] = {"node-a", fresh("node-b")}
    mirror = node._others(holders)
    assert 7 not in mirror and mirror[8] == {"node-b"}
    assert len({id(nodes) for nodes in mirror.values()}) == 1
