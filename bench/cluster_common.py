"""A private cluster for the bench: PostgreSQL, redis-server and N nodes, all started here.

Nothing touches a system service: `LocalPostgres` runs initdb in a temporary folder on
a free port (with the test suite's throwaway settings: no fsync), `LocalRedis` keeps no
data, and every node is a real `run_server.py` (through `ServerProcess`) on that
database and bus, sharing one CA passphrase. CPU is read for the nodes (summed) and,
apart, for PostgreSQL (the postmaster and its backends) and redis-server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BenchError, ServerProcess, new_workdir, signals_held
from server.cluster.local_services import (
    LocalPostgres,
    LocalRedis,
    LocalServiceError,
    private_root,
)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (every thread); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (PostgreSQL's backends are the postmaster's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class CpuSum:
    """Several processes read as one: `cpu_seconds()` sums the nodes (for `CpuMeter`)."""

    nodes: list[ServerProcess]

    def cpu_seconds(self) -> float:
        return sum(node.cpu_seconds() for node in self.nodes)


@dataclass
class ServicesCpu:
    """PostgreSQL (postmaster + backends alive at each read) and redis-server CPU."""

    postgres_pid: int
    redis_pid: int

    def cpu_seconds(self) -> float:
        pids = [self.postgres_pid, self.redis_pid, *children_of(self.postgres_pid)]
        return sum(process_cpu_seconds(pid) for pid in pids)


@dataclass
class NodesAndServices:
    """The nodes' summed CPU for a meter; every read also notes the services' CPU."""

    nodes: CpuSum
    services: ServicesCpu
    service_reads: list[float] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        self.service_reads.append(self.services.cpu_seconds())
        return self.nodes.cpu_seconds()

    def services_seconds(self) -> float:
        """The services' CPU between the first read and the last."""
        return self.service_reads[-1] - self.service_reads[0] if self.service_reads else 0.0


@dataclass
class PrivateCluster:
    """`start_node()` as often as wanted; `close()` stops nodes, Redis and PostgreSQL."""

    root: Path = field(default_factory=lambda: private_root("uchat-bench-cluster-"))
    nodes: list[ServerProcess] = field(default_factory=list)
    postgres: LocalPostgres | None = None
    redis: LocalRedis | None = None
    dsn: str = ""

    def start_services(self) -> None:
        """Start PostgreSQL and Redis; a failure becomes a `BenchError` saying why."""
        self.root.chmod(0o711)  # PostgreSQL (another account under root) must get through
        self.postgres = LocalPostgres(self.root / "pg")
        self.redis = LocalRedis(self.root / "redis")
        # Interrupted, initdb's or a server's children could outlive `close()`: the time
        # limit waits until both run.
        with signals_held():
            try:
                self.postgres.start()
                self.redis.start()
            except LocalServiceError as exc:
                raise BenchError(f"private cluster services: {exc}") from None
        self.dsn = self.postgres.create_database("uchat")
        self.passphrase_file.write_text("a passphrase for the bench cluster\n")
        self.passphrase_file.chmod(0o600)

    @property
    def passphrase_file(self) -> Path:
        """The CA passphrase every node reads (and a migration encrypts the CA with)."""
        return self.root / "ca-passphrase"

    def env(self, name: str) -> dict[str, str]:
        assert self.redis is not None, "start_services() first"
        return {
            "UCHAT_SERVER_DATABASE_URL": self.dsn,
            "UCHAT_SERVER_REDIS_URL": self.redis.url,
            "UCHAT_SERVER_CA_PASSPHRASE_FILE": str(self.passphrase_file),
            "UCHAT_SERVER_NODE_ID": name,
        }

    def start_node(
        self, name: str, log_level: str = "INFO", overrides: dict[str, str] | None = None
    ) -> ServerProcess:
        """Node `name` on the cluster's database and bus; `overrides` are more settings."""
        env = {**self.env(name), **(overrides or {})}
        with signals_held():  # the time limit waits until `close()` knows the node
            node = ServerProcess.start(env, log_level=log_level, workdir=new_workdir())
            self.nodes.append(node)
        return node

    def restart_node(self, old: ServerProcess, name: str, log_level: str = "INFO") -> ServerProcess:
        """Start node `name` again on `old`'s port and data folder (after a SIGKILL)."""
        with signals_held():
            node = ServerProcess.start(
                self.env(name),
                log_level=log_level,
                workdir=old.workdir,
                extra_args=("--port", str(old.port)),
            )
            old.workdir = None  # the new process owns the folder now
            self.nodes.append(node)
        return node

    def services_cpu(self) -> ServicesCpu:
        assert self.postgres is not None and self.redis is not None
        postgres, bus = self.postgres.pid, self.redis.pid
        assert postgres is not None and bus is not None
        return ServicesCpu(postgres, bus)

    def close(self) -> None:
        """Everything stopped and removed; the time limit waits until it is done."""
        with signals_held():
            try:
                for node in self.nodes:
                    node.cleanup()
            finally:
                try:
                    if self.redis is not None:
                        self.redis.stop()
                finally:
                    if self.postgres is not None:
                        self.postgres.stop()
                    shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
