"""Fixtures that run the REAL server: `python run_server.py --port 0 --data-dir <tmp>`.

The server prints `Uchat server listening on HOST:PORT` and `Server fingerprint: HEX`
on stdout; the fixture reads both, hands them to the test, and stops the process with
SIGTERM afterwards. Its log (stderr) goes to a file next to the data folder, so a
failing test can show it and the pipe never fills up.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LISTENING = re.compile(r"^Uchat server listening on (?P<host>\S+):(?P<port>\d+)$")
FINGERPRINT = re.compile(r"^Server fingerprint: (?P<fingerprint>[0-9a-f]{64})$")

#: Settings every test server gets: cheap password hashing, and room for the many
#: accounts a test registers from 127.0.0.1 (tests of the limit set their own).
FAST_ENV = {"UCHAT_SERVER_SCRYPT_N": "1024", "UCHAT_SERVER_REGISTER_PER_ADDRESS": "100000"}


@dataclass
class RunningServer:
    """A server process started by the fixture, and where to reach it."""

    process: subprocess.Popen[str]
    host: str
    port: int
    fingerprint: str
    data_dir: Path
    log_path: Path

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; returns the exit code (kills it if it hangs)."""
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
    data_dir: Path, env: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = ()
) -> RunningServer:
    """Start `run_server.py` on 127.0.0.1 and a free port; wait for its two lines."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    child_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("UCHAT_")  # a developer's settings must not leak in
    }
    child_env.update(FAST_ENV)
    child_env.update(env or {})
    command = [
        sys.executable,
        str(REPO_ROOT / "run_server.py"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *extra_args,
    ]
    with log_path.open("a", encoding="utf-8") as log_file:
        process = subprocess.Popen(
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
        log = log_path.read_text(encoding="utf-8", errors="replace")
        raise RuntimeError(f"server did not start; stdout={lines!r}\nlog:\n{log}")
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
    assert process.stdout is not None
    stdout = process.stdout
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


ServerFactory = Callable[..., RunningServer]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """`start(env=None, name="server", extra_args=())` -> RunningServer; all stopped after."""
    started: list[RunningServer] = []

    def start(
        env: Mapping[str, str] | None = None,
        name: str = "server",
        extra_args: tuple[str, ...] = (),
    ) -> RunningServer:
        running = start_server(tmp_path / name, env, extra_args)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.is_alive():
            running.stop()


@pytest.fixture
def server(server_factory: ServerFactory) -> RunningServer:
    """One real server with default settings (and fast password hashing)."""
    return server_factory()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for a whole test module, for tests that need no fresh state."""
    running = start_server(tmp_path_factory.mktemp("shared") / "server")
    yield running
    if running.is_alive():
        running.stop()
