"""Room fan-out: one sender, a room of N members all online; time to the LAST recipient.

Set-up: N users register (real CSRs) and log in, one creates a room, the others join
it. Then the sender sends `--messages` room messages, one at a time, each carrying ONE
~200-byte opaque envelope for every member (the server never opens it), and the
bench records when each member's link received it. Per message the figure is the time
from writing the request to the last member's NEW_MESSAGE arriving.

Members acknowledge as the client does (`client.core.acks`): room messages once the
oldest unacknowledged one is `--ack-delay` seconds old, in one ACK_DELIVERY per member
(`--ack-delay 0`: every message, as clients did before). Acknowledgements are sent only
after every member has the current message, so they never delay its measured delivery;
a message after which members acknowledged waits until the server answered each of
them, then a short gap. The server's CPU over the rounds (acknowledgements included,
the last ones sent before the meter stops) is also given per message.

Generator bias: all ready sockets are read first (time-stamped right after each
recv), and decrypted afterwards, so the timestamp of the last member is late by at most
one read pass over the members; `read_pass_ms` reports how long that pass took.

    python -m bench fanout [--members 500] [--messages 50]
"""

from __future__ import annotations

import argparse
import math
import os
import selectors
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.cluster_common import CpuSum
from bench.common import (
    BenchError,
    CpuMeter,
    CpuTimed,
    Link,
    ServerProcess,
    SignedRoom,
    base_parser,
    check,
    drain_all,
    emit,
    make_room,
    message_id,
    open_sessions,
    register_users,
    run,
    send_params,
    summarize,
    user_names,
)
from client.core.acks import ACK_DELAY_SECONDS
from common.protocol.opcodes import MessageType

SCENARIO = "fanout"
MESSAGE_TIMEOUT = 10.0
ONLINE_JOIN_LIMIT = 1_000  # larger rooms are joined in waves (`join_in_waves`)
JOIN_WAVE = 100


@dataclass
class Round:
    """One room message on its way to every member."""

    msg_id: str
    sent: float
    arrivals: dict[Link, float] = field(default_factory=dict)
    reply_at: float = math.nan
    confirmations: int = 0
    acks_sent: int = 0
    read_passes: list[float] = field(default_factory=list)


class Fanout:
    def __init__(
        self,
        sender: Link,
        members: list[Link],
        room_id: int,
        envelope_size: int,
        ack_delay: float,
    ):
        self.ack_delay = ack_delay
        self.pending: dict[Link, list[str]] = {}  # received, not acknowledged yet
        self.oldest_pending = math.inf  # when the oldest of those arrived
        self.acks_total = 0
        self.sender = sender
        self.members = members
        self.room_id = room_id
        self.envelope = os.urandom(envelope_size)
        self.acks: set[tuple[Link, int]] = set()  # ACK_DELIVERY requests not answered yet
        self.member_names = [sender.name, *(member.name for member in members)]
        self.selector = selectors.DefaultSelector()
        for link in [sender, *members]:
            self.selector.register(link.sock, selectors.EVENT_READ, link)

    def one_round(self, timeout: float) -> Round:
        msg_id = message_id()
        params = send_params(msg_id, "room", self.room_id, self.envelope, members=self.member_names)
        reply_id = self.sender.send(MessageType.SEND_MESSAGE, params)  # sealed before t0
        current = Round(msg_id, time.perf_counter())
        self.sender.flush()
        deadline = current.sent + timeout
        everyone = len(self.members)
        while len(current.arrivals) < everyone or current.confirmations < current.acks_sent:
            if time.perf_counter() > deadline:
                raise BenchError(
                    f"room message: {len(current.arrivals)}/{len(self.members)} delivered, "
                    f"{current.confirmations}/{current.acks_sent} confirmed after {timeout} s"
                )
            if self.sender.out:
                self.sender.flush()
            self._read_pass(current, reply_id)
            if len(current.arrivals) == len(self.members) and self._acknowledgement_due():
                current.acks_sent += self._acknowledge()
        return current

    def finish(self, timeout: float) -> None:
        """Acknowledge what is still pending and wait for the server's answers."""
        last = Round("", time.perf_counter())
        last.acks_sent = self._acknowledge()
        deadline = last.sent + timeout
        while last.confirmations < last.acks_sent:
            if time.perf_counter() > deadline:
                raise BenchError("the last acknowledgements were not answered")
            self._read_pass(last, -1)

    def _acknowledgement_due(self) -> bool:
        return bool(self.pending) and time.perf_counter() - self.oldest_pending >= self.ack_delay

    def _read_pass(self, current: Round, reply_id: int) -> None:
        """Read every ready socket first (timestamps), then decrypt and sort out."""
        events = self.selector.select(0.05)
        if not events:
            return
        pass_start = time.perf_counter()
        reads = []
        for key, _ in events:
            link = key.data
            reads.append((link, link.read_raw(), time.perf_counter()))
        current.read_passes.append(time.perf_counter() - pass_start)
        for link, data, arrived in reads:
            if not data:
                continue
            for message in link.channel.receive_data(data):
                if link is self.sender:
                    if message.request_id == reply_id:
                        current.reply_at = arrived
                        if message.type is MessageType.ERROR:
                            raise BenchError(f"room message refused: {message.params}")
                elif message.type is MessageType.REPLY and (link, message.request_id) in self.acks:
                    self.acks.discard((link, message.request_id))
                    current.confirmations += 1  # a member's ACK_DELIVERY was handled
                elif message.type is MessageType.NEW_MESSAGE:
                    if not self.pending:
                        self.oldest_pending = arrived
                    for item in message.params["messages"]:
                        self.pending.setdefault(link, []).append(item["message_id"])
                        if item["message_id"] == current.msg_id:
                            current.arrivals[link] = arrived

    def _acknowledge(self) -> int:
        """One ACK_DELIVERY per member holding unacknowledged messages; how many."""
        for link, ids in self.pending.items():
            self.acks.add((link, link.send(MessageType.ACK_DELIVERY, {"message_ids": ids})))
            link.flush()
        sent = len(self.pending)
        self.acks_total += sent
        self.pending.clear()
        self.oldest_pending = math.inf
        return sent


def open_spread(
    servers: Sequence[ServerProcess], names: Sequence[str], offset: int = 0
) -> list[Link]:
    """Sessions for `names` in their order, name j on server (offset + j) mod len(servers).

    One server: plain `open_sessions`. Several (cluster nodes): the members alternate.
    """
    count = len(servers)
    if count == 1:
        return open_sessions(servers[0], names)
    links: list[Link | None] = [None] * len(names)
    for index, server in enumerate(servers):
        first = (index - offset) % count
        links[first::count] = open_sessions(server, names[first::count])
    return [link for link in links if link is not None]


def set_up(
    servers: Sequence[ServerProcess], members: int, online_joins: int = ONLINE_JOIN_LIMIT
) -> tuple[Link, list[Link], int, dict[str, Any]]:
    """Register on the first server; the sender (member 0) logs in there, the rest alternate."""
    names = user_names("f", members)
    registration = register_users(servers[0], names)
    if members <= online_joins:
        started = time.perf_counter()
        links = open_spread(servers, names)
        login_s = time.perf_counter() - started
        sender, others = links[0], links[1:]
        started = time.perf_counter()
        room_id = make_room(sender, others, "fanout bench")
        join_s = time.perf_counter() - started
    else:
        sender = open_sessions(servers[0], names[:1])[0]
        started = time.perf_counter()
        room_id = join_in_waves(servers, sender, names[1:], min(JOIN_WAVE, online_joins))
        join_s = time.perf_counter() - started
        started = time.perf_counter()
        others = open_spread(servers, names[1:], offset=1)
        login_s = time.perf_counter() - started
        links = [sender, *others]
    dropped = drain_all(links, quiet=0.5)
    info = {
        "registration": registration,
        "login_seconds": round(login_s, 2),
        "join_seconds": round(join_s, 2),
        "setup_pushes_drained": dropped,
    }
    return sender, others, room_id, info


def join_in_waves(
    servers: Sequence[ServerProcess], founder: Link, names: list[str], size: int
) -> int:
    """Members join `size` at a time and leave again before the next wave logs in.

    Everyone online when someone joins is told (a member event), so 5,000 members
    joining while all online would cost ~12.5 million pushes; offline members read the
    signed log when they come online instead. The founder stays and is drained.
    """
    room = SignedRoom.found(founder, "fanout bench")
    for start in range(0, len(names), size):
        wave = open_spread(servers, names[start : start + size], offset=1 + start)
        for link in wave:
            room.join(link)
        for link in wave:
            link.close()
        drain_all([founder], quiet=0.05)
        founder.call(MessageType.PING, {})  # the founder only reads: not idle to the server
    return room.number


def measure(
    servers: Sequence[ServerProcess], args: Any, cpu: CpuTimed | None = None
) -> dict[str, Any]:
    """Set the room up on `servers`, run the warm-up and the measured rounds: the results.

    `cpu` is what the meter reads (default: the servers' CPU summed).
    """
    if args.members < 2:
        raise BenchError("a room needs at least 2 members")
    sender, members, room_id, setup = set_up(servers, args.members, args.online_joins)
    fanout = Fanout(sender, members, room_id, args.envelope_size, args.ack_delay)
    for _ in range(args.warmup):
        fanout.one_round(MESSAGE_TIMEOUT)
    fanout.finish(MESSAGE_TIMEOUT)
    fanout.acks_total = 0
    meter = CpuMeter(cpu or CpuSum(list(servers)))
    rounds = []
    for _ in range(args.messages):
        rounds.append(fanout.one_round(MESSAGE_TIMEOUT))
        time.sleep(args.gap)
    fanout.finish(MESSAGE_TIMEOUT)
    cpu_read = meter.read()
    alive = all(server.alive() for server in servers)
    tracebacks = sum(server.log_count("Traceback") for server in servers)
    last = [max(r.arrivals.values()) - r.sent for r in rounds]
    first = [min(r.arrivals.values()) - r.sent for r in rounds]
    every = [t - r.sent for r in rounds for t in r.arrivals.values()]
    return {
        "last_recipient_ms": summarize(last),
        "first_recipient_ms": summarize(first),
        "every_recipient_ms": summarize(every),
        "sender_reply_ms": summarize(r.reply_at - r.sent for r in rounds),
        "read_pass_ms": summarize(p for r in rounds for p in r.read_passes),
        "envelopes_per_message": 1,
        "request_bytes_approx": args.envelope_size + 200,
        "setup": setup,
        "cpu_during_rounds_incl_gaps": cpu_read,
        "server_cpu_ms_per_message": round(
            cpu_read["wall_s"] * cpu_read["server_cpu_pct"] * 10 / max(1, len(rounds)), 2
        ),
        "acknowledgements_per_message": round(fanout.acks_total / max(1, len(rounds)), 1),
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }


def scenario(args: Any) -> dict[str, Any]:
    with ServerProcess.start(log_level=args.log_level) as server:
        results = measure([server], args)
    checks = [
        check(
            f"room fan-out to {args.members} members, last recipient p99",
            results["last_recipient_ms"]["p99"],
            50,
            "ms",
            False,
        )
    ]
    params = {k: v for k, v in vars(args).items() if k != "log_level"}
    return emit(SCENARIO, params, results, checks, [acknowledgement_note(args)])


def acknowledgement_note(args: Any) -> str:
    """How the members acknowledged and how the rounds were spaced (for `notes`)."""
    return (
        f"members acknowledge once their oldest unacknowledged message is {args.ack_delay} s "
        "old (0: every message), after the current message reached all; a message "
        f"followed by acknowledgements waits for their answers, then a {args.gap} s gap"
    )


def add_options(parser: argparse.ArgumentParser) -> None:
    """The room's options, shared with `cluster_fanout`."""
    parser.add_argument("--members", type=int, default=500, help="room size, sender included")
    parser.add_argument("--messages", type=int, default=50, help="measured room messages")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured messages first")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between messages")
    parser.add_argument("--envelope-size", type=int, default=200)
    parser.add_argument(
        "--online-joins",
        type=int,
        default=ONLINE_JOIN_LIMIT,
        help="larger rooms are joined in waves of offline members (a 5,000-member room)",
    )
    parser.add_argument(
        "--ack-delay",
        type=float,
        default=ACK_DELAY_SECONDS,
        help="seconds a member's acknowledgement may wait (the client's; 0: every message)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=240.0)
    add_options(parser)
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
