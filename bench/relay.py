"""1:1 relay between pairs of logged-in friends: peak throughput, then latency when paced.

Each pair is a sender link and a receiver link of two friends. Senders write
SEND_MESSAGE requests with one ~200-byte opaque envelope (the server never opens
envelopes, so random bytes stand in for a sealed text); receivers acknowledge each
read burst with one ACK_DELIVERY, as the client does, and senders get the REPLY and
then MESSAGE_DELIVERED.

Phase 1 (peak): every sender keeps `--window` requests in flight for `--duration`
seconds; the figure is NEW_MESSAGE deliveries received per second after a warm-up.
Phase 2 (paced): `--rate` messages per second in total, spread over the pairs, sent
on schedule whatever the replies do (open loop); latency is from the moment the
request was written to the moment its NEW_MESSAGE was read off the receiver's socket.

Generator cost: requests are encoded from a template and sealed before the phases
start (up to `--preseal` of them), so the timed loops only write bytes, read, decrypt
and acknowledge; its CPU share is reported next to the server's.

    python -m bench relay [--pairs 20] [--window 32] [--duration 5] [--rate 5000]
"""

from __future__ import annotations

import math
import os
import selectors
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    BenchError,
    CpuMeter,
    CpuTimed,
    Link,
    LinkClosed,
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
    summarize,
    user_names,
)
from bench.reference import measure as measure_reference
from common.protocol.message import Message
from common.protocol.opcodes import MessageType

SCENARIO = "relay"
DRAIN_TIMEOUT = 15.0
PACED_WARMUP_S = 0.5
OVERLOAD_S = 2.0  # paced sends stop while more than this many seconds' worth are unanswered


@dataclass
class Pair:
    sender: Link
    receiver: Link
    template: RequestTemplate
    sealed: deque[tuple[str, bytes]] = field(default_factory=deque)
    in_flight: int = 0

    def next_record(self) -> tuple[str, bytes, bool]:
        """(message id, sealed record, was sealed ahead of time)."""
        if self.sealed:
            msg_id, record = self.sealed.popleft()
            return msg_id, record, True
        msg_id = message_id()
        return msg_id, self.template.seal(self.sender, msg_id)[1], False

    def preseal(self, count: int) -> None:
        for _ in range(count):
            msg_id = message_id()
            self.sealed.append((msg_id, self.template.seal(self.sender, msg_id)[1]))


@dataclass
class Window:
    """What one phase counts; only events inside [start, end] count toward rates."""

    start: float = math.inf
    end: float = math.inf
    sent: int = 0
    sent_live_sealed: int = 0
    delivered: int = 0
    replies: int = 0
    confirmations: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def inside(self, moment: float) -> bool:
        return self.start <= moment <= self.end


class Relay:
    """One selector over every link; senders and receivers never swap roles."""

    def __init__(self, server: CpuTimed, pairs: list[Pair]) -> None:
        self.server = server  # whose CPU the phases divide by: one server, or several
        self.pairs = pairs
        self.selector = selectors.DefaultSelector()
        for pair in pairs:
            self.selector.register(pair.sender.sock, selectors.EVENT_READ, (pair, True))
            self.selector.register(pair.receiver.sock, selectors.EVENT_READ, (pair, False))
        self.sent_at: dict[str, float] = {}
        self.window = Window()
        self.dirty: dict[Link, Pair] = {}
        self.ready: set[int] = set()  # indexes of pairs whose window opened

    def send(self, pair: Pair) -> None:
        msg_id, record, presealed = pair.next_record()
        pair.sender.queue_sealed(record)
        pair.in_flight += 1
        now = time.perf_counter()
        self.sent_at[msg_id] = now
        if self.window.inside(now):
            self.window.sent += 1
            self.window.sent_live_sealed += not presealed
        self.dirty[pair.sender] = pair

    def flush(self) -> None:
        for link, pair in self.dirty.items():
            link.flush()
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if link.out else 0)
            if self.selector.get_key(link.sock).events != wanted:
                self.selector.modify(link.sock, wanted, (pair, link is pair.sender))
        self.dirty.clear()

    def poll(self, timeout: float) -> None:
        for key, mask in self.selector.select(timeout):
            pair, is_sender = key.data
            link = pair.sender if is_sender else pair.receiver
            if mask & selectors.EVENT_WRITE:
                self.dirty[link] = pair
            if not mask & selectors.EVENT_READ:
                continue
            try:
                data = link.read_raw()
            except LinkClosed as exc:
                raise BenchError(str(exc)) from None
            arrived = time.perf_counter()
            if not data:
                continue
            messages = link.channel.receive_data(data)
            if is_sender:
                self._on_sender(pair, messages, arrived)
            else:
                self._on_receiver(pair, messages, arrived)
        self.flush()

    def _on_sender(self, pair: Pair, messages: list[Message], arrived: float) -> None:
        window = self.window
        for message in messages:
            if message.type is MessageType.REPLY:
                pair.in_flight -= 1
                window.replies += window.inside(arrived)
            elif message.type is MessageType.MESSAGE_DELIVERED:
                if window.inside(arrived):
                    window.confirmations += len(message.params["deliveries"])
            elif message.type is MessageType.ERROR:
                pair.in_flight -= 1
                code = str(message.params.get("code"))
                window.errors[code] = window.errors.get(code, 0) + 1
        self.ready.add(id(pair))

    def _on_receiver(self, pair: Pair, messages: list[Message], arrived: float) -> None:
        window = self.window
        ids: list[str] = []
        for message in messages:
            if message.type is not MessageType.NEW_MESSAGE:
                continue
            for item in message.params["messages"]:
                msg_id = item["message_id"]
                ids.append(msg_id)
                sent = self.sent_at.pop(msg_id, None)
                if sent is not None and window.inside(sent):
                    window.latencies.append(arrived - sent)
                window.delivered += window.inside(arrived)
        if ids:
            pair.receiver.send(MessageType.ACK_DELIVERY, {"message_ids": ids})
            self.dirty[pair.receiver] = pair

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> int:
        """Wait until every sent message was delivered and answered; returns those missing."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if not self.sent_at and all(pair.in_flight == 0 for pair in self.pairs):
                break
            self.poll(0.05)
        time.sleep(0.2)
        self.poll(0.05)
        return len(self.sent_at)


def run_peak(relay: Relay, window: int, duration: float, warmup: float) -> dict[str, Any]:
    start = time.perf_counter()
    relay.window = Window(start=start + warmup, end=start + warmup + duration)
    relay.ready = {id(pair) for pair in relay.pairs}
    by_id = {id(pair): pair for pair in relay.pairs}
    meter: CpuMeter | None = None
    while (now := time.perf_counter()) < relay.window.end:
        if meter is None and now >= relay.window.start:
            meter = CpuMeter(relay.server)
        for key in relay.ready:
            pair = by_id[key]
            while pair.in_flight < window:
                relay.send(pair)
        relay.ready.clear()
        relay.flush()
        relay.poll(0.05)
    cpu = meter.read() if meter else {}
    missing = relay.drain()
    stats = relay.window
    server_cpu_s = cpu.get("server_cpu_pct", math.nan) / 100 * cpu.get("wall_s", math.nan)
    return {
        "msgs_per_s": round(stats.delivered / duration, 1),
        "msgs_per_server_cpu_s": round(stats.delivered / server_cpu_s, 1) if server_cpu_s else None,
        "replies_per_s": round(stats.replies / duration, 1),
        "delivered_confirmations_per_s": round(stats.confirmations / duration, 1),
        "sent_in_window": stats.sent,
        "sealed_live_in_window": stats.sent_live_sealed,
        "latency_ms_under_load": summarize(stats.latencies),
        "errors": stats.errors,
        "undelivered_after_drain": missing,
        "cpu": cpu,
    }


def run_paced(relay: Relay, rate: float, duration: float, warmup: float) -> dict[str, Any]:
    """Open loop on schedule; sends are skipped (and counted) only past `OVERLOAD_S` of backlog."""
    start = time.perf_counter()
    relay.window = Window(start=start + warmup, end=start + warmup + duration)
    pairs, sent, turn, skipped = relay.pairs, 0, 0, 0
    meter: CpuMeter | None = None
    while (now := time.perf_counter()) < relay.window.end:
        if meter is None and now >= relay.window.start:
            meter = CpuMeter(relay.server)
        due = int((now - start) * rate) - sent
        for _ in range(max(due, 0)):
            if len(relay.sent_at) > rate * OVERLOAD_S:
                skipped += 1
                continue
            relay.send(pairs[turn % len(pairs)])
            turn += 1
        sent += max(due, 0)
        relay.flush()
        next_due = start + (sent + 1) / rate
        relay.poll(min(max(next_due - time.perf_counter(), 0.0), 0.002))
    cpu = meter.read() if meter else {}
    missing = relay.drain()
    stats = relay.window
    achieved = stats.sent / duration
    return {
        "offered_msgs_per_s": rate,
        "achieved_send_rate": round(achieved, 1),
        "skipped_overload": skipped,
        "delivered_per_s": round(stats.delivered / duration, 1),
        "latency_ms": summarize(stats.latencies),
        "errors": stats.errors,
        "undelivered_after_drain": missing,
        "cpu": cpu,
    }


def paced_phase(relay: Relay, rate: float, duration: float) -> dict[str, Any]:
    """Seal what the phase needs (beyond what is left over), then run it."""
    if rate <= 0:
        return {"offered_msgs_per_s": rate, "skipped": "no rate"}
    per_pair = math.ceil(rate * (duration + PACED_WARMUP_S + 0.5) / len(relay.pairs))
    for pair in relay.pairs:
        pair.preseal(max(0, per_pair - len(pair.sealed)))
    return run_paced(relay, rate, duration, PACED_WARMUP_S)


def set_up(server: ServerProcess, pairs: int, envelope_size: int) -> list[Pair]:
    names = user_names("r", 2 * pairs)
    register_users(server, names)
    links = open_sessions(server, names)
    couples = [(links[2 * i], links[2 * i + 1]) for i in range(pairs)]
    befriend(couples)
    result = []
    for sender, receiver in couples:
        envelope = os.urandom(envelope_size)
        params = send_params(message_id(), "user", receiver.name, envelope)
        template = RequestTemplate(MessageType.SEND_MESSAGE, params, "message_id")
        result.append(Pair(sender, receiver, template))
    return result


def combine_references(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The mean of the two reference runs; both are kept, so the drift shows."""

    def mean(key: str) -> float | None:
        values = [run[key] for run in (before, after) if run.get(key)]
        return round(sum(values) / len(values), 1) if values else None

    return {
        "msgs_per_s": mean("msgs_per_s"),
        "msgs_per_server_cpu_s": mean("msgs_per_server_cpu_s"),
        "paced": before.get("paced"),
        "before": before,
        "after": after,
    }


def summary(
    peak: dict[str, Any], latency: dict[str, Any], reference: dict[str, Any]
) -> dict[str, Any]:
    """The headline figures: throughput, per server-CPU-second, ratio, paced latency."""
    own = peak["msgs_per_server_cpu_s"]
    base = reference["msgs_per_server_cpu_s"]
    return {
        "msgs_per_s": peak["msgs_per_s"],
        "msgs_per_server_cpu_s": own,
        "reference_msgs_per_s": reference["msgs_per_s"],
        "reference_msgs_per_server_cpu_s": base,
        "ratio_to_reference": round(own / base, 3) if own and base else None,
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
        "reference_p99_ms": ((reference.get("paced") or {}).get("latency_ms") or {}).get("p99"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=180.0)
    parser.add_argument("--pairs", type=int, default=20, help="sender/receiver pairs")
    parser.add_argument("--window", type=int, default=32, help="requests in flight per sender")
    parser.add_argument("--duration", type=float, default=5.0, help="peak phase seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--rate", type=float, default=5000.0, help="paced msgs/s offered")
    parser.add_argument("--paced-duration", type=float, default=5.0)
    parser.add_argument("--envelope-size", type=int, default=200, help="bytes per envelope")
    parser.add_argument(
        "--preseal", type=int, default=30_000, help="peak-phase requests sealed in advance"
    )
    parser.add_argument(
        "--no-half-peak",
        dest="half_peak",
        action="store_false",
        help="skip the extra paced phase at half the measured peak",
    )
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)


def scenario(args: Any) -> dict[str, Any]:
    with ServerProcess.start(log_level=args.log_level) as server:
        pairs = set_up(server, args.pairs, args.envelope_size)
        payload_size = len(pairs[0].template.encode(1, message_id()))
        # The reference runs right before and right after Uchat's peak phase (the Uchat
        # server sits idle meanwhile, its users set up): a machine whose speed drifts
        # during the run moves both sides of the ratio alike.
        before = measure_reference(
            args.pairs,
            args.window,
            args.duration,
            args.warmup,
            args.rate,
            args.paced_duration,
            payload_size,
        )
        relay = Relay(server, pairs)
        preseal_started = time.perf_counter()
        per_pair = args.preseal // args.pairs + args.window
        for pair in pairs:
            pair.preseal(per_pair)
        preseal_s = time.perf_counter() - preseal_started
        peak = run_peak(relay, args.window, args.duration, args.warmup)
        after = measure_reference(
            args.pairs, args.window, args.duration, args.warmup, 0, 0, payload_size
        )
        reference = combine_references(before, after)
        paced = paced_phase(relay, args.rate, args.paced_duration)
        half_rate = round(peak["msgs_per_s"] / 2, -1)
        half = paced_phase(relay, half_rate, args.paced_duration) if args.half_peak else None
        alive = server.alive()
        tracebacks = server.log_count("Traceback")
    latency = paced["latency_ms"]
    headline = summary(peak, latency, reference)
    ratio = headline["ratio_to_reference"]
    checks = [
        check("relay per server-CPU-second, ratio to the reference", ratio, 0.25, "x", True),
        check("1:1 relay peak throughput", peak["msgs_per_s"], 12_000, "msgs/s", True),
        check(f"p50 latency at {args.rate:g} msgs/s", latency.get("p50", math.nan), 1, "ms", False),
        check(f"p99 latency at {args.rate:g} msgs/s", latency.get("p99", math.nan), 5, "ms", False),
    ]
    params = {k: v for k, v in vars(args).items() if k not in ("log_level", "json")}
    results = {
        "relay": headline,
        "reference": reference,
        "peak": peak,
        "paced": paced,
        "paced_at_half_peak": half,
        "preseal_seconds": round(preseal_s, 2),
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }
    notes = [
        "latency: request written -> its NEW_MESSAGE read off the receiver socket",
        "peak: NEW_MESSAGE deliveries received per second after warm-up; "
        "msgs_per_server_cpu_s divides by the server's CPU time instead of wall time, the "
        "figure least moved by other work on the machine",
        "ratio_to_reference: msgs_per_server_cpu_s over the reference relay's (bench/reference.py)"
        " measured in the same run with the same pairs, window and record size",
    ]
    return emit(SCENARIO, params, results, checks, notes)
