"""`run_server.py --workers N`: N reactor processes on one port, so a host's cores are used.

Each worker is a whole cluster node (server/cluster/node.py): its own reactor, its own
PostgreSQL connection and its own bus connection, so what one worker stores reaches
users held by another exactly as it reaches another host. The kernel spreads new
connections over the workers (SO_REUSEPORT). SQLite cannot be shared by several
processes at this rate, so `--workers` is refused without `server.database_url`.

This supervisor holds no client connection. It starts the workers and, once every one
listens, prints the two lines a single server prints (address, fingerprint). It
restarts a worker that dies, at most `RESTART_LIMIT` times within `RESTART_WINDOW`
seconds; past that it stops the others and exits 1, so a broken deployment is
reported instead of looping. SIGTERM or SIGINT stops every worker gracefully.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from common.config import ServerConfig

log = logging.getLogger(__name__)

RUN_SERVER = Path(__file__).resolve().parents[1] / "run_server.py"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
POLL_SECONDS = 0.2
LISTENING = re.compile(r"^Uchat server listening on (?P<host>\S+):(?P<port>\d+)$")
FINGERPRINT = re.compile(r"^Server fingerprint: (?P<fingerprint>[0-9a-f]{64})$")


class WorkerStartError(RuntimeError):
    """A worker exited or stayed silent instead of printing its two lines."""


def refusal(config: ServerConfig, workers: int) -> str | None:
    """Why `--workers` cannot run with this configuration, or None if it can."""
    if workers < 1:
        return "--workers must be 1 or more"
    if workers > 1 and not config.database_url:
        return (
            "--workers needs cluster mode (server.database_url and server.redis_url, see "
            "docs/deploy.md): several processes cannot share one SQLite file"
        )
    return None


def worker_arguments(argv: Sequence[str]) -> list[str]:
    """The command line minus `--workers N` (a worker is one process)."""
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--workers":
            skip = True
        elif not item.startswith("--workers="):
            out.append(item)
    return out


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[str] | None = None
    deaths: deque[float] = field(default_factory=deque)


class ProcessGroup:
    """The supervisor of N worker processes sharing `host:port`."""

    def __init__(self, config: ServerConfig, argv: Sequence[str], count: int) -> None:
        self._config = config
        self._argv = worker_arguments(argv)
        self._workers = [_Worker(index) for index in range(count)]
        self._stopping = threading.Event()
        self.port = config.port
        self.host = config.host
        self.fingerprint = ""

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker; with port 0 a free port is reserved for all of them."""
        reservation = self._reserve_port() if self.port == 0 else None
        try:
            for worker in self._workers:
                self._spawn(worker)
        except BaseException:
            self.stop()
            raise
        finally:
            if reservation is not None:
                reservation.close()
        log.info(
            "%d workers listening on %s:%d (pids %s)",
            len(self._workers),
            self.host,
            self.port,
            ", ".join(str(pid) for pid in self.pids()),
        )

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None]

    def request_stop(self) -> None:
        """From a signal handler: end `supervise` (which then stops the workers)."""
        self._stopping.set()

    def supervise(self) -> int:
        """Restart dead workers until asked to stop; the exit code of the group."""
        code = 0
        while not self._stopping.wait(POLL_SECONDS):
            if not self._restart_the_dead():
                code = 1
                break
        self.stop()
        return code

    def stop(self) -> None:
        """SIGTERM every worker (each shuts down gracefully), then wait; kill the stuck."""
        running = [w.process for w in self._workers if w.process and w.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        log.info("all workers stopped")

    # -- workers -----------------------------------------------------------------------

    def _reserve_port(self) -> socket.socket:
        """Bind (not listen) a free port with SO_REUSEPORT until the workers hold it."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        holder = socket.socket(family, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((self.host, 0))
        self.port = int(holder.getsockname()[1])
        return holder

    def _environment(self, worker: _Worker) -> dict[str, str]:
        env = dict(os.environ)
        base = self._config.node_id
        if base:  # node ids must differ; without one each worker makes its own
            env["UCHAT_SERVER_NODE_ID"] = f"{base}-w{worker.index}"
        return env

    def _spawn(self, worker: _Worker) -> None:
        command = [sys.executable, str(RUN_SERVER), *self._argv]
        command += ["--port", str(self.port), "--reuse-port", "--parent-pid", str(os.getpid())]
        process = subprocess.Popen(  # noqa: S603 -- our own script under this interpreter
            command,
            env=self._environment(worker),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
        )
        worker.process = process
        lines = _first_lines(process, 2, START_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()  # a worker prints nothing after its two lines
        listening = LISTENING.match(lines[0]) if lines else None
        printed = FINGERPRINT.match(lines[1]) if len(lines) > 1 else None
        if listening is None or printed is None:
            if process.poll() is None:
                process.kill()
            process.wait()
            raise WorkerStartError(f"worker {worker.index} did not start (stdout {lines!r})")
        if self.fingerprint and printed["fingerprint"] != self.fingerprint:
            raise WorkerStartError(f"worker {worker.index} shows another server identity")
        self.fingerprint = printed["fingerprint"]
        log.info("worker %d listening, pid %d", worker.index, process.pid)

    def _restart_the_dead(self) -> bool:
        """Restart each worker that exited; False once one dies too often."""
        for worker in self._workers:
            process = worker.process
            if process is None or process.poll() is None or self._stopping.is_set():
                continue
            now = time.monotonic()
            worker.deaths.append(now)
            while worker.deaths and worker.deaths[0] < now - RESTART_WINDOW:
                worker.deaths.popleft()
            if len(worker.deaths) > RESTART_LIMIT:
                log.error(
                    "worker %d died %d times within %.0f s; stopping the group",
                    worker.index,
                    len(worker.deaths),
                    RESTART_WINDOW,
                )
                return False
            log.warning(
                "worker %d (pid %d) exited with status %s; restarting it",
                worker.index,
                process.pid,
                process.returncode,
            )
            try:
                self._spawn(worker)
            except (WorkerStartError, OSError) as exc:
                log.warning("restarting worker %d failed: %s", worker.index, exc)
        return True


def _first_lines(process: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """The first `count` stdout lines, or fewer if the process dies or times out."""
    stdout = process.stdout
    if stdout is None:
        return []
    found: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for _ in range(count):
            line = stdout.readline()
            if not line:
                break
            found.put(line.rstrip("\n"))
        found.put(None)

    threading.Thread(target=reader, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        try:
            line = found.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
    return lines


def die_with_parent(parent_pid: int) -> bool:
    """In a worker: get SIGTERM when the supervisor dies (Linux); False if it already did."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == parent_pid


def run_group(config: ServerConfig, argv: Sequence[str], count: int) -> int:
    """Start, print the two lines, supervise until SIGTERM/SIGINT; the exit code."""
    group = ProcessGroup(config, argv, count)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping %d workers", signal.Signals(signum).name, count)
        group.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        group.start()
    except (WorkerStartError, OSError) as exc:
        print(f"uchat server: {exc}", file=sys.stderr)
        return 2
    print(f"Uchat server listening on {group.host}:{group.port}", flush=True)
    print(f"Server fingerprint: {group.fingerprint}", flush=True)
    return group.supervise()
