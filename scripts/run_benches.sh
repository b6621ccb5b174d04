#!/usr/bin/env bash
# `make bench`: the micro-benchmarks (bench/*_bench.py), then bench/run_all.py, which
# runs every server scenario once and writes bench/results.json. Each prints JSON on
# stdout; the name of the script running goes to stderr so stdout stays JSON only.
# Runs them all even if one fails, then exits non-zero if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

shopt -s nullglob
scripts=(bench/*_bench.py bench/run_all.py)
if [ "${#scripts[@]}" -eq 0 ]; then
    printf 'make bench: no bench/*.py scripts found\n' >&2
    exit 1
fi

failed=()
for script in "${scripts[@]}"; do
    printf 'make bench: %s\n' "$script" >&2
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$script" || failed+=("$script")
done

if [ "${#failed[@]}" -gt 0 ]; then
    printf 'make bench: failed: %s\n' "${failed[*]}" >&2
    exit 1
fi
