"""End to end with real clients: send-to-displayed latency at a given rate.

Two real `ChatClient`s (the GUI's headless core: end-to-end sealing, local history,
outbox, acknowledgements) register, log in and become friends on a real server. The
sender calls `send_text` on schedule (open loop, `--rate` per second); the receiver's
events are drained the way the Tk pump drains them (`process_events`), and a message
counts as displayed when its `message` event reaches the receiver's listener. Latency
is from the `send_text` call to that moment, so it includes sealing, the sender's
outbox and store, the server, the receiver's store, opening and the event queue. The
sender's own delivery status (`delivered`) is counted too.

    python -m bench e2e [--messages 500] [--rate 50]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    PASSWORD,
    BenchError,
    CpuMeter,
    ServerProcess,
    base_parser,
    check,
    emit,
    run,
    summarize,
)
from client.core import ChatClient
from client.core.event_types import (
    ContactAdded,
    Event,
    FriendRequest,
    MessageReceived,
    MessageStatusChanged,
)
from common.crypto.keys import KdfParams

SCENARIO = "e2e"
FAST_KEYS = KdfParams(n=2**10)
WAIT_S = 15.0


def make_client(server: ServerProcess, root: Path, name: str) -> ChatClient:
    client = ChatClient(
        server.host,
        server.port,
        root / name,
        server.fingerprint,
        timeout=10.0,
        auto_reconnect=False,
        key_kdf=FAST_KEYS,
    )
    client.register(name, PASSWORD, f"{name}@bench.example.org", "other", 30)
    client.login(name, PASSWORD)
    return client


def befriend(alice: ChatClient, bob: ChatClient, names: tuple[str, str]) -> None:
    alice.add_friend(names[1])
    bob.wait_for_event(lambda e: isinstance(e, FriendRequest) and e.username == names[0], WAIT_S)
    bob.answer_friend_request(names[0], True)
    for client, other in ((alice, names[1]), (bob, names[0])):
        client.wait_for_event(added(other), WAIT_S)


def added(contact_id: str) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, ContactAdded) and event.contact.id == contact_id


class Watch:
    """Listeners of both clients: when each message was displayed and confirmed."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}
        self.displayed: dict[str, float] = {}
        self.delivered: dict[str, float] = {}

    def on_receiver(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self.displayed.setdefault(event.message.message_id, time.perf_counter())

    def on_sender(self, event: Event) -> None:
        if isinstance(event, MessageStatusChanged) and event.status == "delivered":
            self.delivered.setdefault(event.message_id, time.perf_counter())


class Pump(threading.Thread):
    """Drains one client's events every 0.5 ms until stopped (its listeners run here)."""

    def __init__(self, client: ChatClient) -> None:
        super().__init__(name="bench-receiver-pump", daemon=True)
        self._client = client
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self._client.process_events(10_000)
            time.sleep(0.0005)
        self._client.process_events(10_000)

    def stop(self) -> None:
        self._halt.set()
        self.join(5.0)


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    with (
        ServerProcess.start(log_level=args.log_level) as server,
        tempfile.TemporaryDirectory(prefix="uchat-bench-clients-") as root,
    ):
        suffix = f"{int(time.time() * 1000) % 10**8}"
        names = (f"ea_{suffix}", f"eb_{suffix}")
        alice = make_client(server, Path(root), names[0])
        bob = make_client(server, Path(root), names[1])
        try:
            befriend(alice, bob, names)
            watch = Watch()
            alice.add_listener(watch.on_sender)
            bob.add_listener(watch.on_receiver)
            alice.process_events(10_000)
            bob.process_events(10_000)
            meter = CpuMeter(server)
            # The receiver's "UI thread": drains its events on its own, as the other
            # person's app would, so a sender running late cannot delay the display.
            pump = Pump(bob)
            pump.start()
            started = time.perf_counter()
            sent = 0
            try:
                while sent < args.messages:
                    now = time.perf_counter()
                    due = min(args.messages, int((now - started) * args.rate) + 1)
                    while sent < due:
                        called = time.perf_counter()
                        message = alice.send_text(names[1], f"bench message {sent}")
                        watch.sent_at[message.message_id] = called
                        sent += 1
                    alice.process_events(10_000)
                    time.sleep(0.0005)
                send_s = time.perf_counter() - started
                deadline = time.perf_counter() + WAIT_S
                while time.perf_counter() < deadline and (
                    len(watch.displayed) < sent or len(watch.delivered) < sent
                ):
                    alice.process_events(10_000)
                    time.sleep(0.0005)
            finally:
                pump.stop()
            cpu = meter.read()
        finally:
            alice.close()
            bob.close()
        tracebacks = server.log_count("Traceback")
    displayed = [watch.displayed[i] - t for i, t in watch.sent_at.items() if i in watch.displayed]
    delivered = [watch.delivered[i] - t for i, t in watch.sent_at.items() if i in watch.delivered]
    if not displayed:
        raise BenchError("no message was displayed")
    latency = summarize(displayed)
    results = {
        "sent": sent,
        "achieved_send_rate": round(sent / send_s, 1),
        # send_text seals and stores before it returns: a sender this slow cannot
        # offer the rate asked for, and the figures below are then those of a backlog.
        "sender_kept_up": sent / send_s >= 0.9 * args.rate,
        "displayed": len(displayed),
        "send_to_displayed_ms": latency,
        "send_to_delivered_status_ms": summarize(delivered),
        "cpu": cpu,
        "server_tracebacks": tracebacks,
    }
    checks = [
        check("messages displayed", len(displayed), sent, "", True),
        check(
            f"send-to-displayed p99 at {args.rate:g} msgs/s",
            latency.get("p99", math.nan),
            50,
            "ms",
            False,
        ),
    ]
    params = {k: v for k, v in vars(args).items() if k not in ("log_level", "json")}
    notes = [
        "two real ChatClients; displayed = the receiver's `message` event reached its "
        "listener through process_events (as the Tk pump drains it, but polled every 0.5 ms)",
        "cpu.generator_cpu_pct is both clients (sealing, opening, local stores)",
    ]
    return emit(SCENARIO, params, results, checks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser((__doc__ or "").splitlines()[0], time_limit=180.0)
    parser.add_argument("--messages", type=int, default=500, help="messages sent")
    parser.add_argument("--rate", type=float, default=50.0, help="msgs/s offered")
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
