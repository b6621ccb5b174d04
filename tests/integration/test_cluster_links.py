"""Linking a new computer when the two computers reach different nodes of a cluster.

Two real nodes on one private PostgreSQL and redis-server: the new computer asks for a
code on one node, the old one enters it on the other. The link lives on the opener's
node; joins, link messages and closes cross by `Link*` hints (server/cluster/link_routes.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from client.core import ChatClient, LinkCompare, LinkFailed, LinkFinished, LinkJoined
from common.protocol.opcodes import MessageType
from server.cluster.hints import LinkClosed, LinkData, encode
from server.cluster.local_services import LocalRedis
from server.launcher import RunningServer, start_server
from tests.integration.cluster_env import cluster_env
from tests.integration.helpers import (
    PASSWORD,
    Accounts,
    EventLog,
    make_accounts,
    raw_connection,
    refusal,
    refused,
    wait_until,
)

accounts = pytest.fixture(name="accounts")(make_accounts)
Nodes = tuple[RunningServer, RunningServer, str]


@pytest.fixture
def two_nodes(
    tmp_path: Path, fresh_pg_dsn: Callable[[], str], local_redis: LocalRedis
) -> Iterator[Nodes]:
    """Nodes "a" and "b" of one cluster, and its Redis URL; no ERROR in their logs."""
    env = cluster_env(tmp_path, fresh_pg_dsn(), local_redis)
    started = [
        start_server(tmp_path / name, {**env, "UCHAT_SERVER_NODE_ID": name}) for name in "ab"
    ]
    yield started[0], started[1], env["UCHAT_SERVER_REDIS_URL"]
    for running in started:
        running.stop()
        assert " ERROR " not in running.log_text(), running.log_text()[-3000:]


def sas_of(events: EventLog) -> str:
    event = events.wait_one("link_compare")
    assert isinstance(event, LinkCompare)
    return event.sas


def failure_of(events: EventLog, since: int = 0) -> str:
    event = events.wait_one("link_failed", since=since)
    assert isinstance(event, LinkFailed)
    return event.reason


def new_computer(
    accounts: Accounts, node: RunningServer, folder: Path
) -> tuple[ChatClient, EventLog]:
    client = accounts.client(node, folder)
    return client, EventLog(client)


def test_a_code_from_one_node_entered_on_the_other_moves_the_identity(
    two_nodes: Nodes, accounts: Accounts, tmp_path: Path
) -> None:
    node_a, node_b, url = two_nodes
    alice = accounts.user(node_b, "alice")  # the old computer, on node B
    bob = accounts.user(node_b, "bob")
    new, new_events = new_computer(accounts, node_a, tmp_path / "new")  # the new one, on A
    code, expires_in = new.start_link(alice.name)
    assert len(code) == 8 and code.isdigit() and expires_in == 300
    # Redis knows which node holds the code, for five minutes, but not the code
    store = redis.Redis.from_url(url)
    found = store.scan_iter(match="uchat:link:*")
    [entry] = [key.decode("ascii") if isinstance(key, bytes) else str(key) for key in found]
    assert re.fullmatch(r"uchat:link:[0-9a-f]{64}", entry) and code not in entry
    assert store.get(entry) == b"a" and 0 < store.pttl(entry) <= 300_000

    address = alice.client.join_link(f"{code[:4]}-{code[4:]}")
    assert address.startswith("127.0.0.1:")
    joined = new_events.wait_one("link_joined")
    assert isinstance(joined, LinkJoined) and joined.address.startswith("127.0.0.1:")
    old_sas, new_sas = sas_of(alice.events), sas_of(new_events)
    assert old_sas == new_sas and len(old_sas) == 7

    alice.client.confirm_link(True)
    sent = alice.events.wait_one("link_finished")
    assert isinstance(sent, LinkFinished) and sent.role == "old"
    new.confirm_link(True)
    arrived = new_events.wait_one("link_finished")
    assert isinstance(arrived, LinkFinished) and arrived.username == alice.name

    new.login(alice.name, PASSWORD)  # on node A, with the keys that came from node B
    assert new.can_send
    alice.events.wait("kicked")  # one login per account across the cluster
    bob.client.add_friend(alice.name)
    new_events.wait("friend_request", username=bob.name)


def test_codes_are_single_use_and_bound_to_their_account_across_nodes(
    two_nodes: Nodes, accounts: Accounts, tmp_path: Path
) -> None:
    node_a, node_b, _ = two_nodes
    alice = accounts.user(node_b, "al", login=False)
    mallory = accounts.user(node_b, "ml")
    new, new_events = new_computer(accounts, node_a, tmp_path / "new")
    code, _ = new.start_link(alice.name)

    wrong = "00000000" if code != "00000000" else "11111111"
    assert refused(mallory.client.join_link, wrong).code == "link_code_invalid"  # nowhere
    assert refused(mallory.client.join_link, code).code == "link_code_invalid"  # alice's
    login = {"username": alice.name, "password": PASSWORD}
    # The wire itself: a client would cancel its own link before joining again.
    with raw_connection(node_b) as on_b:
        on_b.request(MessageType.LOGIN, login)
        joined = on_b.request(MessageType.LINK_JOIN, {"code": code})  # refusals used nothing
        assert joined["address"].startswith("127.0.0.1:")
        new_events.wait("link_joined")
        again = refusal(on_b, MessageType.LINK_JOIN, {"code": code})
        assert again.code == "link_code_invalid"  # once joined, from node B
    with raw_connection(node_a) as on_a:
        on_a.request(MessageType.LOGIN, login)
        again = refusal(on_a, MessageType.LINK_JOIN, {"code": code})
        assert again.code == "link_code_invalid"  # and on the opener's own node


def test_closes_and_lost_connections_reach_the_other_node(
    two_nodes: Nodes, accounts: Accounts, tmp_path: Path
) -> None:
    node_a, node_b, _ = two_nodes
    alice = accounts.user(node_a, "cl")  # the old computer on A, new computers on B

    def linked(name: str) -> tuple[ChatClient, EventLog]:
        new, events = new_computer(accounts, node_b, tmp_path / name)
        code, _ = new.start_link(alice.name)
        alice.client.join_link(code)
        sas_of(events)
        return new, events

    mark = alice.events.mark()
    new, _ = linked("new-1")  # the new computer cancels: the old one hears it
    new.cancel_link()
    assert failure_of(alice.events, mark) == "cancelled"

    new, events = linked("new-2")  # the old computer refuses: the new one hears it
    alice.client.confirm_link(False)
    assert failure_of(events) == "refused"

    mark = alice.events.mark()
    new, _ = linked("new-3")  # the new computer's connection drops
    new.close()
    assert failure_of(alice.events, mark) == "peer_gone"

    new, events = linked("new-4")  # the old computer's connection drops
    alice.client.close()
    assert failure_of(events) == "peer_gone"


def test_garbled_and_stray_link_hints_are_dropped_and_links_still_work(
    two_nodes: Nodes, accounts: Accounts, tmp_path: Path
) -> None:
    node_a, node_b, url = two_nodes
    bus = redis.Redis.from_url(url)
    for data in (
        b'{"t":"ldata","ref":"not-a-ref","n":"b","b":"AA=="}',
        b'{"t":"ljoin","ref":"' + b"0" * 32 + b'","n":"b","k":"00","acc":"x","a":"y"}',
        b'{"t":"lclosed","ref":"' + b"0" * 32 + b'","why":"because"}',
        b'{"t":"ldata","ref":"' + b"0" * 32 + b'","n":"b","b":"' + b"A" * 12_000 + b'"}',
        b"\xff not json",
    ):
        assert bus.publish("uchat:node:a", data) == 1
    # Well formed, but for links node A never heard of: answered or ignored, never fatal.
    bus.publish("uchat:node:a", encode(LinkData("1" * 32, "b", b"stray")))
    bus.publish("uchat:node:a", encode(LinkClosed("2" * 32, "done")))
    wait_until(lambda: node_a.log_count("dropped a hint") >= 5, what="the hints dropped")

    alice = accounts.user(node_b, "gh")
    new, new_events = new_computer(accounts, node_a, tmp_path / "new")
    code, _ = new.start_link(alice.name)
    alice.client.join_link(code)
    assert sas_of(alice.events) == sas_of(new_events)
    assert node_a.is_alive() and node_b.is_alive()
