"""1:1 relay on two cluster nodes (one PostgreSQL, one Redis) against one SQLite node.

The same pairs, window and envelope size run three times in one process: on a single
node with its embedded SQLite file, then on two nodes of a private cluster with every
pair split across them (the sender on one node, the receiver on the other, half the
pairs each way), then on a single node again. The figure is NEW_MESSAGE deliveries per
server-CPU-second, the two nodes' CPU summed; the bar is the cluster's figure over the
mean of the two single-node figures. PostgreSQL's and redis-server's own CPU over the
cluster's window is reported beside it (and a per-all-CPU figure), though not in the
bar: the single node's SQLite work is inside its own process, the cluster's database
work is partly outside.

    python -m bench cluster_relay [--pairs 20] [--window 32] [--duration 5]
"""

from __future__ import annotations

import math
import os
from typing import Any

from bench.cluster_common import CpuSum, NodesAndServices, PrivateCluster
from bench.common import (
    RequestTemplate,
    ServerProcess,
    base_parser,
    befriend,
    check,
    emit,
    message_id,
    open_sessions,
    register_users,
    run,
    send_params,
    user_names,
)
from bench.relay import Pair, Relay, run_peak
from common.protocol.opcodes import MessageType

SCENARIO = "cluster_relay"
BAR = 0.7


def make_pairs(senders: list[Any], receivers: list[Any], envelope_size: int) -> list[Pair]:
    befriend(list(zip(senders, receivers, strict=True)))
    pairs = []
    for sender, receiver in zip(senders, receivers, strict=True):
        params = send_params(message_id(), "user", receiver.name, os.urandom(envelope_size))
        template = RequestTemplate(MessageType.SEND_MESSAGE, params, "message_id")
        pairs.append(Pair(sender, receiver, template))
    return pairs


def close_pairs(pairs: list[Pair]) -> None:
    for pair in pairs:
        pair.sender.close()
        pair.receiver.close()


def peak_of(relay: Relay, args: Any) -> dict[str, Any]:
    for pair in relay.pairs:
        pair.preseal(args.preseal // len(relay.pairs) + args.window)
    return run_peak(relay, args.window, args.duration, args.warmup)


def single_node(args: Any, prefix: str) -> dict[str, Any]:
    with ServerProcess.start(log_level=args.log_level) as server:
        names = user_names(prefix, 2 * args.pairs)
        register_users(server, names)
        links = open_sessions(server, names)
        pairs = make_pairs(links[0::2], links[1::2], args.envelope_size)
        try:
            peak = peak_of(Relay(server, pairs), args)
        finally:
            close_pairs(pairs)
        peak["server_tracebacks"] = server.log_count("Traceback")
    return peak


def two_nodes(args: Any) -> dict[str, Any]:
    with PrivateCluster() as cluster:
        cluster.start_services()
        node_a = cluster.start_node("a", args.log_level)
        node_b = cluster.start_node("b", args.log_level)
        names = user_names("c", 2 * args.pairs)
        register_users(node_a, names)
        # Pair i: sender names[2i], receiver names[2i+1]; even pairs send A -> B, odd B -> A.
        on_a = [names[2 * p + p % 2] for p in range(args.pairs)]
        on_b = [names[2 * p + 1 - p % 2] for p in range(args.pairs)]
        links = dict(zip(on_a, open_sessions(node_a, on_a), strict=True))
        links.update(zip(on_b, open_sessions(node_b, on_b), strict=True))
        senders = [links[n] for n in names[0::2]]
        receivers = [links[n] for n in names[1::2]]
        pairs = make_pairs(senders, receivers, args.envelope_size)
        meter = NodesAndServices(CpuSum([node_a, node_b]), cluster.services_cpu())
        try:
            peak = peak_of(Relay(meter, pairs), args)
        finally:
            close_pairs(pairs)
        wall = peak["cpu"].get("wall_s", 0.0)
        services_s = meter.services_seconds()
        nodes_s = peak["cpu"].get("server_cpu_pct", 0.0) / 100 * wall
        peak["split"] = {"node_a": len(on_a), "node_b": len(on_b)}
        peak["services_cpu_pct"] = round(100 * services_s / wall, 1) if wall else None
        delivered = peak["msgs_per_s"] * args.duration
        total = nodes_s + services_s
        peak["msgs_per_all_cpu_s"] = round(delivered / total, 1) if total else None
        peak["server_tracebacks"] = node_a.log_count("Traceback") + node_b.log_count("Traceback")
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=300.0)
    parser.add_argument("--pairs", type=int, default=20, help="sender/receiver pairs")
    parser.add_argument("--window", type=int, default=32, help="requests in flight per sender")
    parser.add_argument("--duration", type=float, default=5.0, help="peak phase seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--envelope-size", type=int, default=200, help="bytes per envelope")
    parser.add_argument(
        "--preseal", type=int, default=30_000, help="requests sealed in advance per phase"
    )
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)


def scenario(args: Any) -> dict[str, Any]:
    before = single_node(args, "s")
    cluster = two_nodes(args)
    after = single_node(args, "t")
    singles = [p["msgs_per_server_cpu_s"] for p in (before, after) if p["msgs_per_server_cpu_s"]]
    single = round(sum(singles) / len(singles), 1) if singles else None
    own = cluster["msgs_per_server_cpu_s"]
    ratio = round(own / single, 3) if own and single else math.nan
    checks = [
        check("two nodes per server-CPU-second, ratio to one SQLite node", ratio, BAR, "x", True),
        check(
            "undelivered after the drain",
            cluster["undelivered_after_drain"],
            0,
            "msgs",
            False,
        ),
    ]
    results = {
        "cluster_relay": {
            "msgs_per_s": cluster["msgs_per_s"],
            "msgs_per_server_cpu_s": own,
            "single_node_msgs_per_server_cpu_s": single,
            "ratio_to_single_node": ratio,
            "services_cpu_pct": cluster["services_cpu_pct"],
            "msgs_per_all_cpu_s": cluster["msgs_per_all_cpu_s"],
        },
        "single_before": before,
        "cluster": cluster,
        "single_after": after,
    }
    params = {k: v for k, v in vars(args).items() if k not in ("log_level", "json")}
    notes = [
        "server CPU = both nodes' processes (all threads) summed; PostgreSQL (postmaster +"
        " backends) and redis-server apart in services_cpu_pct, not in the bar",
        "single node = SQLite, the same pairs/window/envelope, measured before and after the"
        " cluster in the same run; the ratio uses their mean",
        "private PostgreSQL runs with fsync=off, synchronous_commit=off (test settings)",
    ]
    return emit(SCENARIO, params, results, checks, notes)
