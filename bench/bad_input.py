"""Bad input: many connections send malformed bytes while a good client keeps pinging.

A second process opens `--connections` attacking connections, `--window` at a time,
cycling through the kinds below, and records what the server did with each: closed it
(EOF or reset), answered it with an ERROR and kept it open, or neither before the
deadline. Meanwhile a logged-in client in this process sends a PING every
`--ping-interval` seconds (one outstanding at a time); any ERROR, a reply slower than
2 s, or a dropped link is a failure. At the end a fresh client must still log in.

Malformed (the server must close the connection):
  garbage, oversized_header, bad_length, zero_length, bad_hello, record_before_handshake,
  bogus_finished, truncated_then_close, truncated_hold (closed by the handshake
  timeout), bad_mac, replayed_record, bad_tlv, oversized_record
Well-formed but wrong (docs/protocol.md section 3: the server answers ERROR and keeps
the connection): unknown_opcode, push_from_client, request_id_zero, bad_params,
not_authenticated

    python -m bench bad_input [--connections 2000] [--window 200]
"""

from __future__ import annotations

import multiprocessing
import os
import random
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from bench.common import (
    BenchError,
    Link,
    LinkClosed,
    RemoteEndpoint,
    ServerProcess,
    base_parser,
    check,
    emit,
    login,
    open_sessions,
    register_users,
    run,
    seal_encoded,
    summarize,
    user_names,
)
from common.channel import SecureChannel
from common.protocol import codec
from common.protocol.framing import HEADER, encode_handshake_frame
from common.protocol.message import Message
from common.protocol.opcodes import MessageType

SCENARIO = "bad_input"
HANDSHAKE_TIMEOUT_S = 3  # server setting for this run, so held connections resolve soon
BATCH_DEADLINE_S = 5.0
HOLD_DEADLINE_S = HANDSHAKE_TIMEOUT_S + 5.0
PING_TIMEOUT_S = 2.0
MAX_FRAME = 1_179_648

ZERO_IV, ZERO_MAC = bytes(16), bytes(32)


def _header(length: int, pad: int, iv: bytes = ZERO_IV, mac: bytes = ZERO_MAC) -> bytes:
    return HEADER.pack(length, pad, iv, mac)


def _hello_frame() -> bytes:
    return SecureChannel.client().initiate()


#: Kinds sent before any handshake: raw bytes.
RAW_KINDS: dict[str, Callable[[], bytes]] = {
    "garbage": lambda: os.urandom(random.randint(64, 2048)),
    "oversized_header": lambda: _header(2**31, 0x80),
    "bad_length": lambda: _header(17, 0x80) + b"x" * 17,
    "zero_length": lambda: _header(0, 0x80),
    "bad_hello": lambda: encode_handshake_frame(os.urandom(48)),
    "record_before_handshake": lambda: (
        _header(32, 1, os.urandom(16), os.urandom(32)) + os.urandom(32)
    ),
    "bogus_finished": lambda: _hello_frame() + encode_handshake_frame(os.urandom(48)),
    "truncated_then_close": lambda: _hello_frame()[:30],
    "truncated_hold": lambda: _header(1024, 0x80) + os.urandom(100),
}


def _flip_mac(record: bytes) -> bytes:
    mac_at = 4 + 1 + 16
    return record[:mac_at] + bytes([record[mac_at] ^ 1]) + record[mac_at + 1 :]


def _sealed(link: Link, body: bytes) -> bytes:
    return seal_encoded(link.channel, body)


def _twice(record: bytes) -> bytes:
    """The same record again: the second copy carries a stale sequence number."""
    return record + record


def _ping(link: Link) -> bytes:
    return link.seal(MessageType.PING, {})[1]


#: Kinds sent on an established channel: built from the link's own keys.
CHANNEL_KINDS: dict[str, Callable[[Link], bytes]] = {
    "bad_mac": lambda link: _flip_mac(_ping(link)),
    "replayed_record": lambda link: _twice(_ping(link)),
    "bad_tlv": lambda link: _sealed(link, b"\xff" * 40),
    "oversized_record": lambda link: _header(MAX_FRAME + 16, 1, os.urandom(16)),
}

#: Well-formed requests the server must refuse with ERROR {code} and stay connected.
ANSWERED_KINDS: dict[str, tuple[Callable[[Link], bytes], str]] = {
    "unknown_opcode": (  # docs/protocol.md section 3: ERROR bad_request
        lambda link: _sealed(link, codec.encode([999, 1, {}])),
        "bad_request",
    ),
    "push_from_client": (
        lambda link: link.seal(MessageType.NEW_MESSAGE, {"messages": []})[1],
        "bad_request",
    ),
    "request_id_zero": (
        lambda link: _sealed(link, codec.encode([int(MessageType.PING), 0, {}])),
        "bad_request",
    ),
    "bad_params": (
        lambda link: link.seal(MessageType.LOGIN, {"username": 5, "password": b""})[1],
        "bad_request",
    ),
    "not_authenticated": (
        lambda link: link.seal(MessageType.CONTACT_LIST, {})[1],
        "not_authenticated",
    ),
}

ALL_KINDS = [*RAW_KINDS, *CHANNEL_KINDS, *ANSWERED_KINDS]


@dataclass
class Outcome:
    """What the server did with the connections of one kind."""

    sent: int = 0
    closed: int = 0
    answered: int = 0
    wrong_answer: int = 0
    still_open: int = 0
    close_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "closed": self.closed,
            "answered": self.answered,
            "wrong_answer": self.wrong_answer,
            "still_open": self.still_open,
            "close_ms_upper_bound": summarize(self.close_ms, scale=1.0),
        }


@dataclass
class Victim:
    kind: str
    sock: socket.socket
    link: Link | None
    sent_at: float = 0.0


def _raw_victim(server: RemoteEndpoint, kind: str) -> Victim:
    sock = socket.create_connection(server.address, timeout=5)
    victim = Victim(kind, sock, None, time.perf_counter())
    sock.sendall(RAW_KINDS[kind]())
    if kind == "truncated_then_close":
        sock.shutdown(socket.SHUT_WR)
    sock.setblocking(False)
    return victim


def _channel_victims(server: RemoteEndpoint, kinds: list[str]) -> list[Victim]:
    links = open_sessions(server, kinds, login=False, window=len(kinds) or 1)
    victims = []
    for link in links:
        if link.name in CHANNEL_KINDS:
            payload = CHANNEL_KINDS[link.name](link)
        else:
            payload = ANSWERED_KINDS[link.name][0](link)
        link.queue_sealed(payload)
        victims.append(Victim(link.name, link.sock, link, time.perf_counter()))
        link.flush()
    return victims


def _watch(victims: list[Victim], deadline_s: float, outcomes: dict[str, Outcome]) -> None:
    """Wait until each victim is closed by the server or answered, or the deadline."""
    selector = selectors.DefaultSelector()
    for victim in victims:
        selector.register(victim.sock, selectors.EVENT_READ, victim)
    deadline = time.perf_counter() + deadline_s
    try:
        while selector.get_map() and time.perf_counter() < deadline:
            for key, _ in selector.select(0.2):
                victim = key.data
                verdict = _examine(victim, outcomes[victim.kind])
                if verdict:
                    selector.unregister(victim.sock)
                    victim.sock.close()
        for key in list(selector.get_map().values()):
            outcomes[key.data.kind].still_open += 1
            key.data.sock.close()
    finally:
        selector.close()


def _examine(victim: Victim, outcome: Outcome) -> bool:
    """Read what the server sent; True once the victim's fate is known."""
    try:
        data = victim.sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        data = b""
    if not data:
        outcome.closed += 1
        outcome.close_ms.append(1000 * (time.perf_counter() - victim.sent_at))
        return True
    if victim.link is None or victim.kind not in ANSWERED_KINDS:
        return False
    try:
        messages: list[Message] = victim.link.channel.receive_data(data)
    except Exception:  # any decoding failure means a wrong answer
        outcome.wrong_answer += 1
        return True
    for message in messages:
        if message.type is MessageType.ERROR:
            expected = ANSWERED_KINDS[victim.kind][1]
            if message.params.get("code") == expected:
                outcome.answered += 1
            else:
                outcome.wrong_answer += 1
            return True
    return False


def attack(server: RemoteEndpoint, total: int, window: int, pipe: PipeEnd) -> None:
    """Child process: every kind in turn, `window` connections at a time."""
    outcomes = {kind: Outcome() for kind in ALL_KINDS}
    kinds = [ALL_KINDS[i % len(ALL_KINDS)] for i in range(total)]
    holds = [k for k in kinds if k == "truncated_hold"]
    others = [k for k in kinds if k != "truncated_hold"]
    started = time.perf_counter()
    held = [_raw_victim(server, kind) for kind in holds]
    for kind in holds:
        outcomes[kind].sent += 1
    for first in range(0, len(others), window):
        batch = others[first : first + window]
        victims = [_raw_victim(server, kind) for kind in batch if kind in RAW_KINDS]
        victims += _channel_victims(server, [k for k in batch if k not in RAW_KINDS])
        for kind in batch:
            outcomes[kind].sent += 1
        _watch(victims, BATCH_DEADLINE_S, outcomes)
    _watch(held, max(0.0, HOLD_DEADLINE_S - (time.perf_counter() - started)), outcomes)
    pipe.send(
        {
            "seconds": time.perf_counter() - started,
            "outcomes": {kind: outcome.as_dict() for kind, outcome in outcomes.items()},
        }
    )


@dataclass
class Pinger:
    """The good client: one PING in flight, a new one every `interval` seconds."""

    link: Link
    interval: float
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    def run_while(self, busy: Callable[[], bool]) -> None:
        while busy() and not self.link.closed:
            started = time.perf_counter()
            try:
                reply = self.link.call_message(MessageType.PING, {}, PING_TIMEOUT_S)
            except LinkClosed:
                self.fail("link closed")
                return
            except BenchError:
                self.fail("timeout")
                continue
            if reply.type is MessageType.ERROR:
                self.fail(str(reply.params.get("code")))
            else:
                self.latencies.append(time.perf_counter() - started)
            time.sleep(max(0.0, self.interval - (time.perf_counter() - started)))


def scenario(args: Any) -> dict[str, Any]:
    overrides = {"UCHAT_SERVER_HANDSHAKE_TIMEOUT": str(HANDSHAKE_TIMEOUT_S)}
    with ServerProcess.start(overrides, args.log_level) as server:
        names = user_names("g", 2)
        register_users(server, names, links=1)
        good = login(server, names[0])
        pinger = Pinger(good, args.ping_interval)
        ours, theirs = multiprocessing.Pipe()
        endpoint = RemoteEndpoint(server.port, server.fingerprint)
        child = multiprocessing.Process(
            target=attack, args=(endpoint, args.connections, args.window, theirs)
        )
        child.start()
        pinger.run_while(lambda: not ours.poll() and child.is_alive())
        if not ours.poll(5):
            raise BenchError("the attacking process died without a report")
        report = ours.recv()
        child.join(10)
        alive = server.alive()
        fresh_login_ok = True
        try:
            login(server, names[1]).call(MessageType.PING)
        except BenchError:
            fresh_login_ok = False
        tracebacks = server.log_count("Traceback")
    return report_results(args, report, pinger, alive, fresh_login_ok, tracebacks)


def report_results(
    args: Any,
    report: dict[str, Any],
    pinger: Pinger,
    alive: bool,
    fresh_login_ok: bool,
    tracebacks: int,
) -> dict[str, Any]:
    outcomes = report["outcomes"]
    malformed = [k for k in ALL_KINDS if k not in ANSWERED_KINDS]
    bad_sent = sum(outcomes[k]["sent"] for k in malformed)
    bad_closed = sum(outcomes[k]["closed"] for k in malformed)
    wrong_sent = sum(outcomes[k]["sent"] for k in ANSWERED_KINDS)
    wrong_answered = sum(outcomes[k]["answered"] for k in ANSWERED_KINDS)
    failures = sum(pinger.failures.values())
    results = {
        "malformed_connections": bad_sent,
        "malformed_closed_by_server": bad_closed,
        "wellformed_wrong_requests": wrong_sent,
        "wellformed_answered_with_error_and_kept": wrong_answered,
        "by_kind": outcomes,
        "attack_seconds": round(report["seconds"], 2),
        "good_client": {
            "pings": len(pinger.latencies),
            "failures": pinger.failures,
            "latency_ms": summarize(pinger.latencies),
        },
        "server_alive": alive,
        "fresh_login_after_attack": fresh_login_ok,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check("malformed connections closed by the server", bad_closed, bad_sent, "conns", True),
        check("good client failures", failures, 0, "failures", False),
        check("server alive and serving after", int(alive and fresh_login_ok), 1, "", True),
    ]
    params = {k: v for k, v in vars(args).items() if k != "log_level"}
    notes = [
        f"server handshake_timeout set to {HANDSHAKE_TIMEOUT_S} s so held truncated "
        "frames resolve within the run",
        "wrong-but-well-formed requests are reported, not counted as malformed",
        "close_ms_upper_bound counts from the attacker's send to when its watch loop saw "
        "the close; it includes setting up the rest of the batch",
    ]
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=180.0)
    parser.add_argument("--connections", type=int, default=2000, help="attacking connections")
    parser.add_argument("--window", type=int, default=200, help="attackers at a time")
    parser.add_argument("--ping-interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
