"""Client module boundaries, checked on the source (issue 12, item 9).

- Forms and components depend on the `FormHost` protocol, never on `client.ui`: the
  forms <-> ui import circle stays broken, even for type checking.
- `client/core` never imports tkinter: the GUI, tests and benchmarks share it.
- Events are typed: no core module emits a `kind` string with keyword data.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_forms_and_components_never_import_the_application() -> None:
    files = [
        *(ROOT / "client" / "forms").glob("*.py"),
        *(ROOT / "client" / "components").glob("*.py"),
    ]
    assert len(files) > 20
    offenders = [f.name for f in files if "client.ui" in imported_modules(f)]
    assert offenders == []


def test_the_core_never_imports_tkinter() -> None:
    for path in (ROOT / "client" / "core").glob("*.py"):
        assert not {m for m in imported_modules(path) if m.startswith("tkinter")}, path.name


def test_core_events_are_typed_objects() -> None:
    pattern = re.compile(r"""emit\(\s*["']""")
    for path in (ROOT / "client" / "core").glob("*.py"):
        assert not pattern.search(path.read_text(encoding="utf-8")), path.name
