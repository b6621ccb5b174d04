"""Held connections: N authenticated links at once, server memory per link, liveness.

Accounts are seeded straight into the database before the server starts (see
`bench.common.seed_users`): registering 10,000 through the protocol would spend minutes
on CSR checks and password hashes that this scenario is not about. Then the bench
opens N links (handshake), reads the server's RSS, logs every link in, reads it again,
pings a random sample of links one by one, and watches the server's CPU while all N
sit idle.

Memory per link = (RSS with N links - RSS before any) / N, from /proc/<pid>/status.
It includes the kernel-independent part only (socket buffers are not in RSS).

    python -m bench connections [--connections 10000] [--sample 200]
"""

from __future__ import annotations

import random
import resource
import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    PASSWORD,
    BenchError,
    Link,
    ServerProcess,
    SessionTimes,
    base_parser,
    check,
    emit,
    new_workdir,
    open_sessions,
    pipeline,
    raise_nofile,
    run,
    seed_users,
    summarize,
    user_names,
)
from common.protocol.opcodes import MessageType

SCENARIO = "connections"
SPARE_FDS = 200
SETTLE_S = 1.0
IDLE_WATCH_S = 3.0
LOGIN_WINDOW = 256


def fit_to_file_limit(wanted: int) -> tuple[int, str | None]:
    """How many links this process can hold; a note when the hard limit scaled it down."""
    limit = raise_nofile(wanted + SPARE_FDS)
    if limit >= wanted + SPARE_FDS:
        return wanted, None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    usable = max(0, limit - SPARE_FDS)
    return usable, f"RLIMIT_NOFILE hard limit {hard} allows {usable} links, not {wanted}"


def settled_rss(server: ServerProcess) -> int:
    time.sleep(SETTLE_S)
    return server.rss_kb()


def log_in(links: list[Link], window: int) -> tuple[float, dict[str, int]]:
    """LOGIN on every link, `window` at a time; returns (seconds, error counts)."""
    started = time.perf_counter()
    errors: dict[str, int] = {}
    for first in range(0, len(links), window):
        chunk = links[first : first + window]
        jobs = [
            (link, MessageType.LOGIN, {"username": link.name, "password": PASSWORD})
            for link in chunk
        ]
        for answer in pipeline(jobs, window=1, timeout=120):
            if answer.type is MessageType.ERROR:
                code = str(answer.params.get("code"))
                errors[code] = errors.get(code, 0) + 1
    return time.perf_counter() - started, errors


def ping_sample(links: list[Link], count: int) -> tuple[list[float], int]:
    """Blocking PINGs on a random sample; returns (latencies, failures)."""
    latencies, failures = [], 0
    for link in random.sample(links, min(count, len(links))):
        link.drain(0.0)
        started = time.perf_counter()
        try:
            link.call(MessageType.PING, timeout=10)
        except BenchError:
            failures += 1
            continue
        latencies.append(time.perf_counter() - started)
    return latencies, failures


def idle_cpu_pct(server: ServerProcess, seconds: float) -> float:
    before, started = server.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return 100 * (server.cpu_seconds() - before) / (time.perf_counter() - started)


@dataclass
class Held:
    """Links opened and logged in on one server, with the server's RSS at each step."""

    links: list[Link]
    times: SessionTimes
    handshake_s: float
    login_s: float
    rss_empty: int
    rss_handshaken: int
    rss_logged_in: int

    def figures(self) -> dict[str, Any]:
        """Rates and memory per link, as the connections scenario reports them."""
        count = len(self.links)
        return {
            "handshakes_per_s": round(count / self.handshake_s, 1),
            "handshake_ms": summarize(self.times.handshake),
            "logins_per_s": round(count / self.login_s, 1),
            "rss_kb": {
                "empty": self.rss_empty,
                "handshaken": self.rss_handshaken,
                "logged_in": self.rss_logged_in,
            },
            "kb_per_connection_handshaken": round(
                (self.rss_handshaken - self.rss_empty) / count, 2
            ),
            "kb_per_connection_logged_in": round(self.kb_per_link(self.rss_logged_in), 2),
        }

    def kb_per_link(self, rss_kb: int) -> float:
        """RSS growth since the server was empty, per link held."""
        return (rss_kb - self.rss_empty) / len(self.links)


def hold(server: ServerProcess, names: list[str], window: int, rss_empty: int) -> Held:
    """Handshake one link per name (`window` in flight), then LOGIN each; RSS after both.

    `rss_empty` is read by the caller before any link opens (on every node of a cluster).
    """
    times = SessionTimes()
    started = time.perf_counter()
    links = open_sessions(server, names, login=False, window=window, times=times)
    handshake_s = time.perf_counter() - started
    rss_handshaken = settled_rss(server)
    login_s, login_errors = log_in(links, LOGIN_WINDOW)
    if login_errors:
        for link in links:
            link.close()
        raise BenchError(f"logins refused: {login_errors}")
    rss_logged_in = settled_rss(server)
    return Held(links, times, handshake_s, login_s, rss_empty, rss_handshaken, rss_logged_in)


def seeded_names(args: Any) -> tuple[list[str], str | None]:
    """The user names this run can hold (file limit), and a note when it scaled down."""
    count, note = fit_to_file_limit(args.connections)
    if count <= 0:
        raise BenchError(note or "no file descriptors available")
    return user_names("c", count), note


#: idle_timeout: set-up of 10,000 links takes longer than the default 120 s, and
#: these links stand for clients between their 30 s pings.
IDLE_OVERRIDES = {"UCHAT_SERVER_IDLE_TIMEOUT": "3600"}


def scenario(args: Any) -> dict[str, Any]:
    names, note = seeded_names(args)
    count = len(names)
    workdir = new_workdir()
    seeded = seed_users(workdir, names)
    with ServerProcess.start(IDLE_OVERRIDES, args.log_level, workdir) as server:
        held = hold(server, names, args.window, settled_rss(server))
        idle_pct = idle_cpu_pct(server, IDLE_WATCH_S)
        latencies, failures = ping_sample(held.links, args.sample)
        alive = server.alive()
        for link in held.links:
            link.close()
    per_link_kb = held.kb_per_link(held.rss_logged_in)
    results = {
        "connections_held": count,
        "seed": seeded,
        **held.figures(),
        "idle_server_cpu_pct_with_all_held": round(idle_pct, 1),
        "ping_sample": {"failures": failures, "latency_ms": summarize(latencies)},
        "server_alive": alive,
        "server_tracebacks": server.log_count("Traceback"),
    }
    checks = [
        check("authenticated connections held", count, 10_000, "connections", True),
        check("server memory per connection", per_link_kb, 8, "KB", False),
        check("PING failures on the sample", failures, 0, "failures", False),
    ]
    params = {"connections": args.connections, "sample": args.sample, "window": args.window}
    notes = [
        "accounts seeded in the database before start; every link does a full handshake "
        "and a real LOGIN (scrypt n=1024)",
        "server idle_timeout raised to 3600 s for the set-up",
    ]
    if note:
        notes.append(note)
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=300.0)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=200, help="links pinged at the end")
    parser.add_argument("--window", type=int, default=256, help="handshakes in flight")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
