"""`python -m bench all`: every load scenario in turn, their JSON in bench/results.json.

Each scenario runs as its own process (its own server, its own generator), one after
the other so they never compete for the two cores. A scenario that fails or times
out is recorded with its error and the others still run. The measured-vs-bar table
goes to stderr; the combined JSON object goes to stdout and to `--out`.

    python -m bench all                 # full size, a few minutes on 2 cores
    python -m bench all --quick         # scaled down
    python -m bench all --only relay,fanout
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info
from bench.scenarios import SCENARIOS, SUITE

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
EXTRA_TIMEOUT_S = 60.0


def run_one(name: str, quick: bool) -> dict[str, Any]:
    limit = SCENARIOS[name].time_limit
    command = [sys.executable, "-m", "bench", name, *(["--quick"] if quick else [])]
    command += ["--time-limit", str(limit)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=limit + EXTRA_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"scenario": name, "error": f"no result within {limit + EXTRA_TIMEOUT_S:.0f} s"}
    elapsed = round(time.perf_counter() - started, 1)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = done.stderr.strip().splitlines()[-5:]
        return {"scenario": name, "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    try:
        document: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return {"scenario": name, "error": f"unreadable JSON: {exc}"}
    document["wall_seconds"] = elapsed
    document["args"] = command[3:]
    return document


def table(documents: list[dict[str, Any]]) -> str:
    """Markdown table: scenario, what, measured, bar, verdict."""
    rows = ["| scenario | what | measured | bar | ok |", "|---|---|---|---|---|"]
    for document in documents:
        name = document.get("scenario", "?")
        if "error" in document:
            rows.append(f"| {name} | (did not run) {document['error']} | | | no |")
            continue
        for item in document.get("checks", []):
            measured = f"{item['measured']} {item['unit']}".strip()
            verdict = "yes" if item["ok"] else "**no**"
            rows.append(f"| {name} | {item['what']} | {measured} | {item['bar']} | {verdict} |")
    return "\n".join(rows)


def run_suite(quick: bool, json_path: str | None, rest: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench all")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args(rest)
    names = [n for n in args.only.split(",") if n] or list(SUITE)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    load_at_start = round(os.getloadavg()[0], 2)
    documents = []
    for name in names:
        print(f"bench all: {name} ...", file=sys.stderr, flush=True)
        documents.append(run_one(name, quick))
    combined = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "loadavg_1m_at_start": load_at_start},
        "scale": "quick" if quick else "full",
        "table": table(documents),
        "results": {document.get("scenario", "?"): document for document in documents},
    }
    out = Path(json_path) if json_path else BENCH / "results.json"
    out.write_text(json.dumps(combined, indent=2, ensure_ascii=False) + "\n")
    print(combined["table"], file=sys.stderr)
    print(json.dumps(combined, ensure_ascii=False))
    return 0 if all("error" not in document for document in documents) else 1
