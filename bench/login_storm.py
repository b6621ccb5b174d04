"""Login storm: N clients connect and log in at once while two friends keep chatting.

Two friends send each other messages at a steady `--chat-rate` (total msgs/s), each
acknowledging what it receives; their latency is from writing SEND_MESSAGE to reading
the NEW_MESSAGE. After `--baseline` seconds a second process opens N links at once
(connect, handshake and LOGIN, all in flight together, as after a server restart),
keeps them open, and reports when the last login was answered. The chat latencies are
split by send time: before, during and after the storm.

Accounts are seeded into the database before the server starts; every LOGIN still
runs the real password check (scrypt, n=1024 as UCHAT_SERVER_SCRYPT_N sets it).
Both generator processes share the two cores with the server.

    python -m bench login_storm [--logins 1000] [--chat-rate 100]
"""

from __future__ import annotations

import math
import multiprocessing
import os
import selectors
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    CpuMeter,
    Link,
    RemoteEndpoint,
    ServerProcess,
    SessionTimes,
    base_parser,
    befriend,
    check,
    emit,
    message_id,
    new_workdir,
    open_sessions,
    raise_nofile,
    run,
    seed_users,
    send_params,
    summarize,
    user_names,
)
from common.protocol.opcodes import MessageType

SCENARIO = "login_storm"
STORM_TIMEOUT = 120.0


@dataclass
class Chat:
    """Two friends sending to each other on schedule; latencies keyed by send time."""

    a: Link
    b: Link
    envelope: bytes
    sent_at: dict[str, float] = field(default_factory=dict)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (sent, latency)
    errors: int = 0

    def __post_init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.a.sock, selectors.EVENT_READ, self.a)
        self.selector.register(self.b.sock, selectors.EVENT_READ, self.b)

    def send(self, sender: Link, receiver: Link) -> None:
        msg_id = message_id()
        params = send_params(msg_id, "user", receiver.name, self.envelope)
        sender.send(MessageType.SEND_MESSAGE, params)
        self.sent_at[msg_id] = time.perf_counter()
        sender.flush()

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            link: Link = key.data
            data = link.read_raw()
            arrived = time.perf_counter()
            ids = []
            for message in link.channel.receive_data(data) if data else []:
                if message.type is MessageType.ERROR:
                    self.errors += 1
                elif message.type is MessageType.NEW_MESSAGE:
                    for item in message.params["messages"]:
                        ids.append(item["message_id"])
                        sent = self.sent_at.pop(item["message_id"], None)
                        if sent is not None:
                            self.samples.append((sent, arrived - sent))
            if ids:
                link.send(MessageType.ACK_DELIVERY, {"message_ids": ids})
            if link.out:
                link.flush()

    def run_until(self, end: float, rate: float, start: float, sent: int) -> int:
        """Send on schedule until `end`; returns the running count of messages sent."""
        while (now := time.perf_counter()) < end:
            due = int((now - start) * rate) - sent
            for _ in range(max(due, 0)):
                if sent % 2:
                    self.send(self.b, self.a)
                else:
                    self.send(self.a, self.b)
                sent += 1
            next_due = start + (sent + 1) / rate
            self.poll(min(max(next_due - time.perf_counter(), 0.0), 0.005))
        return sent


def storm(server: RemoteEndpoint, names: list[str], window: int, pipe: PipeEnd) -> None:
    """Child process: open every session at once, report, hold them until told."""
    raise_nofile(len(names) + 200)
    times = SessionTimes()
    started = time.perf_counter()
    links = open_sessions(
        server,
        names,
        window=window,
        timeout=STORM_TIMEOUT,
        times=times,
        tolerate_errors=True,
    )
    ended = time.perf_counter()
    pipe.send(
        {
            "start": started,
            "end": ended,
            "logged_in": len(links),
            "errors": times.errors,
            "handshake_ms": summarize(times.handshake),
            "login_ms": summarize(times.login),
            "cpu_s": time.process_time(),
        }
    )
    pipe.recv()  # hold the sessions until the chat has measured the aftermath
    for link in links:
        link.close()


def renice_helper_threads(server: ServerProcess, niceness: int = 19) -> int:
    """Experiment only: lower the priority of every server thread but the reactor.

    The password-hash workers release the GIL and compete with the reactor for the two
    cores; this shows what the chat would see if the server lowered their priority
    itself. Returns how many threads were changed.
    """
    changed = 0
    for entry in Path(f"/proc/{server.pid}/task").iterdir():
        tid = int(entry.name)
        if tid != server.pid:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
            changed += 1
    return changed


def scenario(args: Any) -> dict[str, Any]:
    raise_nofile(args.logins + 200)
    names = user_names("s", args.logins)
    chatters = ["chat_a", "chat_b"]
    workdir = new_workdir()
    seed_users(workdir, [*chatters, *names])
    with ServerProcess.start(None, args.log_level, workdir) as server:
        a, b = open_sessions(server, chatters)
        befriend([(a, b)])
        reniced = renice_helper_threads(server) if args.renice_workers else 0
        chat = Chat(a, b, os.urandom(args.envelope_size))
        ours, theirs = multiprocessing.Pipe()
        window = args.storm_window or args.logins
        child = multiprocessing.Process(
            target=storm,
            args=(RemoteEndpoint(server.port, server.fingerprint), names, window, theirs),
        )
        start = time.perf_counter()
        sent = chat.run_until(start + args.baseline, args.chat_rate, start, 0)
        meter = CpuMeter(server)
        child.start()
        while not ours.poll():
            sent = chat.run_until(time.perf_counter() + 0.05, args.chat_rate, start, sent)
            if not child.is_alive():
                raise BenchError("the storm process died")
        report = ours.recv()
        cpu = meter.read()
        chat.run_until(time.perf_counter() + args.after, args.chat_rate, start, sent)
        ours.send("close")
        child.join(30)
        alive = server.alive()
        tracebacks = server.log_count("Traceback")
    report["reniced_threads"] = reniced
    return report_results(args, chat, report, cpu, alive, tracebacks)


def report_results(
    args: Any,
    chat: Chat,
    storm_report: dict[str, Any],
    cpu: dict[str, Any],
    alive: bool,
    tracebacks: int,
) -> dict[str, Any]:
    begin, end = storm_report["start"], storm_report["end"]
    before = [lat for sent, lat in chat.samples if sent < begin]
    during = [lat for sent, lat in chat.samples if begin <= sent <= end]
    after = [lat for sent, lat in chat.samples if sent > end]
    during_ms = summarize(during)
    storm_s = end - begin
    results = {
        "storm_seconds": round(storm_s, 3),
        "logins_per_s": round(storm_report["logged_in"] / storm_s, 1),
        "logged_in": storm_report["logged_in"],
        "login_errors": storm_report["errors"],
        "storm_handshake_ms": storm_report["handshake_ms"],
        "storm_login_ms": storm_report["login_ms"],
        "chat_latency_ms_before": summarize(before),
        "chat_latency_ms_during": during_ms,
        "chat_latency_ms_after": summarize(after),
        "chat_undelivered": len(chat.sent_at),
        "chat_errors": chat.errors,
        "cpu_during_storm": cpu,
        "storm_process_cpu_s": round(storm_report["cpu_s"], 2),
        "experiment_reniced_server_threads": storm_report["reniced_threads"],
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check(
            f"chat p99 during a storm of {args.logins} logins",
            during_ms.get("p99", math.nan),
            50,
            "ms",
            False,
        ),
        check(
            "logins refused during the storm", sum(storm_report["errors"].values()), 0, "", False
        ),
    ]
    params = {k: v for k, v in vars(args).items() if k != "log_level"}
    notes = [
        "storm = connect + handshake + LOGIN of every client at once, from a second process",
        "accounts seeded in the database; scrypt n=1024 per login",
    ]
    if args.renice_workers:
        notes.append("EXPERIMENT: server worker threads reniced to 19 from outside")
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=180.0)
    parser.add_argument("--logins", type=int, default=1000)
    parser.add_argument(
        "--storm-window", type=int, default=0, help="logins in flight at once (0: all)"
    )
    parser.add_argument(
        "--renice-workers",
        action="store_true",
        help="experiment: run the server's worker threads at nice 19",
    )
    parser.add_argument("--chat-rate", type=float, default=100.0, help="chat msgs/s, both ways")
    parser.add_argument("--baseline", type=float, default=2.0, help="chat seconds before")
    parser.add_argument("--after", type=float, default=2.0, help="chat seconds after")
    parser.add_argument("--envelope-size", type=int, default=200)
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
