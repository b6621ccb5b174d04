"""Hostile search: one attacker keeps 400 user searches pipelined on a big directory.

Issue 8, bar (a), measured as a ratio in one run:

1. `--users` accounts are seeded straight into the database (names `u000000`, ...)
   before the server starts (its start-up time is reported);
2. a bystander times `--pings` PINGs one after another, alternately while idle and
   while an attacker (another account, in a process of its own) keeps `--pipeline`
   SEARCH_USERS requests in flight (all written at once, refilled as answers come
   back); `--rounds` such idle/flood pairs on one server, the attacker draining and
   pausing between them, so a change in the machine's other load hits both sides.

Bar: the bystander's PING p99 during the flood is at most 5x its idle p99 (all
samples of each side; the per-round ratios and their median are reported too). It is
run twice on the same database: with the configured search rate limit (what a real
server does) and with the limit lifted (`--no-limit` run: the index, the paging and
the per-turn budget alone, every search answered).

    .venv/bin/python -m bench hostile_search [--users 100000] [--pings 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import select
import statistics
import time
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from bench.common import (
    BenchError,
    CpuMeter,
    Link,
    RemoteEndpoint,
    ServerProcess,
    base_parser,
    check,
    emit,
    new_workdir,
    open_sessions,
    percentile,
    run,
    seed_users,
    summarize,
)
from common.protocol.opcodes import MessageType

SCENARIO = "hostile_search"
BYSTANDER_SOURCE = "127.0.0.5"
#: The attacker's own CPU (decrypting answers) is a load generator's cost on these
#: shared cores, not the server's: a real attacker has its own machine.
ATTACKER_NICENESS = int(os.environ.get("BENCH_ATTACKER_NICE", "19"))


def ping_times(bystander: Link, count: int) -> list[float]:
    """`count` sequential PING round trips, in seconds."""
    samples: list[float] = []
    for _ in range(count):
        request_id = bystander.send(MessageType.PING, {})
        started = time.perf_counter()
        while not bystander.flush():
            bystander.wait(select.POLLOUT, 1.0)
        answered = False
        while not answered:
            if not bystander.wait(select.POLLIN, 30.0):
                raise BenchError("the bystander's PING got no answer in 30 s")
            for message in bystander.receive():
                if message.request_id == request_id:
                    samples.append(time.perf_counter() - started)
                    answered = True
    return samples


def attack(server: RemoteEndpoint, queries: int, pipe: PipeEnd) -> None:
    """Child process: flood on "flood", drain and report on "pause", end on "stop".

    A process of its own (at `ATTACKER_NICENESS`), so decrypting its answers never
    delays the bystander's measurement in this process. Queries walk 1,000 different prefixes.
    """
    os.nice(ATTACKER_NICENESS)
    attacker = open_sessions(server, ["u000002"])[0]
    in_flight = sent = answered = 0
    codes: dict[str, int] = {}
    flooding = pausing = False
    pipe.send("started")
    while True:
        if not flooding and not pausing:
            pipe.poll(None)  # idle until the next command
        if pipe.poll():
            command = pipe.recv()
            if command == "stop":
                break
            flooding, pausing = command == "flood", command == "pause"
        if flooding:
            while in_flight < queries:
                attacker.send(MessageType.SEARCH_USERS, {"query": f"u{sent % 1000:03d}"})
                in_flight += 1
                sent += 1
        elif pausing and in_flight == 0:
            pipe.send("paused")
            pausing = False
            continue
        attacker.flush()
        attacker.wait(select.POLLIN | select.POLLOUT, 0.05)
        for message in attacker.receive():
            if message.request_id:
                in_flight -= 1
                answered += 1
                code = str(message.params.get("code", "ok"))
                codes[code] = codes.get(code, 0) + 1
    pipe.send({"sent": sent, "answered": answered, "codes": codes})
    attacker.close()


def command(pipe: PipeEnd, what: str, expect: str | None) -> None:
    pipe.send(what)
    if expect is not None and (not pipe.poll(60) or pipe.recv() != expect):
        raise BenchError(f"the attacker process did not answer {what!r}")


def phase(args: argparse.Namespace, workdir: Any, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    server = ServerProcess.start(env, args.log_level, workdir=workdir)
    startup = time.perf_counter() - started
    idle: list[float] = []
    flood: list[float] = []
    ratios: list[float] = []
    server_cpu: list[float] = []
    try:  # stop, not cleanup: the seeded folder serves the next phase too
        bystander = open_sessions(server, ["u000001"], source=BYSTANDER_SOURCE)[0]
        ping_times(bystander, 20)  # warm-up
        rss_before = server.rss_kb()
        ours, theirs = multiprocessing.Pipe()
        endpoint = RemoteEndpoint(server.port, server.fingerprint)
        child = multiprocessing.Process(target=attack, args=(endpoint, args.pipeline, theirs))
        child.start()
        if not ours.poll(60) or ours.recv() != "started":
            raise BenchError("the attacker process did not start")
        for _ in range(args.rounds):
            command(ours, "pause", "paused")
            quiet = ping_times(bystander, args.pings)
            command(ours, "flood", None)
            time.sleep(0.2)  # the flood is under way
            meter = CpuMeter(server)
            busy = ping_times(bystander, args.pings)
            server_cpu.append(meter.read()["server_cpu_pct"])
            idle += quiet
            flood += busy
            ratios.append(percentile(sorted(busy), 99) / percentile(sorted(quiet), 99))
        command(ours, "stop", None)
        if not ours.poll(60):
            raise BenchError("the attacker process did not report")
        attacker = ours.recv()
        child.join(30)
        alive = server.alive()
        rss_after = server.rss_kb()
        bystander.close()
    finally:
        server.stop()
    return {
        "server_startup_s": round(startup, 2),
        "ping_ms_idle": summarize(idle),
        "ping_ms_during_flood": summarize(flood),
        "p99_ratio_flood_over_idle": round(
            percentile(sorted(flood), 99) / percentile(sorted(idle), 99), 2
        ),
        "p99_ratio_per_round": [round(ratio, 2) for ratio in ratios],
        "p99_ratio_median_of_rounds": round(statistics.median(ratios), 2),
        # ~100 % (one reactor thread): the attack kept the server saturated.
        "server_cpu_pct_during_flood": server_cpu,
        "server_rss_kb_before_flood": rss_before,
        "server_rss_kb_after_flood": rss_after,
        "attacker": attacker,
        "server_alive": alive,
    }


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    workdir = new_workdir()
    try:
        seeding = seed_users(workdir, [f"u{i:06d}" for i in range(args.users)])
        limited = phase(args, workdir, {})
        unlimited = phase(args, workdir, {"UCHAT_SERVER_SEARCHES_PER_MINUTE": "100000000"})
    finally:
        workdir.cleanup()
    results = {"seeding": seeding, "rate_limited": limited, "no_limit": unlimited}
    checks = [
        check(
            "bystander PING p99 flood / idle (rate limit on)",
            limited["p99_ratio_flood_over_idle"],
            5.0,
            "x",
            False,
        ),
        check(
            "bystander PING p99 flood / idle (rate limit lifted)",
            unlimited["p99_ratio_flood_over_idle"],
            5.0,
            "x",
            False,
        ),
        check(
            "server alive",
            int(limited["server_alive"] and unlimited["server_alive"]),
            1,
            "",
            True,
        ),
    ]
    params = {key: value for key, value in vars(args).items() if key not in ("time_limit", "json")}
    return emit(SCENARIO, params, results, checks)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=900.0)
    parser.add_argument("--users", type=int, default=100_000, help="accounts in the directory")
    parser.add_argument("--pings", type=int, default=300, help="bystander PINGs per phase")
    parser.add_argument("--pipeline", type=int, default=400, help="searches kept in flight")
    parser.add_argument("--rounds", type=int, default=3, help="idle/flood pairs per phase")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
