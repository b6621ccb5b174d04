"""Start `run_server.py` as a child process on 127.0.0.1 and a free port.

One launcher for everything that needs a real server from outside: the integration,
GUI and security tests and the `bench` scenarios. The server prints
`Uchat server listening on HOST:PORT` and `Server fingerprint: HEX` on stdout; the
launcher reads both and hands back a `RunningServer`. The server's log (stderr) goes
to a file, never to a pipe nobody reads (that would fill and stall the server).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LISTENING = re.compile(r"^Uchat server listening on (?P<host>\S+):(?P<port>\d+)$")
FINGERPRINT = re.compile(r"^Server fingerprint: (?P<fingerprint>[0-9a-f]{64})$")

#: Settings every launched server gets: cheap password hashing, and room for the many
#: accounts a test registers from 127.0.0.1 (tests of that limit set their own).
FAST_ENV = {"UCHAT_SERVER_SCRYPT_N": "1024", "UCHAT_SERVER_REGISTER_PER_ADDRESS": "100000"}


class ServerStartError(RuntimeError):
    """The server process exited or stayed silent instead of printing its two lines."""


@dataclass
class RunningServer:
    """A server child process, where to reach it, and how to read its costs."""

    process: subprocess.Popen[str]
    host: str
    port: int
    fingerprint: str
    data_dir: Path
    log_path: Path

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_count(self, needle: str) -> int:
        """How many lines of the server log contain `needle` (e.g. 'Traceback')."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return sum(1 for line in handle if needle in line)
        except FileNotFoundError:
            return 0

    def rss_kb(self) -> int:
        """Resident set size (VmRSS) of the server, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise ServerStartError("no VmRSS in /proc status")

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the server so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (graceful shutdown), then wait; kills it if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def start_server(
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    *,
    log_path: Path | None = None,
    port: int = 0,
    fast: bool = True,
) -> RunningServer:
    """Start `run_server.py` on 127.0.0.1 and `port` (0: a free one); wait for its two lines.

    The caller's UCHAT_* environment is dropped (a developer's settings must not leak
    in); `FAST_ENV` (unless `fast` is False, as for `make cluster`) and then `env` are
    applied on top.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir.parent / f"{data_dir.name}.log"
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("UCHAT_")}
    if fast:
        child_env.update(FAST_ENV)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, str(REPO_ROOT / "run_server.py"), "--host", HOST]
    command += ["--port", str(port)]
    command += ["--data-dir", str(data_dir), *extra_args]
    with log_path.open("a", encoding="utf-8") as log_file:
        process = subprocess.Popen(  # noqa: S603 -- our own script under this interpreter
            command,
            cwd=REPO_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    lines = _read_lines(process, count=2)
    listening = LISTENING.match(lines[0]) if lines else None
    printed = FINGERPRINT.match(lines[1]) if len(lines) > 1 else None
    if listening is None or printed is None:
        process.kill()
        process.wait()
        log = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise ServerStartError(f"server did not start; stdout={lines!r}\nlog:\n{log}")
    return RunningServer(
        process=process,
        host=listening["host"],
        port=int(listening["port"]),
        fingerprint=printed["fingerprint"],
        data_dir=data_dir,
        log_path=log_path,
    )


def _read_lines(process: subprocess.Popen[str], count: int) -> list[str]:
    """The first `count` stdout lines, or fewer if the process dies or times out."""
    stdout = process.stdout
    if stdout is None:
        raise ServerStartError("the server's stdout is not a pipe")
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for _ in range(count):
            line = stdout.readline()
            if not line:
                break
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    result: list[str] = []
    while len(result) < count:
        try:
            line = lines.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            break
        if line is None:
            break
        result.append(line)
    return result
