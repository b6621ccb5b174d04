"""Wiring: configuration -> identity, database, services, dispatcher, reactor; and main().

`build_server` assembles the objects; `Server.start` binds; `Server.serve_forever`
runs the reactor on the calling thread until `Server.stop` (or SIGINT/SIGTERM in
`main`), then shuts down gracefully: stop accepting, commit, flush what is queued,
close the connections, commit again, close the database.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import resource
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from common.channel import SecureChannel
from common.config import ServerConfig, load_config
from common.crypto.certs import ServerIdentity
from common.errors import UchatError
from common.fileio import make_private_dir
from common.protocol.message import Message
from server.database_thread import DatabaseThread
from server.dispatch import Dispatcher, Services
from server.handlers import HANDLERS
from server.handlers._backlog import BacklogCursors
from server.links import LinkRelay
from server.logging_setup import configure_logging, log_failure
from server.net.admission import AdmissionLimits
from server.net.connection import Connection
from server.net.reactor import PendingCommit, Reactor, ReactorSettings
from server.presence import announce_offline
from server.process_group import die_with_parent, refusal, run_group
from server.sessions import Sessions
from server.storage import retention
from server.storage.attachment_store import (
    DATABASE,
    AttachmentStore,
    DatabaseStore,
    attachments_root,
    store_for,
)
from server.storage.database import (
    Database,
    SchemaTooNewError,
    SqliteDatabase,
    StorageUnavailable,
)
from server.turn import StoreOutcome, TurnWork
from server.workers import DEMOTED_NICENESS, WorkerPool

if TYPE_CHECKING:  # cluster mode imports psycopg and redis only when configured
    from server.cluster.node import ClusterNode

log = logging.getLogger(__name__)

DATABASE_FILE = "uchat.db"
ATTACHMENTS_DIR = "attachments"
SPARE_FILE_DESCRIPTORS = 64
#: Threads for the hashes of addresses with a line of them (server/hash_queue.py): a
#: flood from one address, or several, shares this one.
DEMOTED_WORKER_THREADS = 1


class Server:
    """A built server: services, dispatcher and reactor, not yet listening."""

    def __init__(
        self,
        config: ServerConfig,
        identity: ServerIdentity,
        db: Database,
        sessions: Sessions | None = None,
    ) -> None:
        self.config = config
        self.reactor = Reactor(
            ReactorSettings(
                handshake_timeout=config.handshake_timeout,
                idle_timeout=config.idle_timeout,
                max_connections=config.max_connections,
                write_buffer_limit=config.write_buffer_limit,
                # pausing above the drop limit would never pause: the lower one wins
                output_pause_limit=min(config.output_pause_limit, config.write_buffer_limit),
                requests_per_turn=config.requests_per_turn,
                time_per_turn=config.time_per_turn,
                login_timeout=config.login_timeout,
                prelogin_max_frame=config.prelogin_max_frame,
                max_frame=config.max_frame_size,
                admission=AdmissionLimits(
                    per_address=config.max_connections_per_address,
                    anonymous_per_address=config.max_anonymous_per_address,
                    input_budget=config.input_budget,
                ),
            ),
            channel_factory=self._new_channel,
            on_message=self._on_message,
            on_closed=self._on_closed,
            before_flush=self._commit,
        )
        workers = WorkerPool(
            config.worker_threads, config.worker_queue, self.reactor.call_soon_threadsafe
        )
        demoted = WorkerPool(
            DEMOTED_WORKER_THREADS,
            config.worker_queue,
            self.reactor.call_soon_threadsafe,
            niceness=DEMOTED_NICENESS,
            name="uchat-demoted",
        )
        self.services = Services(
            db=db,
            sessions=sessions if sessions is not None else Sessions(),
            workers=workers,
            config=config,
            identity=identity,
            data_dir=Path(config.data_dir),
            on_offline=self._went_offline,
            backlog=BacklogCursors(),
            demoted_workers=demoted,
            links=LinkRelay(login_grace_ms=int(config.login_timeout * 1000)),
        )
        try:
            self.dispatcher = Dispatcher(self.services, HANDLERS)
        except BaseException:
            workers.stop()
            demoted.stop()
            raise
        self.address: tuple[str, int] | None = None
        #: Cluster mode only (server/cluster/node.py): the bus and the presence mirror.
        self.cluster: ClusterNode | None = None
        self._files = store_for(config)
        #: PostgreSQL: each turn's batch and commit run here (server/database_thread.py).
        self._database_thread = (
            DatabaseThread(self.reactor.wake) if db.backend == "postgresql" else None
        )
        self.reactor.call_later(config.sweep_interval, self._sweep)
        self.reactor.call_later(LINK_SWEEP_INTERVAL, self._sweep_links)

    @property
    def fingerprint(self) -> str:
        return self.services.identity.fingerprint

    def start(self, reuse_port: bool = False) -> int:
        """Bind the listening socket; return the actual port (useful with port 0).

        `reuse_port`: one of several worker processes on this port (--workers).
        """
        host, port = self.config.host, self.config.port
        self.address = self.reactor.listen(host, port, reuse_port=reuse_port)
        log.info("listening on %s:%d", *self.address)
        return self.address[1]

    def serve_forever(self) -> None:
        """Run the reactor on this thread until `stop()`, then shut down gracefully."""
        # What start-up built (modules, the key log's cached hashes, caches) lives as
        # long as the process: out of the collector's generations, a full collection
        # walks only what serving allocates and pauses the loop for less.
        gc.freeze()
        try:
            self.reactor.run()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask the server to stop (any thread, or a signal handler)."""
        self.reactor.stop()

    def close(self) -> None:
        """Graceful end (also for a server that never ran): flush, commit, release all."""
        log.info("shutting down")
        try:
            self.reactor.shutdown()
        finally:
            self.services.workers.stop()
            if self.services.demoted_workers is not None:
                self.services.demoted_workers.stop()
            if self._database_thread is not None:
                self._database_thread.stop()
            if self.cluster is not None:
                self.cluster.stop()
            self.services.db.close()
        log.info("stopped")

    def _new_channel(self) -> SecureChannel:
        return SecureChannel.server(
            self.services.identity,
            mac_alg=self.config.mac,
            max_frame=self.config.max_frame_size,
        )

    def _sweep(self) -> None:
        """The periodic retention pass, on the reactor thread between turns."""
        try:
            more = sweep_expired(self.services.db, self._files, self.config, self.services.clock())
        except Exception as exc:
            self.services.db.rollback()
            log_failure(log, "retention sweep failed", exc)
            more = False
        self.reactor.call_later(
            SWEEP_AGAIN_SOON if more else self.config.sweep_interval, self._sweep
        )

    def _sweep_links(self) -> None:
        """Expire link codes and sessions (server/links.py) every few seconds."""
        try:
            self.services.links.sweep(self.services.clock())
            if self.services.link_routes is not None:
                self.services.link_routes.sweep(self.services.clock())
        except Exception as exc:
            log_failure(log, "link sweep failed", exc)
        self.reactor.call_later(LINK_SWEEP_INTERVAL, self._sweep_links)

    def _on_message(self, connection: Connection, message: Message) -> int:
        return self.dispatcher.dispatch(connection, message)

    def _went_offline(self, user_id: int, username: str) -> None:
        """A live session ended: its backlog cursor goes, its friends are told."""
        self.services.backlog.forget(user_id)
        try:
            announce_offline(self.services, user_id, username)
        except StorageUnavailable as exc:  # cluster mode, database down: friends see it later
            log.warning("could not announce %s offline: %s", username, exc)

    def _on_closed(self, connection: Connection, reason: str) -> None:
        self.dispatcher.connection_closed(connection, reason)

    def _rolled_back(self) -> None:
        self.services.db.rollback()
        if self.cluster is not None:
            self.cluster.rolled_back()

    def _commit(self) -> PendingCommit | None:
        """The group commit, run by the reactor before it writes a turn's output.

        The turn's gathered work (`server.turn`) is written first, inside the
        transaction; once committed, its requests are answered and (cluster mode) the
        other nodes hinted. With a database thread (PostgreSQL) the write and the
        commit run there and the reactor overlaps them (`Reactor._overlap`).
        """
        db = self.services.db
        work = self.services.turn.take()
        contiguous = self.services.sessions.spans_nodes
        if self._database_thread is None or not (work.pending or db.in_transaction):
            try:
                outcomes = write_and_commit(db, work, contiguous)
            except Exception:
                self._lost(work)
                raise
            self._committed(work, outcomes)
            return None
        return self._database_thread.submit(
            lambda: write_and_commit(db, work, contiguous),
            then=lambda outcomes: self._committed(work, outcomes),
            failed=lambda: self._lost(work),
        )

    def _lost(self, work: TurnWork) -> None:
        """Reactor thread, after a failed write or commit: undo, and tell the senders."""
        self._rolled_back()
        work.abandon()

    def _committed(self, work: TurnWork, outcomes: list[StoreOutcome]) -> None:
        """Reactor thread, after the commit: answers and pushes, then hints."""
        self.services.inbox_bounds.stored(
            [outcome.row_id for outcome in outcomes if outcome.row_id is not None]
        )
        work.announce(outcomes)
        if self.cluster is not None:  # hints only once what they point at is committed
            self.cluster.committed(list(work.touched))


def write_and_commit(db: Database, work: TurnWork, contiguous: bool) -> list[StoreOutcome]:
    """A turn's gathered work, then the commit of the whole turn (any thread holding
    `db`); the outcomes of its new messages for `TurnWork.announce`."""
    outcomes = work.write(db, contiguous=contiguous) if work.pending else []
    if db.in_transaction:
        db.commit()
    return outcomes


LINK_SWEEP_INTERVAL = 2.0  # seconds between expiry passes over link codes
SWEEP_AGAIN_SOON = 1.0  # seconds before the next batch when a sweep hit its batch size


def sweep_expired(db: Database, files: AttachmentStore, config: ServerConfig, now: int) -> bool:
    """One retention pass (server/storage/retention.py), committed; True if more is left.

    Runs in a savepoint, so a failure undoes only its own deletions (the reactor's turn
    may hold other handlers' writes); the rows are committed before their files go.
    """
    db.begin_step()
    keep = False
    try:
        result = retention.sweep(
            db,
            now,
            retention_days=config.delivered_retention_days,
            abandoned_hours=config.abandoned_upload_hours,
        )
        keep = True
    finally:
        db.end_step(keep)
    db.commit()
    for attachment_id in result.attachments:
        files.discard(db, attachment_id)
    if db.in_transaction:  # the database store's deletions (its rows cascade anyway)
        db.commit()
    if result.envelopes or result.attachments:
        log.info(
            "retention: forgot %d delivered envelopes and %d attachments",
            result.envelopes,
            len(result.attachments),
        )
    return result.more


TEST_HOOK_ENV = "UCHAT_TEST_SERVER_HOOK"


def _install_test_hook(server: Server) -> None:
    """Security tests run a real server with a handler swapped (a malicious server).

    The variable names a module whose `install(server)` does the swapping; it is
    refused unless the module lives under `tests.`, so a deployment cannot be
    pointed at other code this way.
    """
    name = os.environ.get(TEST_HOOK_ENV)
    if not name:
        return
    if not name.startswith("tests."):
        raise UchatError(f"{TEST_HOOK_ENV} must name a module under tests.")
    log.warning("TEST BUILD: installing server hook %s", name)
    importlib.import_module(name).install(server)


def build_server(config: ServerConfig) -> Server:
    """Create the data folders, load or create the identity, open the database."""
    data_dir = Path(config.data_dir)
    make_private_dir(data_dir)  # keys, database, attachments: the operator's only
    if config.attachment_store != DATABASE:
        make_private_dir(attachments_root(config))
    db: Database
    sessions: Sessions | None = None
    if config.database_url:
        from server.cluster.node import ClusterSessions, open_cluster_storage

        db, identity = open_cluster_storage(config)
        sessions = ClusterSessions()
    else:
        identity = ServerIdentity.load_or_create(data_dir)
        db = SqliteDatabase.open(data_dir / DATABASE_FILE)
    try:
        if config.attachment_store == DATABASE:
            DatabaseStore.create_table(db)
        files = store_for(config)
        # Before listening nobody waits, so the whole backlog is cleared, batch by batch.
        more = True
        while more:
            more = sweep_expired(db, files, config, int(time.time() * 1000))
        server = Server(config, identity, db, sessions)
        server.services.transparency.catch_up()
        db.commit()
        if config.database_url:
            from server.cluster.bus import BusSettings
            from server.cluster.node import ClusterNode

            server.cluster = ClusterNode(
                server.services,
                server.reactor.call_soon_threadsafe,
                server.reactor.call_later,
                BusSettings(url=config.redis_url, node_id=config.node_id),
            )
            server.cluster.start()
        _install_test_hook(server)
        return server
    except BaseException:
        db.close()
        raise


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run_server.py", description="Uchat server")
    parser.add_argument("--host", help="address to listen on (default from config)")
    parser.add_argument("--port", type=int, help="port to listen on; 0 picks a free one")
    parser.add_argument("--data-dir", help="folder for the database, keys and attachments")
    parser.add_argument("--config", help="path of config.json")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--mac", help="record MAC: hmac-sha256 (default) or hmac-md5")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="reactor processes sharing the port (cluster mode only; default 1)",
    )
    # Set by the --workers supervisor on each worker (server/process_group.py).
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def raise_file_limit(wanted: int) -> None:
    """Lift the soft open-files limit toward `wanted` (each connection is one socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %d: %s", target, exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; return the process exit code."""
    args = parse_args(argv)
    if args.parent_pid and not die_with_parent(args.parent_pid):
        return 1  # the supervisor is already gone
    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "server.data_dir": args.data_dir,
        "server.log_level": args.log_level,
        "server.mac": args.mac,
    }
    try:
        config = load_config(args.config, env=os.environ, overrides=overrides).server
        configure_logging(config.log_level)
        refused = refusal(config, args.workers)
        if refused:
            raise UchatError(refused)
        if args.workers > 1:
            return run_group(config, sys.argv[1:] if argv is None else argv, args.workers)
        raise_file_limit(config.max_connections + SPARE_FILE_DESCRIPTORS)
        server = build_server(config)
    except (UchatError, OSError, sqlite3.Error, SchemaTooNewError) as exc:
        print(f"uchat server: {exc}", file=sys.stderr)
        return 2
    try:
        port = server.start(reuse_port=args.reuse_port)
    except OSError as exc:
        print(f"uchat server: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        server.close()
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host = server.address[0] if server.address else config.host
    print(f"Uchat server listening on {host}:{port}", flush=True)
    print(f"Server fingerprint: {server.fingerprint}", flush=True)
    server.serve_forever()
    return 0
