"""Soak: mixed traffic for N minutes; memory, fds and p99 stay flat, nothing lost or doubled.

Users in friend pairs, all members of one room, send 1:1 and room messages at a
steady total `--rate`; every `--reconnect-every` seconds one user drops its connection
(abruptly, as a lost network would) and logs in again a moment later, resending what
the server had not yet acknowledged with the same message ids, as the client's outbox
does; every `--file-every` seconds one user uploads a small attachment, sends it to
its friend, and the friend downloads it and checks its digest. Meanwhile hostile
connections come and go: garbage bytes, idle anonymous connections, wrong-password
logins for an unknown name.

Accounting is end to end: every (message, recipient) pair the server stored must arrive
at that recipient; an arrival after the recipient's acknowledgement was answered is a
duplicate (a re-push of something not yet acknowledged after a reconnect is expected
and counted apart). Every `--sample-every` seconds the server's RSS and open file
descriptors are read and the window's delivery p99 is noted.

    python -m bench soak [--minutes 30] [--users 12] [--rate 100]
    python -m bench soak --quick      # about 20 s
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import selectors
import socket
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    BenchError,
    Link,
    LinkClosed,
    ServerProcess,
    base_parser,
    befriend,
    check,
    connect,
    emit,
    make_room,
    message_id,
    new_attachment_id,
    open_sessions,
    percentile,
    register_users,
    run,
    send_params,
    summarize,
    user_names,
)
from common.protocol.message import Message
from common.protocol.opcodes import MessageType

SCENARIO = "soak"
ROOM = "room"
USER = "user"
RECONNECT_PAUSE = 0.5  # seconds a dropped user stays away
DRAIN_TIMEOUT = 30.0
ATTACHMENT_SIZE = 48 * 1024


@dataclass
class User:
    """One account's current link and what it still owes or expects."""

    name: str
    friend: str = ""
    link: Link | None = None
    generation: int = 0
    back_at: float = 0.0
    unstored: dict[str, dict[str, Any]] = field(default_factory=dict)  # msg id -> params
    pending: dict[int, tuple[str, Any]] = field(default_factory=dict)  # request id -> what


@dataclass
class Ledger:
    """Who must receive what, who did, and how fast."""

    owed: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    arrived: set[tuple[str, str]] = field(default_factory=set)
    confirmed: set[tuple[str, str]] = field(default_factory=set)
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    redelivered: int = 0
    unexpected: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (arrived, seconds)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def expect(self, msg_id: str, recipients: list[str], users: dict[str, User]) -> None:
        now = time.perf_counter()
        for name in recipients:
            self.owed.setdefault((msg_id, name), (now, users[name].generation))

    def arrive(self, msg_id: str, user: User, arrived_at: float) -> None:
        key = (msg_id, user.name)
        if key in self.confirmed:
            self.duplicates += 1
        elif key in self.arrived:
            self.redelivered += 1
        elif key not in self.owed:
            self.unexpected += 1
        else:
            self.arrived.add(key)
            sent_at, generation = self.owed[key]
            if generation == user.generation:  # online throughout: a live latency
                self.latencies.append((arrived_at, arrived_at - sent_at))

    def forget(self, msg_id: str) -> None:
        for key in [key for key in self.owed if key[0] == msg_id]:
            del self.owed[key]

    @property
    def lost(self) -> int:
        return len(self.owed.keys() - self.arrived)


@dataclass
class Hostile:
    """Connections that do no good: garbage, idle anonymous ones, wrong passwords."""

    idle: list[socket.socket] = field(default_factory=list)
    garbage_closed: int = 0
    garbage_open: int = 0
    idle_closed: int = 0
    guesses: dict[str, int] = field(default_factory=dict)


class Soak:
    """The generator: one selector over every user's link, a schedule, the ledger."""

    def __init__(self, server: ServerProcess, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.rng = random.Random(args.seed)
        self.users: dict[str, User] = {}
        self.ledger = Ledger()
        self.hostile = Hostile()
        self.selector = selectors.DefaultSelector()
        self.room_id = 0
        self.downloads: deque[tuple[User, str, int, bytes]] = deque()
        self.files = {"uploaded": 0, "downloaded": 0, "digest_mismatch": 0}
        self.reconnects = 0
        self.samples: list[dict[str, Any]] = []
        self.envelope = os.urandom(args.envelope_size)
        self.digests: dict[str, bytes] = {}  # attachment id -> SHA-256 of what was uploaded

    # --- set-up ---------------------------------------------------------------------------

    def set_up(self) -> None:
        names = user_names("soak", self.args.users)
        register_users(self.server, names, links=2)
        links = open_sessions(self.server, names)
        for index, link in enumerate(links):
            partner = names[index ^ 1] if (index ^ 1) < len(names) else names[0]
            self.users[link.name] = User(link.name, partner, link)
        befriend([(links[i], links[i + 1]) for i in range(0, len(links) - 1, 2)])
        self.room_id = make_room(links[0], links[1:], "soak room")
        for link in links:
            link.drain(0.1)
            self.selector.register(link.sock, selectors.EVENT_READ, self.users[link.name])

    # --- traffic --------------------------------------------------------------------------

    def online(self) -> list[User]:
        return [user for user in self.users.values() if user.link is not None]

    def send_one(self) -> None:
        senders = self.online()
        if not senders:
            return
        user = self.rng.choice(senders)
        msg_id = message_id()
        if self.rng.random() < self.args.room_share:
            recipients = [name for name in self.users if name != user.name]
            params = send_params(
                msg_id, ROOM, self.room_id, self.envelope, members=list(self.users)
            )
        else:
            recipients = [user.friend]
            params = send_params(msg_id, USER, user.friend, self.envelope)
        self.ledger.sent += 1
        self.ledger.expect(msg_id, recipients, self.users)
        user.unstored[msg_id] = params
        self.request(user, MessageType.SEND_MESSAGE, params, ("send", msg_id))

    def request(self, user: User, kind: MessageType, params: dict[str, Any], what: Any) -> None:
        assert user.link is not None
        request_id = user.link.send(kind, params)
        user.pending[request_id] = what
        self.flush(user)

    def flush(self, user: User) -> None:
        if user.link is None:
            return
        try:
            user.link.flush()
        except LinkClosed:
            self.ledger.error("link closed by server")
            self.drop(user)

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            user: User = key.data
            if user.link is None or key.fileobj is not user.link.sock:
                continue
            try:
                messages = user.link.receive()
            except LinkClosed:
                self.ledger.error("link closed by server")
                self.drop(user)
                continue
            self.handle(user, messages, time.perf_counter())

    def handle(self, user: User, messages: list[Message], arrived_at: float) -> None:
        acks: list[str] = []
        for message in messages:
            if message.type is MessageType.NEW_MESSAGE:
                for item in message.params["messages"]:
                    self.ledger.arrive(item["message_id"], user, arrived_at)
                    acks.append(item["message_id"])
                    for attachment_id in item.get("attachments", []):
                        self.queue_download(user, attachment_id)
            elif message.type in (MessageType.REPLY, MessageType.ERROR):
                self.answered(user, message)
        if acks and user.link is not None:
            self.request(user, MessageType.ACK_DELIVERY, {"message_ids": acks}, ("ack", acks))

    def answered(self, user: User, message: Message) -> None:
        kind, value = user.pending.pop(message.request_id, ("", ""))
        if message.type is MessageType.ERROR:
            self.ledger.error(str(message.params.get("code")))
            if kind == "send" and user.unstored.pop(value, None) is not None:
                self.ledger.forget(value)  # refused: nobody is owed it
            return
        if kind == "send" and user.unstored.pop(value, None) is not None:
            self.ledger.stored += 1
        elif kind == "ack":
            self.ledger.confirmed.update((msg_id, user.name) for msg_id in value)

    # --- reconnects -----------------------------------------------------------------------

    def drop(self, user: User) -> None:
        if user.link is None:
            return
        self.selector.unregister(user.link.sock)
        user.link.close()
        user.link = None
        user.pending.clear()
        user.back_at = time.perf_counter() + RECONNECT_PAUSE

    def come_back(self, user: User) -> None:
        """Log in again, take the backlog, resend what the server had not acknowledged."""
        try:
            link = open_sessions(self.server, [user.name], timeout=30.0)[0]
        except BenchError as exc:
            self.ledger.error(f"relogin: {exc}")
            user.back_at = time.perf_counter() + RECONNECT_PAUSE
            return
        self.reconnects += 1
        user.generation += 1
        user.link = link
        self.selector.register(link.sock, selectors.EVENT_READ, user)
        early = list(link.pushes)
        link.pushes.clear()
        self.handle(user, early, time.perf_counter())
        for msg_id, params in list(user.unstored.items()):
            self.request(user, MessageType.SEND_MESSAGE, params, ("send", msg_id))

    def returning(self) -> None:
        now = time.perf_counter()
        for user in self.users.values():
            if user.link is None and user.back_at <= now:
                self.come_back(user)

    # --- files --------------------------------------------------------------------------

    def upload_one(self) -> None:
        senders = self.online()
        if not senders:
            return
        user = self.rng.choice(senders)
        assert user.link is not None
        data = os.urandom(ATTACHMENT_SIZE)
        attachment_id = new_attachment_id()
        digest = hashlib.sha256(data).digest()
        try:
            self.blocking(
                user,
                MessageType.UPLOAD_BEGIN,
                {"attachment_id": attachment_id, "size": len(data), "digest": digest},
            )
            self.blocking(
                user,
                MessageType.UPLOAD_CHUNK,
                {"attachment_id": attachment_id, "offset": 0, "data": data},
            )
        except BenchError as exc:
            self.ledger.error(f"upload: {exc}")
            return
        self.files["uploaded"] += 1
        msg_id = message_id()
        params = send_params(msg_id, USER, user.friend, self.envelope)
        params["attachments"] = [attachment_id]
        self.ledger.sent += 1
        self.ledger.expect(msg_id, [user.friend], self.users)
        user.unstored[msg_id] = params
        self.digests[attachment_id] = digest
        self.request(user, MessageType.SEND_MESSAGE, params, ("send", msg_id))

    def queue_download(self, user: User, attachment_id: str) -> None:
        digest = self.digests.get(attachment_id)
        if digest is not None:
            self.downloads.append((user, attachment_id, user.generation, digest))

    def download_queued(self) -> None:
        while self.downloads:
            user, attachment_id, generation, digest = self.downloads.popleft()
            if user.link is None or user.generation != generation:
                continue  # it comes again with the backlog after the reconnect
            try:
                reply = self.blocking(
                    user,
                    MessageType.DOWNLOAD_CHUNK,
                    {"attachment_id": attachment_id, "offset": 0, "length": ATTACHMENT_SIZE},
                )
            except BenchError as exc:
                self.ledger.error(f"download: {exc}")
                continue
            self.files["downloaded"] += 1
            if hashlib.sha256(reply["data"]).digest() != digest:
                self.files["digest_mismatch"] += 1

    def blocking(self, user: User, kind: MessageType, params: dict[str, Any]) -> dict[str, Any]:
        """One request answered before going on; pushes met meanwhile are handled."""
        assert user.link is not None
        try:
            reply = user.link.call(kind, params, timeout=30.0)
        except LinkClosed:
            self.drop(user)
            raise BenchError("link closed") from None
        finally:
            if user.link is not None:
                early = list(user.link.pushes)
                user.link.pushes.clear()
                self.handle(user, early, time.perf_counter())
        return reply

    # --- hostile connections -------------------------------------------------------------

    def hostile_round(self) -> None:
        """A garbage connection, idle anonymous ones topped up, one wrong-password login."""
        hostile = self.hostile
        with socket.create_connection(self.server.address, timeout=5) as sock:
            sock.sendall(os.urandom(64))
            try:
                closed = sock.recv(4096) == b""
            except (ConnectionResetError, TimeoutError):
                closed = True
            hostile.garbage_closed += closed
            hostile.garbage_open += not closed
        alive = []
        for sock in hostile.idle:
            sock.setblocking(False)
            try:
                gone = sock.recv(4096) == b""
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:
                hostile.idle_closed += 1
                sock.close()
            else:
                alive.append(sock)
        while len(alive) < self.args.idle_anonymous:
            alive.append(socket.create_connection(self.server.address, timeout=5))
        hostile.idle = alive
        try:
            guesser = connect(self.server, "guesser")
            answer = guesser.call_message(
                MessageType.LOGIN, {"username": "nobody-here", "password": "guess"}, 30.0
            )
            code = str(answer.params.get("code", "accepted"))
            hostile.guesses[code] = hostile.guesses.get(code, 0) + 1
            guesser.close()
        except BenchError as exc:
            hostile.guesses[str(exc)] = hostile.guesses.get(str(exc), 0) + 1

    def close_hostile(self) -> None:
        for sock in self.hostile.idle:
            sock.close()
        self.hostile.idle = []

    # --- sampling -------------------------------------------------------------------------

    def sample(self, started: float, window_start: float) -> None:
        now = time.perf_counter()
        window = sorted(lat for at, lat in self.ledger.latencies if at >= window_start)
        self.samples.append(
            {
                "t_s": round(now - started, 1),
                "rss_kb": self.server.rss_kb(),
                "fds": len(os.listdir(f"/proc/{self.server.pid}/fd")),
                "delivered": len(window),
                "p50_ms": round(percentile(window, 50) * 1000, 2) if window else None,
                "p99_ms": round(percentile(window, 99) * 1000, 2) if window else None,
            }
        )

    # --- the run ------------------------------------------------------------------------

    def run(self) -> float:
        args = self.args
        started = time.perf_counter()
        end = started + args.minutes * 60
        due = {"reconnect": args.reconnect_every, "file": args.file_every}
        due |= {"hostile": args.hostile_every, "sample": args.sample_every}
        next_at = {name: started + every for name, every in due.items()}
        window_start = started
        sent = 0
        self.sample(started, started)
        while (now := time.perf_counter()) < end:
            for _ in range(int((now - started) * args.rate) - sent):
                self.send_one()
                sent += 1
            if now >= next_at["reconnect"]:
                online = self.online()
                if online:
                    self.drop(self.rng.choice(online))
                next_at["reconnect"] += due["reconnect"]
            if now >= next_at["file"]:
                self.upload_one()
                next_at["file"] += due["file"]
            if now >= next_at["hostile"]:
                self.hostile_round()
                next_at["hostile"] += due["hostile"]
            if now >= next_at["sample"]:
                self.sample(started, window_start)
                window_start = now
                next_at["sample"] += due["sample"]
            self.returning()
            self.download_queued()
            next_send = started + (sent + 1) / args.rate
            self.poll(min(max(next_send - time.perf_counter(), 0.0), 0.01))
        return time.perf_counter() - started

    def settle(self) -> None:
        """Bring everyone back and wait until every stored message has arrived.

        Then everyone logs in once more: whatever the server still holds undelivered
        comes with that login, so a delivery counts as lost only if the server no
        longer has it either; anything arriving again now is counted too.
        """
        self.close_hostile()
        self._drain(DRAIN_TIMEOUT)
        for user in self.users.values():
            self.drop(user)
        self._drain(DRAIN_TIMEOUT)
        self.poll(0.3)  # any late duplicate would show up here

    def _drain(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for user in self.users.values():
                if user.link is None:
                    user.back_at = 0.0
            self.returning()
            self.download_queued()
            self.poll(0.05)
            busy = any(user.unstored or user.pending for user in self.users.values())
            if not busy and self.ledger.lost == 0 and all(u.link for u in self.users.values()):
                break

    def close(self) -> None:
        for user in self.users.values():
            if user.link is not None:
                user.link.close()
        self.selector.close()


def flatness(samples: list[dict[str, Any]], warmup_share: float) -> dict[str, Any]:
    """RSS and fd drift after the warm-up, and how the windows' p99 spread."""
    steady = samples[max(1, int(len(samples) * warmup_share)) :] or samples
    first, last = steady[0], steady[-1]
    p99s = [s["p99_ms"] for s in steady if s["p99_ms"] is not None]
    minutes = max((last["t_s"] - first["t_s"]) / 60, 1e-9)
    return {
        "steady_from_s": first["t_s"],
        "rss_kb_steady_start": first["rss_kb"],
        "rss_kb_end": last["rss_kb"],
        "rss_growth_kb": last["rss_kb"] - first["rss_kb"],
        "rss_growth_kb_per_min": round((last["rss_kb"] - first["rss_kb"]) / minutes, 1),
        "fds_steady_start": first["fds"],
        "fds_end": last["fds"],
        "fds_max": max(s["fds"] for s in steady),
        "window_p99_ms_median": round(statistics.median(p99s), 2) if p99s else None,
        "window_p99_ms_max": max(p99s) if p99s else None,
    }


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    with ServerProcess.start(None, args.log_level) as server:
        soak = Soak(server, args)
        try:
            soak.set_up()
            idle_rss = server.rss_kb()
            seconds = soak.run()
            soak.sample(0.0, 0.0)  # not a window: just the end-of-run figures
            soak.settle()
            final_rss = server.rss_kb()
            alive = server.alive()
            tracebacks = server.log_count("Traceback")
        finally:
            soak.close()
    return report(args, soak, seconds, idle_rss, final_rss, alive, tracebacks)


def report(
    args: argparse.Namespace,
    soak: Soak,
    seconds: float,
    idle_rss: int,
    final_rss: int,
    alive: bool,
    tracebacks: int,
) -> dict[str, Any]:
    ledger, hostile = soak.ledger, soak.hostile
    shape = flatness(soak.samples[:-1], args.warmup_share)
    all_latencies = [lat for _, lat in ledger.latencies]
    median_p99 = shape["window_p99_ms_median"] or 0.0
    p99_ratio = (shape["window_p99_ms_max"] or 0.0) / median_p99 if median_p99 else float("nan")
    results = {
        "seconds": round(seconds, 1),
        "messages_sent": ledger.sent,
        "messages_stored": ledger.stored,
        "deliveries_owed": len(ledger.owed),
        "deliveries_lost": ledger.lost,
        "deliveries_duplicated": ledger.duplicates,
        "redelivered_after_reconnect": ledger.redelivered,
        "unexpected_deliveries": ledger.unexpected,
        "live_delivery_ms": summarize(all_latencies),
        "p99_max_over_median_window": round(p99_ratio, 2),
        "reconnects": soak.reconnects,
        "files": soak.files,
        "errors": ledger.errors,
        "hostile": {
            "garbage_closed": hostile.garbage_closed,
            "garbage_left_open": hostile.garbage_open,
            "idle_anonymous_closed_by_server": hostile.idle_closed,
            "wrong_password_answers": hostile.guesses,
        },
        "server_rss_kb_after_setup": idle_rss,
        "server_rss_kb_at_end": final_rss,
        "flatness": shape,
        "samples": soak.samples,
        "server_alive": alive,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check("deliveries lost", ledger.lost, 0, "", False),
        check("deliveries duplicated", ledger.duplicates, 0, "", False),
        check("attachments corrupted", soak.files["digest_mismatch"], 0, "", False),
        check(
            "RSS growth after warm-up", shape["rss_growth_kb"] / 1024, args.rss_bar_mb, "MiB", False
        ),
        check(
            "fd growth after warm-up",
            shape["fds_end"] - shape["fds_steady_start"],
            args.idle_anonymous + 2,
            "fds",
            False,
        ),
        check("worst window p99 / median window p99", p99_ratio, 3.0, "x", False),
        check("server alive, no tracebacks", int(alive and tracebacks == 0), 1, "", True),
    ]
    params = {key: value for key, value in vars(args).items() if key not in ("time_limit", "json")}
    return emit(SCENARIO, params, results, checks)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=3 * 3600.0)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=12, help="even: friend pairs")
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s in all")
    parser.add_argument("--room-share", type=float, default=0.2, help="share sent to the room")
    parser.add_argument("--reconnect-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--file-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--hostile-every", type=float, default=3.0, help="seconds")
    parser.add_argument("--idle-anonymous", type=int, default=3)
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--warmup-share", type=float, default=0.25)
    parser.add_argument("--rss-bar-mb", type=float, default=16.0)
    parser.add_argument("--envelope-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    if args.users < 2:
        parser.error("--users must be at least 2")
    return run(SCENARIO, lambda: scenario(args), args)
