"""Shared pieces of the scenario benchmarks (`bench/*.py`), never part of pytest.

- `ServerProcess`: a real `run_server.py` on 127.0.0.1, port 0, a temporary data
  folder and UCHAT_SERVER_SCRYPT_N=1024, with its RSS and CPU time read from /proc.
- `Link`: a lean load-generator connection, a non-blocking socket plus the real
  `SecureChannel`, so the server sees exactly what a client sends.
- `open_sessions`, `pipeline`, `register_users`, `befriend`: set-up helpers that keep
  many requests in flight on many links at once through one selector.
- `summarize`, `check`, `emit`: percentiles, bar checks and the one JSON object each
  scenario prints.

The generator shares two cores with the server, so it is built to be cheap: one
selector, batched writes, records sealed ahead of time where the scenario allows.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import gc
import json
import math
import os
import platform
import queue
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from common.channel import SecureChannel
from common.crypto.certs import build_csr
from common.crypto.keys import generate_user_keys
from common.protocol.message import Message
from common.protocol.opcodes import MessageType

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PASSWORD = "bench-Password-1"
READ_SIZE = 256 * 1024
STARTUP_TIMEOUT = 30.0
SCRYPT_N = 1024

REPLY_TYPES = frozenset({MessageType.REPLY, MessageType.ERROR})


class BenchError(RuntimeError):
    """A scenario could not run as planned (server refused, timed out, died)."""


class LinkClosed(BenchError):
    """The server closed a link (EOF or reset)."""


# --- the server process -------------------------------------------------------------


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@dataclass
class ServerProcess:
    """A `run_server.py` child process and what it printed when it came up."""

    process: subprocess.Popen[str]
    port: int
    fingerprint: str
    data_dir: Path
    log_path: Path
    workdir: tempfile.TemporaryDirectory[str] | None = None
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    def start(
        cls,
        env_overrides: dict[str, str] | None = None,
        log_level: str = "INFO",
        data_dir: Path | None = None,
        workdir: tempfile.TemporaryDirectory[str] | None = None,
    ) -> ServerProcess:
        """Start a server on a free port; returns once it printed its port and fingerprint.

        Logs go to a file in the data folder's parent (a pipe nobody reads would fill
        and stall the server); stdout carries only the two start-up lines.
        """
        if workdir is None and data_dir is None:
            workdir = tempfile.TemporaryDirectory(prefix="uchat-bench-")
        base = Path(workdir.name) if workdir is not None else Path(data_dir or ".").parent
        data = data_dir or base / "server"
        config_path = base / "bench-config.json"
        config_path.write_text("{}\n", encoding="utf-8")  # defaults only, not config.json
        env = dict(os.environ)
        env.update({"UCHAT_CONFIG": str(config_path), "UCHAT_SERVER_SCRYPT_N": str(SCRYPT_N)})
        env.update(env_overrides or {})
        env["PYTHONPATH"] = str(ROOT)
        log_path = base / "server.log"
        command = [sys.executable, str(ROOT / "run_server.py"), "--host", HOST, "--port", "0"]
        command += ["--data-dir", str(data), "--log-level", log_level]
        with open(log_path, "a", encoding="utf-8") as log_file:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
        try:
            port, fingerprint = _await_banner(process, log_path)
        except BaseException:
            process.kill()
            process.wait()
            raise
        return cls(process, port, fingerprint, data, log_path, workdir)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kb(self) -> int:
        """Resident set size (VmRSS) of the server, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError("no VmRSS in /proc status")

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the server so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_count(self, needle: str) -> int:
        """How many lines of the server log contain `needle` (e.g. 'Traceback')."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return sum(1 for line in handle if needle in line)
        except FileNotFoundError:
            return 0

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not go in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def cleanup(self) -> None:
        self.stop()
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _await_banner(process: subprocess.Popen[str], log_path: Path) -> tuple[int, str]:
    """Parse 'listening on host:port' and 'Server fingerprint: hex' from stdout."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    port: int | None = None
    fingerprint: str | None = None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while port is None or fingerprint is None:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise BenchError(f"server did not start (exit {process.poll()}): {tail}")
        try:
            line = lines.get(timeout=min(left, 0.2))
        except queue.Empty:
            continue
        if "listening on" in line:
            port = int(line.strip().rpartition(":")[2])
        elif line.startswith("Server fingerprint:"):
            fingerprint = line.split(":", 1)[1].strip()
    return port, fingerprint


# --- load-generator connections -------------------------------------------------------


class Link:
    """One client connection for load generation: non-blocking, no threads, no copies kept.

    Requests are sealed with the real `SecureChannel`; `queue_sealed` takes records
    sealed in advance (in order) so a timed loop only writes bytes.
    """

    __slots__ = ("channel", "closed", "fd", "in_flight", "name", "next_id", "out", "pushes", "sock")

    def __init__(self, sock: socket.socket, channel: SecureChannel, name: str = "") -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.channel = channel
        self.name = name
        self.next_id = 1
        self.out = bytearray()
        self.in_flight = 0
        self.closed = False
        self.pushes: deque[Message] = deque(maxlen=100_000)

    def __repr__(self) -> str:
        return f"<Link {self.name or self.fd}>"

    def seal(self, kind: MessageType, params: dict[str, Any]) -> tuple[int, bytes]:
        """Take a request id and seal a request, without queueing it."""
        request_id = self.next_id
        self.next_id += 1
        return request_id, self.channel.send(Message(kind, request_id, params))

    def send(self, kind: MessageType, params: dict[str, Any]) -> int:
        """Seal and queue a request; returns its id (call `flush` to write)."""
        request_id, record = self.seal(kind, params)
        self.out += record
        return request_id

    def queue_sealed(self, record: bytes) -> None:
        self.out += record

    def flush(self) -> bool:
        """Write what the socket takes; True when nothing is left queued."""
        out = self.out
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self.closed = True
                raise LinkClosed(f"{self.name}: write failed: {exc}") from None
            del out[:sent]
        return True

    def read_raw(self) -> bytes:
        """Everything the socket has now (b'' if nothing); LinkClosed on EOF or reset."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.closed = True
                raise LinkClosed(f"{self.name}: read failed: {exc}") from None
            if not chunk:
                self.closed = True
                if chunks:
                    break
                raise LinkClosed(f"{self.name}: server closed the connection")
            chunks.append(chunk)
            if len(chunk) < READ_SIZE:
                break
        return b"".join(chunks)

    def receive(self) -> list[Message]:
        """Decode whatever arrived (possibly nothing)."""
        data = self.read_raw()
        return self.channel.receive_data(data) if data else []

    def wait(self, events: int, timeout: float) -> bool:
        poller = select.poll()
        poller.register(self.fd, events)
        return bool(poller.poll(max(0.0, timeout) * 1000))

    def call(
        self, kind: MessageType, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Blocking request -> REPLY params; BenchError on ERROR. Pushes go to `pushes`."""
        reply = self.call_message(kind, params or {}, timeout)
        if reply.type is MessageType.ERROR:
            raise BenchError(f"{kind.name} by {self.name}: {reply.params.get('code')}")
        return reply.params

    def call_message(self, kind: MessageType, params: dict[str, Any], timeout: float) -> Message:
        request_id = self.send(kind, params)
        deadline = time.monotonic() + timeout
        while not self.flush():
            self.wait(select.POLLOUT, deadline - time.monotonic())
        while True:
            for message in self.receive():
                if message.type in REPLY_TYPES and message.request_id == request_id:
                    return message
                self.pushes.append(message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{kind.name} by {self.name}: no answer in {timeout} s")
            self.wait(select.POLLIN, left)

    def wait_push(self, kind: MessageType, timeout: float = 10.0) -> Message:
        """The first push of `kind` (from `pushes` or the socket)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.pushes):
                if message.type is kind:
                    del self.pushes[index]
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {kind.name} push in {timeout} s")
            if self.wait(select.POLLIN, left):
                self.pushes.extend(self.receive())

    def drain(self, quiet: float = 0.05) -> int:
        """Read and drop pushes until the link stays quiet for `quiet` seconds."""
        dropped = len(self.pushes)
        self.pushes.clear()
        while self.wait(select.POLLIN, quiet):
            dropped += len(self.receive())
        return dropped

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


def new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(server: ServerProcess, name: str = "", timeout: float = 10.0) -> Link:
    """One established link (handshake done, not logged in)."""
    return open_sessions(server, [name], login=False, timeout=timeout)[0]


def login(server: ServerProcess, name: str, timeout: float = 30.0) -> Link:
    """One logged-in link for user `name` (password `PASSWORD`)."""
    return open_sessions(server, [name], timeout=timeout)[0]


