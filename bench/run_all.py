"""Run every scenario benchmark in turn and collect their JSON into bench/results.json.

Each scenario runs as its own process (its own server, its own generator), one after
the other so they never compete for the two cores. A scenario that fails or times
out is recorded with its error and the others still run. The measured-vs-bar table
goes to stderr; the combined JSON object goes to stdout and to `--out`.

    .venv/bin/python bench/run_all.py            # full size, ~2.5 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick    # scaled down, ~1.5 minutes
    .venv/bin/python bench/run_all.py --only relay,fanout
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_info

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
EXTRA_TIMEOUT_S = 60.0

#: name -> (full-size arguments, scaled-down arguments, time limit of the full run)
SCENARIOS: dict[str, tuple[list[str], list[str], float]] = {
    "connections": ([], ["--connections", "2000"], 300.0),
    "relay": ([], ["--pairs", "10", "--duration", "3", "--paced-duration", "3"], 180.0),
    "fanout": ([], ["--members", "200", "--messages", "20"], 240.0),
    "offline_backlog": ([], ["--messages", "3000"], 240.0),
    "file_transfer": ([], ["--size-mb", "16"], 240.0),
    "login_storm": ([], ["--logins", "300"], 180.0),
    "bad_input": ([], ["--connections", "500"], 180.0),
}


def run_one(name: str, quick: bool) -> dict[str, Any]:
    full, scaled, limit = SCENARIOS[name]
    command = [sys.executable, str(BENCH / f"{name}.py"), *(scaled if quick else full)]
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
    document["args"] = command[2:]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--out", default=str(BENCH / "results.json"), help="where to write")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    load_at_start = round(os.getloadavg()[0], 2)
    documents = []
    for name in names:
        print(f"run_all: {name} ...", file=sys.stderr, flush=True)
        documents.append(run_one(name, args.quick))
    combined = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "loadavg_1m_at_start": load_at_start},
        "scale": "quick" if args.quick else "full",
        "table": table(documents),
        "results": {document.get("scenario", "?"): document for document in documents},
    }
    Path(args.out).write_text(json.dumps(combined, indent=2, ensure_ascii=False) + "\n")
    print(combined["table"], file=sys.stderr)
    print(json.dumps(combined, ensure_ascii=False))
    return 0 if all("error" not in document for document in documents) else 1


if __name__ == "__main__":
    sys.exit(main())
