"""Suite-wide test setup: import path and Hypothesis profiles.

Only generic things live here; unit/, integration/, gui/ and security/ keep their own
fixtures in their own conftest.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.backends import any_backend, any_db, fresh_pg_dsn, local_postgres, local_redis

# Fixtures shared by unit/ and integration/: private PostgreSQL and redis-server.
__all__ = ["any_backend", "any_db", "fresh_pg_dsn", "local_postgres", "local_redis"]

REPO_ROOT = Path(__file__).resolve().parent.parent

# `pip install -e .` already makes common/client/server importable; this also covers a
# bare checkout run with a plain `pytest`, and makes `tests.<dir>.<module>` helpers
# importable under --import-mode=importlib.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# No deadline anywhere: on a loaded 2-core CI box timing noise would make any per-example
# deadline flaky, and pytest-timeout already bounds a stuck test.
settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=50,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=1000)


def selected_hypothesis_profile(environ: Mapping[str, str]) -> str:
    """HYPOTHESIS_PROFILE wins; otherwise `ci` when CI is set to a true value."""
    explicit = environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    ci = environ.get("CI", "").strip().lower()
    return "ci" if ci not in ("", "0", "false", "no") else "default"


settings.load_profile(selected_hypothesis_profile(os.environ))

_MARKER_BY_TOP_DIR = {"gui": "gui", "integration": "integration"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m "not gui"` works without per-file markers."""
    tests_dir = REPO_ROOT / "tests"
    for item in items:
        try:
            top_dir = Path(item.path).resolve().relative_to(tests_dir).parts[0]
        except (ValueError, IndexError):
            continue
        marker = _MARKER_BY_TOP_DIR.get(top_dir)
        if marker is not None:
            item.add_marker(marker)
