#!/usr/bin/env bash
# `make run`: start a local server on the embedded SQLite default in the background,
# open the client in the foreground, and stop the server when the client exits
# (normally, on error or on Ctrl-C). Expects scripts/bootstrap.sh to have run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
DATA_DIR="data/server"
SERVER_LOG="data/server.log"
READY_WAIT_TENTHS=100  # up to 10 s for the server's first line (its port and fingerprint)

say() { printf 'make run: %s\n' "$*" >&2; }

if ! "$PY" -c 'import tkinter' 2>/dev/null; then
    say "this Python has no Tk, so the client cannot open a window."
    say "install it (Debian/Ubuntu: sudo apt-get install python3-tk), delete .venv, retry."
    exit 1
fi
if [ "$(uname -s)" = "Linux" ] && [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
    say "warning: no DISPLAY is set; the client needs a desktop session to show its window."
fi

mkdir -p "$DATA_DIR"
PYTHONUNBUFFERED=1 "$PY" run_server.py --data-dir "$DATA_DIR" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

stop_server() {
    kill -0 "$SERVER_PID" 2>/dev/null || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 0
        sleep 0.1
    done
    say "server did not stop on SIGTERM; killing it"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq "$READY_WAIT_TENTHS"); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        say "the server exited at start-up; its output:"
        cat "$SERVER_LOG" >&2
        exit 1
    fi
    [ -s "$SERVER_LOG" ] && break
    sleep 0.1
done
sleep 0.3  # let the rest of the start-up banner land
cat "$SERVER_LOG"
say "server running (pid $SERVER_PID, data in $DATA_DIR, log in $SERVER_LOG)"

"$PY" run_client.py
