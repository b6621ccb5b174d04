"""Every `python -m bench` scenario, run tiny, so the bench cannot rot.

Not a measurement (speed is never asserted here): each scenario must start its
server(s), run every phase, and write a JSON document without an `error`; the load
scenarios must report their results and checks, and `relay` its ratio to the
reference measured in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS
from server.launcher import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_bench(name: str, out: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "bench", name, *SCENARIOS[name].tiny, "--json", str(out)]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}"
    document: dict[str, object] = json.loads(out.read_text())
    return document


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"relay"}))
def test_scenario_runs_tiny(name: str, tmp_path: Path) -> None:
    document = run_bench(name, tmp_path / f"{name}.json")
    assert "error" not in document
    if SCENARIOS[name].server:
        assert document["scenario"] == name
        assert document["results"]
        assert isinstance(document["checks"], list)


def test_relay_reports_the_ratio_to_the_reference(tmp_path: Path) -> None:
    document = run_bench("relay", tmp_path / "relay.json")
    assert "error" not in document
    results = document["results"]
    assert isinstance(results, dict)
    relay = results["relay"]
    for key in ("msgs_per_s", "msgs_per_server_cpu_s", "ratio_to_reference", "p50_ms", "p99_ms"):
        assert relay[key] is not None and relay[key] > 0, key
    reference = results["reference"]["msgs_per_server_cpu_s"]
    expected = relay["msgs_per_server_cpu_s"] / reference
    assert relay["ratio_to_reference"] == pytest.approx(expected, rel=0.01)
