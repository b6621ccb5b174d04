#!/usr/bin/env bash
# Make a checkout ready for every `make` target, on a fresh machine or a used one.
#
#   scripts/bootstrap.sh          .venv with the project installed (editable, test+dev
#                                 extras) and a Python that has Tk
#   scripts/bootstrap.sh --test   the same, plus Xvfb, xauth, a CJK font and an emoji
#                                 font so the GUI tests can draw real windows headless,
#                                 and PostgreSQL + redis-server for the cluster tests
#
# Idempotent and quiet: it prints only when it installs something or something is
# missing. The pip step reruns only when pyproject.toml is newer than .venv/.installed.
# System packages come from apt when apt-get exists and we are root or have
# password-less sudo; elsewhere it explains what to install by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
VENV_PYTHON="$VENV/bin/python"
STAMP="$VENV/.installed"
BASE_PYTHON="${PYTHON:-python3}"
APT_UPDATED=0

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------- apt helpers

can_use_apt() {
    command -v apt-get >/dev/null 2>&1 || return 1
    [ "$(id -u)" -eq 0 ] && return 0
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Run an apt command quietly; show its output only if it fails.
run_apt() {
    local log
    log="$(mktemp)"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
        "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get $* failed"
    fi
    rm -f "$log"
}

apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        run_apt update
        APT_UPDATED=1
    fi
}

apt_install() {
    say "installing with apt: $*"
    apt_update_once
    run_apt install -y --no-install-recommends "$@"
}

# `grep -q` would stop reading early, the writer would die of SIGPIPE and pipefail would
# turn a match into a failure: these greps read all their input.
apt_has_candidate() {
    apt-cache policy "$1" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null
}

dpkg_installed() {
    command -v dpkg-query >/dev/null 2>&1 || return 1
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep 'install ok installed' >/dev/null
}

# ---------------------------------------------------------------- Python and Tk

python_is_recent() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

python_has_tk() {
    "$1" -c 'import tkinter' 2>/dev/null
}

explain_missing_tk() {
    cat >&2 <<'EOF'
bootstrap: warning: this Python has no Tk (`import tkinter` fails), so the client and
bootstrap: the GUI tests cannot run. Install Tk for the Python that made .venv, then
bootstrap: delete .venv and run make again:
bootstrap:   Debian/Ubuntu: sudo apt-get install python3-tk
bootstrap:   Fedora:        sudo dnf install python3-tkinter
bootstrap:   macOS (brew):  brew install python-tk@3.11
bootstrap:   pyenv:         install tk-dev (Debian) or tcl-tk (brew), then pyenv install again
bootstrap: or point PYTHON at a Python 3.11+ that has Tk: make PYTHON=/usr/bin/python3 ...
EOF
}

# Pick the interpreter that will create .venv: $PYTHON (default python3), or Debian's
# own python3 when only that one gets Tk from apt.
choose_base_python() {
    command -v "$BASE_PYTHON" >/dev/null 2>&1 || die "$BASE_PYTHON not found: install Python 3.11+"
    python_is_recent "$BASE_PYTHON" || die "$BASE_PYTHON is older than 3.11: install Python 3.11+"
    python_has_tk "$BASE_PYTHON" && return 0
    if can_use_apt; then
        apt_install python3-tk
        python_has_tk "$BASE_PYTHON" && return 0
    fi
    if [ -x /usr/bin/python3 ] && python_is_recent /usr/bin/python3 \
        && python_has_tk /usr/bin/python3; then
        say "$BASE_PYTHON has no Tk; creating .venv with /usr/bin/python3, which has Tk"
        BASE_PYTHON=/usr/bin/python3
    fi
}

create_venv() {
    say "creating .venv with $BASE_PYTHON"
    if "$BASE_PYTHON" -m venv "$VENV" 2>/dev/null; then
        return 0
    fi
    # Debian's own python3 ships venv support separately.
    rm -rf "$VENV"
    if can_use_apt; then
        apt_install python3-venv
        "$BASE_PYTHON" -m venv "$VENV" && return 0
    fi
    die "'$BASE_PYTHON -m venv' failed: install venv support (Debian: apt-get install python3-venv)"
}

ensure_venv() {
    if [ -x "$VENV_PYTHON" ] && "$VENV_PYTHON" -c 'import sys' 2>/dev/null; then
        return 0
    fi
    if [ -e "$VENV" ]; then
        say "recreating broken .venv"
        rm -rf "$VENV"
    fi
    choose_base_python
    create_venv
}

ensure_project_installed() {
    if [ -f "$STAMP" ] && [ ! "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
        return 0
    fi
    say "installing Python packages: pip install -e '.[test,dev]'"
    (cd "$ROOT" && "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check \
        -e '.[test,dev]')
    touch "$STAMP"
}

ensure_venv_has_tk() {
    python_has_tk "$VENV_PYTHON" && return 0
    # A .venv made from Debian's python3 picks Tk up as soon as python3-tk is installed.
    if can_use_apt && ! dpkg_installed python3-tk; then
        apt_install python3-tk
        python_has_tk "$VENV_PYTHON" && return 0
    fi
    explain_missing_tk
}

# ---------------------------------------------------------------- GUI test system deps

has_cjk_font() {
    if dpkg_installed fonts-wqy-zenhei || dpkg_installed fonts-noto-cjk; then
        return 0
    fi
    command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null)" ]
}

has_emoji_font() {
    dpkg_installed fonts-noto-color-emoji && return 0
    command -v fc-list >/dev/null 2>&1 && fc-list 2>/dev/null | grep -i 'color emoji' >/dev/null
}

ensure_gui_test_deps() {
    local wanted=() font
    command -v Xvfb >/dev/null 2>&1 || wanted+=(xvfb)
    command -v xauth >/dev/null 2>&1 || wanted+=(xauth)
    has_emoji_font || wanted+=(fonts-noto-color-emoji)
    if ! has_cjk_font; then
        if can_use_apt; then
            apt_update_once
            font=fonts-noto-cjk
            apt_has_candidate fonts-wqy-zenhei && font=fonts-wqy-zenhei
            wanted+=("$font")
        else
            wanted+=("a CJK font (fonts-wqy-zenhei or fonts-noto-cjk)")
        fi
    fi
    [ "${#wanted[@]}" -eq 0 ] && return 0
    if can_use_apt; then
        apt_install "${wanted[@]}"
    else
        say "warning: missing ${wanted[*]}; GUI tests need Xvfb to open windows headless."
        say "install them with your system's package manager (needs root)."
    fi
}

# ---------------------------------------------------------------- cluster deps

# Cluster mode (issue 11) and its tests run a private PostgreSQL and redis-server; the
# Debian packages provide the binaries (their system services are never used).
has_postgres() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

ensure_cluster_deps() {
    local wanted=()
    has_postgres || wanted+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || wanted+=(redis-server)
    [ "${#wanted[@]}" -eq 0 ] && return 0
    if can_use_apt; then
        # policy-rc.d: the packages would start system services; the tests never use them.
        apt_install_no_services "${wanted[@]}"
    else
        say "warning: missing ${wanted[*]}; the cluster tests need PostgreSQL and redis-server."
        say "install them with your system's package manager (needs root)."
    fi
}

# Install without letting the packages' maintainer scripts start their system services.
apt_install_no_services() {
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created=1
    fi
    apt_install "$@" || { [ "$created" -eq 1 ] && as_root rm -f "$policy"; return 1; }
    [ "$created" -eq 1 ] && as_root rm -f "$policy"
    return 0
}

# ---------------------------------------------------------------- main

main() {
    local with_test_deps=0 with_cluster_deps=0
    case "${1:-}" in
        "") ;;
        --test) with_test_deps=1 ;;
        --cluster) with_cluster_deps=1 ;;  # `make cluster`: PostgreSQL and redis-server only
        *) die "usage: $0 [--test | --cluster]" ;;
    esac
    ensure_venv
    ensure_project_installed
    ensure_venv_has_tk
    if [ "$with_test_deps" -eq 1 ]; then
        ensure_gui_test_deps
        ensure_cluster_deps
    fi
    if [ "$with_cluster_deps" -eq 1 ]; then
        ensure_cluster_deps
    fi
}

main "$@"
