#!/usr/bin/env bash
# `make bench`: the micro-benchmarks (codec, record, history), then `python -m bench all`,
# which runs every load scenario once (relay with its reference relay in the same run)
# and writes bench/results.json. Each prints JSON on stdout; the name of what runs goes
# to stderr so stdout stays JSON only. Runs them all even if one fails, then exits
# non-zero if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

failed=()
for scenario in codec record history all; do
    printf 'make bench: python -m bench %s\n' "$scenario" >&2
    "$PY" -m bench "$scenario" "$@" || failed+=("$scenario")
done

if [ "${#failed[@]}" -gt 0 ]; then
    printf 'make bench: failed: %s\n' "${failed[*]}" >&2
    exit 1
fi
