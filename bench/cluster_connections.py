"""Held connections on two cluster nodes: N authenticated links split evenly, memory per link.

The `connections` scenario on a private cluster (PostgreSQL + Redis + two nodes, all
started here). Accounts are seeded the fast way before any node starts: rows written
into a SQLite file by `bench.common.seed_users` (certificates issued by that file's
CA), then copied into the cluster's PostgreSQL by `server.migrate_to_postgres`, the CA
with them (encrypted with the cluster's passphrase), so both nodes serve the CA that
issued the certificates. Then each node's RSS is read empty, user i opens a link on
node A (even i) or node B (odd i), handshakes and logs in; RSS again once all N are
held. A random sample of links (both nodes) is pinged, and each node's CPU watched
while everything sits idle.

Memory per link = (RSS of the node with all N held - its RSS before any) / the links
it holds, from /proc/<pid>/status, per node (so a node's share of the cluster's
presence of the other node's users is in its figure).

    python -m bench cluster_connections [--connections 10000] [--sample 200]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from bench.cluster_common import PrivateCluster
from bench.common import (
    BenchError,
    ServerProcess,
    base_parser,
    check,
    emit,
    new_workdir,
    run,
    seed_users,
    summarize,
)
from bench.connections import (
    IDLE_OVERRIDES,
    IDLE_WATCH_S,
    Held,
    hold,
    idle_cpu_pct,
    ping_sample,
    seeded_names,
    settled_rss,
)
from common.errors import UchatError
from server.app import DATABASE_FILE
from server.cluster.node import read_passphrase
from server.migrate_to_postgres import migrate

SCENARIO = "cluster_connections"
NODES = ("a", "b")
BAR_KB = 8
#: Every link of a node is handshaken before the first logs in (the two steps are
#: measured apart), and a cluster node's logins are slower than one SQLite node's:
#: 5,000 of them outlast the 30 s login_timeout, which a client that logs in at once
#: never meets. Raised with idle_timeout, for the set-up only.
NODE_OVERRIDES = {**IDLE_OVERRIDES, "UCHAT_SERVER_LOGIN_TIMEOUT": "3600"}


def seed_cluster(cluster: PrivateCluster, names: list[str]) -> dict[str, Any]:
    """Seed `names` into a SQLite file and migrate it, CA included, into the cluster.

    Registering 10,000 accounts through the protocol would take minutes of CSR checks
    and password hashes this scenario is not about; the migration is the operator's
    own path from one node to a cluster, so the rows are exactly what a node expects.
    """
    workdir = new_workdir()
    try:
        seeded = seed_users(workdir, names)
        started = time.perf_counter()
        sqlite_path = Path(workdir.name) / "server" / DATABASE_FILE
        copies = migrate(sqlite_path, cluster.dsn, read_passphrase(cluster.passphrase_file))
    except (UchatError, psycopg.Error) as exc:
        raise BenchError(f"seeding the cluster: {exc}") from None
    finally:
        workdir.cleanup()
    return {
        **seeded,
        "migrate_seconds": round(time.perf_counter() - started, 3),
        "rows_migrated": sum(copy.rows for copy in copies),
    }


def node_figures(node: ServerProcess, held: Held, rss_all_held: int) -> dict[str, Any]:
    """One node's part: its links' rates and memory, then its RSS with all N held."""
    return {
        "connections_held": len(held.links),
        **held.figures(),
        "rss_kb_with_all_held": rss_all_held,
        "kb_per_connection_with_all_held": round(held.kb_per_link(rss_all_held), 2),
        "idle_cpu_pct_with_all_held": round(idle_cpu_pct(node, IDLE_WATCH_S), 1),
    }


def hold_on_nodes(nodes: list[ServerProcess], names: list[str], window: int) -> list[Held]:
    """User i on node i mod len(nodes); every node's empty RSS is read before any link."""
    empty = [settled_rss(node) for node in nodes]
    held: list[Held] = []
    try:
        for index, node in enumerate(nodes):
            held.append(hold(node, names[index :: len(nodes)], window, empty[index]))
    except BaseException:
        close_all(held)
        raise
    return held


def close_all(held: list[Held]) -> None:
    for part in held:
        for link in part.links:
            link.close()


def measure(args: Any, names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Seed, start both nodes, hold the links: (seed figures, per-node figures and pings)."""
    with PrivateCluster() as cluster:
        cluster.start_services()
        seed = seed_cluster(cluster, names)
        nodes = [cluster.start_node(name, args.log_level, NODE_OVERRIDES) for name in NODES]
        held = hold_on_nodes(nodes, names, args.window)
        try:
            rss_all_held = [settled_rss(node) for node in nodes]
            per_node = {
                name: node_figures(node, part, rss)
                for name, node, part, rss in zip(NODES, nodes, held, rss_all_held, strict=True)
            }
            latencies, failures = ping_sample([link for p in held for link in p.links], args.sample)
            for name, node in zip(NODES, nodes, strict=True):
                per_node[name]["alive"] = node.alive()
        finally:
            close_all(held)
        for name, node in zip(NODES, nodes, strict=True):
            per_node[name]["tracebacks"] = node.log_count("Traceback")
    pings = {"failures": failures, "latency_ms": summarize(latencies)}
    return seed, {"nodes": per_node, "ping_sample": pings}


def scenario(args: Any) -> dict[str, Any]:
    names, note = seeded_names(args)
    seed, measured = measure(args, names)
    per_node = measured["nodes"]
    alive = sum(1 for figures in per_node.values() if figures["alive"])
    tracebacks = sum(figures["tracebacks"] for figures in per_node.values())
    failures = measured["ping_sample"]["failures"]
    results = {
        "connections_held": len(names),
        "seed": seed,
        **measured,
        "nodes_alive": alive,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check("connections held on two nodes", len(names), 10_000, "connections", True),
        *(
            check(
                f"node {name} memory per logged-in connection (all held)",
                figures["kb_per_connection_with_all_held"],
                BAR_KB,
                "KB",
                False,
            )
            for name, figures in per_node.items()
        ),
        check("PING failures on the sample", failures, 0, "failures", False),
        check("nodes alive at the end", alive, len(NODES), "nodes", True),
        check("tracebacks in the nodes' logs", tracebacks, 0, "tracebacks", False),
    ]
    params = {"connections": args.connections, "sample": args.sample, "window": args.window}
    notes = [
        "accounts seeded into SQLite (seed_users) and moved into PostgreSQL with"
        " server.migrate_to_postgres (CA included) before the nodes start; every link does"
        " a full handshake and a real LOGIN (scrypt n=1024)",
        "user i on node a (even i) or node b (odd i); memory per link = node RSS growth"
        " with all links of both nodes held / links on that node",
        "nodes' idle_timeout and login_timeout raised to 3600 s for the set-up (a node's"
        " links are all handshaken before the first logs in); private PostgreSQL runs"
        " with fsync=off (test settings)",
    ]
    if note:
        notes.append(note)
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=600.0)
    parser.add_argument("--connections", type=int, default=10_000, help="links over both nodes")
    parser.add_argument("--sample", type=int, default=200, help="links pinged at the end")
    parser.add_argument("--window", type=int, default=256, help="handshakes in flight")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
