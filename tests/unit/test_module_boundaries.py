"""Module boundaries the server relies on, checked on the source (no import needed).

- `server.dispatch` and `server.presence` do not import each other (not even for
  type checking): the dispatcher reaches presence through the injected `on_offline`.
- The offline backlog lives in its own module: the login and acknowledgement
  handlers import it, not each other, and the connection carries no backlog state.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(relative: str) -> set[str]:
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_dispatch_and_presence_do_not_import_each_other() -> None:
    assert not {m for m in imported_modules("server/dispatch.py") if "presence" in m}
    assert not {m for m in imported_modules("server/presence.py") if "dispatch" in m}


def test_the_backlog_is_its_own_module() -> None:
    ack = imported_modules("server/handlers/ack_delivery.py")
    assert "server.handlers._backlog" in ack
    assert not {m for m in ack if m.startswith("server.handlers.login")}
    connection = (ROOT / "server/net/connection.py").read_text(encoding="utf-8")
    assert "backlog" not in connection
