"""`make cluster` (`python -m server.cluster.local_cluster`): a cluster on this machine.

Starts a private PostgreSQL (initdb in `<root>/pg`, a free port; kept between runs, so
accounts survive), a private redis-server and two nodes on 127.0.0.1, then prints the
settings that point two clients at them. Ctrl-C (or SIGTERM) stops the nodes, then
Redis and PostgreSQL. Never the system services: see local_services.py.

The nodes get the caller's `UCHAT_SERVER_*` settings (e.g. a cheaper scrypt for a
quick try), but never their cluster settings, which this command owns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from server.cluster.local_services import LocalPostgres, LocalRedis, LocalServiceError, private_root
from server.launcher import RunningServer, ServerStartError, start_server

DATABASE = "uchat"
DEFAULT_ROOT = Path("data/cluster")
NODE_NAMES = ("a", "b")
OWNED_SETTINGS = (
    "UCHAT_SERVER_DATABASE_URL",
    "UCHAT_SERVER_REDIS_URL",
    "UCHAT_SERVER_CA_PASSPHRASE_FILE",
    "UCHAT_SERVER_NODE_ID",
    "UCHAT_SERVER_HOST",
    "UCHAT_SERVER_PORT",
    "UCHAT_SERVER_DATA_DIR",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server.cluster.local_cluster",
        description="Run PostgreSQL, Redis and two Uchat nodes on this machine",
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="folder for all the state")
    parser.add_argument("--port-a", type=int, default=0, help="node A's port (0: a free one)")
    parser.add_argument("--port-b", type=int, default=0, help="node B's port (0: a free one)")
    return parser.parse_args(argv)


def reachable_by_postgres(path: Path) -> bool:
    """Under root PostgreSQL runs unprivileged: it must be able to enter every parent."""
    if os.geteuid() != 0:
        return True
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents)


def passphrase_file(root: Path) -> Path:
    """The CA passphrase (made once, mode 0600): it encrypts the CA key in PostgreSQL."""
    path = root / "ca-passphrase"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(24) + "\n")
    return path


def ensure_database(pg: LocalPostgres) -> str:
    """The cluster's database, created on the first run; its DSN."""
    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
    return pg.dsn(DATABASE) if found else pg.create_database(DATABASE)


def node_environment(dsn: str, redis_url: str, passphrase: Path, name: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key.startswith("UCHAT_SERVER_") and key not in OWNED_SETTINGS
    }
    env.update(
        {
            "UCHAT_SERVER_DATABASE_URL": dsn,
            "UCHAT_SERVER_REDIS_URL": redis_url,
            "UCHAT_SERVER_CA_PASSPHRASE_FILE": str(passphrase),
            "UCHAT_SERVER_NODE_ID": f"node-{name}",
        }
    )
    return env


def client_lines(nodes: Sequence[RunningServer], client_root: Path) -> list[str]:
    """How to point one client at each node, the other node as its failover (two
    clients of one user on one machine need their own data folders)."""
    lines = []
    for number, node in enumerate(nodes, start=1):
        others = ", ".join(f"{o.host}:{o.port}" for o in nodes if o is not node)
        lines.append(
            f'  client {number} (config.json): "client": {{"host": "{node.host}", '
            f'"port": {node.port}, "servers": "{others}", '
            f'"server_fingerprint": "{node.fingerprint}"}}'
        )
        lines.append(
            f"  client {number} (shell):       UCHAT_CLIENT_HOST={node.host} "
            f"UCHAT_CLIENT_PORT={node.port} UCHAT_CLIENT_SERVERS='{others}' "
            f"UCHAT_CLIENT_SERVER_FINGERPRINT={node.fingerprint} "
            f"UCHAT_CLIENT_DATA_DIR={client_root}/client-{number} .venv/bin/python run_client.py"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # enter only: PostgreSQL's account reaches pg/, nothing is listed
    pg_root = root / "pg"
    if not reachable_by_postgres(pg_root):
        pg_root = private_root("uchat-cluster-pg-")
        print(f"note: {root} is closed to the postgres account; PostgreSQL lives in {pg_root}")
    pg = LocalPostgres(pg_root, durable=True)
    bus = LocalRedis(root / "redis")
    nodes: list[RunningServer] = []
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        pg.start()
        bus.start()
        dsn = ensure_database(pg)
        passphrase = passphrase_file(root)
        for name, port in zip(NODE_NAMES, (args.port_a, args.port_b), strict=True):
            env = node_environment(dsn, bus.url, passphrase, name)
            nodes.append(
                start_server(
                    root / f"node-{name}",
                    env,
                    log_path=root / f"node-{name}.log",
                    port=port,
                    fast=False,
                )
            )
        report(root, dsn, bus.url, nodes)
        while not stopping.wait(0.5):
            for name, node in zip(NODE_NAMES, nodes, strict=True):
                if node.process.returncode is None and not node.is_alive():
                    print(f"node {name.upper()} exited ({node.process.returncode}); see its log")
        return 0
    except (LocalServiceError, ServerStartError, OSError) as exc:
        print(f"make cluster: {exc}", file=sys.stderr)
        return 2
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop()
        bus.stop()
        pg.stop()
        print("cluster stopped", flush=True)


def report(root: Path, dsn: str, redis_url: str, nodes: Sequence[RunningServer]) -> None:
    lines = [
        "Uchat cluster running (Ctrl-C stops it all):",
        f"  PostgreSQL:  {dsn}",
        f"  Redis:       {redis_url}",
    ]
    for name, node in zip(NODE_NAMES, nodes, strict=True):
        lines.append(f"  node {name.upper()}:      {node.host}:{node.port}  (log {node.log_path})")
    lines.append(f"  fingerprint: {nodes[0].fingerprint}")
    lines.append(f"  state:       {root}")
    lines.append("Point two clients at it, one per node (the other node is the failover):")
    lines.extend(client_lines(nodes, root))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
