"""The database thread: a turn's batch and commit off the reactor, results back on it.

`DatabaseThread` alone (which thread runs what, the wake-up, a failure), then a turn's
`TurnWork` written and committed on it against a real PostgreSQL (the cluster backend,
whose connection is handed to the thread for the job), announced back on the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.protocol.ids import time_ordered_id
from server.app import write_and_commit
from server.database_thread import DatabaseJob, DatabaseThread
from server.storage import messages
from server.storage.database import Database
from server.storage.postgres import PostgresDatabase
from server.turn import StoreOutcome, TurnBatch
from tests.unit.test_storage import add_user


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def thread(wakes: Wakes) -> Iterator[DatabaseThread]:
    database_thread = DatabaseThread(wakes)
    yield database_thread
    database_thread.stop()


def run(job: DatabaseJob[Any], wakes: Wakes) -> None:
    assert wakes.event.wait(3), "the reactor was never woken"
    assert job.wait(3) and job.ready


def test_work_runs_on_the_thread_and_its_result_comes_back_on_the_caller(
    thread: DatabaseThread, wakes: Wakes
) -> None:
    ran_on: list[str] = []
    delivered: list[tuple[object, str]] = []

    def work() -> int:
        ran_on.append(threading.current_thread().name)
        return 42

    def then(result: int) -> None:
        delivered.append((result, threading.current_thread().name))

    job = thread.submit(work, then, lambda: None)
    run(job, wakes)
    assert ran_on == ["uchat-database"]
    assert delivered == []  # nothing delivered until the reactor finishes the job
    job.finish()
    assert delivered == [(42, threading.current_thread().name)]
    assert wakes.count == 1


def test_a_failed_job_runs_its_failure_hook_and_raises_on_finish(
    thread: DatabaseThread, wakes: Wakes
) -> None:
    failed: list[bool] = []
    then: list[object] = []

    def work() -> None:
        raise OSError("connection lost")

    job = thread.submit(work, then.append, lambda: failed.append(True))
    run(job, wakes)
    with pytest.raises(OSError, match="connection lost"):
        job.finish()
    assert failed == [True] and then == []


def test_finish_before_ready_is_a_programming_error(thread: DatabaseThread) -> None:
    release = threading.Event()
    job = thread.submit(lambda: release.wait(3), lambda _: None, lambda: None)
    with pytest.raises(RuntimeError, match="still running"):
        job.finish()
    release.set()
    assert job.wait(3)


def test_a_stopped_thread_takes_no_more_jobs(wakes: Wakes) -> None:
    database_thread = DatabaseThread(wakes)
    database_thread.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        database_thread.submit(lambda: None, lambda _: None, lambda: None)


# -- a turn on PostgreSQL -------------------------------------------------------------


@pytest.fixture
def pg(fresh_pg_dsn: Callable[[], str]) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase.connect(fresh_pg_dsn())
    yield database
    database.close()


def add_committed_user(db: Database, name: str) -> int:
    user_id = add_user(db, name)
    db.commit()
    return user_id


def envelope(message_id: str, sender: int, to: int, time: int) -> messages.NewEnvelope:
    return messages.NewEnvelope(
        message_id=message_id,
        sender_id=sender,
        target_type=messages.USER,
        target_id=to,
        time=time,
        envelope=b"sealed",
        distributions={},
    )


def test_a_turn_is_written_and_committed_on_the_thread_and_announced_on_the_caller(
    pg: PostgresDatabase, fresh_pg_dsn: Callable[[], str], thread: DatabaseThread, wakes: Wakes
) -> None:
    alice, bob = add_committed_user(pg, "alice"), add_committed_user(pg, "bob")
    first, second = time_ordered_id(), time_ordered_id()
    heard: list[tuple[str, StoreOutcome, str]] = []
    batch = TurnBatch()

    def hear(message_id: str) -> Callable[[StoreOutcome], None]:
        return lambda outcome: heard.append((message_id, outcome, threading.current_thread().name))

    for message_id, time in ((first, 10), (second, 20), (first, 30)):  # the third repeats
        batch.store(envelope(message_id, alice, bob, time), hear(message_id))
    work = batch.take()
    assert not batch.pending

    def write() -> list[StoreOutcome]:
        return write_and_commit(pg, work, contiguous=True)

    job = thread.submit(write, work.announce, lambda: None)
    run(job, wakes)
    assert heard == []  # answers wait for the reactor
    assert not pg.in_transaction  # committed by the thread
    job.finish()
    here = threading.current_thread().name
    assert [(m, o.row_id is not None, name) for m, o, name in heard] == [
        (first, True, here),
        (second, True, here),
        (first, False, here),
    ]
    assert heard[2][1].taken_by == messages.StoredMessage(first, alice, 10)
    assert work.touched == {messages.conversation_key(alice, messages.USER, bob): 20}
    # what the thread committed is there for any other connection (another node)
    other = PostgresDatabase.connect(pg._dsn)
    try:
        stored = other.all("SELECT message_id FROM envelopes ORDER BY id")
        assert [row["message_id"] for row in stored] == [first, second]
    finally:
        other.close()


def test_a_turn_that_fails_on_the_thread_is_undone_and_each_sender_hears_it_was_lost(
    pg: PostgresDatabase, thread: DatabaseThread, wakes: Wakes
) -> None:
    alice, bob = add_committed_user(pg, "alice"), add_committed_user(pg, "bob")
    heard: list[StoreOutcome] = []
    batch = TurnBatch()
    batch.store(envelope(time_ordered_id(), alice, bob, 1), heard.append)
    work = batch.take()

    def write_then_fail() -> None:
        work.write(pg, contiguous=True)
        pg.scalar("SELECT 1 / 0")  # a statement of the turn fails before its commit

    def undo() -> None:
        pg.rollback()
        work.abandon()

    job = thread.submit(write_then_fail, lambda _: None, undo)
    run(job, wakes)
    with pytest.raises(Exception, match="division by zero"):
        job.finish()
    assert heard == [StoreOutcome(None, lost=True)]
    assert pg.scalar("SELECT count(*) FROM envelopes") == 0
