"""Room fan-out over two cluster nodes against one SQLite node: last recipient p99.

The `fanout` scenario (its set-up, rounds and figures, `bench.fanout.measure`) three
times in one run: on one node with its SQLite file, then on two nodes of a private
cluster (PostgreSQL + Redis started here), then on one SQLite node again. In the
cluster the members alternate between the nodes: the sender and every other member
log in on node A, the rest on node B, so about half the recipients get each message
through the other node. The bar: the cluster's last-recipient p99 at most twice the
mean of the two single-node p99s. Server CPU per message is both nodes summed;
PostgreSQL's and redis-server's CPU over the rounds is reported apart.

    python -m bench cluster_fanout [--members 500] [--messages 50]
"""

from __future__ import annotations

import math
from typing import Any

from bench.cluster_common import CpuSum, NodesAndServices, PrivateCluster
from bench.common import ServerProcess, base_parser, check, emit, run
from bench.fanout import acknowledgement_note, add_options, measure

SCENARIO = "cluster_fanout"
NODES = ("a", "b")
BAR = 2.0


def single_node(args: Any) -> dict[str, Any]:
    with ServerProcess.start(log_level=args.log_level) as server:
        return measure([server], args)


def two_nodes(args: Any) -> dict[str, Any]:
    """The room spread over both nodes; the services' CPU over the rounds beside it."""
    with PrivateCluster() as cluster:
        cluster.start_services()
        nodes = [cluster.start_node(name, args.log_level) for name in NODES]
        cpu = NodesAndServices(CpuSum(nodes), cluster.services_cpu())
        results = measure(nodes, args, cpu)
        results["nodes_alive"] = sum(1 for node in nodes if node.alive())
    wall = results["cpu_during_rounds_incl_gaps"]["wall_s"]
    services_s = cpu.services_seconds()
    results["split"] = {"node_a": (args.members + 1) // 2, "node_b": args.members // 2}
    results["services_cpu_pct"] = round(100 * services_s / wall, 1) if wall else None
    results["services_cpu_ms_per_message"] = round(1000 * services_s / max(1, args.messages), 2)
    return results


def mean_of(phases: list[dict[str, Any]], key: str, figure: str) -> float:
    """The mean of one figure over the single-node phases (NaN if none has it)."""
    values = [phase[key][figure] for phase in phases if figure in phase[key]]
    return round(sum(values) / len(values), 3) if values else math.nan


def scenario(args: Any) -> dict[str, Any]:
    before = single_node(args)
    cluster = two_nodes(args)
    after = single_node(args)
    single_p99 = mean_of([before, after], "last_recipient_ms", "p99")
    own_p99 = cluster["last_recipient_ms"].get("p99", math.nan)
    ratio = round(own_p99 / single_p99, 3) if single_p99 else math.nan
    singles_cpu = [before["server_cpu_ms_per_message"], after["server_cpu_ms_per_message"]]
    tracebacks = sum(phase["server_tracebacks"] for phase in (before, cluster, after))
    checks = [
        check(
            f"two nodes, {args.members} members: last recipient p99 / one SQLite node's",
            ratio,
            BAR,
            "x",
            False,
        ),
        check("nodes alive after the rounds", cluster["nodes_alive"], len(NODES), "nodes", True),
        check("tracebacks in any server's log", tracebacks, 0, "tracebacks", False),
    ]
    results = {
        "cluster_fanout": {
            "last_recipient_p99_ms": own_p99,
            "single_node_last_recipient_p99_ms": single_p99,
            "ratio_to_single_node": ratio,
            "first_recipient_p50_ms": cluster["first_recipient_ms"].get("p50"),
            "single_node_first_recipient_p50_ms": mean_of(
                [before, after], "first_recipient_ms", "p50"
            ),
            "server_cpu_ms_per_message": cluster["server_cpu_ms_per_message"],
            "single_node_server_cpu_ms_per_message": round(sum(singles_cpu) / 2, 2),
            "services_cpu_ms_per_message": cluster["services_cpu_ms_per_message"],
        },
        "single_before": before,
        "cluster": cluster,
        "single_after": after,
    }
    params = {k: v for k, v in vars(args).items() if k not in ("log_level", "json")}
    notes = [
        "cluster: member i on node a (even i, the sender is member 0) or node b (odd i);"
        " server CPU = both nodes' processes summed; PostgreSQL (postmaster + backends) and"
        " redis-server apart in services_cpu_*, not in server_cpu_ms_per_message",
        "single node = SQLite, the same members/messages, measured before and after the"
        " cluster in the same run; the ratio uses the mean of their p99s",
        acknowledgement_note(args),
        "private PostgreSQL runs with fsync=off, synchronous_commit=off (test settings)",
    ]
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=600.0)
    add_options(parser)
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
