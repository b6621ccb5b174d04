"""LOGIN: backoff, password check off the reactor, then the session bundle and backlog.

One answer for an unknown user and a wrong password, and the same scrypt work for
both (a dummy hash with the configured cost), so neither the reply nor its timing
tells which names exist. Failures are counted per account and per address in the
database, so the backoff survives a restart. The account's counter is raised
*before* the password check and cleared on success, so a burst of parallel guesses
at one account cannot all slip past the lock while their hashes are computed.
"""

from __future__ import annotations

import base64
import math
import unicodedata
from typing import TYPE_CHECKING, Any

from common.crypto.passwords import SALT_SIZE, verify_password
from common.errors import RequestError
from common.protocol.opcodes import MessageType
from server import presence
from server.handlers._common import USERNAME_MAX
from server.handlers._params import get_str
from server.handlers._wire import contact_lists, delivery
from server.storage import login_attempts, messages, users

if TYPE_CHECKING:
    from server.dispatch import Context

OPCODE = MessageType.LOGIN
REQUIRES_AUTH = False
PASSWORD_MAX = 1024
LOGIN_FAILED = "wrong username or password"


def dummy_hash(scrypt_n: int) -> str:
    """A well-formed hash nobody's password matches, costing what a real one costs."""
    salt = base64.b64encode(bytes(SALT_SIZE)).decode("ascii")
    digest = base64.b64encode(bytes(32)).decode("ascii")
    return f"scrypt${scrypt_n}$8$1${salt}${digest}"


ADDRESS_FAILURE_FACTOR = 4  # one address may be a whole office behind NAT


def backoff_policy(ctx: Context, per_address: bool = False) -> login_attempts.BackoffPolicy:
    """The account's policy; an address gets more room before its backoff starts."""
    factor = ADDRESS_FAILURE_FACTOR if per_address else 1
    return login_attempts.BackoffPolicy(
        max_failures=ctx.config.login_max_failures * factor,
        base_seconds=ctx.config.login_backoff_base,
        max_seconds=ctx.config.login_backoff_max,
    )


def handle(ctx: Context, params: dict[str, Any]) -> None:
    name = unicodedata.normalize("NFC", get_str(params, "username", max_len=USERNAME_MAX).strip())
    password = get_str(params, "password", max_len=PASSWORD_MAX)
    account_key = login_attempts.user_key(name)
    address_key = login_attempts.address_key(ctx.peer[0])
    now = ctx.now()
    locked_until = login_attempts.locked_until(ctx.db, [account_key, address_key], now)
    if locked_until:
        seconds = max(1, math.ceil((locked_until - now) / 1000))
        raise RequestError(
            "too_many_attempts", f"too many failed logins; try again in {seconds} seconds"
        )
    login_attempts.record_failure(ctx.db, account_key, now, backoff_policy(ctx))
    user = users.by_username(ctx.db, name) if name else None
    stored = user.password_hash if user is not None else dummy_hash(ctx.config.scrypt_n)
    user_id = user.id if user is not None else None
    ctx.run_in_worker(
        lambda: verify_password(password, stored),
        lambda ok: _finish(ctx, user_id if ok else None, account_key, address_key),
    )


def _finish(ctx: Context, user_id: int | None, account_key: str, address_key: str) -> None:
    """Runs after the hash check; the account's failure is already counted."""
    user = users.by_id(ctx.db, user_id) if user_id is not None else None
    if user is None:
        policy = backoff_policy(ctx, per_address=True)
        login_attempts.record_failure(ctx.db, address_key, ctx.now(), policy)
        raise RequestError("login_failed", LOGIN_FAILED)
    login_attempts.reset(ctx.db, [account_key, address_key])
    ip, port = ctx.peer
    users.record_login(ctx.db, user.id, ip, port, ctx.now())
    ctx.bind_user(user.id, user.username)  # logs "came online" and kicks an older session
    ctx.reply(_bundle(ctx, user))
    presence.announce_online(ctx)
    push_backlog(ctx, user.id, user.username)


def _bundle(ctx: Context, user: users.User) -> dict[str, Any]:
    return {
        "profile": {
            "username": user.username,
            "email": user.email,
            "sex": user.sex,
            "age": user.age,
        },
        "certificate": user.certificate,
        "ca_certificate": ctx.identity.certificate_der,
        "transparency": ctx.transparency.certificate_proof(user.username, user.certificate),
        **contact_lists(ctx, user.id),
        "limits": {
            "max_attachment_size": ctx.config.max_attachment_size,
            "chunk_size": ctx.config.chunk_size,
        },
        "server_time": ctx.now(),
    }


BACKLOG_WINDOW_BYTES = 1024 * 1024
PUSH_BYTES = 512 * 1024  # one NEW_MESSAGE stays far below any peer's frame cap
DELIVERY_OVERHEAD = 256  # ids, names and times around each envelope, generously


def _wire_size(item: messages.Delivery) -> int:
    return len(item.envelope) + DELIVERY_OVERHEAD


def _frames_of(batch: list[messages.Delivery]) -> list[list[messages.Delivery]]:
    """Split a batch so no single push exceeds PUSH_BYTES (envelopes reach 64 KiB)."""
    parts: list[list[messages.Delivery]] = [[]]
    size = 0
    for item in batch:
        if parts[-1] and size + _wire_size(item) > PUSH_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += _wire_size(item)
    return parts


def push_backlog(ctx: Context, user_id: int, username: str, after_row: int = 0) -> int:
    """Push the next window of unacknowledged deliveries, in server order.

    At most about `BACKLOG_WINDOW_BYTES` of envelopes go out at once, so a huge
    backlog never overflows the connection's write buffer (which would drop the
    client as a slow reader, and it would get the same backlog again forever). The
    client's ACK_DELIVERY for a batch pulls the next window (see ack_delivery).
    """
    batch_size = max(1, ctx.config.offline_batch)
    pushed = window = 0
    ctx.connection.backlog_cursor = None
    while batch := messages.undelivered(ctx.db, user_id, after_row, batch_size):
        for part in _frames_of(batch):
            ctx.push(
                user_id,
                MessageType.NEW_MESSAGE,
                {"messages": [delivery(d, username) for d in part]},
            )
        after_row, pushed = batch[-1].row_id, pushed + len(batch)
        window += sum(_wire_size(d) for d in batch)
        if len(batch) < batch_size:
            break
        if window >= BACKLOG_WINDOW_BYTES:
            ctx.connection.backlog_cursor = after_row
            break
    return pushed
