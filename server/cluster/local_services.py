"""Private PostgreSQL and redis-server instances for tests, the bench and `make cluster`.

Never a system service: each instance lives in its own folder (initdb there), listens on
a free loopback port and keeps its unix socket in that folder, and goes away with
`stop()`. PostgreSQL refuses to run as root, so under root the server runs as an
unprivileged account (`postgres` when the Debian package made it, else `nobody`) and
its folder is handed to that account; a normal user runs it as themselves.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SUPERUSER = "uchat"

#: Settings for throwaway instances: durability is not wanted, speed is.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class LocalServiceError(RuntimeError):
    """A private instance could not be created or started; the message says why."""


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_bin_dir() -> Path:
    """The folder holding initdb and postgres: PATH first, then Debian's layout."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name or 0),
    )
    if not candidates:
        raise LocalServiceError(
            "PostgreSQL is not installed (no initdb): run scripts/bootstrap.sh --test"
        )
    return Path(candidates[-1]).parent


def _unprivileged_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as under root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise LocalServiceError("running as root and no unprivileged 'postgres' or 'nobody' account")


def _run_as() -> list[str]:
    """The command prefix that drops root for PostgreSQL; empty for a normal user.

    setpriv execs in place (no extra process), so signals reach postgres itself.
    """
    account = _unprivileged_account()
    if account is None:
        return []
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [
        setpriv,
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--clear-groups",
        "--",
    ]


def _hand_over(path: Path) -> None:
    """Give `path` to the account PostgreSQL runs as (root only)."""
    account = _unprivileged_account()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalServiceError(f"{what} exited at start:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise LocalServiceError(f"{what} did not listen on port {port} in {START_TIMEOUT}s")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes] | None, how: signal.Signals) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(how)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class LocalPostgres:
    """One private PostgreSQL cluster: `start()`, `dsn(db)`, `create_database`, `stop()`."""

    root: Path
    port: int = 0
    durable: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def init(self) -> None:
        """initdb into `root/data` (UTF-8, C collation, trust on loopback only)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        _hand_over(self.root)
        if (self.data_dir / "PG_VERSION").exists():
            return
        command = [
            *_run_as(),
            str(postgres_bin_dir() / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
        ]
        if not self.durable:
            command.append("--no-sync")
        result = subprocess.run(command, capture_output=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise LocalServiceError(
                "initdb failed: " + result.stderr.decode("utf-8", "replace")[-2000:]
            )

    def start(self) -> None:
        """Start the server (after `init`, or again after `stop`) and wait until it listens."""
        if not (self.data_dir / "PG_VERSION").exists():
            self.init()
        if not self.port:
            self.port = free_port()
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={self.socket_dir}",
            "max_connections=200",
        ]
        if not self.durable:
            settings.extend(FAST_SETTINGS)
        command = [*_run_as(), str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir)]
        for setting in settings:
            command += ["-c", setting]
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        _wait_for_port(self.port, self._process, "postgres", self.log_path)
        self._wait_until_accepting()

    def _wait_until_accepting(self) -> None:
        """The port opens before recovery ends ("the database system is starting up")."""
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or not self.running:
                    raise LocalServiceError(
                        f"postgres does not accept connections:\n{_tail(self.log_path)}"
                    ) from None
                time.sleep(0.05)

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE `name` (optionally from `template`); returns its DSN."""
        import psycopg
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(statement)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(statement)

    def stop(self, fast: bool = True) -> None:
        """Stop the server; fast = roll back open transactions and disconnect clients."""
        _stop(self._process, signal.SIGINT if fast else signal.SIGTERM)
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (the next start recovers from the WAL)."""
        _stop(self._process, signal.SIGKILL)
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (the backends are its children)."""
        return self._process.pid if self.running and self._process is not None else None


@dataclass
class LocalRedis:
    """One private redis-server without persistence: `start()`, `url`, `stop()`."""

    root: Path
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise LocalServiceError(
                "redis-server is not installed: run scripts/bootstrap.sh --test"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        command = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        _wait_for_port(self.port, self._process, "redis-server", self.log_path)

    def stop(self) -> None:
        _stop(self._process, signal.SIGTERM)
        self._process = None

    def kill(self) -> None:
        _stop(self._process, signal.SIGKILL)
        self._process = None

    @property
    def pid(self) -> int | None:
        """redis-server's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None


def private_root(prefix: str) -> Path:
    """A fresh folder under the system temp dir that an unprivileged account can reach.

    pytest's own temp dirs are 0700 under root's name, which `postgres` cannot enter.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))
