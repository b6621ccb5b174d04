"""Room fan-out: one sender, a room of N members all online; time to the LAST recipient.

Set-up: up to `--seed-above` members, N users register (real CSRs) and log in, one
creates a room and the others join it through the protocol (each join is pushed to
every member already in: O(N^2) pushes). Above that (a 5,000-member room), the users
and the room are seeded into the database before the server starts: the owner's signed
create and one join signed by each member, as `bench.common.seed_room` writes them; then
every member logs in for real. The messages always go through the real server.

Then the sender sends `--messages` room messages, one at a time, each carrying ONE
~200-byte opaque envelope for every member (the server never opens it), and the
bench records when each member's link received it. Per message the figure is the time
from writing the request to the last member's NEW_MESSAGE arriving.

Members acknowledge as the client does (client/core/acks.py): room messages are
acknowledged together, one ACK_DELIVERY per member once the oldest unacknowledged one
waited `DELAY_S` or `MAX_IDS` wait, while the next messages flow (`--ack each` is the
old pattern: every member acknowledges each message once all have it, and the next
message waits for every reply). At the end every member acknowledges what is left and
the bench waits for the replies, so `server_cpu_ms_per_message` (server CPU from the
first measured message to the last reply, divided by the messages) includes all the
acknowledgement work.

Generator bias: all ready sockets are read first (time-stamped right after each
recv), and decrypted afterwards, so the timestamp of the last member is late by at most
one read pass over the members; `read_pass_ms` reports how long that pass took.

    python -m bench fanout [--members 500] [--messages 50] [--ack coalesced|each]
    python -m bench fanout --members 5000 --messages 20
"""

from __future__ import annotations

import math
import os
import selectors
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    BenchError,
    CpuMeter,
    Link,
    ServerProcess,
    base_parser,
    bench_keys,
    check,
    drain_all,
    emit,
    make_room,
    message_id,
    new_workdir,
    open_sessions,
    raise_nofile,
    register_users,
    run,
    seed_room,
    seed_users,
    send_params,
    summarize,
    user_names,
)
from client.core.acks import DELAY_S, MAX_IDS
from common.protocol.opcodes import MessageType

SCENARIO = "fanout"
MESSAGE_TIMEOUT = 10.0
SETTLE_TIMEOUT = 30.0
SPARE_FDS = 200


@dataclass
class Round:
    """One room message on its way to every member."""

    msg_id: str
    sent: float
    arrivals: dict[Link, float] = field(default_factory=dict)
    reply_at: float = math.nan
    read_passes: list[float] = field(default_factory=list)


@dataclass
class Pending:
    """A member's received but not yet acknowledged message ids (as client/core/acks.py)."""

    since: float
    ids: list[str] = field(default_factory=list)


class Fanout:
    def __init__(
        self, sender: Link, members: list[Link], room_id: int, envelope_size: int, ack: str
    ):
        self.sender = sender
        self.members = members
        self.room_id = room_id
        self.ack = ack
        self.envelope = os.urandom(envelope_size)
        self.acks: set[tuple[Link, int]] = set()  # ACK_DELIVERY requests not answered yet
        self.acks_sent = 0
        self.pending: dict[Link, Pending] = {}
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
        while len(current.arrivals) < len(self.members):
            if time.perf_counter() > deadline:
                raise BenchError(
                    f"room message: {len(current.arrivals)}/{len(self.members)} delivered "
                    f"after {timeout} s"
                )
            if self.sender.out:
                self.sender.flush()
            self._read_pass(current, reply_id)
            self._acknowledge_due()
        if self.ack == "each":  # the old pattern: everyone at once, and wait for the replies
            self.settle(timeout)
        return current

    def idle(self, seconds: float) -> None:
        """The gap between messages: replies are read and due acknowledgements go out."""
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            self._read_pass(None, -1, min(left, 0.05))
            self._acknowledge_due()

    def settle(self, timeout: float) -> None:
        """Acknowledge everything received, then wait until the server answered it all."""
        self._acknowledge(list(self.pending))
        deadline = time.perf_counter() + timeout
        while self.acks:
            if time.perf_counter() > deadline:
                raise BenchError(f"{len(self.acks)} ACK_DELIVERY unanswered after {timeout} s")
            self._read_pass(None, -1)

    def _read_pass(self, current: Round | None, reply_id: int, wait: float = 0.05) -> None:
        """Read every ready socket first (timestamps), then decrypt and sort out."""
        events = self.selector.select(wait)
        if not events:
            return
        pass_start = time.perf_counter()
        reads = []
        for key, _ in events:
            link = key.data
            reads.append((link, link.read_raw(), time.perf_counter()))
        if current is not None:
            current.read_passes.append(time.perf_counter() - pass_start)
        for link, data, arrived in reads:
            if not data:
                continue
            for message in link.channel.receive_data(data):
                if link is self.sender:
                    if current is not None and message.request_id == reply_id:
                        current.reply_at = arrived
                        if message.type is MessageType.ERROR:
                            raise BenchError(f"room message refused: {message.params}")
                elif message.type is MessageType.REPLY and (link, message.request_id) in self.acks:
                    self.acks.discard((link, message.request_id))
                elif message.type is MessageType.ERROR:
                    raise BenchError(f"{link.name}: {message.params}")
                elif message.type is MessageType.NEW_MESSAGE:
                    waiting = self.pending.get(link)
                    if waiting is None:
                        waiting = self.pending[link] = Pending(arrived)
                    for item in message.params["messages"]:
                        waiting.ids.append(item["message_id"])
                        if current is not None and item["message_id"] == current.msg_id:
                            current.arrivals[link] = arrived

    def _acknowledge_due(self) -> None:
        if self.ack != "coalesced" or not self.pending:
            return
        now = time.perf_counter()
        self._acknowledge(
            [
                link
                for link, waiting in self.pending.items()
                if now - waiting.since >= DELAY_S or len(waiting.ids) >= MAX_IDS
            ]
        )

    def _acknowledge(self, links: list[Link]) -> None:
        for link in links:
            waiting = self.pending.pop(link)
            self.acks.add((link, link.send(MessageType.ACK_DELIVERY, {"message_ids": waiting.ids})))
            self.acks_sent += 1
            link.flush()


def set_up(
    server: ServerProcess, names: list[str], room_id: int | None
) -> tuple[Link, list[Link], int, dict[str, Any]]:
    """Log everyone in; through the protocol, also register them and build the room."""
    info: dict[str, Any] = {}
    if room_id is None:
        info["registration"] = register_users(server, names)
    started = time.perf_counter()
    links = open_sessions(server, names)
    info["login_seconds"] = round(time.perf_counter() - started, 2)
    sender, others = links[0], links[1:]
    if room_id is None:
        started = time.perf_counter()
        room_id = make_room(sender, others, "fanout bench")
        info["join_seconds"] = round(time.perf_counter() - started, 2)
    info["setup_pushes_drained"] = drain_all(links, quiet=0.5)
    return sender, others, room_id, info


def scenario(args: Any) -> dict[str, Any]:
    if args.members < 2:
        raise BenchError("a room needs at least 2 members")
    if raise_nofile(args.members + SPARE_FDS) < args.members + SPARE_FDS:
        raise BenchError(f"not enough file descriptors for {args.members} links")
    names = user_names("f", args.members)
    workdir = new_workdir()
    room_id: int | None = None
    seeding: dict[str, Any] = {}
    if args.members > args.seed_above:
        seeding["users"] = seed_users(workdir, names, bench_keys())
        room_id, seeding["room"] = seed_room(workdir, names[0], names[1:], "fanout bench")
    # idle_timeout: logging 5,000 members in takes longer than the default allows
    overrides = {"UCHAT_SERVER_IDLE_TIMEOUT": "3600"}
    with ServerProcess.start(overrides, args.log_level, workdir) as server:
        sender, members, room_id, setup = set_up(server, names, room_id)
        setup["seeded"] = seeding or None
        fanout = Fanout(sender, members, room_id, args.envelope_size, args.ack)
        for _ in range(args.warmup):
            fanout.one_round(MESSAGE_TIMEOUT)
            fanout.idle(args.gap)
        fanout.settle(SETTLE_TIMEOUT)
        fanout.acks_sent = 0
        meter = CpuMeter(server)
        cpu_before = server.cpu_seconds()
        rounds = []
        for _ in range(args.messages):
            rounds.append(fanout.one_round(MESSAGE_TIMEOUT))
            fanout.idle(args.gap)
        fanout.settle(SETTLE_TIMEOUT)
        server_cpu_s = server.cpu_seconds() - cpu_before
        cpu = meter.read()
        alive = server.alive()
        tracebacks = server.log_count("Traceback")
    last = [max(r.arrivals.values()) - r.sent for r in rounds]
    first = [min(r.arrivals.values()) - r.sent for r in rounds]
    every = [t - r.sent for r in rounds for t in r.arrivals.values()]
    last_ms = summarize(last)
    per_message_ms = round(1000 * server_cpu_s / args.messages, 2)
    results = {
        "last_recipient_ms": last_ms,
        "first_recipient_ms": summarize(first),
        "every_recipient_ms": summarize(every),
        "sender_reply_ms": summarize(r.reply_at - r.sent for r in rounds),
        "read_pass_ms": summarize(p for r in rounds for p in r.read_passes),
        "server_cpu_ms_per_message": per_message_ms,
        "ack_requests_per_message": round(fanout.acks_sent / args.messages, 1),
        "envelopes_per_message": 1,
        "request_bytes_approx": args.envelope_size + 200,
        "setup": setup,
        "cpu_during_rounds_incl_gaps": cpu,
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check(
            f"room fan-out to {args.members} members, last recipient p99",
            last_ms["p99"],
            50,
            "ms",
            False,
        )
    ]
    params = {k: v for k, v in vars(args).items() if k != "log_level"}
    if args.ack == "coalesced":
        how = (
            f"members acknowledge as the client does: once the oldest unacknowledged room "
            f"message waited {DELAY_S} s or {MAX_IDS} wait, while messages flow"
        )
    else:
        how = "members acknowledge each message once all have it; the next waits for replies"
    notes = [
        f"{how}; {args.gap} s between messages; server CPU per message runs from the first "
        "measured message until every acknowledgement was answered",
    ]
    if seeding:
        notes.append("users and the room's signed log were seeded before the server started")
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=600.0)
    parser.add_argument("--members", type=int, default=500, help="room size, sender included")
    parser.add_argument("--messages", type=int, default=50, help="measured room messages")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured messages first")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between messages")
    parser.add_argument("--envelope-size", type=int, default=200)
    parser.add_argument(
        "--ack",
        choices=("coalesced", "each"),
        default="coalesced",
        help="how members acknowledge: as the client does, or one request per message",
    )
    parser.add_argument(
        "--seed-above",
        type=int,
        default=1000,
        help="larger rooms are seeded into the database instead of joined one by one",
    )
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
