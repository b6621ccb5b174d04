"""The reference relay: the least a relay of protected records must do, in plain Python.

Uchat's figures are given as a ratio to this, measured in the same run, because the
same code runs up to 5x faster on one machine than on another. The reference server is
one `selectors` loop in its own process. Per message it checks the HMAC-SHA256 of one
record from the sender and decrypts it (AES-256-CBC, a fresh `Cipher` per record), then
encrypts it under a fresh IV (again a fresh `Cipher`) and MACs it for the receiver,
with the record layout of docs/protocol.md section 1 (sequence number inside the MAC).
No database, no codec, no acknowledgements; writes are flushed once per loop turn.

The load generator is the relay scenario's, cut down: pairs of a sender and a receiver
connection (a 5-byte hello says which pair and which role), records sealed before the
timed phases, a peak phase with a window of records in flight per sender, then a
paced phase (open loop) with latency from write to read of the receiver's record.

    python -m bench reference [--pairs 20] [--duration 5] [--rate 5000]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import math
import multiprocessing
import os
import selectors
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bench.common import (
    HOST,
    BenchError,
    CpuMeter,
    base_parser,
    emit,
    run,
    summarize,
)

SCENARIO = "reference"
HEADER = struct.Struct("!IB16s32s")  # body length, pad length, IV, MAC
MAC_PREFIX = struct.Struct("!QIB")  # seq64, body length, pad length
HELLO = struct.Struct("!IB")  # pair index, role (0 sender, 1 receiver)
BLOCK = 16
READ_SIZE = 256 * 1024
# Fixed bench keys: the reference measures record work, not a key exchange.
UP_ENC, UP_MAC = hashlib.sha256(b"up-enc").digest(), hashlib.sha256(b"up-mac").digest()
DOWN_ENC, DOWN_MAC = hashlib.sha256(b"down-enc").digest(), hashlib.sha256(b"down-mac").digest()
DEFAULT_PAYLOAD = 400  # bytes of plaintext per record, about one SEND_MESSAGE of the relay


def seal(enc_key: bytes, mac_key: bytes, seq: int, plaintext: bytes) -> bytes:
    """One record: pad, AES-256-CBC under a fresh IV with a fresh cipher, HMAC-SHA256."""
    pad = BLOCK - len(plaintext) % BLOCK
    iv = os.urandom(BLOCK)
    encryptor = Cipher(algorithms.AES256(enc_key), modes.CBC(iv)).encryptor()
    body = encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()
    mac = hmac.digest(mac_key, MAC_PREFIX.pack(seq, len(body), pad) + iv + body, "sha256")
    return HEADER.pack(len(body), pad, iv, mac) + body


def open_record(seq: int, pad: int, iv: bytes, mac: bytes, body: bytes) -> bytes:
    """Check the MAC first, then decrypt with a fresh cipher and check every pad byte."""
    expected = hmac.digest(UP_MAC, MAC_PREFIX.pack(seq, len(body), pad) + iv + body, "sha256")
    if not hmac.compare_digest(expected, mac):
        raise ValueError("bad record MAC")
    decryptor = Cipher(algorithms.AES256(UP_ENC), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    if not 1 <= pad <= BLOCK or padded[-pad:] != bytes([pad]) * pad:
        raise ValueError("bad padding")
    return padded[:-pad]


# --- the reference server (its own process) -----------------------------------------


@dataclass
class _Peer:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    pair: int = -1
    role: int = -1
    recv_seq: int = 0
    send_seq: int = 0


class _ReferenceServer:
    """One selectors loop: sender records opened, resealed and queued for the receiver."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        self.receivers: dict[int, _Peer] = {}
        self.dirty: set[int] = set()
        self.peers: dict[int, _Peer] = {}

    def loop(self) -> None:
        while True:
            for key, mask in self.selector.select():
                if key.data is None:
                    self._accept()
                    continue
                peer: _Peer = key.data
                if mask & selectors.EVENT_WRITE:
                    self.dirty.add(peer.sock.fileno())
                if mask & selectors.EVENT_READ:
                    self._read(peer)
            self._flush()

    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = _Peer(sock)
        self.peers[sock.fileno()] = peer
        self.selector.register(sock, selectors.EVENT_READ, peer)

    def _read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(peer)
            return
        inbox = peer.inbox
        inbox += data
        offset = 0
        if peer.role < 0:
            if len(inbox) < HELLO.size:
                return
            peer.pair, peer.role = HELLO.unpack_from(inbox)
            offset = HELLO.size
            if peer.role == 1:
                self.receivers[peer.pair] = peer
        receiver = self.receivers.get(peer.pair) if peer.role == 0 else None
        while len(inbox) - offset >= HEADER.size:
            length, pad, iv, mac = HEADER.unpack_from(inbox, offset)
            end = offset + HEADER.size + length
            if len(inbox) < end:
                break
            body = bytes(inbox[offset + HEADER.size : end])
            offset = end
            plaintext = open_record(peer.recv_seq, pad, iv, mac, body)
            peer.recv_seq += 1
            if receiver is not None:
                receiver.out += seal(DOWN_ENC, DOWN_MAC, receiver.send_seq, plaintext)
                receiver.send_seq += 1
                self.dirty.add(receiver.sock.fileno())
        del inbox[:offset]

    def _flush(self) -> None:
        for fileno in self.dirty:
            peer = self.peers.get(fileno)
            if peer is None:
                continue
            if peer.out:
                try:
                    sent = peer.sock.send(peer.out)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                del peer.out[:sent]
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.out else 0)
            if self.selector.get_key(peer.sock).events != wanted:
                self.selector.modify(peer.sock, wanted, peer)
        self.dirty.clear()

    def _close(self, peer: _Peer) -> None:
        self.selector.unregister(peer.sock)
        self.peers.pop(peer.sock.fileno(), None)
        if self.receivers.get(peer.pair) is peer:
            del self.receivers[peer.pair]
        peer.sock.close()


def serve(pipe: PipeEnd) -> None:
    """Child process entry: listen on a free port, say which, relay until killed."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(1024)
    listener.setblocking(False)
    pipe.send(listener.getsockname()[1])
    pipe.close()
    _ReferenceServer(listener).loop()


class ReferenceProcess:
    """The reference server as a child process, with its CPU time read from /proc."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=False)
        self.process = context.Process(target=serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        if not parent.poll(30.0):
            self.process.kill()
            raise BenchError("reference server did not start")
        self.port: int = parent.recv()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.kill()
        self.process.join(5.0)

    def __enter__(self) -> ReferenceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the load generator ----------------------------------------------------------------


@dataclass
class _Pair:
    sender: socket.socket
    receiver: socket.socket
    sealed: deque[bytes] = field(default_factory=deque)
    sent_at: deque[float] = field(default_factory=deque)
    out: bytearray = field(default_factory=bytearray)
    inbox: bytearray = field(default_factory=bytearray)
    seq: int = 0

    def preseal(self, count: int, payload: bytes) -> None:
        for _ in range(count):
            self.sealed.append(seal(UP_ENC, UP_MAC, self.seq, payload))
            self.seq += 1

    @property
    def in_flight(self) -> int:
        return len(self.sent_at)


@dataclass
class _Window:
    start: float = math.inf
    end: float = math.inf
    delivered: int = 0
    latencies: list[float] = field(default_factory=list)

    def inside(self, moment: float) -> bool:
        return self.start <= moment <= self.end


class _Generator:
    def __init__(self, port: int, pairs: int, payload: bytes) -> None:
        self.payload = payload
        self.pairs: list[_Pair] = []
        self.selector = selectors.DefaultSelector()
        for index in range(pairs):
            sender = _connect(port, index, 0)
            receiver = _connect(port, index, 1)
            pair = _Pair(sender, receiver)
            self.pairs.append(pair)
            self.selector.register(receiver, selectors.EVENT_READ, pair)
        self.window = _Window()
        self.dirty: set[int] = set()

    def send(self, index: int) -> None:
        pair = self.pairs[index]
        if not pair.sealed:
            pair.preseal(64, self.payload)
        pair.out += pair.sealed.popleft()
        pair.sent_at.append(time.perf_counter())
        self.dirty.add(index)

    def flush(self) -> None:
        for index in self.dirty:
            pair = self.pairs[index]
            while pair.out:
                try:
                    sent = pair.sender.send(pair.out)
                except BlockingIOError:
                    break
                del pair.out[:sent]
        self.dirty = {index for index in self.dirty if self.pairs[index].out}

    def poll(self, timeout: float) -> None:
        for key, _mask in self.selector.select(timeout):
            pair: _Pair = key.data
            try:
                data = pair.receiver.recv(READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                raise BenchError("the reference server closed a connection")
            arrived = time.perf_counter()
            inbox = pair.inbox
            inbox += data
            offset = 0
            window = self.window
            while len(inbox) - offset >= HEADER.size:
                length = int.from_bytes(inbox[offset : offset + 4], "big")
                if len(inbox) - offset < HEADER.size + length:
                    break
                offset += HEADER.size + length
                sent = pair.sent_at.popleft()
                if window.inside(sent):
                    window.latencies.append(arrived - sent)
                window.delivered += window.inside(arrived)
            del inbox[:offset]
        self.flush()

    def drain(self, timeout: float = 15.0) -> int:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline and any(p.in_flight for p in self.pairs):
            self.poll(0.05)
        return sum(pair.in_flight for pair in self.pairs)

    def close(self) -> None:
        for pair in self.pairs:
            pair.sender.close()
            pair.receiver.close()
        self.selector.close()


def _connect(port: int, index: int, role: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(HELLO.pack(index, role))
    sock.setblocking(False)
    return sock


def run_peak(
    generator: _Generator, server: ReferenceProcess, window: int, duration: float, warmup: float
) -> dict[str, Any]:
    start = time.perf_counter()
    generator.window = _Window(start=start + warmup, end=start + warmup + duration)
    meter: CpuMeter | None = None
    while (now := time.perf_counter()) < generator.window.end:
        if meter is None and now >= generator.window.start:
            meter = CpuMeter(server)
        for index, pair in enumerate(generator.pairs):
            while pair.in_flight < window:
                generator.send(index)
        generator.flush()
        generator.poll(0.05)
    cpu = meter.read() if meter else {}
    missing = generator.drain()
    delivered = generator.window.delivered
    server_cpu_s = cpu.get("server_cpu_pct", math.nan) / 100 * cpu.get("wall_s", math.nan)
    return {
        "msgs_per_s": round(delivered / duration, 1),
        "msgs_per_server_cpu_s": round(delivered / server_cpu_s, 1) if server_cpu_s else None,
        "undelivered_after_drain": missing,
        "cpu": cpu,
    }


def run_paced(
    generator: _Generator, server: ReferenceProcess, rate: float, duration: float
) -> dict[str, Any]:
    warmup = 0.5
    start = time.perf_counter()
    generator.window = _Window(start=start + warmup, end=start + warmup + duration)
    sent, turn = 0, 0
    meter: CpuMeter | None = None
    count = len(generator.pairs)
    while (now := time.perf_counter()) < generator.window.end:
        if meter is None and now >= generator.window.start:
            meter = CpuMeter(server)
        due = int((now - start) * rate) - sent
        for _ in range(max(due, 0)):
            generator.send(turn % count)
            turn += 1
        sent += max(due, 0)
        generator.flush()
        next_due = start + (sent + 1) / rate
        generator.poll(min(max(next_due - time.perf_counter(), 0.0), 0.002))
    cpu = meter.read() if meter else {}
    missing = generator.drain()
    return {
        "offered_msgs_per_s": rate,
        "latency_ms": summarize(generator.window.latencies),
        "undelivered_after_drain": missing,
        "cpu": cpu,
    }


def measure(
    pairs: int,
    window: int,
    duration: float,
    warmup: float,
    rate: float,
    paced_duration: float,
    payload_size: int = DEFAULT_PAYLOAD,
) -> dict[str, Any]:
    """Peak and paced figures of the reference relay (used by `relay` in the same run)."""
    payload = os.urandom(payload_size)
    with ReferenceProcess() as server:
        generator = _Generator(server.port, pairs, payload)
        try:
            per_pair = max(64, int(60_000 * (duration + warmup) / pairs) // 4)
            for pair in generator.pairs:
                pair.preseal(per_pair, payload)
            peak = run_peak(generator, server, window, duration, warmup)
            paced = run_paced(generator, server, rate, paced_duration) if rate > 0 else None
        finally:
            generator.close()
    return {
        "payload_bytes": payload_size,
        "msgs_per_s": peak["msgs_per_s"],
        "msgs_per_server_cpu_s": peak["msgs_per_server_cpu_s"],
        "peak": peak,
        "paced": paced,
    }


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    results = measure(
        args.pairs,
        args.window,
        args.duration,
        args.warmup,
        args.rate,
        args.paced_duration,
        args.payload_size,
    )
    params = {k: v for k, v in vars(args).items() if k not in ("log_level", "json")}
    notes = ["the reference relay of bench/reference.py; see its docstring"]
    return emit(SCENARIO, params, {"reference": results}, [], notes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=20, help="sender/receiver pairs")
    parser.add_argument("--window", type=int, default=32, help="records in flight per sender")
    parser.add_argument("--duration", type=float, default=5.0, help="peak phase seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--rate", type=float, default=5000.0, help="paced msgs/s offered")
    parser.add_argument("--paced-duration", type=float, default=5.0)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser((__doc__ or "").splitlines()[0], time_limit=120.0)
    add_arguments(parser)
    parser.add_argument("--payload-size", type=int, default=DEFAULT_PAYLOAD)
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)
