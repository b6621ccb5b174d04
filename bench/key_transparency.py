"""Key transparency: the log at a million entries, and what it adds to login and fetches.

Part 1, in process on a real SQLite file: the log is filled to `--entries` (the bulk
through the same `completed_nodes` the server uses, in one transaction), then
`--appends` appends go through `TransparencyLog.append` one by one, and `--proofs`
inclusion and consistency proofs are built from the stored node hashes at random
positions (and verified, outside the timing). Then what the proofs add to one
CERTIFICATE reply, in process: the certificate's and the KEM key's proofs under a
head signed just before, for a key never asked about and for a friend's, asked again
under that head, and encoding the reply with and without them (`reply_*`).
Reference in the same run: one Ed25519 verification, so figures can be compared
across machines.

Part 2, real server processes: two servers on copies of one data folder (`--users`
seeded accounts, each with a signed KEM key in the log, the first user friends with
`--friends` of them, the log filled to `--entries`), one as shipped and one with the
proofs switched off (test-only hook `tests.security.kt_off`), measured in alternating
rounds: LOGIN latency (fresh link, handshake not timed); CERTIFICATE latency for a
friend (certificate and KEM key, each with its proof; the proofs cached under the
current head after the first fetch); and CERTIFICATE right after another user
published a KEM key, so the head is new (signed on demand) and no proof is cached.
Bar: with the log ≤ 1.2x without, p50.

    .venv/bin/python -m bench key_transparency [--entries 1000000] [--users 300]
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import (
    Link,
    ServerProcess,
    base_parser,
    check,
    connect,
    emit,
    login,
    new_workdir,
    now_ms,
    run,
    seed_users,
    summarize,
    user_names,
)
from common.crypto import merkle
from common.crypto.certs import ServerIdentity
from common.crypto.kem import KemKeyPair, SignedKemKey
from common.crypto.keys import UserKeys, generate_user_keys
from common.crypto.merkle import LogEntry
from common.protocol.message import Message, encode_message
from common.protocol.opcodes import MessageType
from server.storage import friends as friends_table
from server.storage import kem_keys, keylog, users
from server.storage.database import Database, SqliteDatabase
from server.transparency import TransparencyLog

SCENARIO = "key_transparency"
BULK_CHUNK = 50_000
BAR = 1.2


def ed25519_verify_seconds(rounds: int = 2000) -> float:
    key = Ed25519PrivateKey.generate()
    public, message = key.public_key(), b"x" * 64
    signature = key.sign(message)
    started = time.perf_counter()
    for _ in range(rounds):
        public.verify(signature, message)
    return (time.perf_counter() - started) / rounds


def bulk_fill(db: Database, count: int, first: int = 0) -> float:
    """`count` entries (positions from `first`, after what the log holds) and their nodes
    in one transaction; the frontier stays in memory, older nodes come from the table."""
    frontier: dict[int, tuple[int, bytes]] = {}

    def subtree(level: int, index: int) -> bytes:
        stored = frontier.get(level)
        if stored is not None and stored[0] == index:
            return stored[1]
        return keylog.node(db, level, index)

    started = time.perf_counter()
    end = first + count
    with db.transaction():
        for start in range(first, end, BULK_CHUNK):
            entries, nodes = [], []
            for position in range(start, min(start + BULK_CHUNK, end)):
                entry = LogEntry("certificate", f"user{position}", position.to_bytes(8, "big") * 8)
                entries.append((position, entry.kind, entry.username, entry.payload, 0))
                for level, index, value in merkle.completed_nodes(
                    position, entry.leaf_hash, subtree
                ):
                    frontier[level] = (index, value)
                    nodes.append((level, index, value))
            db.executemany(
                "INSERT INTO kt_entries (position, kind, username, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                entries,
            )
            keylog.insert_nodes(db, nodes)
    return time.perf_counter() - started


def log_part(entries: int, appends: int, proofs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="uchat-kt-bench-") as folder:
        db = SqliteDatabase.open(Path(folder) / "log.db")
        clock = lambda: time.time_ns() // 1_000_000  # noqa: E731
        log = TransparencyLog(db, ServerIdentity.create(), clock)
        fill_s = bulk_fill(db, entries)
        append_times = []
        for i in range(appends):
            started = time.perf_counter()
            log.append("certificate", f"late{i}", b"k" * 64)
            append_times.append(time.perf_counter() - started)
            if i % 100 == 99:
                db.commit()
        db.commit()
        started = time.perf_counter()
        head = log.head()
        sign_s = time.perf_counter() - started
        db.commit()
        rng = random.Random(7)
        inclusion_times, consistency_times, sizes = [], [], []
        for _ in range(proofs):
            position = rng.randrange(head.size)
            started = time.perf_counter()
            proof = log.inclusion(position, head)
            inclusion_times.append(time.perf_counter() - started)
            sizes.append(len(proof))
            stored = keylog.entries(db, position, position + 1)[0]
            merkle.verify_inclusion(stored.entry.leaf_hash, position, head.size, proof, head.root)
            old = rng.randrange(1, head.size)
            started = time.perf_counter()
            log.consistency(old, head.size)
            consistency_times.append(time.perf_counter() - started)
        reply = reply_part(db, log, entries)
        size_on_disk = sum(p.stat().st_size for p in Path(folder).iterdir())
        db.close()
    return {
        **reply,
        "entries": head.size,
        "bulk_fill_s": round(fill_s, 2),
        "append_ms": summarize(append_times),
        "sign_head_ms": round(sign_s * 1000, 3),
        "inclusion_proof_ms": summarize(inclusion_times),
        "consistency_proof_ms": summarize(consistency_times),
        "proof_hashes_max": max(sizes),
        "proof_hashes_mean": round(statistics.fmean(sizes), 2),
        "proof_bytes_max": 32 * max(sizes),
        "ceil_log2_n": (head.size - 1).bit_length(),
        "database_mb": round(size_on_disk / 1e6, 1),
    }


REPLY_SAMPLES = 2000
FRIENDS = 50


def reply_part(db: Database, log: TransparencyLog, bulk: int) -> dict[str, Any]:
    """Per CERTIFICATE reply: the two proofs (certificate, KEM key) under a head the
    appender's reply just signed, for a key nobody asked about before (`cold`: its
    lowest nodes come from the database) and for one of 50 friends asked about under
    earlier heads (`friend`: most of the proof kept); then the same friend asked again
    under that head (`again`: the proofs kept whole); and the reply's encoding with and
    without the proofs (the head's encoding is made once per head). Keys are entries
    of the bulk fill (`user{n}`), as old as most friends' keys are."""
    rng = random.Random(11)
    friends = [rng.randrange(bulk - 1) for _ in range(FRIENDS)]

    def key(position: int) -> tuple[str, bytes]:
        return f"user{position}", position.to_bytes(8, "big") * 8

    def fetch(position: int) -> float:
        started = time.perf_counter()
        log.certificate_proof(*key(position))
        log.proof_for("certificate", *key(position + 1), log.head())
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"cold": [], "friend": [], "again": []}
    for i in range(REPLY_SAMPLES):
        log.append("certificate", f"mover{i}", b"m" * 64)
        log.head()  # signed by the appender's reply, as PUBLISH_KEM_KEY does
        times["cold"].append(fetch(rng.randrange(bulk - 1)))
        friend = friends[i % FRIENDS]
        for label in ("friend", "again"):
            times[label].append(fetch(friend))
        if i % 100 == 99:
            db.commit()
    db.commit()
    results: dict[str, Any] = {
        f"reply_proofs_{label}_us": summarize(samples, scale=1e6, digits=1)
        for label, samples in times.items()
    }
    name, payload = key(rng.randrange(bulk))
    base = {"username": name, "certificate": os.urandom(520), "kem_key": os.urandom(1300)}
    replies: dict[str, dict[str, Any]] = {
        "with": {
            **base,
            "transparency": log.certificate_proof(name, payload),
            "kem_transparency": log.proof_for("certificate", name, payload, log.head()),
        },
        "without": {**base, "transparency": {}, "kem_transparency": None},
    }
    for label, params in replies.items():
        message = Message(MessageType.REPLY, 1, params)
        results[f"reply_bytes_{label}"] = len(encode_message(message))
        encoding = []
        for _ in range(REPLY_SAMPLES):
            started = time.perf_counter()
            encode_message(message)
            encoding.append(time.perf_counter() - started)
        results[f"reply_encode_{label}_us"] = summarize(encoding, scale=1e6, digits=1)
    return results


# -- part 2 ---------------------------------------------------------------------------


def prepare_log(
    workdir: tempfile.TemporaryDirectory[str],
    names: list[str],
    keys: UserKeys,
    entries: int,
    friends: int,
) -> dict[str, Any]:
    """Seeded users get a signed KEM key each (logged, as PUBLISH_KEM_KEY logs it), the
    first befriends `friends` others, and the log is filled to `entries`."""
    from server.app import DATABASE_FILE

    seeded = seed_users(workdir, names, keys)
    data = Path(workdir.name) / "server"
    db = SqliteDatabase.open(data / DATABASE_FILE)
    try:
        log = TransparencyLog(db, ServerIdentity.load_or_create(data), now_ms)
        pair, created = KemKeyPair.generate(), now_ms() - 1000
        signed = SignedKemKey.sign(keys.identity, pair, created).to_bytes()
        ids = {name: users.by_username(db, name) for name in names}
        with db.transaction():
            for name in names:
                user = ids[name]
                assert user is not None
                kem_keys.store(db, user.id, pair.key_id, created, signed, created)
                log.append("kem_key", name, signed)
            first = ids[names[0]]
            assert first is not None
            for name in names[1 : 1 + friends]:
                other = ids[name]
                assert other is not None
                friends_table.add_request(db, first.id, other.id, created)
                friends_table.accept_request(db, first.id, other.id, created)
        size = keylog.size(db)
        fill_s = bulk_fill(db, max(0, entries - size), first=size)
        return {**seeded, "log_entries": keylog.size(db), "fill_s": round(fill_s, 1)}
    finally:
        db.close()


def timed_login(server: ServerProcess, name: str) -> float:
    link: Link = connect(server, name)
    try:
        started = time.perf_counter()
        link.call(MessageType.LOGIN, {"username": name, "password": "bench-Password-1"})
        return time.perf_counter() - started
    finally:
        link.close()


def timed_fetch(link: Link, name: str) -> float:
    started = time.perf_counter()
    reply = link.call(MessageType.CERTIFICATE, {"username": name})
    elapsed = time.perf_counter() - started
    assert reply["kem_key"] is not None
    return elapsed


class Publisher:
    """A user who publishes a newer signed KEM key whenever asked (moves the head)."""

    def __init__(self, link: Link, keys: UserKeys) -> None:
        self.link, self.keys = link, keys
        self.pair, self.created = KemKeyPair.generate(), now_ms()

    def publish(self) -> None:
        self.created += 1
        signed = SignedKemKey.sign(self.keys.identity, self.pair, self.created).to_bytes()
        self.link.call(MessageType.PUBLISH_KEM_KEY, {"kem_key": signed})


def server_part(
    users_count: int, entries: int, friends: int, rounds: int, fetches: int, log_level: str
) -> dict[str, Any]:
    names = user_names("kt", users_count)
    keys = generate_user_keys()
    seeded = new_workdir()
    prepared = prepare_log(seeded, names, keys, entries, friends)
    servers: dict[str, ServerProcess] = {}
    try:
        for label, env in (
            ("with_log", {}),
            ("without_log", {"UCHAT_TEST_SERVER_HOOK": "tests.security.kt_off"}),
        ):
            workdir = new_workdir()
            shutil.copytree(Path(seeded.name) / "server", Path(workdir.name) / "server")
            servers[label] = ServerProcess.start(env, log_level=log_level, workdir=workdir)
        seeded.cleanup()
        logins: dict[str, list[float]] = {label: [] for label in servers}
        certs: dict[str, list[float]] = {label: [] for label in servers}
        fresh: dict[str, list[float]] = {label: [] for label in servers}
        fetchers = {label: login(server, names[0]) for label, server in servers.items()}
        publishers = {
            label: Publisher(login(server, names[-1]), keys) for label, server in servers.items()
        }
        friend_names = names[1 : 1 + friends]
        for round_index in range(rounds):
            order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
            for label in order:
                # not names[0] (fetcher) nor names[-1] (publisher): a login kicks a session
                name = names[1 + round_index % (users_count - 2)]
                logins[label].append(timed_login(servers[label], name))
                for i in range(fetches):
                    friend = friend_names[(round_index * fetches + i) % len(friend_names)]
                    certs[label].append(timed_fetch(fetchers[label], friend))
                publishers[label].publish()
                friend = friend_names[round_index % len(friend_names)]
                fresh[label].append(timed_fetch(fetchers[label], friend))
        for link in [*fetchers.values(), *(p.link for p in publishers.values())]:
            link.close()
    finally:
        for server in servers.values():
            server.stop()
            server.cleanup()
    result: dict[str, Any] = {"server_log": prepared}
    for label in servers:
        result[f"login_ms_{label}"] = summarize(logins[label])
        result[f"certificate_ms_{label}"] = summarize(certs[label])
        result[f"certificate_new_head_ms_{label}"] = summarize(fresh[label])
    for figure, table in (
        ("login", logins),
        ("certificate", certs),
        ("certificate_new_head", fresh),
    ):
        with_log, without = table["with_log"], table["without_log"]
        result[f"{figure}_ratio_p50"] = round(
            statistics.median(with_log) / statistics.median(without), 3
        )
        result[f"{figure}_ratio_min"] = round(min(with_log) / min(without), 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], time_limit=900.0)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--friends", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--fetches", type=int, default=5)
    args = parser.parse_args(argv)
    return run(SCENARIO, lambda: scenario(args), args)


def scenario(args: Any) -> dict[str, Any]:
    reference_s = ed25519_verify_seconds()
    log_results = log_part(args.entries, args.appends, args.proofs)
    server_results = server_part(
        args.users, args.entries, args.friends, args.rounds, args.fetches, args.log_level
    )
    reference_ms = reference_s * 1000
    results = {
        "reference_ed25519_verify_ms": round(reference_ms, 4),
        **log_results,
        "inclusion_proof_p50_in_ed25519_verifies": round(
            log_results["inclusion_proof_ms"]["p50"] / reference_ms, 2
        ),
        "append_p50_in_ed25519_verifies": round(log_results["append_ms"]["p50"] / reference_ms, 2),
        **server_results,
    }
    checks = [
        check("login with log / without (p50)", server_results["login_ratio_p50"], BAR, "x", False),
        check(
            "certificate fetch with log / without (p50)",
            server_results["certificate_ratio_p50"],
            BAR,
            "x",
            False,
        ),
        check(
            "certificate fetch under a new head with log / without (p50)",
            server_results["certificate_new_head_ratio_p50"],
            BAR,
            "x",
            False,
        ),
        check(
            "inclusion proof size (hashes) vs ceil(log2 n)",
            log_results["proof_hashes_max"],
            (log_results["entries"] - 1).bit_length(),
            "hashes",
            False,
        ),
    ]
    return emit(SCENARIO, vars(args), results, checks)
