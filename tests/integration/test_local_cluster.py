"""`make cluster`'s entry point, run as a real process: PostgreSQL, Redis, two nodes.

The test reads the client settings it prints, points one client at each node with
them, and has the two users meet in a room; a second run on the same folder keeps
the accounts and the fingerprint.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.config import ClientConfig, load_config
from server.cluster.local_services import private_root
from server.launcher import FAST_ENV, REPO_ROOT
from tests.integration.helpers import Accounts, make_accounts

accounts = pytest.fixture(name="accounts")(make_accounts)
SHELL_LINE = re.compile(
    r"client (?P<n>\d) \(shell\): +UCHAT_CLIENT_HOST=(?P<host>\S+) UCHAT_CLIENT_PORT=(?P<port>\d+)"
    r" UCHAT_CLIENT_SERVERS='(?P<servers>[^']*)'"
    r" UCHAT_CLIENT_SERVER_FINGERPRINT=(?P<fingerprint>[0-9a-f]{64})"
)
STARTUP_LINES = 40


@dataclass
class Node:
    host: str
    port: int
    fingerprint: str
    servers: str


class Cluster:
    def __init__(self, root: Path) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("UCHAT_")}
        env.update(FAST_ENV)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cluster.local_cluster", "--root", str(root)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.output: list[str] = []
        self.nodes = self._read_nodes()

    def _read_nodes(self) -> list[Node]:
        assert self.process.stdout is not None
        nodes = []
        for _ in range(STARTUP_LINES):
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            found = SHELL_LINE.search(line)
            if found:
                nodes.append(
                    Node(found["host"], int(found["port"]), found["fingerprint"], found["servers"])
                )
            if len(nodes) == 2:
                return nodes
        raise AssertionError("".join(self.output))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        assert self.process.stdout is not None
        self.output.append(self.process.stdout.read())
        self.process.stdout.close()
        return code


@pytest.fixture
def cluster_root() -> Iterator[Path]:
    root = private_root("uchat-test-make-cluster-")  # PostgreSQL must enter it as postgres
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _printed_client_config(text: str, path: Path) -> ClientConfig:
    """The first printed config.json line, as the client would load it from a file."""
    line = re.search(r"client 1 \(config\.json\): (.*)$", text, re.MULTILINE)
    assert line is not None, text
    path.write_text("{" + line[1] + "}", encoding="utf-8")
    return load_config(path, env={}).client


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.5).close()
    except OSError:
        return False
    return True


def test_make_cluster_starts_two_nodes_that_two_clients_can_use(
    cluster_root: Path, accounts: Accounts
) -> None:
    cluster = Cluster(cluster_root)
    try:
        node_a, node_b = cluster.nodes
        text = "".join(cluster.output)
        assert node_a.fingerprint == node_b.fingerprint
        assert node_a.servers == f"{node_b.host}:{node_b.port}"  # the failover is the other
        assert f'"port": {node_a.port}' in text and "PostgreSQL:" in text and "Redis:" in text
        configured = _printed_client_config(text, cluster_root / "client-1.json")
        assert (configured.host, configured.port) == (node_a.host, node_a.port)
        assert configured.servers == node_a.servers
        assert configured.server_fingerprint == node_a.fingerprint
        pg_port = int(re.search(r"PostgreSQL: +host=\S+ port=(\d+)", text)[1])  # type: ignore[index]

        pin = node_a.fingerprint
        alice = accounts.user(
            node_a, "alice", servers=[(node_b.host, node_b.port)], expected_fingerprint=pin
        )
        bob = accounts.user(
            node_b, "bob", servers=[(node_a.host, node_a.port)], expected_fingerprint=pin
        )
        room_id = int(alice.client.create_room(f"room {alice.name}").id)
        bob.client.join_room(room_id)
        sent = alice.client.send_text(room_id, "hello from node A")
        assert bob.events.message(sent.message_id).text == "hello from node A"
        alice.client.close()
        bob.client.close()
    finally:
        code = cluster.stop()
    assert code == 0, "".join(cluster.output)
    assert "cluster stopped" in cluster.output[-1]
    assert not _listening("127.0.0.1", pg_port)
    assert not _listening(node_a.host, node_a.port)
    for name in ("a", "b"):
        log = (cluster_root / f"node-{name}.log").read_text()
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]

    again = Cluster(cluster_root)  # the same folder: same database, same identity
    try:
        assert again.nodes[0].fingerprint == node_a.fingerprint
        accounts.reopen(bob, again.nodes[0])  # bob's account survived the restart
        assert bob.client.connected
        bob.client.close()
    finally:
        assert again.stop() == 0
