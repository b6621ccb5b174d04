"""Fixtures that run the REAL server (`python run_server.py --port 0 --data-dir <tmp>`).

The launcher (`server.launcher`, shared with the bench) reads the port and the
fingerprint the server prints, hands both to the test, and the fixtures stop the
process with SIGTERM afterwards. Its log (stderr) goes to a file next to the data
folder, so a failing test can show it and the pipe never fills up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from server.launcher import FAST_ENV, REPO_ROOT, RunningServer, start_server

__all__ = ["FAST_ENV", "REPO_ROOT", "RunningServer", "ServerFactory", "start_server"]

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
