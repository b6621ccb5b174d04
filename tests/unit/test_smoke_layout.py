"""The fixed top level exists, and the layering rules of DESIGN.md hold.

`common/` must stay pure (no sockets, threads or Tk) so protocol and crypto can be
fuzzed and tested without a network; `client/core/` must never touch Tk so tests and
benchmarks can drive the same ChatClient as the GUI. Imports are read with `ast`, so
nothing under test is imported (and no side effect can hide a violation).
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.conftest import selected_hypothesis_profile

REPO_ROOT = Path(__file__).resolve().parents[2]

TOP_LEVEL_FILES = (
    "run_client.py",
    "run_server.py",
    "config.json",
    "README.md",
    "pyproject.toml",
    "Makefile",
    ".ci/run",
)
TOP_LEVEL_PACKAGES = ("client", "server", "common")

# Networking, threads and Tk: what makes code need a network, a scheduler or a screen.
FORBIDDEN_IN_COMMON = frozenset(
    {
        "socket",
        "selectors",
        "ssl",
        "asyncio",
        "threading",
        "_thread",
        "concurrent.futures",
        "multiprocessing",
        "tkinter",
        "_tkinter",
    }
)
FORBIDDEN_IN_CLIENT_CORE = frozenset({"tkinter", "_tkinter", "PIL.ImageTk"})


def imported_modules(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """Yield (line, dotted name) for every absolute import, static or by string.

    `from a import b` yields both `a` and `a.b`, since `b` may be a submodule
    (`from PIL import ImageTk`). `__import__("x")` and `importlib.import_module("x")`
    with a literal name count too.
    """
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def is_forbidden(module: str, forbidden: frozenset[str]) -> bool:
    """True if `module` is a forbidden module or inside one (`tkinter.ttk`)."""
    return any(module == name or module.startswith(name + ".") for name in forbidden)


def violations(package_dir: Path, forbidden: frozenset[str]) -> list[str]:
    """Every `path:line: module` under package_dir that imports a forbidden module."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for line, module in imported_modules(source, str(path)):
            if is_forbidden(module, forbidden):
                found.append(f"{path.relative_to(package_dir.parent)}:{line}: {module}")
    return found


@pytest.mark.parametrize("name", TOP_LEVEL_FILES)
def test_top_level_file_exists(name: str) -> None:
    assert (REPO_ROOT / name).is_file(), f"missing top-level file {name}"


@pytest.mark.parametrize("name", (*TOP_LEVEL_PACKAGES, "tests"))
def test_top_level_directory_exists(name: str) -> None:
    assert (REPO_ROOT / name).is_dir(), f"missing top-level directory {name}/"


@pytest.mark.parametrize("name", TOP_LEVEL_PACKAGES)
def test_top_level_package_is_a_regular_package(name: str) -> None:
    assert (REPO_ROOT / name / "__init__.py").is_file()


def test_config_json_is_an_object() -> None:
    config = json.loads((REPO_ROOT / "config.json").read_text(encoding="utf-8"))
    assert isinstance(config, dict)


def test_common_imports_no_socket_thread_or_tk() -> None:
    assert list((REPO_ROOT / "common").rglob("*.py")), "common/ has no modules to check"
    assert violations(REPO_ROOT / "common", FORBIDDEN_IN_COMMON) == []


def test_client_core_never_imports_tkinter() -> None:
    assert list((REPO_ROOT / "client" / "core").rglob("*.py")), "client/core/ is empty"
    assert violations(REPO_ROOT / "client" / "core", FORBIDDEN_IN_CLIENT_CORE) == []


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import threading as t",
        "from tkinter import ttk",
        "import tkinter.ttk",
        "from concurrent.futures import ThreadPoolExecutor",
        "if True:\n    import selectors",
        "def f():\n    import _thread",
        "__import__('socket')",
        "import importlib\nimportlib.import_module('tkinter')",
    ],
)
def test_checker_catches_forbidden_imports(source: str) -> None:
    modules = [module for _, module in imported_modules(source)]
    assert any(is_forbidden(module, FORBIDDEN_IN_COMMON) for module in modules)


@pytest.mark.parametrize(
    "source",
    [
        "import struct",
        "from socketserver_like import x",
        "import threadingx",
        "from . import socket",
        "from common.protocol import framing",
        "name = 'socket'",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    modules = [module for _, module in imported_modules(source)]
    assert not any(is_forbidden(module, FORBIDDEN_IN_COMMON) for module in modules)


def test_violations_reports_file_line_and_module(tmp_path: Path) -> None:
    core = tmp_path / "core"
    (core / "sub").mkdir(parents=True)
    (core / "models.py").write_text("import json\n", encoding="utf-8")
    (core / "sub" / "media.py").write_text(
        '"""Doc."""\n\nfrom PIL import Image, ImageTk\n', encoding="utf-8"
    )
    assert violations(core, FORBIDDEN_IN_CLIENT_CORE) == ["core/sub/media.py:3: PIL.ImageTk"]


@pytest.mark.parametrize(
    ("environ", "profile"),
    [
        ({}, "default"),
        ({"CI": "true"}, "ci"),
        ({"CI": "1"}, "ci"),
        ({"CI": "false"}, "default"),
        ({"CI": ""}, "default"),
        ({"CI": "true", "HYPOTHESIS_PROFILE": "thorough"}, "thorough"),
    ],
)
def test_hypothesis_profile_follows_the_environment(environ: dict[str, str], profile: str) -> None:
    assert selected_hypothesis_profile(environ) == profile


def test_the_selected_hypothesis_profile_is_loaded() -> None:
    loaded = settings.get_profile(selected_hypothesis_profile(os.environ))
    current = settings()
    assert current.max_examples == loaded.max_examples
    assert current.deadline is None
