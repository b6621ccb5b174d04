"""The table of what `python -m bench` can run, and at which sizes.

Each entry names the module (with a `main(argv) -> int`), the arguments `--quick` adds
(scaled down, a few seconds each), the arguments of the pytest smoke run (`tiny`: just
enough to exercise every code path), the time limit of a full run, and whether the
module speaks the scenario options (`--json`, `--time-limit`, `--log-level`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    module: str
    quick: tuple[str, ...]
    tiny: tuple[str, ...]
    time_limit: float
    server: bool = True  # a load scenario (JSON document, --json); else a micro-benchmark


_RELAY_TINY: tuple[str, ...] = ("--pairs", "2", "--duration", "0.5", "--warmup", "0.2")
_RELAY_TINY += ("--rate", "200", "--paced-duration", "0.5", "--preseal", "100", "--no-half-peak")

_SOAK_QUICK: tuple[str, ...] = ("--minutes", "0.3", "--users", "6", "--rate", "40")
_SOAK_QUICK += ("--reconnect-every", "2", "--file-every", "2", "--hostile-every", "2")
_SOAK_QUICK += ("--sample-every", "3")
_SOAK_TINY: tuple[str, ...] = ("--minutes", "0.05", "--users", "4", "--rate", "20")
_SOAK_TINY += ("--reconnect-every", "1", "--file-every", "1", "--hostile-every", "1")
_SOAK_TINY += ("--sample-every", "1")

_KT_TINY: tuple[str, ...] = ("--entries", "2000", "--users", "4", "--rounds", "4")
_KT_TINY += ("--appends", "20", "--proofs", "20", "--fetches", "2")

SCENARIOS: dict[str, Scenario] = {
    "smoke": Scenario("bench.common", (), ("--repeats", "5"), 60.0),
    "connections": Scenario(
        "bench.connections",
        ("--connections", "2000"),
        ("--connections", "40", "--sample", "10"),
        300.0,
    ),
    "reference": Scenario(
        "bench.reference",
        ("--pairs", "10", "--duration", "3", "--paced-duration", "3"),
        (
            "--pairs",
            "2",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--rate",
            "200",
            "--paced-duration",
            "0.5",
        ),
        120.0,
    ),
    "relay": Scenario(
        "bench.relay",
        ("--pairs", "10", "--duration", "3", "--paced-duration", "3"),
        _RELAY_TINY,
        240.0,
    ),
    "cluster_relay": Scenario(
        "bench.cluster_relay",
        ("--pairs", "10", "--duration", "3"),
        ("--pairs", "2", "--duration", "0.5", "--warmup", "0.2", "--preseal", "100"),
        300.0,
    ),
    "cluster_faults": Scenario("bench.cluster_faults", ("--kills", "4"), ("--kills", "1"), 900.0),
    "cluster_fanout": Scenario(
        "bench.cluster_fanout",
        ("--members", "20", "--messages", "10"),
        ("--members", "4", "--messages", "3", "--warmup", "1"),
        600.0,
    ),
    "cluster_connections": Scenario(
        "bench.cluster_connections",
        ("--connections", "200"),
        ("--connections", "40", "--sample", "10"),
        600.0,
    ),
    "e2e": Scenario(
        "bench.e2e",
        ("--messages", "300", "--rate", "100"),
        ("--messages", "10", "--rate", "50"),
        180.0,
    ),
    "fanout": Scenario(
        "bench.fanout",
        ("--members", "200", "--messages", "20"),
        # a join limit under the room's size: the tiny run takes the waves' path too
        ("--members", "5", "--messages", "3", "--warmup", "1", "--online-joins", "3"),
        240.0,
    ),
    "offline_backlog": Scenario(
        "bench.offline_backlog", ("--messages", "3000"), ("--messages", "50"), 240.0
    ),
    "file_transfer": Scenario(
        "bench.file_transfer", ("--size-mb", "16"), ("--size-mb", "1"), 240.0
    ),
    "login_storm": Scenario(
        "bench.login_storm",
        ("--logins", "300"),
        ("--logins", "10", "--baseline", "0.3", "--after", "0.3"),
        180.0,
    ),
    "account_flood": Scenario(
        "bench.account_flood",
        ("--samples", "15"),
        ("--samples", "3", "--scrypt-n", "1024", "--warmup", "0.2", "--flood-rate", "200"),
        300.0,
    ),
    "hostile_search": Scenario(
        "bench.hostile_search",
        ("--users", "20000", "--pings", "200"),
        ("--users", "300", "--pings", "20", "--pipeline", "50", "--rounds", "2"),
        900.0,
    ),
    "chunk_flood": Scenario(
        "bench.chunk_flood",
        ("--requests", "200"),
        ("--requests", "20", "--hold", "0.5"),
        300.0,
    ),
    "anonymous_memory": Scenario(
        "bench.anonymous_memory",
        ("--connections", "300"),
        ("--connections", "20", "--login-timeout", "1"),
        300.0,
    ),
    "soak": Scenario(
        "bench.soak",
        _SOAK_QUICK,
        _SOAK_TINY,
        3 * 3600.0,
    ),
    "key_transparency": Scenario(
        "bench.key_transparency",
        ("--entries", "100000", "--users", "50", "--rounds", "60"),
        _KT_TINY,
        900.0,
    ),
    "bad_input": Scenario(
        "bench.bad_input", ("--connections", "500"), ("--connections", "30"), 180.0
    ),
    "codec": Scenario(
        "bench.codec_bench", (), ("--repeats", "1", "--seconds", "0.05"), 60.0, server=False
    ),
    "record": Scenario(
        "bench.record_bench", (), ("--repeats", "1", "--seconds", "0.05"), 60.0, server=False
    ),
    "sender_cpu": Scenario(
        "bench.sender_cpu",
        ("--members", "200", "--messages", "10", "--rotations", "1"),
        ("--members", "5", "--messages", "2", "--rotations", "1"),
        300.0,
        server=False,
    ),
    "history": Scenario(
        "bench.history_bench",
        ("--messages", "20000"),
        ("--messages", "500", "--chats", "5", "--repeat", "1"),
        120.0,
        server=False,
    ),
}

#: What `python -m bench all` runs: every load scenario (the reference runs inside relay).
SUITE = (
    "connections",
    "relay",
    "e2e",
    "fanout",
    "offline_backlog",
    "file_transfer",
    "login_storm",
    "bad_input",
)
