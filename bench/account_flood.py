"""Account flood: one address floods REGISTER and LOGIN while the owner logs in from home.

Bars of issue 8, measured as ratios in one run on one server with the public limits
(not the load generator's relaxed ones) and the configured password cost:

1. idle: the owner logs in `--samples` times, one after another, from 127.0.0.3 (its
   usual address): connect, handshake, LOGIN, reply;
2. flood: a second process on 127.0.0.1 keeps `--window` REGISTERs (fresh names, real
   CSRs) and wrong-password LOGINs (at the owner's name and at unknown names) in flight
   on each of `--links` connections, at most `--flood-rate` requests/s; meanwhile the
   owner logs in `--samples` times again from 127.0.0.3.

Bars: the owner's median login during the flood is at most 2x its idle median, and
the owner logs in every time although a stranger is guessing its password.

    .venv/bin/python -m bench account_flood [--samples 30] [--scrypt-n 16384]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from bench.common import (
    PASSWORD,
    BenchError,
    CpuMeter,
    LinkClosed,
    RemoteEndpoint,
    ServerProcess,
    SessionTimes,
    base_parser,
    check,
    emit,
    open_sessions,
    run,
    summarize,
)
from common.crypto.certs import build_csr
from common.crypto.keys import generate_user_keys
from common.protocol.opcodes import MessageType

SCENARIO = "account_flood"
HOME = "127.0.0.3"  # the owner's usual address
ATTACKER = "127.0.0.1"
OWNER = "owner"
#: The server's defaults for public clients (bench/common.py relaxes them otherwise).
PUBLIC_LIMITS = {
    "UCHAT_SERVER_REGISTER_PER_ADDRESS": "20",
    "UCHAT_SERVER_HASHES_IN_FLIGHT_PER_ADDRESS": "1",
    "UCHAT_SERVER_HASHES_WAITING_PER_ADDRESS": "64",
}


def register_owner(server: ServerProcess) -> None:
    link = open_sessions(server, ["registrar"], login=False, source=HOME)[0]
    email = f"{OWNER}@bench.example.org"
    form = {"username": OWNER, "password": PASSWORD, "email": email, "sex": "other", "age": 30}
    form["csr"] = build_csr(OWNER, email, generate_user_keys())
    try:
        link.call(MessageType.REGISTER, form, timeout=60.0)
    finally:
        link.close()


def owner_logins(server: ServerProcess, samples: int) -> SessionTimes:
    """`samples` sequential logins from HOME: seconds each (connect to reply), errors."""
    times = SessionTimes()
    for _ in range(samples):
        links = open_sessions(
            server, [OWNER], timeout=60.0, times=times, tolerate_errors=True, source=HOME
        )
        for link in links:
            link.close()
    return times


def flood(server: RemoteEndpoint, args: argparse.Namespace, pipe: PipeEnd) -> None:
    """Child process: keep REGISTERs and LOGINs in flight from ATTACKER until told to stop.

    It runs at nice 19: a real attacker's machine is not this one, and its CPU use here
    would otherwise be charged to the server (whose hash workers run at nice 10).
    """
    os.nice(19)
    keys = generate_user_keys()
    links = open_sessions(server, [f"flood{i}" for i in range(args.links)], login=False)
    in_flight = dict.fromkeys(range(len(links)), 0)
    codes: dict[str, int] = {}
    sent = 0
    started = time.perf_counter()
    pipe.send("started")
    while not pipe.poll():
        budget = int((time.perf_counter() - started) * args.flood_rate) - sent
        for index, link in enumerate(links):
            while budget > 0 and in_flight[index] < args.window:
                link.send(*_hostile_request(sent, keys))
                in_flight[index] += 1
                sent += 1
                budget -= 1
            try:
                link.flush()
                for message in link.receive():
                    if message.type in (MessageType.REPLY, MessageType.ERROR):
                        in_flight[index] -= 1
                        code = str(message.params.get("code", "ok"))
                        codes[code] = codes.get(code, 0) + 1
            except LinkClosed:
                codes["closed_by_server"] = codes.get("closed_by_server", 0) + 1
                links[index] = open_sessions(server, [link.name], login=False)[0]
                in_flight[index] = 0
        time.sleep(0.001)
    seconds = time.perf_counter() - started
    pipe.send({"sent": sent, "codes": codes, "seconds": seconds, "cpu_s": time.process_time()})
    for link in links:
        link.close()


def _hostile_request(count: int, keys: Any) -> tuple[MessageType, dict[str, Any]]:
    """Alternately: a REGISTER with a fresh name, a guess at the owner, a guess at nobody."""
    kind = count % 3
    if kind == 0:
        name = f"fl{os.getpid() % 1000}x{count}"
        email = f"{name}@flood.example.org"
        form: dict[str, Any] = {"username": name, "password": PASSWORD, "email": email}
        form["sex"] = "other"
        form |= {"age": 30, "csr": build_csr(name, email, keys)}
        return MessageType.REGISTER, form
    target = OWNER if kind == 1 else f"nobody{count}"
    return MessageType.LOGIN, {"username": target, "password": f"guess-{count}-x"}


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    env = {**PUBLIC_LIMITS, "UCHAT_SERVER_SCRYPT_N": str(args.scrypt_n)}
    with ServerProcess.start(env, args.log_level) as server:
        register_owner(server)
        idle_times = owner_logins(server, args.samples)
        ours, theirs = multiprocessing.Pipe()
        child = multiprocessing.Process(
            target=flood, args=(RemoteEndpoint(server.port, server.fingerprint), args, theirs)
        )
        child.start()
        if not ours.poll(60) or ours.recv() != "started":
            raise BenchError("the flood process did not start")
        time.sleep(args.warmup)
        meter = CpuMeter(server)
        during_times = owner_logins(server, args.samples)
        cpu = meter.read()
        ours.send("stop")
        if not ours.poll(60):
            raise BenchError("the flood process did not report")
        report = ours.recv()
        child.join(30)
        alive = server.alive()
        tracebacks = server.log_count("Traceback")
    idle, during = idle_times.login, during_times.login
    idle_errors, during_errors = idle_times.errors, during_times.errors
    ratio = median_ms(during) / median_ms(idle)
    results = {
        "owner_login_ms_idle": summarize(idle),
        "owner_login_ms_during_flood": summarize(during),
        "median_ratio_flood_over_idle": round(ratio, 2),
        "owner_handshake_ms_idle": summarize(idle_times.handshake),
        "owner_handshake_ms_during_flood": summarize(during_times.handshake),
        "owner_login_errors_idle": idle_errors,
        "owner_login_errors_during_flood": during_errors,
        "owner_logins_ok_during_flood": f"{len(during)} of {args.samples}",
        "flood": report,
        "cpu_during_flood": cpu,
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check("owner login during flood / idle (median)", ratio, 2.0, "x", False),
        check(
            "owner logins refused while a stranger guesses",
            sum(during_errors.values()),
            0,
            "",
            False,
        ),
        check("server alive, no tracebacks", int(alive and tracebacks == 0), 1, "", True),
    ]
    params = {key: value for key, value in vars(args).items() if key not in ("time_limit", "json")}
    return emit(SCENARIO, params, results, checks)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=300.0)
    parser.add_argument("--samples", type=int, default=30, help="owner logins per phase")
    parser.add_argument("--scrypt-n", type=int, default=16384, help="the server's password cost")
    parser.add_argument("--links", type=int, default=4, help="flooding connections")
    parser.add_argument("--window", type=int, default=32, help="requests in flight per link")
    parser.add_argument("--flood-rate", type=float, default=2000.0, help="flood requests/s")
    parser.add_argument("--warmup", type=float, default=1.0, help="flood seconds before measuring")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
