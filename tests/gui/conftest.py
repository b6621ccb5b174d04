"""GUI fixtures: one Tk root per test module, a real server, headless friends.

The server is started exactly as the integration tests start it (their `start_server`),
so the GUI talks to the real thing. Widgets are driven through their handlers and
`event_generate`; `pump_until` runs the Tk loop until the screen shows what we expect,
with a deadline instead of fixed sleeps.
"""

from __future__ import annotations

import itertools
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import i18n
from client.core.client import ChatClient
from client.ui import App, UiSettings
from tests.integration.conftest import RunningServer, start_server

PASSWORD = "gui-secret-42"
DEFAULT_TIMEOUT = 15.0
_names = itertools.count(1)


def unique_name(prefix: str) -> str:
    """Usernames are global on the shared server; every test gets fresh ones."""
    return f"{prefix}{next(_names)}_{time.monotonic_ns() % 100_000}"


def pump_until(
    root: tk.Misc,
    done: Callable[[], bool],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "the expected state",
    also: Callable[[], object] | None = None,
) -> None:
    """Run the Tk loop (and `also`, e.g. a headless client's events) until `done()`."""
    deadline = time.monotonic() + timeout
    while True:
        root.update()
        if also is not None:
            also()
        if done():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture(scope="module")
def gui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("gui") / "server")
    yield running
    if running.is_alive():
        running.stop()


@pytest.fixture(scope="module")
def tk_root() -> Iterator[tk.Tk]:
    i18n.use_language("en")
    root = tk.Tk()
    root.geometry("+0+0")
    yield root
    root.destroy()


@pytest.fixture
def make_app(
    tk_root: tk.Tk, gui_server: RunningServer, tmp_path: Path
) -> Iterator[Callable[..., App]]:
    """`make_app(**settings)` -> an App on the module's root; closed after the test."""
    apps: list[App] = []

    def make(**overrides: object) -> App:
        values: dict[str, object] = {
            "host": gui_server.host,
            "port": gui_server.port,
            "data_dir": tmp_path / f"gui{len(apps)}",
            "request_timeout": 5.0,
        }
        values.update(overrides)
        app = App(tk_root, UiSettings(**values))  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
    tk_root.update()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


@pytest.fixture
def headless(gui_server: RunningServer, tmp_path: Path) -> Iterator[Callable[..., ChatClient]]:
    """`headless(name, login=True)` -> a registered ChatClient; all closed after."""
    clients: list[ChatClient] = []

    def make(name: str, login: bool = True) -> ChatClient:
        client = ChatClient(gui_server.host, gui_server.port, tmp_path / f"headless-{name}")
        clients.append(client)
        client.register(name, PASSWORD, f"{name}@example.org", "other", 30)
        if login:
            client.login(name, PASSWORD)
        return client

    yield make
    for client in clients:
        client.close()
